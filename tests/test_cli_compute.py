"""`soartc compute` end to end: layouts, awkward names, broken files, exit codes, scale features."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from soartc_cli.core.features import soartc_features
from soartc_cli.core.metrics import METRICS
from soartc_cli.core.patches import patch_names
from soartc_cli.core.transforms import TRANSFORM_PRESETS
from soartc_cli.imaging.load import load_image
from soartc_cli.interfaces.cli import app
from tests import tinyruns

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def _photo(path, seed, size=(96, 64), mode="RGB"):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 2.0, y * 3.0, (x + y) * 1.0], axis=-1) % 256
    noise = rng.normal(0, 12, base.shape)
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    _photo(root / "cats" / "a.png", 1)
    _photo(root / "cats" / "b.jpg", 2)
    _photo(root / "dogs" / "c.png", 3, size=(64, 96))
    _photo(root / "top.bmp", 4)
    return root


def _rows(text):
    return list(csv.reader(io.StringIO(text, newline="")))


def test_wide_csv_to_stdout_has_the_spec_columns_and_the_core_values(folder):
    result = invoke("compute", folder, "--size", 32, "--patch", 8, "-o", "-", "--precision", 17,
                    "--workers", 1)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)
    names = patch_names(4, 4)
    soartc = TRANSFORM_PRESETS["soartc"]
    want = ["path", "label", "width", "height"] + [
        f"{t}.{m}.{p}" for t in soartc for m in ("beta", "delta", "distance") for p in names
    ]
    assert rows[0] == want
    assert [r[:4] for r in rows[1:]] == [
        ["cats/a.png", "cats", "96", "64"],
        ["cats/b.jpg", "cats", "96", "64"],
        ["dogs/c.png", "dogs", "64", "96"],
        ["top.bmp", "", "96", "64"],
    ]
    pixels = load_image(folder / "dogs" / "c.png", size=32, patch=8).pixels
    values = soartc_features(pixels, patch=8)
    np.testing.assert_array_equal(np.array(rows[3][4:], dtype=float), values.ravel())


def test_every_layout_and_rgb_columns(folder):
    base = ["compute", folder / "cats" / "a.png", "--size", 16, "--patch", 8, "-o", "-"]
    long = _rows(invoke(*base, "--layout", "long", "--metrics", "rt").stdout)
    assert long[0] == ["path", "label", "patch", "row", "col", "transform", "beta", "noise"]
    assert len(long) == 1 + 4 * 6
    # a file named directly keeps its path as given, and has no label
    assert long[1][:6] == [str(folder / "cats" / "a.png"), "", "r00c00", "0", "0", "bend1"]
    rgb = _rows(invoke(*base, "--channels", "rgb", "--transforms", "rot90").stdout)
    assert rgb[0][4] == "R.rot90.beta.r00c00"
    assert rgb[0][-1] == "B.rot90.distance.r01c01"
    assert len(rgb[0]) == 4 + 3 * 3 * 4
    summary = _rows(
        invoke(*base, "--layout", "summary", "--channels", "rgb", "--metrics", "soart2022").stdout
    )
    stats = [f"{m}_{s}" for m in ("beta", "vol", "shear") for s in ("mean", "std", "min", "max")]
    assert summary[0] == ["path", "label", "channel", "transform", *stats]
    assert [r[2] for r in summary[1:]] == ["R"] * 6 + ["G"] * 6 + ["B"] * 6


def test_metrics_and_transforms_presets_set_the_column_order(folder):
    result = invoke("compute", folder / "top.bmp", "--size", 16, "--patch", 16, "-o", "-",
                    "--transforms", "rot180,line2,soart", "--metrics", "all")  # fmt: skip
    header = _rows(result.stdout)[0]
    transforms = list(dict.fromkeys(c.split(".")[0] for c in header[4:]))
    assert transforms == ["rot180", "line2", "rot90", "rot270"]
    assert [c.split(".")[1] for c in header[4 : 4 + len(METRICS)]] == list(METRICS)


def _make_broken_files(root):
    """Every kind of broken file issue 3 names, made here."""
    good = root / "good.png"
    _photo(good, 9)
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not a JPEG\n")
    jpeg = io.BytesIO()
    Image.open(good).save(jpeg, "JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png = good.read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    corrupt = bytearray(png)
    start = png.index(b"IDAT") + 8
    corrupt[start : start + 40] = bytes(40)
    (root / "corrupt.png").write_bytes(bytes(corrupt))
    (root / "huge.png").write_bytes(_png_header(40000, 40000))
    os.symlink(root / "nowhere.png", root / "dangling.png")
    return good


def _png_header(width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_broken_files_are_skipped_named_and_recorded(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    _make_broken_files(root)
    out = tmp_path / "out.csv"
    result = invoke("compute", root, "-o", out, "--size", 32, "--patch", 8, "--workers", 1)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith("soartc: skipped")]
    broken = {"corrupt.png", "dangling.png", "empty.png", "huge.png", "text.jpg",
              "truncated.jpg", "truncated.png"}  # fmt: skip
    assert {line.split()[2].rstrip(":") for line in skipped} == broken
    assert all(len(line.split(": ", 2)[2]) > 3 for line in skipped)  # a reason each
    rows = _rows(out.read_text(encoding="utf-8"))
    assert [r[0] for r in rows[1:]] == ["good.png"]
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record["counts"] == {"found": 8, "processed": 1, "failed": 7}
    assert {f["path"] for f in record["failures"]} == broken
    assert "40000" in next(f["error"] for f in record["failures"] if f["path"] == "huge.png")


def test_strict_writes_no_output(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    _make_broken_files(root)
    out = tmp_path / "out.csv"
    result = invoke("compute", root, "-o", out, "--strict", "--workers", 1)
    assert result.exit_code == 1
    assert "--strict" in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [root]


AWKWARD_NAMES = ["a,b.png", 'say "hi".png', "two\nlines.png", "猫の写真.png", "=cmd.png"]


def test_awkward_file_names_round_trip(tmp_path):
    root = tmp_path / "names"
    (root / "ラベル").mkdir(parents=True)
    for i, name in enumerate(AWKWARD_NAMES):
        _photo(root / name, i)
    _photo(root / "ラベル" / "x.png", 7)
    raw = os.path.join(os.fsencode(root), b"bad\xff.png")
    _photo(raw.decode("utf-8", "surrogateescape"), 8)
    out = tmp_path / "out.csv"
    result = invoke("compute", root, "-o", out, "--size", 16, "--patch", 8, "--workers", 1)
    assert result.exit_code == 0, result.stderr
    with open(out, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    got = {(r[0], r[1]) for r in rows[1:]}
    want = {(n, "") for n in AWKWARD_NAMES} | {("ラベル/x.png", "ラベル"), ("bad\\xff.png", "")}
    assert got == want
    assert all(len(r) == len(rows[0]) for r in rows)
    jsonl = tmp_path / "out.jsonl"
    invoke("compute", root, "-o", jsonl, "--size", 16, "--patch", 8, "--workers", 1)
    paths = {json.loads(line)["path"] for line in jsonl.read_text(encoding="utf-8").splitlines()}
    assert paths == {p for p, _ in want}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "224", "--patch", "15"], "not a multiple of 15"),
        (["--transforms", "bend9"], "bend9"),
        (["--metrics", "speed"], "speed"),
        (["--channels", "cmyk"], "--channels"),
        (["--layout", "tall", "-o", "-"], "--layout"),
        (["--workers", "0"], "--workers"),
        (["--shard", "3/2"], "shard"),
        (["--datum", "rot90"], "datum"),
        (["--kernels", "/no/such.json"], "--kernels"),
        (["--precision", "40", "-o", "-"], "--precision"),
    ],
)
def test_usage_errors_exit_2_with_one_line(folder, args, message):
    result = invoke("compute", folder, *args)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("soartc: error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""


def test_missing_input_is_a_usage_error_and_empty_folder_exits_1(tmp_path):
    missing = invoke("compute", tmp_path / "nope")
    assert missing.exit_code == 2
    assert "nope" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("compute", empty, "-o", tmp_path / "out.csv")
    assert result.exit_code == 1
    assert "no image files found" in result.stderr
    assert (tmp_path / "out.csv").read_text().startswith("path,label,width,height,")


def test_user_kernels_and_the_transforms_listing(folder, tmp_path):
    kernels = tmp_path / "k.json"
    kernels.write_text(json.dumps({"centre": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
                                   "box3": [[1, 1, 1], [1, 1, 1], [1, 1, 1]]}))  # fmt: skip
    result = invoke("compute", folder / "top.bmp", "--kernels", kernels, "--datum", "centre",
                    "--transforms", "centre,box3", "--metrics", "rt", "-o", "-", "--size", 16,
                    "--patch", 8)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # the delta kernel as both datum and part: β = 1 and no noise, in every patch
    assert {rows[0][f"centre.beta.{p}"] for p in patch_names(2, 2)} == {"1"}
    assert {rows[0][f"centre.noise.{p}"] for p in patch_names(2, 2)} == {"0"}
    listing = invoke("transforms", "--kernels", kernels)
    assert listing.exit_code == 0
    for name in ("bend1", "line2", "datum_h", "datum_v", "datum", "rot90", "flip_ud", "box3"):
        assert name in listing.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('{"even": [[1, 1], [1, 1]]}')
    result = invoke("compute", folder, "--kernels", bad)
    assert result.exit_code == 2
    assert "even" in result.stderr


def test_terminal_tables_fit_100_columns(folder):
    result = runner.invoke(app, ["compute", str(folder), "--workers", "1"], terminal_width=100)
    assert result.exit_code == 0
    assert "beta" in result.stdout and "cats/a.png" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


# --- scale: workers, shards, interrupts ---------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    for i in range(24):
        sub = root / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        _photo(sub / f"p{i:03d}.jpg", i, size=(80 + i, 60))
    (root / "part1" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    return root


def _run(*args, **kwargs):
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def test_output_is_byte_identical_for_1_2_3_workers(many, tmp_path):
    outputs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.csv"
        proc = _run("compute", many, "-o", out, "--workers", workers, "--size", 32, "--patch", 8)
        assert proc.returncode == 1  # the broken file
        assert proc.stderr.count("soartc: skipped") == 1
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].count(b"\n") == 1 + 24


@pytest.mark.parametrize("count", [1, 3, 4, 7])
def test_shards_concatenate_to_the_whole(many, tmp_path, count):
    whole = tmp_path / "whole.csv"
    invoke("compute", many, "-o", whole, "--workers", 1, "--size", 16, "--patch", 8)
    parts = []
    for i in range(count):
        part = tmp_path / f"part{i}.csv"
        invoke("compute", many, "-o", part, "--shard", f"{i}/{count}", "--workers", 1,
               "--size", 16, "--patch", 8)  # fmt: skip
        parts.append(part)
    body = [p.read_text(encoding="utf-8").split("\n", 1) for p in parts]
    assert len({head for head, _ in body}) == 1
    assert body[0][0] + "\n" + "".join(rest for _, rest in body) == whole.read_text("utf-8")
    merged = tmp_path / "merged.csv"
    result = invoke("merge", *parts, "-o", merged)
    assert result.exit_code == 0, result.stderr
    assert merged.read_bytes() == whole.read_bytes()
    record = json.loads((tmp_path / "merged.csv.meta.json").read_text())
    assert record["counts"] == {"found": 25, "processed": 24, "failed": 1}


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM at their defaults, whatever pytest inherited
    (a shell starts background jobs with SIGINT ignored, and a Python started with SIGINT
    ignored installs no KeyboardInterrupt handler: the interrupt would never arrive)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_nothing_and_exits_130(tmp_path, sig):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(40):
        _photo(root / f"i{i:03d}.png", i, size=(640, 480))
    out = tmp_path / "out" / "res.csv"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "soartc_cli", "compute", str(root), "-o", str(out), "--workers",
           "2", "--transforms", "all", "--metrics", "all", "--size", "448"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until rows are being written
        parts = list(out.parent.glob(".res.csv.*.part"))
        if parts and parts[0].read_bytes().count(b"\n") >= 3:  # the header and two rows
            break
        time.sleep(0.02)
    else:
        pytest.fail("the run never started writing")
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert list(out.parent.iterdir()) == []
    assert stderr.strip().startswith("soartc: error: interrupted after ")
    done = int(stderr.split("interrupted after ")[1].split()[0])
    assert 2 <= done < 40
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_an_unreadable_sub_directory_is_skipped_and_counted(folder, tmp_path, monkeypatch):
    # Root reads every directory, so the refusal is simulated where the walk lists one.
    real_scandir = os.scandir
    locked = str(folder / "dogs")

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out.csv"
    result = invoke("compute", folder, "-o", out, "--workers", 1, "--size", 16, "--patch", 8)
    assert result.exit_code == 1
    assert "soartc: skipped dogs: cannot read directory: Permission denied" in result.stderr
    assert len(out.read_text().splitlines()) == 1 + 3
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record["failures"][0]["path"] == "dogs"


def test_paths_from_standard_input(folder):
    paths = f"{folder / 'cats' / 'a.png'}\n\n{folder / 'top.bmp'}\n"
    result = runner.invoke(app, ["compute", "-", "-o", "-", "--size", "16", "--patch", "8",
                                 "--workers", "1"], input=paths)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)
    assert [r[0] for r in rows[1:]] == [str(folder / "cats" / "a.png"), str(folder / "top.bmp")]


def test_record_goes_where_asked_with_stdout_output(folder, tmp_path):
    record = tmp_path / "run.json"
    result = invoke("compute", folder, "-o", "-", "--record", record, "--size", 16, "--patch", 8,
                    "--workers", 1, "--metrics", "rt")  # fmt: skip
    assert result.exit_code == 0
    data = json.loads(record.read_text())
    assert data["counts"] == {"found": 4, "processed": 4, "failed": 0}
    assert data["settings"]["metrics"] == ["beta", "noise"]
    assert data["settings"]["datum"]["kernel"][2] == [1, 1, 1, 1, 1]
    assert data["output"] == {"file": "-", "format": "csv", "layout": "wide", "precision": 7}
    assert data["command"] == [
        "soartc",
        "compute",
        str(folder),
        "-o",
        "-",
        "--record",
        str(record),
        "--size",
        "16",
        "--patch",
        "8",
        "--workers",
        "1",
        "--metrics",
        "rt",
    ]


def test_record_in_a_missing_directory_is_a_usage_error(folder, tmp_path):
    result = invoke("compute", folder, "-o", "-", "--record", tmp_path / "no" / "run.json")
    assert result.exit_code == 2
    assert "--record" in result.stderr
    assert result.stdout == ""


def test_unwritable_output_is_a_usage_error(folder, tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root may write anywhere: simulate it
    result = invoke("compute", folder, "-o", tmp_path / "out.csv", "--workers", 1)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "cannot write " + str(tmp_path / "out.csv") + ": Permission denied"
    )


# --- tests that a plausible mistake would fail (each names the mistake it catches) -------------


def test_long_layout_row_and_col_come_from_the_right_grid_axis(tmp_path):
    # 48 wide × 32 high, patch 16, native size: 2 rows × 3 cols (a square grid would hide a
    # row/col computed from the wrong axis).
    root = tmp_path / "wide"
    root.mkdir()
    _photo(root / "w.png", 5, size=(48, 32))
    names = patch_names(2, 3)
    assert names == ["r00c00", "r00c01", "r00c02", "r01c00", "r01c01", "r01c02"]
    base = ["compute", root, "--size", 0, "--patch", 16, "--layout", "long", "--workers", 1]
    rows = list(csv.DictReader(io.StringIO(invoke(*base, "-o", "-").stdout)))
    assert len(rows) == 6 * 6  # patches × transforms
    parquet = tmp_path / "long.parquet"
    assert invoke(*base, "-o", parquet).exit_code == 0
    import pyarrow.parquet as pq

    table = pq.read_table(parquet).to_pylist()
    for found in (rows, table):
        for row in found:
            patch = row["patch"]
            assert (int(row["row"]), int(row["col"])) == (int(patch[1:3]), int(patch[4:6])), row
        assert [r["patch"] for r in found[::6]] == names


def test_skip_line_is_exactly_soartc_skipped_path_reason(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    _photo(root / "good.png", 1)
    (root / "sub").mkdir()
    (root / "sub" / "notes.png").write_text("not an image\n")
    out = tmp_path / "out.csv"
    result = invoke("compute", root, "-o", out, "--size", 16, "--patch", 8, "--workers", 1)
    assert result.exit_code == 1
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    (failure,) = record["failures"]
    assert failure["path"] == "sub/notes.png"
    assert failure["error"]  # a reason
    lines = result.stderr.splitlines()
    assert lines[0] == f"soartc: skipped sub/notes.png: {failure['error']}"
    assert lines[1:] == ["soartc: 1 of 2 images processed, 1 skipped"]


def _table_cells(stdout: str) -> dict[tuple[str, str, str], float]:
    """The terminal tables' numbers by (metric, path, transform)."""
    cells = {}
    metric, header = None, None
    for line in stdout.splitlines():
        if "(mean over patches)" in line:
            metric = line.split()[0]
            continue
        if line.startswith("┃"):  # the header row
            header = [p.strip() for p in line.strip().strip("┃").split("┃")]
            continue
        if not line.startswith("│"):
            continue
        parts = [p.strip() for p in line.strip().strip("│").split("│")]
        for name, text in zip(header[3:], parts[3:], strict=True):
            cells[(metric, parts[0], name)] = float(text)
    return cells


