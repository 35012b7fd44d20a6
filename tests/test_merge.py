"""merge (SPEC §8): shard parts joined in shard order with their records; what it refuses."""

import gzip
import json
import os
import random
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from soartc_cli.errors import UsageError
from soartc_cli.output.merge import merge_outputs
from tests import photoruns

OUTPUT = {"format": "csv", "layout": "wide", "precision": 7}


def _part(tmp_path, name, body, *, index, count=2, header="path,v\n", found=None, failures=(),
          output=None, settings=None):  # fmt: skip
    """A part and its record; ``found`` defaults to its rows and failures (as a run writes)."""
    if found is None:
        found = len(body.splitlines()) + len(failures)
    path = tmp_path / name
    data = (header + body).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    record = {
        "settings": settings or {"size": 224},
        "output": {**OUTPUT, **(output or {})},
        "command": ["soartc", name],
        "counts": {"found": found, "processed": found - len(failures), "failed": len(failures)},
        "failures": [{"path": f, "error": "bad"} for f in failures],
        "started": f"2026-01-0{found}",
        "finished": f"2026-02-0{found}",
        "shard": {"index": index, "count": count, "files": 5},
    }
    (tmp_path / (name + ".meta.json")).write_text(json.dumps(record))
    return str(path)


def test_merge_joins_csv_parts_and_their_records_in_shard_order(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\ny,2\n", index=0, found=2)
    b = _part(tmp_path, "b.csv", "z,3\nw,4\n", index=1, found=3, failures=["q.png"])
    out = tmp_path / "all.csv"
    merge_outputs([b, a], str(out), command=["soartc", "merge"])
    assert out.read_text() == "path,v\nx,1\ny,2\nz,3\nw,4\n"
    record = json.loads((tmp_path / "all.csv.meta.json").read_text())
    assert record["counts"] == {"found": 5, "processed": 4, "failed": 1}
    assert record["failures"] == [{"path": "q.png", "error": "bad"}]
    assert record["started"] == "2026-01-02"
    assert record["finished"] == "2026-02-03"
    assert [m["file"] for m in record["merged_from"]] == [a, b]
    assert record["command"] == ["soartc", "merge"]
    assert record["output"]["file"] == str(out)


def test_merge_joins_gzip_parts_into_plain_csv(tmp_path):
    a = _part(tmp_path, "a.csv.gz", "x,1\n", index=0)
    b = _part(tmp_path, "b.csv", "y,2\n", index=1)
    out = tmp_path / "all.csv"
    merge_outputs([a, b], str(out), command=[])
    assert out.read_text() == "path,v\nx,1\ny,2\n"


def test_merge_refuses_other_columns_and_missing_parts(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\n", index=0)
    b = _part(tmp_path, "b.csv", "x,1,2\n", index=1, header="path,v,w\n")
    with pytest.raises(UsageError, match=r"b\.csv has other columns than"):
        merge_outputs([a, b], str(tmp_path / "all.csv"), command=[])
    with pytest.raises(UsageError, match="no such file"):
        merge_outputs([a, str(tmp_path / "nope.csv")], str(tmp_path / "all.csv"), command=[])
    with pytest.raises(UsageError, match="at least one part"):
        merge_outputs([], str(tmp_path / "all.csv"), command=[])
    assert not (tmp_path / "all.csv").exists()


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"output": {"precision": 3}}, "b.csv was made with --precision 3, .*a.csv with 7"),
        ({"output": {"layout": "long"}}, "b.csv has another layout"),
        ({"settings": {"size": 112}}, "b.csv was made with other settings"),
        ({"count": 3}, r"different shard counts \[2, 3\]"),
    ],
)
def test_merge_refuses_parts_of_other_runs(tmp_path, second, message):
    a = _part(tmp_path, "a.csv", "x,1\n", index=0)
    b = _part(tmp_path, "b.csv", "y,2\n", index=1, **second)
    with pytest.raises(UsageError, match=message):
        merge_outputs([a, b], str(tmp_path / "all.csv"), command=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.csv", "a.csv.meta.json", "b.csv", "b.csv.meta.json"
    ]  # fmt: skip


def test_merge_refuses_pooled_parts_of_other_statistics(tmp_path):
    pooled = {"layout": "pooled", "pool": ["mean"]}
    a = _part(tmp_path, "a.csv", "x,1\n", index=0, output=pooled, header="path,t.m.mean\n")
    b = _part(tmp_path, "b.csv", "y,2\n", index=1, output={**pooled, "pool": ["max"]},
              header="path,t.m.max\n")  # fmt: skip
    with pytest.raises(UsageError, match=r"b\.csv was made with --pool max, .*a\.csv with mean"):
        merge_outputs([a, b], str(tmp_path / "all.csv"), command=[])


