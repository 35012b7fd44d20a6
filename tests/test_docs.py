"""The README tells the truth: its Python snippet runs, every command and option is documented."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from soartc_cli.interfaces.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS = [c.name for c in typer.main.get_command(app).commands.values()]


def test_the_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_the_python_api_snippet_runs_and_prints_what_it_says(monkeypatch):
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "load_image" in b)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    assert printed[0] == "(1, 224, 224) 512 512"
    assert printed[1] == "(1, 6, 3, 196)"
    assert printed[3] == "[2. 0. 0.]"
    assert printed[4].startswith("[[11 10 11  5]")
    assert printed[-1] in ("1.0 True", "0.9999999999999999 True", "1.0000000000000002 True")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_a_readme_section(command):
    help_text = typer.main.get_command(app).commands[command].help or ""
    assert len(help_text.split()) >= 5, f"{command} has no real help text"
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert help_text.split("\n")[0][:40] in " ".join(result.stdout.split())
    assert f"## soartc {command}" in README


@pytest.mark.parametrize("command", ["compute", "attention"])
def test_every_option_is_in_the_readme(command):
    help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help"}
    missing = sorted(o for o in options if o not in README)
    assert not missing, f"options of {command} missing from README: {missing}"


def _snippet(marker):
    return next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if marker in b)


def _labelled_photos(root):
    """Two labels of small photos: tiles of two different textures, a few dozen each."""
    from PIL import Image

    for label, source in (("brick", "brick.png"), ("grass", "grass.png")):
        (root / label).mkdir(parents=True)
        with Image.open(ROOT / "sample_images" / "textures" / source) as photo:
            for i in range(12):
                x, y = 40 * (i % 6), 60 * (i // 6)
                photo.crop((x, y, x + 96, y + 96)).save(root / label / f"{i:02d}.png")


def test_the_machine_learning_example_runs_on_the_pooled_parquet(tmp_path, monkeypatch):
    _labelled_photos(tmp_path / "photos")
    command = next(
        line
        for block in re.findall(r"```sh\n(.*?)```", README, re.S)
        for line in block.splitlines()
        if "--pool " in line and "pooled.parquet" in line
    ).strip()
    args = command.split()[1:]  # drop "soartc"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*args, "--size", "96", "--workers", "1", "-q"])
    assert result.exit_code == 0, result.output
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_snippet("cross_val_score"), "README.md", "exec"), {})
    accuracy = float(out.getvalue().strip())
    assert 0.9 <= accuracy <= 1.0  # two textures: the pooled features separate them


def test_the_features_table_snippet_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_snippet("features_table"), "README.md", "exec"), {})
    shape, failures = out.getvalue().splitlines()
    assert shape.startswith("(3, 76) ['path', 'label', 'width', 'height', 'bend1.beta.mean'")
    assert failures == "[]"
