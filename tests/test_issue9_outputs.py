"""Acceptance tests of issue 9 (one output interface) on the sample images, end to end.

Where -o points (devices, FIFOs, links, a closed stdout), compressed and Parquet outputs, pooled
statistics, unknown suffixes, SIGKILL then --resume, merge of shards, full disks, output and
record committed together, outputs that would overwrite inputs.
"""

import gzip
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from soartc_cli.interfaces.cli import app
from soartc_cli.output import targets
from soartc_cli.pipeline.resume import iter_journal, journal_length
from tests.outhelp import char_device

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
FAST = ("--size", "64")  # 4×4 patches of 16: quick, yet every code path
IMAGES = sorted(
    p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*") if p.suffix in (".jpg", ".png")
)
STATS = ("mean", "std", "min", "max", "median", "p05", "p95")

cli = CliRunner()


def invoke(*args, input=None):
    return cli.invoke(app, [str(a) for a in args], input=input)


def soartc(*args, **kwargs):
    """``python -m soartc_cli ARGS`` in a subprocess (a real process: signals, pipes, fds)."""
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sample images' wide CSV (and its record) written to a regular file."""
    out = tmp_path_factory.mktemp("reference") / "ref.csv"
    result = invoke("compute", SAMPLES, "-o", out, *FAST, "--workers", 1, "--quiet")
    assert result.exit_code == 0, result.stderr
    return out


def test_the_sample_images_are_there():
    assert len(IMAGES) == 12


# --- where -o points ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/null", "private"])
def test_a_character_device_stays_what_it_was(tmp_path, device):
    if device == "private":
        device = char_device(tmp_path / "null", 3)
    assert stat.S_ISCHR(os.stat(device).st_mode), f"{device} is not a character device to start"
    proc = soartc("compute", SAMPLES, "-o", device, *FAST, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode)
    assert not os.path.exists(device + ".meta.json")
    assert b"12 of 12 images processed" in proc.stderr


def test_a_fifo_stays_a_fifo_and_its_reader_gets_every_byte(tmp_path, reference):
    fifo = tmp_path / "rows"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    proc = soartc("compute", SAMPLES, "-o", fifo, *FAST, "--workers", 2)
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert got == [reference.read_bytes()]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]  # no record, no temporary


