"""The README's recipes followed once: a format registered only inside a test works end to end."""

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from soartc_cli.interfaces.cli import app
from soartc_cli.output import formats


class TsvFormat(formats.Format):
    """Tab-separated values: the add-a-format recipe's example (one class, one line)."""

    name = "tsv"
    suffixes = (".tsv",)

    def encode(self, spec, columns, image, names):
        numbers = spec.layout.numbers(columns, image)
        cells = [image.path, image.label, str(image.width), str(image.height)]
        cells += ["%.*g" % (spec.precision, v) for v in numbers.tolist()]
        return ("\t".join(cells) + "\n").encode()

    def sink(self, stream, spec, columns):
        class TsvSink(formats.Sink):
            def begin(self, names):
                super().begin(names)
                header = spec.layout.header(columns, names)
                self.stream.write(("\t".join(header) + "\n").encode())

        return TsvSink(stream, spec, columns)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    return tmp_path


def test_a_format_registered_in_a_test_writes_every_image(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "tsv", TsvFormat())
    out = tmp_path / "out.tsv"
    args = ["compute", str(folder), "--size", "32", "--patch", "16", "--layout", "pooled"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output
    csv_out = tmp_path / "out.csv"
    CliRunner().invoke(app, [*args, "-o", str(csv_out), "-q", "--workers", "1"])
    tsv_rows = [line.split("\t") for line in out.read_text().splitlines()]
    csv_rows = [line.split(",") for line in csv_out.read_text().splitlines()]
    assert tsv_rows == csv_rows  # same header, same cells: only the separator differs
    assert len(tsv_rows) == 4


def test_an_unknown_suffix_lists_a_registered_format(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(formats.FORMATS, "tsv", TsvFormat())
    result = CliRunner().invoke(app, ["compute", str(folder), "-o", str(tmp_path / "x.txt")])
    assert result.exit_code == 2
    assert ".tsv" in result.output
