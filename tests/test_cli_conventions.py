"""Command-line conventions (issue 11): help on every command, usage lines, shown defaults,
whole command summaries, and the attention demo's -o / --format / -q."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from soartc_cli.core import attention
from soartc_cli.interfaces.cli import app
from soartc_cli.output import targets
from tests import tinyruns

runner = CliRunner()
COMMANDS = ("compute", "attention", "fit", "score", "transforms", "merge")


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def _flat(text: str) -> str:
    """Help text with its line wrapping undone (one space between words)."""
    return " ".join(text.split())


def _command(name: str):
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_h_is_help_on_every_command(command):
    short = invoke(command, "-h")
    long = invoke(command, "--help")
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout
    assert short.stdout.startswith(f"Usage: soartc {command} [OPTIONS]")
    assert "-h, --help" in short.stdout


def test_usage_lines_name_the_paths():
    for command in ("compute", "attention", "fit", "score"):
        first = invoke(command, "-h").stdout.splitlines()[0]
        assert first == f"Usage: soartc {command} [OPTIONS] [PATH...]"
    assert invoke("merge", "-h").stdout.splitlines()[0] == "Usage: soartc merge [OPTIONS] PART..."


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_is_shown_as_default_n(command):
    text = _flat(invoke(command, "-h").stdout)
    assert "[default: (" not in text
    for param in _command(command).params:
        if not isinstance(param, typer.core.TyperOption) or param.is_flag:
            continue
        if param.default is not None:
            assert f"[default: {param.default}]" in text, param.name


@pytest.mark.parametrize(
    ("command", "option", "shown"),
    [
        ("attention", "--high HIGH", "[default: 3]"),
        ("attention", "--softmax row|global", "[default: row]"),
        ("attention", "--format table|json|csv", "[default: table]"),
        ("attention", "--dim D", "[default: 3 for the demo, 64 for images]"),
        ("compute", "--workers N", "[default: the CPUs this process may use]"),
        ("score", "--threshold T", "[default: the model's threshold]"),
    ],
)
def test_options_whose_default_is_none_show_what_it_means(command, option, shown):
    text = _flat(invoke(command, "-h").stdout)
    start = text.index(option)
    following = text[start + len(option) :]
    assert shown in following
    assert following.index("[default:") == following.index(shown)  # this option's default


def test_command_summaries_are_not_cut_off():
    text = _flat(invoke("-h").stdout)
    commands = text.split("Commands:", 1)[1]
    assert "..." not in commands
    for name in COMMANDS:
        summary = _command(name).short_help
        assert summary and f"{name} {summary}" in commands


# --- the seed demo's output -------------------------------------------------------------------


def test_demo_writes_json_or_csv_by_suffix(tmp_path, monkeypatch):
    written = []
    real = targets.write_text_atomic
    monkeypatch.setattr(targets, "write_text_atomic", lambda p, t: (written.append(p), real(p, t)))
    as_json = tmp_path / "demo.json"
    result = invoke("attention", "--seed", 7, "-o", as_json)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    data = json.loads(as_json.read_text(encoding="utf-8"))
    want = attention.seed_demo(seed=7)
    assert data["scores"] == want.scores.tolist()
    assert data["softmax"] == "row" and data["seed"] == 7
    as_csv = tmp_path / "demo.CSV"
    assert invoke("attention", "--softmax", "global", "-o", as_csv).exit_code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.read_text(encoding="utf-8"))))
    assert {r["softmax"] for r in rows} == {"global"}
    assert len(rows) == sum(m.size for m in attention.seed_demo().matrices().values())
    assert written == [str(as_json), str(as_csv)]  # through the atomic writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.CSV", "demo.json"]


def test_demo_format_option_and_suffix_agree(tmp_path):
    out = tmp_path / "demo.out"
    assert invoke("attention", "--format", "csv", "-o", out).exit_code == 0
    assert out.read_text(encoding="utf-8").startswith("matrix,row,col,value,softmax\n")
    stdout = invoke("attention", "--format", "json", "-o", "-")
    assert json.loads(stdout.stdout)["W_Q"] == attention.seed_demo().W_Q.tolist()
    assert invoke("attention", "-o", "-").stdout.startswith("matrix,row,col,value,softmax\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "demo.txt"], "the demo writes .json, .csv files"),
        (["--format", "json", "-o", "demo.csv"], "--format json does not match"),
        (["--format", "table", "-o", "demo.csv"], "--format table is for the terminal"),
    ],
)
def test_demo_output_usage_errors(tmp_path, args, message):
    args = [str(tmp_path / a) if a.startswith("demo.") else a for a in args]
    result = invoke("attention", *args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_quiet_silences_the_demo_hint_and_the_written_line(tmp_path):
    loud = invoke("attention")
    assert "hint:" in loud.stderr
    quiet = invoke("attention", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout == loud.stdout
    assert "written to" in invoke("attention", "-o", tmp_path / "a.json").stderr
    assert invoke("attention", "-q", "-o", tmp_path / "b.json").stderr == ""


# --- moved from test_issue13.py ----------------------------------------


def test_a_closed_stdout_is_one_error_line(tiny_photos):
    result = tinyruns.soartc(
        "compute",
        tiny_photos,
        "-o",
        "-",
        *tinyruns.FAST,
        preexec_fn=lambda: os.close(1),
        capture_output=False,
        stderr=subprocess.PIPE,
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == "soartc: error: --output -: standard output is closed\n"


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_ctrl_c_in_the_first_moments_exits_130_without_a_traceback(tiny_photos, delay):
    cmd = [
        sys.executable,
        "-m",
        "soartc_cli",
        "compute",
        str(tiny_photos),
        "-o",
        "-",
        *tinyruns.FAST,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=tinyruns._default_signals,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr
    # Too late to interrupt on a fast machine: then the run simply ended well.
    assert proc.returncode in (130, 0), stderr
    if proc.returncode == 130:
        assert stderr.startswith("soartc: error: interrupted")


def test_control_characters_in_names_are_escaped_on_stderr(tiny_photos, tmp_path):
    (tiny_photos / "\x1b[31mred.png").write_bytes(b"not a picture")
    result = tinyruns.soartc("compute", tiny_photos, "-o", tmp_path / "o.csv", *tinyruns.FAST)
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr
    assert "soartc: skipped \\x1b[31mred.png:" in result.stderr


def test_control_characters_in_names_are_escaped_in_terminal_tables(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    tinyruns.picture(root / "\x1b[31mred.png", 1)
    result = tinyruns.soartc(
        "compute", root, *tinyruns.FAST, env={**os.environ, "COLUMNS": "120"}
    )  # no -o: tables
    assert result.returncode == 0, result.stderr
    assert "\\x1b[31mred.png" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr


def test_markup_in_names_is_text_in_terminal_tables(tmp_path):
    root = tmp_path / "inp"
    (root / "c[").mkdir(parents=True)
    tinyruns.picture(root / "c[" / "b]x.png", 1)  # the path c[/b]x.png holds a closing tag
    tinyruns.picture(root / "[b]y.png", 2)
    result = tinyruns.soartc("compute", root, *tinyruns.FAST, env={**os.environ, "COLUMNS": "120"})
    tinyruns.no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "c[/b]x.png" in result.stdout and "[b]y.png" in result.stdout
