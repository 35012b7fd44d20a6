"""Output writers: CSV layouts and quoting, JSON Lines, atomic files, shard merging."""

import csv
import io
import json
import os

import numpy as np
import pytest

from soartc_cli import writers
from soartc_cli.errors import UsageError

LUMA = writers.Columns(None, ("bend1", "rot90"), ("beta", "delta", "distance"))
RGB = writers.Columns(("R", "G", "B"), ("bend1",), ("beta", "vol"))
NAMES = ["r00c00", "r00c01", "r01c00", "r01c01"]


def _values(columns, n=4, seed=0):
    c = 1 if columns.channels is None else len(columns.channels)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((c, len(columns.transforms), len(columns.metrics), n))


def _format(layout, columns, values, *, path="a/b.png", label="a", precision=7, kind="csv"):
    fmt = writers.OutputFormat(kind, layout, precision)
    head = writers.header(fmt, columns, NAMES)
    body = writers.format_image(
        fmt, columns, path=path, label=label, width=640, height=480, grid=(2, 2), names=NAMES,
        values=values,
    )  # fmt: skip
    return head + body.decode("utf-8")


def test_wide_header_order_is_transform_metric_patch():
    head = writers.header(writers.OutputFormat(), LUMA, NAMES).rstrip("\n").split(",")
    assert head[:4] == ["path", "label", "width", "height"]
    assert head[4:8] == [f"bend1.beta.{n}" for n in NAMES]
    assert head[8] == "bend1.delta.r00c00"
    assert head[16] == "rot90.beta.r00c00"
    assert len(head) == 4 + 2 * 3 * 4


def test_wide_header_with_channels_puts_the_channel_outermost():
    head = writers.header(writers.OutputFormat(), RGB, NAMES).rstrip("\n").split(",")
    assert head[4] == "R.bend1.beta.r00c00"
    assert head[4 + 8] == "G.bend1.beta.r00c00"
    assert head[-1] == "B.bend1.vol.r01c01"


@pytest.mark.parametrize(
    ("columns", "want"),
    [
        (LUMA, "path,label,patch,row,col,transform,beta,delta,distance"),
        (RGB, "path,label,channel,patch,row,col,transform,beta,vol"),
    ],
)
def test_long_header(columns, want):
    assert writers.header(writers.OutputFormat("csv", "long"), columns, NAMES) == want + "\n"


def test_summary_header():
    head = writers.header(writers.OutputFormat("csv", "summary"), RGB, NAMES)
    assert head == (
        "path,label,channel,transform,beta_mean,beta_std,beta_min,beta_max,"
        "vol_mean,vol_std,vol_min,vol_max\n"
    )


def test_wide_row_parses_back_to_the_values():
    values = _values(LUMA)
    rows = list(csv.reader(io.StringIO(_format("wide", LUMA, values, precision=17))))
    assert len(rows) == 2
    assert rows[1][:4] == ["a/b.png", "a", "640", "480"]
    np.testing.assert_array_equal(np.array(rows[1][4:], dtype=float), values.ravel())


def test_precision_is_significant_digits():
    values = np.full((1, 2, 3, 4), 1 / 3)
    rows = list(csv.reader(io.StringIO(_format("wide", LUMA, values, precision=3))))
    assert set(rows[1][4:]) == {"0.333"}


def test_long_rows_cover_every_patch_and_transform():
    values = _values(RGB)
    rows = list(csv.DictReader(io.StringIO(_format("long", RGB, values, precision=17))))
    assert len(rows) == 3 * 4 * 1
    for r in rows:
        c = "RGB".index(r["channel"])
        n = NAMES.index(r["patch"])
        assert (int(r["row"]), int(r["col"])) == divmod(n, 2)
        assert float(r["beta"]) == values[c, 0, 0, n]
        assert float(r["vol"]) == values[c, 0, 1, n]
    assert [r["patch"] for r in rows[:4]] == NAMES  # channel outermost, then patch


