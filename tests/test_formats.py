"""Formats (SPEC §6): chosen by the suffix of -o; JSON Lines content; Parquet types and values."""

import gzip
import io
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soartc_cli.errors import UsageError
from soartc_cli.output import formats
from soartc_cli.output.targets import check_output_path
from tests import photoruns
from tests.outhelp import LUMA, NAMES, RGB, char_device, encode, spec_of, text, values_of, write


def test_output_format_choices():
    assert formats.choose_format("x.jsonl").format.name == "jsonl"
    assert formats.choose_format("x.ndjson").format.name == "jsonl"
    assert formats.choose_format("x.CSV").format.name == "csv"
    assert formats.choose_format("-").format.name == "csv"
    assert formats.choose_format(None).format.name == "csv"
    assert formats.choose_format("x.parquet").format.name == "parquet"
    gz = formats.choose_format("d/x.csv.gz")
    assert (gz.format.name, gz.compression) == ("csv", "gzip")
    assert formats.choose_format("x.JSONL.GZ").compression == "gzip"
    assert formats.choose_format("x.csv").compression is None
    with pytest.raises(UsageError, match="--layout must be one of wide, long, summary, pooled"):
        formats.choose_format(None, layout="tall")
    for precision in (0, 18):
        with pytest.raises(UsageError, match="--precision must be between 1 and 17"):
            formats.choose_format(None, precision=precision)
    for layout in ("long", "summary"):
        with pytest.raises(UsageError, match=f"--layout {layout} writes several rows per image"):
            formats.choose_format("x.jsonl", layout=layout)
    assert formats.choose_format("x.jsonl", layout="pooled").layout.name == "pooled"
    with pytest.raises(UsageError, match="does not exist"):
        check_output_path("/no/such/dir/x.csv")


@pytest.mark.parametrize(
    "name", ["out.txt", "out.json", "out.tsv", "out", "out.gz", "out.parquet.gz"]
)
def test_unknown_suffix_is_refused_listing_the_known_ones(tmp_path, name):
    with pytest.raises(UsageError) as info:
        formats.choose_format(str(tmp_path / name))
    message = str(info.value)
    assert "cannot tell the format" in message
    for suffix in (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".parquet"):
        assert suffix in message.split("known: ")[1]
    assert ".parquet.gz" not in message.split("known: ")[1]


def test_a_device_or_pipe_without_a_suffix_is_csv(tmp_path):
    assert formats.choose_format(char_device(tmp_path / "null", 3)).format.name == "csv"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert formats.choose_format(str(fifo)).format.name == "csv"
    named = tmp_path / "rows.json"  # an unknown suffix stays refused, whatever the file is
    os.mkfifo(named)
    with pytest.raises(UsageError, match="cannot tell the format"):
        formats.choose_format(str(named))
    gz = tmp_path / "rows.gz"
    os.mkfifo(gz)
    chosen = formats.choose_format(str(gz))
    assert (chosen.format.name, chosen.compression) == ("csv", "gzip")


def test_describe_is_the_output_part_of_the_record():
    assert spec_of("wide").describe() == {"format": "csv", "layout": "wide", "precision": 7}
    pooled = spec_of("pooled", "jsonl", 5, pool=("p95",), compression="gzip")
    assert pooled.describe() == {"format": "jsonl", "layout": "pooled", "pool": ["p95"],
                                 "precision": 5, "compression": "gzip"}  # fmt: skip
    assert spec_of("long", "parquet").describe() == {"format": "parquet", "layout": "long"}


def test_json_line_has_the_wide_content_and_nulls_for_non_finite():
    values = values_of(LUMA)
    values[0, 0, 0, 0] = np.nan
    values[0, 1, 2, 3] = np.inf
    line = text("wide", LUMA, values, kind="jsonl", path='x "y"\n.png', precision=17)
    obj = json.loads(line)
    assert list(obj)[:4] == ["path", "label", "width", "height"]
    assert obj["path"] == 'x "y"\n.png'
    assert obj["bend1.beta.r00c00"] is None
    assert obj["rot90.distance.r01c01"] is None
    assert obj["bend1.delta.r00c01"] == values[0, 0, 1, 1]
    assert len(obj) == 4 + values.size
    assert line.count("\n") == 1


