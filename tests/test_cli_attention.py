"""`soartc attention` without inputs: the seed demo through the command line."""

import csv
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from soartc_cli.core import attention
from soartc_cli.interfaces.cli import app
from tests.test_attention import ARTICLE_ATTENTION, ARTICLE_PROBS

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args))


def test_global_demo_prints_every_article_figure():
    result = invoke("attention", "--seed", "42", "--softmax", "global")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "softmax: global" in out
    for printed in np.ravel(ARTICLE_PROBS).tolist() + np.ravel(ARTICLE_ATTENTION).tolist():
        assert printed in out
    # the ten matrices, in the article's order
    positions = [re.search(rf"\b{name} \(", out).start() for name in attention.DEMO_MATRICES]
    assert positions == sorted(positions)
    assert result.stderr == ""


def test_row_demo_says_so_and_hints_at_global():
    result = invoke("attention")
    assert result.exit_code == 0
    assert "softmax: row" in result.stdout
    assert "--softmax global" in result.stderr
    assert "0.1804795" not in result.stdout


def test_json_holds_all_ten_matrices():
    result = invoke("attention", "--format", "json", "--seed", "7", "--dim", "5")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    want = attention.seed_demo(seed=7, dim=5)
    for name in attention.DEMO_MATRICES:
        np.testing.assert_allclose(np.array(data[name]), getattr(want, name), rtol=1e-15)
    assert data["softmax"] == "row"
    np.testing.assert_allclose(np.sum(data["probs"], axis=1), 1.0, rtol=1e-12)


def test_csv_is_machine_readable():
    result = invoke("attention", "--format", "csv", "--words", "1,0;0,1;1,1", "--high", "5")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["softmax"] for r in rows} == {"row"}
    want = attention.seed_demo(np.array([[1, 0], [0, 1], [1, 1]]), high=5)
    for name in attention.DEMO_MATRICES:
        cells = [r for r in rows if r["matrix"] == name]
        matrix = getattr(want, name)
        assert len(cells) == matrix.size
        for r in cells:
            assert float(r["value"]) == pytest.approx(
                matrix[int(r["row"]), int(r["col"])], rel=1e-15
            )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dim", "0"], "--dim must be at least 1"),
        (["--high", "0"], "--high must be at least 1"),
        (["--softmax", "nope"], "--softmax must be one of row, global"),
        (["--format", "xml"], "--format must be one of table, json, csv"),
        (["--words", "1,0;1"], "same length"),
        (["--words", "1,x;1,0"], "numbers only"),
        (["--seed", "-3"], "--seed must be between 0"),
        (["--dim", "abc"], "Invalid value for '--dim'"),
        (["--nope"], "No such option"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(args, message):
    result = invoke("attention", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("soartc: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("soartc ")
    help_text = invoke("attention", "--help").stdout
    for option in ("--seed", "--high", "--dim", "--words", "--softmax", "--format"):
        assert option in help_text


def test_python_dash_m_runs_the_demo():
    args = ["attention", "--softmax", "global", "--format", "json"]
    proc = subprocess.run(
        [sys.executable, "-m", "soartc_cli", *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["scores"][0] == [11, 10, 11, 5]
    bad = subprocess.run(
        [sys.executable, "-m", "soartc_cli", "attention", "--dim", "0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == "soartc: error: --dim must be at least 1, not 0"


def test_bare_soartc_prints_the_help():
    result = invoke()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    for command in ("compute", "attention", "transforms", "merge"):
        assert command in result.stdout
    assert result.stderr == ""