def test_summary_rows_hold_population_statistics():
    values = _values(LUMA)
    rows = list(csv.DictReader(io.StringIO(_format("summary", LUMA, values, precision=17))))
    assert [r["transform"] for r in rows] == ["bend1", "rot90"]
    for t, r in enumerate(rows):
        for m, metric in enumerate(LUMA.metrics):
            v = values[0, t, m]
            assert float(r[f"{metric}_mean"]) == pytest.approx(v.mean(), rel=1e-15)
            assert float(r[f"{metric}_std"]) == pytest.approx(v.std(ddof=0), rel=1e-15)
            assert float(r[f"{metric}_min"]) == v.min()
            assert float(r[f"{metric}_max"]) == v.max()


AWKWARD = [
    "a,b.png",
    'say "hi".png',
    "two\nlines.png",
    "写真/猫.jpg",
    "=SUM(A1).png",
    "bad\\xff.png",
    "-minus.png",
]


@pytest.mark.parametrize("layout", ["wide", "long", "summary"])
@pytest.mark.parametrize("path", AWKWARD)
def test_awkward_names_round_trip_through_csv(layout, path):
    values = _values(LUMA)
    text = _format(layout, LUMA, values, path=path, label=path.split("/")[0])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert all(r[0] == path for r in rows[1:])
    assert all(r[1] == path.split("/")[0] for r in rows[1:])
    assert "\r" not in text


def test_formula_like_fields_are_quoted():
    assert writers.csv_field("=1+1") == '"=1+1"'
    assert writers.csv_field('a"b') == '"a""b"'
    assert writers.csv_field("plain.png") == "plain.png"


def test_json_line_has_the_wide_content_and_nulls_for_non_finite():
    values = _values(LUMA)
    values[0, 0, 0, 0] = np.nan
    values[0, 1, 2, 3] = np.inf
    line = _format("wide", LUMA, values, kind="jsonl", path='x "y"\n.png', precision=17)
    obj = json.loads(line)
    assert list(obj)[:4] == ["path", "label", "width", "height"]
    assert obj["path"] == 'x "y"\n.png'
    assert obj["bend1.beta.r00c00"] is None
    assert obj["rot90.distance.r01c01"] is None
    assert obj["bend1.delta.r00c01"] == values[0, 0, 1, 1]
    assert len(obj) == 4 + values.size
    assert line.count("\n") == 1


def test_output_format_choices():
    assert writers.output_format("x.jsonl").kind == "jsonl"
    assert writers.output_format("x.CSV").kind == "csv"
    assert writers.output_format("-").kind == "csv"
    with pytest.raises(UsageError, match="--layout must be one of wide, long, summary"):
        writers.output_format(None, layout="tall")
    with pytest.raises(UsageError, match="--precision must be between 1 and 17"):
        writers.output_format(None, precision=0)
    with pytest.raises(UsageError, match="for CSV output"):
        writers.output_format("x.jsonl", layout="long")
    with pytest.raises(UsageError, match="does not exist"):
        writers.output_format("/no/such/dir/x.csv")


def test_atomic_file_appears_only_on_commit(tmp_path):
    target = tmp_path / "out.csv"
    f = writers.AtomicFile(target)
    f.write("partial")
    assert not target.exists()
    assert len(list(tmp_path.iterdir())) == 1  # the temporary file, in the same directory
    f.commit()
    assert target.read_text() == "partial"
    assert list(tmp_path.iterdir()) == [target]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_file_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), writers.AtomicFile(target) as f:
        f.write("new")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def _part(tmp_path, name, body, *, header="path,v\n", found=2, failures=()):
    path = tmp_path / name
    path.write_text(header + body)
    record = {
        "settings": {"size": 224},
        "command": ["soartc", name],
        "counts": {"found": found, "processed": found - len(failures), "failed": len(failures)},
        "failures": [{"path": f, "error": "bad"} for f in failures],
        "started": f"2026-01-0{found}",
        "finished": f"2026-02-0{found}",
    }
    (tmp_path / (name + ".meta.json")).write_text(json.dumps(record))
    return str(path)