def test_merge_refuses_a_part_that_is_not_a_shard(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\n", index=0)
    record = json.loads((tmp_path / "a.csv.meta.json").read_text())
    del record["shard"]
    (tmp_path / "a.csv.meta.json").write_text(json.dumps(record))
    with pytest.raises(UsageError, match="is not a shard"):
        merge_outputs([a], str(tmp_path / "all.csv"), command=[])


def test_merge_of_long_parts_into_json_lines_is_refused(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\n", index=0, count=1, output={"layout": "long"})
    with pytest.raises(UsageError, match="cannot be joined into JSON Lines"):
        merge_outputs([a], str(tmp_path / "all.jsonl"), command=[])


def test_merge_of_json_lines_parts_with_an_empty_shard(tmp_path):
    # A shard whose slice held no usable image leaves an empty JSON Lines file: no names in it.
    jsonl = {"format": "jsonl"}
    empty = _part(tmp_path, "a.jsonl", "", header="", index=0, count=3, output=jsonl)
    lines = '{"path": "x.png", "v": 1.5}\n{"path": "y.png", "v": null}\n'
    full = _part(tmp_path, "b.jsonl", lines, header="", index=1, count=3, output=jsonl)
    last = _part(tmp_path, "c.jsonl", '{"path": "z.png", "v": 3}\n', header="", index=2,
                 count=3, output=jsonl)  # fmt: skip
    out = tmp_path / "all.csv"
    merge_outputs([empty, full, last], str(out), command=[])
    assert out.read_text() == "path,v\nx.png,1.5\ny.png,nan\nz.png,3\n"
    merge_outputs([last, full, empty], str(tmp_path / "all.jsonl"), command=[])
    assert (tmp_path / "all.jsonl").read_text() == lines + '{"path": "z.png", "v": 3}\n'


def test_merge_never_replaces_a_part(tmp_path):
    a = _part(tmp_path, "a.csv", "x,1\n", index=0)
    b = _part(tmp_path, "b.csv", "y,2\n", index=1)
    link = tmp_path / "link.csv"
    link.symlink_to("b.csv")
    hard = tmp_path / "hard.csv"
    hard.hardlink_to(a)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for out in (a, str(link), str(hard)):
        with pytest.raises(UsageError, match=r"would replace .*, one of the parts"):
            merge_outputs([a, b], out, command=[])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_joined_record_names_the_joined_file_s_compression(tmp_path):
    gz = {"compression": "gzip"}
    a = _part(tmp_path, "a.csv.gz", "x,1\n", index=0, output=gz)
    b = _part(tmp_path, "b.csv.gz", "y,2\n", index=1, output=gz)
    merged = merge_outputs([a, b], str(tmp_path / "all.csv"), command=[])
    assert "compression" not in merged["output"]
    merged = merge_outputs([a, b], str(tmp_path / "all.jsonl.gz"), command=[])
    assert merged["output"]["compression"] == "gzip"
    assert merged["output"]["format"] == "jsonl"
    assert json.loads((tmp_path / "all.jsonl.gz.meta.json").read_text()) == merged


# --- moved from test_issue9_outputs.py ----------------------------------------


def test_merge_in_any_order_is_byte_identical_to_the_single_run(shards, tmp_path):
    order = [0, 1, 2]
    random.Random(9).shuffle(order)
    order = order if order != [0, 1, 2] else [2, 0, 1]
    out = tmp_path / "merged.csv"
    result = photoruns.invoke("merge", *photoruns._parts(shards, order), "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == (shards / "whole.csv").read_bytes()
    record = json.loads((tmp_path / "merged.csv.meta.json").read_text())
    assert record["counts"] == {"found": 12, "processed": 12, "failed": 0}
    assert [m["shard"]["index"] for m in record["merged_from"]] == [0, 1, 2]
    assert "shard" not in record


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.gz"])
def test_merge_into_gzip_gives_the_single_run_gzip_bytes(shards, tmp_path, suffix):
    parts = photoruns._parts(shards, (2, 0, 1))
    if suffix == ".jsonl.gz":
        parts = [tmp_path / f"part{i}.jsonl.gz" for i in range(3)]
        for i, part in enumerate(parts):
            result = photoruns.invoke(
                "compute",
                photoruns.SAMPLES,
                "-o",
                part,
                "--shard",
                f"{i}/3",
                *photoruns.FAST,
                "--workers",
                1,
                "--quiet",
            )
            assert result.exit_code == 0, result.stderr
    whole, merged = tmp_path / f"whole{suffix}", tmp_path / f"merged{suffix}"
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", whole, *photoruns.FAST, "--workers", 2, "--quiet"
    )
    assert result.exit_code == 0, result.stderr
    result = photoruns.invoke("merge", *parts, "-o", merged)
    assert result.exit_code == 0, result.stderr
    assert merged.read_bytes() == whole.read_bytes()


def test_merge_parquet_parts_by_the_record_in_their_metadata(shards, tmp_path):
    parts = [tmp_path / f"part{i}.parquet" for i in range(3)]
    for i, part in enumerate(parts):
        result = photoruns.invoke(
            "compute",
            photoruns.SAMPLES,
            "-o",
            part,
            "--shard",
            f"{i}/3",
            *photoruns.FAST,
            "--workers",
            1,
            "--quiet",
        )
        assert result.exit_code == 0, result.stderr
        os.unlink(f"{part}.meta.json")  # the record inside the Parquet file is enough
    out = tmp_path / "merged.csv"
    result = photoruns.invoke("merge", parts[1], parts[2], parts[0], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == (shards / "whole.csv").read_bytes()


def test_merge_to_stdout(shards):
    result = photoruns.invoke("merge", *photoruns._parts(shards, (1, 2, 0)), "-o", "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (shards / "whole.csv").read_bytes()


def test_merge_csv_parts_into_one_parquet_file(shards, tmp_path):
    out = tmp_path / "merged.parquet"
    result = photoruns.invoke("merge", *photoruns._parts(shards, (2, 1, 0)), "-o", out)
    assert result.exit_code == 0, result.stderr
    got = pq.read_table(out).to_pandas()
    want = photoruns._csv_frame(shards / "whole.csv")
    assert list(got.columns) == list(want.columns)
    assert got["path"].tolist() == want["path"].tolist() == photoruns.IMAGES
    np.testing.assert_array_equal(got.iloc[:, 4:].to_numpy(), want.iloc[:, 4:].to_numpy())
    assert str(pq.read_schema(out).field("width").type) == "int32"
    record = json.loads(pq.read_metadata(out).metadata[b"soartc"])
    assert record["output"]["format"] == "parquet"
    assert record["counts"]["processed"] == 12


def test_merge_refuses_a_duplicate_a_missing_shard_unless_allowed(shards, tmp_path):
    out = tmp_path / "m.csv"
    parts = photoruns._parts(shards)
    result = photoruns.invoke("merge", parts[0], parts[1], parts[1], "-o", out)
    assert result.exit_code == 2
    assert "shard 1/3 is given twice" in result.stderr
    result = photoruns.invoke("merge", parts[2], parts[0], "-o", out)
    assert result.exit_code == 2
    assert "shard 1/3 missing" in result.stderr
    assert not out.exists()
    result = photoruns.invoke("merge", parts[2], parts[0], "-o", out, "--allow-missing")
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert record["missing_shards"] == ["1/3"]
    whole = (shards / "whole.csv").read_text().splitlines(keepends=True)
    body = [parts[0].read_text().splitlines(keepends=True), parts[2].read_text().splitlines(True)]
    assert out.read_text() == whole[0] + "".join(body[0][1:] + body[1][1:])


def test_merge_refuses_parts_of_other_settings_or_without_a_record(shards, tmp_path):
    other = tmp_path / "other1.csv"
    result = photoruns.invoke(
        "compute",
        photoruns.SAMPLES,
        "-o",
        other,
        "--shard",
        "1/3",
        "--metrics",
        "rt",
        *photoruns.FAST,
        "--workers",
        1,
        "--quiet",
    )
    assert result.exit_code == 0
    parts = photoruns._parts(shards)
    result = photoruns.invoke("merge", parts[0], other, parts[2], "-o", tmp_path / "m.csv")
    assert result.exit_code == 2
    assert "was made with other settings" in result.stderr
    bare = tmp_path / "bare.csv"
    shutil.copyfile(parts[1], bare)
    result = photoruns.invoke("merge", parts[0], bare, parts[2], "-o", tmp_path / "m.csv")
    assert result.exit_code == 2
    assert "has no run record" in result.stderr
    assert not (tmp_path / "m.csv").exists()