def test_terminal_table_numbers_are_the_means_of_the_patch_values(folder):
    args = ["compute", folder, "--size", 32, "--patch", 8, "--workers", 1]
    table = runner.invoke(app, [str(a) for a in args], terminal_width=200)
    assert table.exit_code == 0
    cells = _table_cells(table.stdout)
    rows = list(csv.DictReader(io.StringIO(invoke(*args, "-o", "-", "--precision", 17).stdout)))
    soartc = TRANSFORM_PRESETS["soartc"]
    assert len(cells) == len(rows) * len(soartc) * 3
    names = patch_names(4, 4)
    for row in rows:
        for t in soartc:
            for m in ("beta", "delta", "distance"):
                values = np.array([float(row[f"{t}.{m}.{p}"]) for p in names])
                assert np.ptp(values) > 0  # mean, max and min tell apart
                got = cells[(m, row["path"], t)]
                assert got == pytest.approx(values.mean(), rel=5e-4, abs=1e-12), (m, t)


def test_quiet_prints_nothing_but_errors(folder, tmp_path):
    args = ["compute", folder, "--size", 16, "--patch", 8, "--workers", 1]
    loud = invoke(*args, "-o", tmp_path / "a.csv")
    assert loud.stderr == "soartc: 4 of 4 images processed\n"
    quiet = invoke(*args, "-o", tmp_path / "b.csv", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    inside = invoke(*args, "-o", folder / "inside.csv", "-q")  # a warning is not an error
    assert inside.exit_code == 0 and inside.stderr == ""
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    bad = invoke(*args, "-q", "--patch", 7)
    assert bad.exit_code == 2 and bad.stderr.startswith("soartc: error: ")


def test_no_recursive_stays_at_the_top_level(folder):
    args = ["compute", folder, "--size", 16, "--patch", 8, "--workers", 1, "-o", "-"]
    deep = _rows(invoke(*args).stdout)
    top = _rows(invoke(*args, "--no-recursive").stdout)
    assert [r[0] for r in deep[1:]] == ["cats/a.png", "cats/b.jpg", "dogs/c.png", "top.bmp"]
    assert [r[0] for r in top[1:]] == ["top.bmp"]
    assert top[1] == deep[4]


def test_invert_computes_on_one_minus_the_pixels(folder):
    args = ["compute", folder / "top.bmp", "--size", 32, "--patch", 8, "--workers", 1, "-o", "-",
            "--precision", 17]  # fmt: skip
    plain = np.array(_rows(invoke(*args).stdout)[1][4:], dtype=float)
    inverted = np.array(_rows(invoke(*args, "--invert").stdout)[1][4:], dtype=float)
    pixels = load_image(folder / "top.bmp", size=32, patch=8).pixels
    flipped = load_image(folder / "top.bmp", size=32, patch=8, invert=True).pixels
    np.testing.assert_allclose(flipped, 1 - pixels, atol=1e-6)
    np.testing.assert_array_equal(inverted, soartc_features(flipped, patch=8).ravel())
    assert not np.allclose(plain, inverted)


def test_max_pixels_refuses_larger_images_only(folder, tmp_path):
    args = ["compute", folder, "--size", 16, "--patch", 8, "--workers", 1, "-o", "-"]
    at = invoke(*args, "--max-pixels", 96 * 64)  # every image is 96 × 64 = 6144 pixels
    assert at.exit_code == 0 and len(_rows(at.stdout)) == 5
    over = invoke(*args, "--max-pixels", 96 * 64 - 1, "--record", tmp_path / "r.json")
    assert over.exit_code == 1 and len(_rows(over.stdout)) == 1
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["counts"] == {"found": 4, "processed": 0, "failed": 4}
    assert all("6144" in f["error"] and "6143" in f["error"] for f in record["failures"])
    assert invoke(*args, "--max-pixels", 0).exit_code == 2


def test_record_has_version_and_start_and_end_times(folder, tmp_path):
    from datetime import datetime, timezone

    from soartc_cli import __version__

    before = datetime.now(timezone.utc)
    out = tmp_path / "out.csv"
    assert (
        invoke("compute", folder, "-o", out, "--size", 16, "--patch", 8, "--workers", 1).exit_code
        == 0
    )
    after = datetime.now(timezone.utc)
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record["version"] == __version__ and record["tool"] == "soartc"
    started = datetime.fromisoformat(record["started"])
    finished = datetime.fromisoformat(record["finished"])
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= started
    assert started < finished <= after  # four images take more than the milliseconds written


@pytest.fixture
def shards(folder, tmp_path):
    """The whole run and its two shards, as CSV files with their records."""
    base = ["compute", folder, "--size", 16, "--patch", 8, "--workers", 1]
    whole = tmp_path / "whole.csv"
    assert invoke(*base, "-o", whole).exit_code == 0
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}.csv"
        assert invoke(*base, "--shard", f"{i}/2", "-o", part).exit_code == 0
        parts.append(part)
    return whole, parts


