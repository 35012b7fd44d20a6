"""test_cli_maps.py"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests import tinyruns

# --- moved from test_issue13.py ----------------------------------------


def test_outputs_inside_an_input_folder_are_warned_of(tiny_photos):
    result = tinyruns.soartc(
        "compute",
        tiny_photos,
        "-o",
        tiny_photos / "out.csv",
        "--maps",
        tiny_photos / "maps",
        *tinyruns.FAST,
    )
    assert result.returncode == 0, result.stderr
    assert f"warning: {tiny_photos / 'out.csv'} is inside an input directory" in result.stderr
    assert f"warning: {tiny_photos / 'maps'} is inside an input directory" in result.stderr


def test_a_second_run_never_reads_the_pictures_of_the_first(tiny_photos, tmp_path):
    first = tinyruns.soartc(
        "compute",
        tiny_photos,
        "-o",
        tmp_path / "1.csv",
        "--maps",
        tiny_photos / "maps",
        *tinyruns.FAST,
    )
    assert first.returncode == 0, first.stderr
    assert len(list((tiny_photos / "maps").glob("*.png"))) == 3
    assert (tiny_photos / "maps" / ".soartc-maps").is_file()
    second = tinyruns.soartc("compute", tiny_photos, "-o", tmp_path / "2.csv", *tinyruns.FAST)
    assert second.returncode == 0, second.stderr
    assert tinyruns.rows(tmp_path / "2.csv") == tinyruns.rows(
        tmp_path / "1.csv"
    )  # the 3 inputs, no picture
    record = json.loads((tmp_path / "2.csv.meta.json").read_text())
    assert record["counts"]["found"] == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_with_maps_leaves_no_part_picture(tmp_path, sig):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        tinyruns.picture(root / f"i{i:02d}.png", i, size=(256, 256))
    maps = tmp_path / "maps"
    cmd = [
        sys.executable,
        "-m",
        "soartc_cli",
        "compute",
        str(root),
        "-o",
        str(tmp_path / "o.csv"),
        "--maps",
        str(maps),
        "--size",
        "256",
        "--patch",
        "16",
        "--transforms",
        "all",
        "--metrics",
        "all",
        "--workers",
        "2",
        "-q",
    ]
    for delay in (0.0, 0.03, 0.08):  # a few moments after the first picture
        shutil.rmtree(maps, ignore_errors=True)
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=tinyruns._default_signals,
        )
        deadline = time.monotonic() + 60
        while not list(maps.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert [p.name for p in maps.iterdir() if p.name.endswith(".part")] == []


def test_a_picture_that_cannot_be_written_keeps_its_row(tiny_photos, tmp_path):
    maps = tmp_path / "maps"
    first = tinyruns.soartc(
        "compute", tiny_photos, "-o", tmp_path / "1.csv", "--maps", maps, *tinyruns.FAST
    )
    assert first.returncode == 0, first.stderr
    (maps / "p1.png").unlink()
    (maps / "p1.png").mkdir()  # a directory where the picture goes
    result = tinyruns.soartc(
        "compute", tiny_photos, "-o", tmp_path / "2.csv", "--maps", maps, *tinyruns.FAST
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "warning: --maps: cannot write the picture of p1.png" in result.stderr
    assert tinyruns.rows(tmp_path / "2.csv") == tinyruns.rows(tmp_path / "1.csv")  # every row kept


def test_a_245_byte_name_gets_its_picture_and_its_row(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    name = "n" * 241 + ".png"  # 245 bytes: its hidden temporary name would be 260
    tinyruns.picture(root / name, 1)
    maps = tmp_path / "maps"
    result = tinyruns.soartc(
        "compute", root, "-o", tmp_path / "o.csv", "--maps", maps, *tinyruns.FAST
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert tinyruns.rows(tmp_path / "o.csv")[1].startswith(name + ",")
    assert len(list(maps.glob("*.png"))) == 1


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_maps_directory_that_cannot_be_written_is_refused_up_front(tiny_photos, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    maps = blocker if where == "a file" else blocker / "maps"
    result = tinyruns.soartc(
        "compute", tiny_photos, "-o", tmp_path / "o.csv", "--maps", maps, *tinyruns.FAST
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("soartc: error: --maps")
    assert "skipped" not in result.stderr and "processed" not in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_a_maps_directory_refusing_new_files_is_refused_before_any_image(tiny_photos, tmp_path):
    # Root writes into a mode-0500 directory, so the refusal is made where files are created.
    import tempfile

    from typer.testing import CliRunner

    from soartc_cli.interfaces.cli import app

    maps = tmp_path / "maps"
    maps.mkdir()
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir) == str(maps.resolve()):
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", mkstemp)
        args = [
            "compute",
            str(tiny_photos),
            "-o",
            str(tmp_path / "o.csv"),
            "--maps",
            str(maps),
            *tinyruns.FAST,
        ]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr == f"soartc: error: --maps: cannot write into {maps}: Permission denied\n"
    assert not (tmp_path / "o.csv").exists()


def test_quiet_silences_the_maps_name_clash_warnings(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    tinyruns.picture(root / "a.png", 1)
    tinyruns.picture(root / "a.jpg", 2)  # its picture is a.png too
    loud = tinyruns.soartc(
        "compute", root, "-o", tmp_path / "1.csv", "--maps", tmp_path / "m1", *tinyruns.FAST
    )
    assert "both draw" in loud.stderr  # the warning exists...
    quiet = tinyruns.soartc(
        "compute", root, "-o", tmp_path / "2.csv", "--maps", tmp_path / "m2", *tinyruns.FAST, "-q"
    )
    assert quiet.returncode == 0
    assert quiet.stderr == ""  # ...and -q silences it