def test_a_symlink_stays_a_link_and_its_target_gets_the_rows(tmp_path, reference):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to("real.csv")
    result = invoke("compute", SAMPLES, "-o", link, *FAST, "--workers", 1, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "real.csv"
    assert real.read_bytes() == reference.read_bytes()
    record = json.loads((tmp_path / "link.csv.meta.json").read_text())
    assert record["counts"] == {"found": 12, "processed": 12, "failed": 0}


def test_dev_stdout_on_a_pipe_is_that_pipe(reference):
    # /dev/stdout is a link into /proc whose realpath ("pipe:[N]") names no file.
    proc = soartc("compute", SAMPLES, "-o", "/dev/stdout", "--record", "/dev/stderr", *FAST,
                  "--workers", 1, "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reference.read_bytes()
    assert json.loads(proc.stderr)["counts"] == {"found": 12, "processed": 12, "failed": 0}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_closed_stdout_pipe_exits_141_quietly(tmp_path, workers):
    err = tmp_path / "err"
    # 256-pixel images make ~0.5 MB of CSV: far more than a pipe holds once head has gone.
    script = (
        f"{sys.executable} -m soartc_cli compute {SAMPLES} -o - --size 256 --workers {workers} "
        f"2>{err} | head -c 10 >{tmp_path / 'head'}; exit ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(["bash", "-c", script], timeout=120, check=False)
    assert proc.returncode == 141
    assert err.read_bytes() == b""
    assert (tmp_path / "head").read_bytes() == b"path,label"


# --- compressed and Parquet outputs ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_gzip_output_decompresses_to_exactly_the_plain_file(tmp_path, suffix):
    plain = tmp_path / f"out{suffix}"
    runs = [plain, tmp_path / f"a{suffix}.gz", tmp_path / f"b{suffix}.gz"]
    for out in runs:
        result = invoke("compute", SAMPLES, "-o", out, *FAST, "--workers", 1, "--quiet")
        assert result.exit_code == 0, result.stderr
    first, second = runs[1].read_bytes(), runs[2].read_bytes()
    assert first[:2] == b"\x1f\x8b"
    assert gzip.decompress(first) == plain.read_bytes()
    assert first == second  # mtime 0, no file name: two runs give the same bytes
    record = json.loads(runs[1].with_name(runs[1].name + ".meta.json").read_text())
    assert record["output"]["compression"] == "gzip"


def _csv_frame(path):
    return pd.read_csv(path, keep_default_na=False, na_values=["nan"], dtype={"label": str})


INTS = {"width", "height", "row", "col"}
TEXTS = {"path", "label", "channel", "patch", "transform"}


@pytest.mark.parametrize(
    ("layout", "extra"),
    [
        ("wide", ()),
        ("long", ("--channels", "rgb")),
        ("summary", ("--channels", "rgb", "--transforms", "all")),
        ("pooled", ("--pool", ",".join(STATS))),
    ],
)
def test_parquet_values_equal_the_unrounded_features(tmp_path, layout, extra):
    text, parquet = tmp_path / "p17.csv", tmp_path / "out.parquet"
    for out, more in ((text, ("--precision", 17)), (parquet, ())):
        result = invoke("compute", SAMPLES, "-o", out, *FAST, "--layout", layout, *extra, *more,
                        "--workers", 1, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    want = _csv_frame(text)
    table = pq.read_table(parquet)
    got = table.to_pandas()
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    for field in table.schema:
        if field.name in INTS:
            assert str(field.type) == "int32", field.name
            assert got[field.name].tolist() == want[field.name].tolist()
        elif field.name in TEXTS:
            assert str(field.type) == "string", field.name
            assert got[field.name].tolist() == want[field.name].astype(str).tolist()
        else:
            assert str(field.type) == "double", field.name
            np.testing.assert_array_equal(got[field.name].to_numpy(), want[field.name].to_numpy())
    record = json.loads(pq.read_metadata(parquet).metadata[b"soartc"])
    assert record["counts"] == {"found": 12, "processed": 12, "failed": 0}
    assert record["output"]["format"] == "parquet" and record["output"]["layout"] == layout
    assert "precision" not in record["output"]
    assert record == json.loads((tmp_path / "out.parquet.meta.json").read_text())


def test_pooled_statistics_equal_numpy_over_the_long_values(tmp_path):
    long, pooled = tmp_path / "long.csv", tmp_path / "pooled.csv"
    for out, layout in ((long, "long"), (pooled, "pooled")):
        result = invoke("compute", SAMPLES, "-o", out, *FAST, "--channels", "rgb", "--layout",
                        layout, "--pool", ",".join(STATS), "--precision", 17, "--workers", 1,
                        "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    rows = _csv_frame(long)
    metrics = list(rows.columns[7:])
    pooled_rows = _csv_frame(pooled).set_index("path")
    numpy = {
        "mean": np.mean, "std": lambda v: np.std(v, ddof=0), "min": np.min, "max": np.max,
        "median": np.median, "p05": lambda v: np.percentile(v, 5, method="linear"),
        "p95": lambda v: np.percentile(v, 95, method="linear"),
    }  # fmt: skip
    checked = 0
    for (path, channel, transform), group in rows.groupby(["path", "channel", "transform"]):
        for metric in metrics:
            values = group[metric].to_numpy()
            assert len(values) == 16
            for name in STATS:
                got = pooled_rows.loc[path, f"{channel}.{transform}.{metric}.{name}"]
                assert got == numpy[name](values), (path, name)
                checked += 1
    assert checked == 12 * 3 * 6 * 3 * len(STATS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-o", "out.txt"), "cannot tell the format of 'out.txt' by its suffix; known: .csv"),
        (("-o", "out.json"), "known: .csv, .csv.gz, .jsonl, .jsonl.gz, .ndjson"),
        (("-o", "out.parquet.gz"), "cannot tell the format of 'out.parquet.gz'"),
        (("-o", "out.jsonl", "--layout", "long"), "JSON Lines hold one object per image"),
        (("-o", "out.jsonl", "--layout", "summary"), "JSON Lines hold one object per image"),
    ],
)
def test_unknown_suffixes_and_impossible_layouts_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke("compute", SAMPLES, *args, *FAST, "--workers", 1)
    assert result.exit_code == 2
    assert result.stderr.startswith("soartc: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# --- SIGKILL, then --resume -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """96 images (the 12 samples eight times over) and a broken file among the first ones."""
    root = tmp_path_factory.mktemp("many")
    for copy in range(8):
        for name in IMAGES:
            target = root / f"c{copy}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SAMPLES / name, target)
    (root / "c0" / "animals" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    return root


COUNTS = {"found": 97, "processed": 96, "failed": 1}
#: Enough work per image that a run lasts a while after its first images (the kill lands mid-run).
HEAVY = (*FAST, "--transforms", "all", "--metrics", "all")


@pytest.fixture(scope="module")
def uninterrupted(many, tmp_path_factory):
    """One uninterrupted run over ``many`` without --resume: CSV and Parquet."""
    folder = tmp_path_factory.mktemp("whole")
    for name in ("whole.csv", "whole.parquet"):
        result = invoke("compute", many, "-o", folder / name, *HEAVY, "--workers", 2, "--quiet")
        assert result.exit_code == 1, result.stderr  # the broken file
        assert "skipped c0/animals/broken.jpg" in result.stderr
    return folder / "whole.csv", folder / "whole.parquet"


def _group_members(pgid):
    """Processes of the process group ``pgid`` that are still running (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _killed_run(args, partial, *, frames=3):
    """Start ``soartc ARGS`` in its own process group, SIGKILL the group once ``partial`` holds
    ``frames`` images; check that no process of the group survives. Returns the frames kept."""
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    pgid = proc.pid
    deadline = time.monotonic() + 60
    size = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            now = os.path.getsize(partial) if os.path.exists(partial) else 0
            if now != size and len(_read_journal(partial)[0]) >= frames:
                break
            size = now
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(pgid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:  # workers die with their parent
        time.sleep(0.02)
    assert _group_members(pgid) == [], "a worker survived the SIGKILL of its run"
    return len(_read_journal(partial)[0])


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_resume_gives_the_uninterrupted_csv(tmp_path, many, uninterrupted, workers):
    out = tmp_path / "out.csv"
    args = ("compute", many, "-o", out, "--resume", "--workers", workers, *HEAVY, "--quiet")
    kept = _killed_run(args, f"{out}.partial")
    assert 3 <= kept < 97  # the broken file (second in the list) among them
    assert not out.exists()
    assert (tmp_path / "out.csv.partial.meta.json").exists()
    proc = soartc(*args)
    assert proc.returncode == 1, proc.stderr
    assert out.read_bytes() == uninterrupted[0].read_bytes()
    record = json.loads((tmp_path / "out.csv.meta.json").read_text())
    assert record["counts"] == COUNTS  # each image once, the kept ones included
    assert [f["path"] for f in record["failures"]] == ["c0/animals/broken.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.meta.json"]


def test_sigkill_then_resume_gives_the_uninterrupted_parquet(tmp_path, many, uninterrupted):
    out = tmp_path / "out.parquet"
    args = ("compute", many, "-o", out, "--resume", "--workers", 2, *HEAVY, "--quiet")
    assert 3 <= _killed_run(args, f"{out}.partial") < 97
    proc = soartc(*args)
    assert proc.returncode == 1, proc.stderr
    assert pq.read_table(out).equals(pq.read_table(uninterrupted[1]))
    record = json.loads(pq.read_metadata(out).metadata[b"soartc"])
    assert record["counts"] == COUNTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet", "out.parquet.meta.json"]


def test_sigterm_with_resume_keeps_the_progress_and_resume_finishes_it(tmp_path, many,
                                                                        uninterrupted):  # fmt: skip
    out = tmp_path / "out.csv"
    args = ("compute", many, "-o", out, "--resume", "--workers", 2, *HEAVY)
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "out.csv.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(_read_journal(str(partial))[0]) >= 3:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr.endswith(
        f"images; progress kept in {partial}: run the same command with --resume to go on\n"
    )
    assert partial.exists() and not out.exists()
    proc = soartc(*args, "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert out.read_bytes() == uninterrupted[0].read_bytes()
    assert not partial.exists()


def test_resume_refuses_other_settings_or_another_file_list(tmp_path, many):
    out = tmp_path / "out.csv"
    args = ("compute", many, "-o", out, "--resume", "--workers", 1, *HEAVY, "--quiet")
    _killed_run(args, f"{out}.partial")
    partial = (tmp_path / "out.csv.partial").read_bytes()
    result = invoke(*args, "--metrics", "rt")
    assert result.exit_code == 2
    assert "--resume: settings 'metrics' differs from the interrupted run's" in result.stderr
    result = invoke(*args, "--precision", 5)
    assert result.exit_code == 2
    assert "'precision'" in result.stderr
    first = many / "c0" / IMAGES[0]
    moved = tmp_path / "moved.jpg"
    shutil.move(first, moved)  # the second file, already done, is gone from the list
    try:
        result = invoke(*args)
    finally:
        shutil.move(moved, first)
    assert result.exit_code == 2
    assert (
        "--resume: the file list differs from the interrupted run's at position 1 "
        "('c0/animals/chelsea.jpg' before, 'c0/astronaut.jpg' now)"
    ) in result.stderr
    assert (tmp_path / "out.csv.partial").read_bytes() == partial  # kept as it was
    assert not out.exists()


# --- merge ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The sample images in three shards (CSV), and the whole run."""
    folder = tmp_path_factory.mktemp("shards")
    for i in range(3):
        result = invoke("compute", SAMPLES, "-o", folder / f"part{i}.csv", "--shard", f"{i}/3",
                        *FAST, "--workers", 1, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
    result = invoke("compute", SAMPLES, "-o", folder / "whole.csv", *FAST, "--workers", 1,
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0
    return folder


def _parts(folder, order=(0, 1, 2)):
    return [folder / f"part{i}.csv" for i in order]


def test_merge_in_any_order_is_byte_identical_to_the_single_run(shards, tmp_path):
    order = [0, 1, 2]
    random.Random(9).shuffle(order)
    order = order if order != [0, 1, 2] else [2, 0, 1]
    out = tmp_path / "merged.csv"
    result = invoke("merge", *_parts(shards, order), "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == (shards / "whole.csv").read_bytes()
    record = json.loads((tmp_path / "merged.csv.meta.json").read_text())
    assert record["counts"] == {"found": 12, "processed": 12, "failed": 0}
    assert [m["shard"]["index"] for m in record["merged_from"]] == [0, 1, 2]
    assert "shard" not in record


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.gz"])
def test_merge_into_gzip_gives_the_single_run_gzip_bytes(shards, tmp_path, suffix):
    parts = _parts(shards, (2, 0, 1))
    if suffix == ".jsonl.gz":
        parts = [tmp_path / f"part{i}.jsonl.gz" for i in range(3)]
        for i, part in enumerate(parts):
            result = invoke("compute", SAMPLES, "-o", part, "--shard", f"{i}/3", *FAST,
                            "--workers", 1, "--quiet")  # fmt: skip
            assert result.exit_code == 0, result.stderr
    whole, merged = tmp_path / f"whole{suffix}", tmp_path / f"merged{suffix}"
    result = invoke("compute", SAMPLES, "-o", whole, *FAST, "--workers", 2, "--quiet")
    assert result.exit_code == 0, result.stderr
    result = invoke("merge", *parts, "-o", merged)
    assert result.exit_code == 0, result.stderr
    assert merged.read_bytes() == whole.read_bytes()


def test_merge_parquet_parts_by_the_record_in_their_metadata(shards, tmp_path):
    parts = [tmp_path / f"part{i}.parquet" for i in range(3)]
    for i, part in enumerate(parts):
        result = invoke("compute", SAMPLES, "-o", part, "--shard", f"{i}/3", *FAST, "--workers",
                        1, "--quiet")  # fmt: skip
        assert result.exit_code == 0, result.stderr
        os.unlink(f"{part}.meta.json")  # the record inside the Parquet file is enough
    out = tmp_path / "merged.csv"
    result = invoke("merge", parts[1], parts[2], parts[0], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == (shards / "whole.csv").read_bytes()


def test_merge_to_stdout(shards):
    result = invoke("merge", *_parts(shards, (1, 2, 0)), "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (shards / "whole.csv").read_bytes()


def test_merge_csv_parts_into_one_parquet_file(shards, tmp_path):
    out = tmp_path / "merged.parquet"
    result = invoke("merge", *_parts(shards, (2, 1, 0)), "-o", out)
    assert result.exit_code == 0, result.stderr
    got = pq.read_table(out).to_pandas()
    want = _csv_frame(shards / "whole.csv")
    assert list(got.columns) == list(want.columns)
    assert got["path"].tolist() == want["path"].tolist() == IMAGES
    np.testing.assert_array_equal(got.iloc[:, 4:].to_numpy(), want.iloc[:, 4:].to_numpy())
    assert str(pq.read_schema(out).field("width").type) == "int32"
    record = json.loads(pq.read_metadata(out).metadata[b"soartc"])
    assert record["output"]["format"] == "parquet"
    assert record["counts"]["processed"] == 12


def test_merge_refuses_a_duplicate_a_missing_shard_unless_allowed(shards, tmp_path):
    out = tmp_path / "m.csv"
    parts = _parts(shards)
    result = invoke("merge", parts[0], parts[1], parts[1], "-o", out)
    assert result.exit_code == 2
    assert "shard 1/3 is given twice" in result.stderr
    result = invoke("merge", parts[2], parts[0], "-o", out)
    assert result.exit_code == 2
    assert "shard 1/3 missing" in result.stderr
    assert not out.exists()
    result = invoke("merge", parts[2], parts[0], "-o", out, "--allow-missing")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert record["missing_shards"] == ["1/3"]
    whole = (shards / "whole.csv").read_text().splitlines(keepends=True)
    body = [parts[0].read_text().splitlines(keepends=True), parts[2].read_text().splitlines(True)]
    assert out.read_text() == whole[0] + "".join(body[0][1:] + body[1][1:])


def test_merge_refuses_parts_of_other_settings_or_without_a_record(shards, tmp_path):
    other = tmp_path / "other1.csv"
    result = invoke("compute", SAMPLES, "-o", other, "--shard", "1/3", "--metrics", "rt", *FAST,
                    "--workers", 1, "--quiet")  # fmt: skip
    assert result.exit_code == 0
    parts = _parts(shards)
    result = invoke("merge", parts[0], other, parts[2], "-o", tmp_path / "m.csv")
    assert result.exit_code == 2
    assert "was made with other settings" in result.stderr
    bare = tmp_path / "bare.csv"
    shutil.copyfile(parts[1], bare)
    result = invoke("merge", parts[0], bare, parts[2], "-o", tmp_path / "m.csv")
    assert result.exit_code == 2
    assert "has no run record" in result.stderr
    assert not (tmp_path / "m.csv").exists()


# --- full disks, output and record together -------------------------------------------------------


def test_a_full_device_is_one_error_line_and_exit_1(tmp_path):
    for device in ("/dev/full", char_device(tmp_path / "full", 7)):
        assert stat.S_ISCHR(os.stat(device).st_mode), f"{device} is not a character device"
        proc = soartc("compute", SAMPLES, "-o", device, *FAST, "--workers", 2, "--quiet")
        assert proc.returncode == 1
        assert proc.stderr.decode() == f"soartc: error: no space left on device writing {device}\n"


def _enospc(*args):
    raise OSError(28, "No space left on device")


def test_a_full_disk_on_a_regular_file_commits_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    real_write = targets._Guarded.write
    written = []

    def write(self, data):
        written.append(len(data))
        if len(written) > 3:  # the header and a few rows went through
            raise targets.write_error(OSError(28, "No space left on device"), self.name)
        return real_write(self, data)

    monkeypatch.setattr(targets._Guarded, "write", write)
    result = invoke("compute", SAMPLES, "-o", out, *FAST, "--workers", 1)
    assert result.exit_code == 1
    assert result.stderr.endswith(f"soartc: error: no space left on device writing {out}\n")
    assert "Traceback" not in result.stderr
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]  # no .part, no record


def test_a_record_that_fails_leaves_the_output_uncommitted(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    real_write = targets.AtomicFile.write

    def write(self, data):
        if self.path.endswith(".meta.json"):
            raise targets.write_error(OSError(28, "No space left on device"), self.path)
        return real_write(self, data)

    monkeypatch.setattr(targets.AtomicFile, "write", write)
    result = invoke("compute", SAMPLES, "-o", out, *FAST, "--workers", 1, "--quiet")
    assert result.exit_code == 1
    assert result.stderr == f"soartc: error: no space left on device writing {out}.meta.json\n"
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# --- outputs never overwrite inputs ---------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inp"
    folder.mkdir()
    shutil.copyfile(SAMPLES / "coins.png", folder / "a.png")
    shutil.copyfile(SAMPLES / "rocket.jpg", folder / "a.jpg")  # its picture would be a.png
    return folder


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_outputs_never_overwrite_inputs(inputs, tmp_path):
    before = _snapshot(inputs)
    link = tmp_path / "out.csv"
    link.symlink_to(inputs / "a.png")
    hard = tmp_path / "hard.csv"
    os.link(inputs / "a.jpg", hard)
    cases = [
        (("-o", inputs / "a.png"), ""),  # (no image suffix is an output format either)
        (("-o", link), "is one of the input images: refusing to overwrite it"),
        (("-o", hard), "is one of the input images: refusing to overwrite it"),
        (("-o", "-", "--record", inputs / "a.png"), "is one of the input images"),
        (("-o", tmp_path / "r.csv", "--maps", inputs), "would replace the input image"),
    ]
    for args, message in cases:
        result = invoke("compute", inputs, *args, *FAST, "--workers", 1)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr
        assert "skipped" not in result.stderr
        assert result.stdout == ""  # before any work: not even a header
        assert _snapshot(inputs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.csv", "inp", "out.csv"]


# --- runner.py bugs found here (runner.py is not this branch's to edit) ---------------------------


def test_a_record_on_the_output_itself_is_refused(tmp_path):
    out = tmp_path / "out.csv"
    result = invoke("compute", SAMPLES, "-o", out, "--record", out, *FAST, "--workers", 1)
    assert result.exit_code == 2
    assert "skipped" not in result.stderr and not out.exists()


def test_resume_into_a_device_is_refused(tmp_path):
    null = char_device(tmp_path / "null", 3)
    result = invoke("compute", SAMPLES, "-o", null, "--resume", *FAST, "--workers", 1)
    assert result.exit_code == 2
    assert "--resume needs -o FILE" in result.stderr


def test_a_shard_never_overwrites_an_input_of_another_shard(inputs, tmp_path):
    before = _snapshot(inputs)
    result = invoke("compute", inputs, "--shard", "0/2", "--maps", inputs, "-o",
                    tmp_path / "part.csv", *FAST, "--workers", 1)  # fmt: skip
    assert _snapshot(inputs) == before
    assert result.exit_code == 2
    assert "would replace the input image" in result.stderr


def _read_journal(path):
    """Every complete frame of a journal and the byte length they take."""
    path = str(path)
    return list(iter_journal(path)), journal_length(path)