def test_json_lines_have_no_header_and_one_line_per_image():
    values = values_of(RGB)
    spec = spec_of("pooled", "jsonl", 17)
    out = write(spec, RGB, [(values, "a.png", "x"), (values * 2, "b.png", "y")]).decode()
    lines = out.splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["a.png", "b.png"]
    assert json.loads(lines[1])["G.bend1.vol.max"] == (values[1, 0, 1] * 2).max()


# --- Parquet -----------------------------------------------------------------------------------

# pyarrow comes with the test extra (soartc[test] installs soartc[parquet]).


def _parquet(tmp_path, layout, columns, images, *, record=None, name="out.parquet"):
    path = tmp_path / name
    path.write_bytes(write(spec_of(layout, "parquet"), columns, images, record=record))
    return pq.read_table(path), path


@pytest.mark.parametrize("layout", ["wide", "long", "summary", "pooled"])
@pytest.mark.parametrize("columns", [LUMA, RGB], ids=["luma", "rgb"])
def test_parquet_has_the_csv_columns_typed_and_unrounded(tmp_path, layout, columns):
    values = values_of(columns, seed=11) * 1e-3
    images = [(values, "a/1.png", "a"), (values + 1 / 3, "b/2.png", "b")]
    table, _ = _parquet(tmp_path, layout, columns, images, record={"tool": "soartc"})
    csv_header = text(layout, columns, values).split("\n")[0].split(",")
    assert table.column_names == csv_header
    kinds = {f.name: f.type for f in table.schema}
    for name in table.column_names:
        if name in ("width", "height", "row", "col"):
            assert kinds[name] == pa.int32(), name
        elif name in ("path", "label", "channel", "patch", "transform"):
            assert kinds[name] == pa.string(), name
        else:
            assert kinds[name] == pa.float64(), name
    # The numbers equal the layout's float64 numbers exactly (CSV at 17 digits parses to them).
    csv_rows = []
    for v, path, label in images:
        csv_rows += text(layout, columns, v, path=path, label=label, precision=17).split("\n")[1:-1]
    numbers = np.array([row.split(",")[-len(kinds) + len(_keys(table)) :] for row in csv_rows],
                       dtype=float)  # fmt: skip
    got = np.column_stack([table.column(n).to_numpy() for n in table.column_names
                           if kinds[n] == pa.float64()])  # fmt: skip
    np.testing.assert_array_equal(got, numbers)
    assert table.column("path").to_pylist()[0] == "a/1.png"
    assert table.column("label").to_pylist()[-1] == "b"


def _keys(table):
    return [f.name for f in table.schema if f.type != pa.float64()]


def test_parquet_keeps_the_run_record_in_its_metadata(tmp_path):
    record = {"tool": "soartc", "counts": {"found": 1}, "kernel": [[1, 2], [3, 4]]}
    table, path = _parquet(tmp_path, "wide", LUMA, [(values_of(LUMA), "a.png", "a")],
                           record=record)  # fmt: skip
    meta = pq.read_metadata(path).metadata  # the file's key-value metadata
    assert json.loads(meta[b"soartc"]) == record
    assert table.num_rows == 1


def test_parquet_row_groups_are_written_as_the_run_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "ROW_GROUP_ROWS", 10)
    values = values_of(RGB)
    images = [(values * i, f"{i}.png", "x") for i in range(7)]  # 12 long rows each
    table, path = _parquet(tmp_path, "long", RGB, images)
    assert pq.ParquetFile(path).metadata.num_row_groups == 7
    assert table.num_rows == 7 * 12
    assert table.column("path").to_pylist()[12 * 3] == "3.png"
    assert table.column("vol").to_pylist()[-1] == (values * 6)[2, 0, 1, 3]


def test_parquet_with_no_image_is_a_file_with_the_columns(tmp_path):
    spec = spec_of("pooled", "parquet")
    path = tmp_path / "empty.parquet"
    stream = io.BytesIO()
    sink = spec.format.sink(stream, spec, LUMA)
    sink.begin(NAMES)
    sink.close({"tool": "soartc"})
    path.write_bytes(stream.getvalue())
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.column_names[:5] == ["path", "label", "width", "height", "bend1.beta.mean"]