def test_merge_joins_csv_parts_and_their_records(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\ny,2\n", found=2)
    b = _part(tmp_path, "b.csv", "z,3\n", found=3, failures=["q.png"])
    out = tmp_path / "all.csv"
    writers.merge_outputs([a, b], str(out), command=["soartc", "merge"])
    assert out.read_text() == "path,v\nx,1\ny,2\nz,3\n"
    record = json.loads((tmp_path / "all.csv.meta.json").read_text())
    assert record["counts"] == {"found": 5, "processed": 4, "failed": 1}
    assert record["failures"] == [{"path": "q.png", "error": "bad"}]
    assert record["started"] == "2026-01-02"
    assert record["finished"] == "2026-02-03"
    assert [m["file"] for m in record["merged_from"]] == [a, b]


def test_merge_refuses_different_headers_and_missing_parts(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\n")
    b = _part(tmp_path, "b.csv", "x,1,2\n", header="path,v,w\n")
    with pytest.raises(UsageError, match="different headers"):
        writers.merge_outputs([a, b], str(tmp_path / "all.csv"), command=[])
    with pytest.raises(UsageError, match="does not end like the parts"):
        writers.merge_outputs([a], str(tmp_path / "all.jsonl"), command=[])
    with pytest.raises(UsageError, match="no such file"):
        writers.merge_outputs(
            [a, str(tmp_path / "nope.csv")], str(tmp_path / "all.csv"), command=[]
        )
    assert not (tmp_path / "all.csv").exists()


def _plain(fmt, columns, values, *, path, label):
    """The layouts written value by value with ``%``: the oracle of the template-based writer."""
    num = f"%.{fmt.precision}g"
    head = f"{writers.csv_field(path)},{writers.csv_field(label)}"
    channels = columns.channels or [None]
    if fmt.kind == "jsonl":
        keys = writers.wide_columns(columns, NAMES)
        texts = [num % x if np.isfinite(x) else "null" for x in values.ravel().tolist()]
        obj = json.dumps({"path": path, "label": label, "width": 640, "height": 480})
        body = ", ".join(f'"{k}": {t}' for k, t in zip(keys, texts, strict=True))
        return obj[:-1] + ", " + body + "}\n"
    if fmt.layout == "wide":
        return f"{head},640,480" + "".join("," + num % x for x in values.ravel().tolist()) + "\n"
    lines = []
    for c, channel in enumerate(channels):
        lead = head if channel is None else f"{head},{channel}"
        for n, name in enumerate(NAMES):
            for t, transform in enumerate(columns.transforms):
                numbers = "".join(
                    "," + num % values[c, t, m, n] for m in range(len(columns.metrics))
                )
                lines.append(f"{lead},{name},{n // 2},{n % 2},{transform}{numbers}\n")
    return "".join(lines)


@pytest.mark.parametrize(("kind", "layout"), [("csv", "wide"), ("csv", "long"), ("jsonl", "wide")])
@pytest.mark.parametrize("columns", [LUMA, RGB], ids=["luma", "rgb"])
@pytest.mark.parametrize("precision", [3, 7, 12])
def test_rows_match_value_by_value_formatting(kind, layout, columns, precision):
    values = _values(columns, seed=precision)
    values *= 10.0 ** np.random.default_rng(precision).integers(
        -8, 8, values.shape
    )  # every notation
    values.reshape(-1)[[0, 5, 7]] = [np.nan, -np.inf, -0.0]
    fmt = writers.OutputFormat(kind, layout, precision)
    path, label = 'odd,"name" 100%.png', "%s"
    got = writers.format_image(
        fmt, columns, path=path, label=label, width=640, height=480, grid=(2, 2), names=NAMES,
        values=values,
    )  # fmt: skip
    assert got.decode("utf-8") == _plain(fmt, columns, values, path=path, label=label)