def test_merge_to_stdout_in_shard_order(shards):
    whole, (first, second) = shards
    result = runner.invoke(app, ["merge", str(second), str(first), "-o", "-"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == whole.read_bytes()


def test_merge_errors_name_the_problem(shards, folder, tmp_path):
    whole, (first, second) = shards
    other = tmp_path / "other.csv"
    invoke("compute", folder, "--size", 32, "--patch", 8, "--workers", 1, "--shard", "1/2",
           "-o", other)  # fmt: skip
    out = tmp_path / "merged.csv"
    cases = [
        ([first, first], "shard 0/2 is given twice"),
        ([first], "shard 1/2 missing"),
        ([first, other], "was made with other settings"),
        ([whole, first], "is not a shard"),
        ([first, tmp_path / "nope.csv"], "no such file"),
    ]
    for parts, message in cases:
        result = invoke("merge", *parts, "-o", out)
        assert result.exit_code == 2, (parts, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert not out.exists()
    os.unlink(str(second) + ".meta.json")
    result = invoke("merge", first, second, "-o", out)
    assert result.exit_code == 2 and f"{second} has no run record" in result.stderr
    allowed = invoke("merge", first, "-o", out, "--allow-missing")
    assert allowed.exit_code == 0
    record = json.loads((tmp_path / "merged.csv.meta.json").read_text())
    assert record["missing_shards"] == ["1/2"]
    assert out.read_bytes() == first.read_bytes()


# --- moved from test_issue13.py ----------------------------------------


def test_a_huge_image_is_skipped_for_its_working_memory_at_once(huge_photo, tmp_path):
    start = time.monotonic()
    result = tinyruns.soartc(
        "compute",
        huge_photo,
        *tinyruns.HUGE_RUN,
        "-o",
        tmp_path / "o.csv",
        "--workers",
        1,
        preexec_fn=tinyruns._limited,
    )
    assert time.monotonic() - start < 20
    tinyruns.no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert "soartc: skipped big.png: its 312×312 patches would need about" in result.stderr
    assert "of working memory" in result.stderr
    assert tinyruns.rows(tmp_path / "o.csv") == [
        "path,label,width,height"
    ]  # no grid: no value column


def test_a_huge_image_is_refused_before_it_is_decoded(huge_photo, tmp_path):
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    cmd = [
        sys.executable,
        "-c",
        probe,
        sys.executable,
        "-m",
        "soartc_cli",
        "compute",
        str(huge_photo),
        *tinyruns.HUGE_RUN,
        "-o",
        str(tmp_path / "o.csv"),
        "--workers",
        "1",
        "-q",
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, check=False, preexec_fn=tinyruns._limited
    )
    assert "working memory" in result.stderr
    peak_kib = int(result.stdout.split()[-1])
    assert peak_kib < 90 * 1024  # a run of one 32×32 image peaks at about 40 MB


@pytest.mark.parametrize(
    "args", [("--size", 100000, "--patch", 10000), ("--size", 2**40), ("--patch", 2**40)]
)
def test_impossible_sizes_are_usage_errors(tiny_photos, args):
    result = tinyruns.soartc(
        "compute", tiny_photos, *args, "-o", "-", "--workers", 1, preexec_fn=tinyruns._limited
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_native_size_wide_shards_concatenate_to_the_single_run(mixed_sizes, tmp_path):
    args = ("--size", 0, "--patch", 16, "--workers", 1, "-q")
    whole = tinyruns.soartc("compute", mixed_sizes, "-o", tmp_path / "whole.csv", *args)
    assert whole.returncode == 1, whole.stderr  # b and c have another grid: skipped
    parts = []
    for index in range(2):
        out = tmp_path / f"part{index}.csv"
        result = tinyruns.soartc("compute", mixed_sizes, "--shard", f"{index}/2", "-o", out, *args)
        tinyruns.no_traceback(result)
        parts.append(tinyruns.rows(out))
    assert parts[0][0] == parts[1][0]  # one header for every shard
    assert parts[0] + parts[1][1:] == tinyruns.rows(tmp_path / "whole.csv")
    assert [line.split(",")[0] for line in tinyruns.rows(tmp_path / "whole.csv")[1:]] == [
        "a.png",
        "d.png",
    ]


def test_an_empty_shard_is_a_header_only_output(mixed_sizes, tmp_path):
    out = tmp_path / "empty.csv"
    result = tinyruns.soartc(
        "compute",
        mixed_sizes,
        "--shard",
        "0/6",
        "-o",
        out,
        "--size",
        0,
        "--patch",
        16,
        "--workers",
        1,
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 0, result.stderr
    whole = tinyruns.soartc(
        "compute", mixed_sizes, "-o", tmp_path / "whole.csv", "--size", 0, "--workers", 1
    )
    assert whole.returncode == 1, whole.stderr  # b and c skipped
    assert tinyruns.rows(out) == tinyruns.rows(tmp_path / "whole.csv")[:1]


def test_dev_zero_named_png_is_not_a_regular_file_and_the_counts_add_up(tiny_photos, tmp_path):
    (tmp_path / "z.png").symlink_to("/dev/zero")  # named directly (the walk lists regular files)
    (tiny_photos / "broken.png").write_bytes(b"nope")
    start = time.monotonic()
    result = tinyruns.soartc(
        "compute", tiny_photos, tmp_path / "z.png", "-o", tmp_path / "o.csv", *tinyruns.FAST
    )
    assert time.monotonic() - start < 30
    assert result.returncode == 1, result.stderr
    assert "z.png: not a regular file (a character device)" in result.stderr
    counts = json.loads((tmp_path / "o.csv.meta.json").read_text())["counts"]
    assert counts == {"found": 5, "processed": 3, "failed": 2}
    assert counts["found"] == counts["processed"] + counts["failed"]


def test_two_runs_on_one_output_leave_one_runs_output_and_its_record(tiny_photos, tmp_path):
    out = tmp_path / "o.csv"
    command = [sys.executable, "-m", "soartc_cli", "compute", str(tiny_photos), "-o", str(out)]
    for _ in range(20):
        procs = [
            subprocess.Popen(
                [*command, "--precision", str(p), *tinyruns.FAST, "-q"], stderr=subprocess.PIPE
            )
            for p in (3, 6)
        ]
        for proc in procs:
            proc.communicate(timeout=60)
            assert proc.returncode == 0
        record = json.loads((tmp_path / "o.csv.meta.json").read_text())
        values = [v for line in tinyruns.rows(out)[1:] for v in line.split(",")[2:]]
        digits = {len(v.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) for v in values}
        assert max(digits) == record["output"]["precision"], (digits, record["output"])
