"""The README's two recipes followed once, end to end: a format and a metric registered only inside
the test work for ``-o``, every layout, ``--resume``, shards and ``merge`` in both directions."""

import csv
import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from soartc_cli.core.metrics import TINY, register_metric, unregister_metric
from soartc_cli.interfaces.cli import app
from soartc_cli.output import formats
from soartc_cli.output.formats import BadRow, TextFormat, number_text
from soartc_cli.output.layouts import column_kind
from soartc_cli.pipeline import jobs


class TsvFormat(TextFormat):
    """Tab-separated values: the add-a-format recipe's example (one class, one line)."""

    name = "tsv"
    suffixes = (".tsv",)

    def header_bytes(self, header):
        return ("\t".join(header) + "\n").encode()

    def row_bytes(self, header, row, precision):
        cells = [
            str(v) if column_kind(n) != "float" else number_text(v, precision)
            for n, v in zip(header, row, strict=True)
        ]
        return ("\t".join(cells) + "\n").encode()

    def read_rows(self, stream):
        header = stream.readline().rstrip("\n").split("\t")

        def rows():
            for line, text in enumerate(stream, start=2):
                if not text.endswith("\n"):
                    raise BadRow(line, "the last line is cut short")
                yield line, text[:-1].split("\t")

        return header, rows()


@pytest.fixture(autouse=True)
def tsv(monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "tsv", TsvFormat())  # the recipe's one line


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "photos"
    for i in range(5):
        (root / f"l{i % 2}").mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((40, 48)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"l{i % 2}" / f"{i}.png")
    return root


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def compute(folder, out, *args):
    result = invoke("compute", folder, "--size", 32, "--patch", 16, "-o", out, "-q",
                    "--workers", 1, *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def _cells(path, delimiter):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


@pytest.mark.parametrize("layout", ["wide", "long", "summary", "pooled"])
def test_a_format_registered_in_a_test_writes_every_layout(folder, tmp_path, layout):
    tsv = compute(folder, tmp_path / "out.tsv", "--layout", layout)
    plain = compute(folder, tmp_path / "out.csv", "--layout", layout)
    assert _cells(tsv, "\t") == _cells(plain, ",")  # same header, same cells: only the separator
    assert len(_cells(tsv, "\t")) > 5


def test_resume_of_the_new_format_finishes_into_the_bytes_of_one_run(folder, tmp_path, monkeypatch):
    whole = compute(folder, tmp_path / "whole.tsv")
    real = jobs._process_image

    def stop_at_third(index, file, task):
        if index == 2:
            raise KeyboardInterrupt
        return real(index, file, task)

    out = tmp_path / "out.tsv"
    monkeypatch.setattr(jobs, "_process_image", stop_at_third)
    stopped = invoke("compute", folder, "--size", 32, "--patch", 16, "-o", out, "--resume",
                     "--workers", 1)  # fmt: skip
    assert stopped.exit_code == 130 and (tmp_path / "out.tsv.partial").exists()
    monkeypatch.setattr(jobs, "_process_image", real)
    compute(folder, out, "--resume")
    assert out.read_bytes() == whole.read_bytes()
    assert not (tmp_path / "out.tsv.partial").exists()


def _shards(folder, tmp_path, suffix, *args):
    return [compute(folder, tmp_path / f"p{i}{suffix}", "--shard", f"{i}/2", *args) for i in (1, 0)]


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_shards_of_the_new_format_merge_both_ways(folder, tmp_path, layout):
    whole_tsv = compute(folder, tmp_path / "whole.tsv", "--layout", layout)
    whole_csv = compute(folder, tmp_path / "whole.csv", "--layout", layout)
    tsv_parts = _shards(folder, tmp_path, ".tsv", "--layout", layout)
    csv_parts = _shards(folder, tmp_path, ".csv", "--layout", layout)
    for parts, out, want in [
        (tsv_parts, tmp_path / "m1.tsv", whole_tsv),  # TSV → TSV: the single run's bytes
        (tsv_parts, tmp_path / "m2.csv", whole_csv),  # TSV → CSV
        (csv_parts, tmp_path / "m3.tsv", whole_tsv),  # CSV → TSV
    ]:
        result = invoke("merge", *parts, "-o", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == want.read_bytes(), out.name
    assert invoke("merge", *tsv_parts, "-o", tmp_path / "m.parquet").exit_code == 0
    assert invoke("merge", *csv_parts, "-o", tmp_path / "c.parquet").exit_code == 0
    assert pq.read_table(tmp_path / "m.parquet").equals(pq.read_table(tmp_path / "c.parquet"))


def test_a_torn_part_of_the_new_format_is_refused_by_merge(folder, tmp_path):
    parts = _shards(folder, tmp_path, ".tsv")
    data = parts[0].read_bytes()
    parts[0].write_bytes(data[: len(data) - 5])  # the last row cut short
    result = invoke("merge", *parts, "-o", tmp_path / "m.tsv")
    assert result.exit_code == 2
    assert "p1.tsv: line" in result.stderr and "nothing written" in result.stderr
    assert not (tmp_path / "m.tsv").exists()


def test_an_unknown_suffix_lists_a_registered_format(folder, tmp_path):
    result = invoke("compute", folder, "-o", tmp_path / "x.txt")
    assert result.exit_code == 2
    assert ".tsv" in result.output


@pytest.fixture
def ratio_metric():
    """The add-a-metric recipe's example, registered only inside the test."""

    def sum_ratio(shared):
        """Brightness ratio. Notes: Σm / Σs, 1 when |Σs| ≤ 1e-12."""
        usable = np.abs(shared.sum_s) > TINY
        out = np.ones(shared.batch)
        return np.divide(shared.sum_m, shared.sum_s, out=out, where=usable)

    register_metric("sum_ratio", formula="Σm / Σs (1 when |Σs| ≤ 1e-12)", neutral=1.0)(sum_ratio)
    yield
    unregister_metric("sum_ratio")


def test_a_metric_registered_in_a_test_flows_through_shards_and_merge(
    folder, tmp_path, ratio_metric
):
    args = ("--metrics", "beta,sum_ratio", "--layout", "long")
    whole = compute(folder, tmp_path / "whole.csv", *args)
    header = whole.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["beta", "sum_ratio"]
    parts = _shards(folder, tmp_path, ".tsv", *args)
    assert invoke("merge", *parts, "-o", tmp_path / "m.csv").exit_code == 0
    assert (tmp_path / "m.csv").read_bytes() == whole.read_bytes()
    listing = invoke("transforms")
    assert "sum_ratio" in listing.stdout and "Σm / Σs" in listing.stdout
    rows = list(csv.DictReader(io.StringIO(whole.read_text())))
    assert all(np.isfinite(float(r["sum_ratio"])) for r in rows)