def test_parquet_payload_is_keys_and_numbers():
    spec = spec_of("wide", "parquet")
    keys, numbers = encode(spec, LUMA, values_of(LUMA))
    assert keys == {"path": ["a/b.png"], "label": ["a"], "width": [640], "height": [480]}
    np.testing.assert_array_equal(numbers, values_of(LUMA).ravel())


def test_parquet_without_pyarrow_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UsageError, match=r"pip install 'soartc\[parquet\]'"):
        formats.choose_format("x.parquet")


# --- moved from test_issue9_outputs.py ----------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_gzip_output_decompresses_to_exactly_the_plain_file(tmp_path, suffix):
    plain = tmp_path / f"out{suffix}"
    runs = [plain, tmp_path / f"a{suffix}.gz", tmp_path / f"b{suffix}.gz"]
    for out in runs:
        result = photoruns.invoke(
            "compute", photoruns.SAMPLES, "-o", out, *photoruns.FAST, "--workers", 1, "--quiet"
        )
        assert result.exit_code == 0, result.stderr
    first, second = runs[1].read_bytes(), runs[2].read_bytes()
    assert first[:2] == b"\x1f\x8b"
    assert gzip.decompress(first) == plain.read_bytes()
    assert first == second  # mtime 0, no file name: two runs give the same bytes
    record = json.loads(runs[1].with_name(runs[1].name + ".meta.json").read_text())
    assert record["output"]["compression"] == "gzip"


@pytest.mark.parametrize(
    ("layout", "extra"),
    [
        ("wide", ()),
        ("long", ("--channels", "rgb")),
        ("summary", ("--channels", "rgb", "--transforms", "all")),
        ("pooled", ("--pool", ",".join(photoruns.STATS))),
    ],
)
def test_parquet_values_equal_the_unrounded_features(tmp_path, layout, extra):
    text, parquet = tmp_path / "p17.csv", tmp_path / "out.parquet"
    for out, more in ((text, ("--precision", 17)), (parquet, ())):
        result = photoruns.invoke(
            "compute",
            photoruns.SAMPLES,
            "-o",
            out,
            *photoruns.FAST,
            "--layout",
            layout,
            *extra,
            *more,
            "--workers",
            1,
            "--quiet",
        )
        assert result.exit_code == 0, result.stderr
    want = photoruns._csv_frame(text)
    table = pq.read_table(parquet)
    got = table.to_pandas()
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) > 0
    for field in table.schema:
        if field.name in photoruns.INTS:
            assert str(field.type) == "int32", field.name
            assert got[field.name].tolist() == want[field.name].tolist()
        elif field.name in photoruns.TEXTS:
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
        result = photoruns.invoke(
            "compute",
            photoruns.SAMPLES,
            "-o",
            out,
            *photoruns.FAST,
            "--channels",
            "rgb",
            "--layout",
            layout,
            "--pool",
            ",".join(photoruns.STATS),
            "--precision",
            17,
            "--workers",
            1,
            "--quiet",
        )
        assert result.exit_code == 0, result.stderr
    rows = photoruns._csv_frame(long)
    metrics = list(rows.columns[7:])
    pooled_rows = photoruns._csv_frame(pooled).set_index("path")
    numpy = {
        "mean": np.mean,
        "std": lambda v: np.std(v, ddof=0),
        "min": np.min,
        "max": np.max,
        "median": np.median,
        "p05": lambda v: np.percentile(v, 5, method="linear"),
        "p95": lambda v: np.percentile(v, 95, method="linear"),
    }
    checked = 0
    for (path, channel, transform), group in rows.groupby(["path", "channel", "transform"]):
        for metric in metrics:
            values = group[metric].to_numpy()
            assert len(values) == 16
            for name in photoruns.STATS:
                got = pooled_rows.loc[path, f"{channel}.{transform}.{metric}.{name}"]
                assert got == numpy[name](values), (path, name)
                checked += 1
    assert checked == 12 * 3 * 6 * 3 * len(photoruns.STATS)


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
    result = photoruns.invoke("compute", photoruns.SAMPLES, *args, *photoruns.FAST, "--workers", 1)
    assert result.exit_code == 2
    assert result.stderr.startswith("soartc: error: ")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
