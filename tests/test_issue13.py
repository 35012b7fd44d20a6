"""Acceptance tests of issue 13 (hostile inputs, outputs and interrupts), end to end.

One test per finding not already covered elsewhere; the findings covered by other files are named
in the comments of each section. Every run is a real process (``python -m soartc_cli``) on small
images made here, at ``--size 32 --patch 16`` unless the finding needs otherwise.
"""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAST = ("--size", "32", "--patch", "16", "--workers", "1")


def soartc(*args, **kwargs):
    """``python -m soartc_cli ARGS`` in a subprocess; stdout and stderr as text."""
    kwargs.setdefault("capture_output", True)
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    return subprocess.run(cmd, text=True, check=False, timeout=120, **kwargs)


def _default_signals():
    """In the child: SIGINT and SIGTERM at their defaults, whatever the test runner inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _limited():
    """In the child: default signals and at most 3 GiB of address space (a run that would
    allocate tens of GiB fails there instead of taking the machine)."""
    _default_signals()
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def picture(path, seed, size=(40, 40)):
    """A small noise picture (any suffix Pillow writes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    for i in range(3):
        picture(root / f"p{i}.png", i)
    return root


def rows(path):
    return Path(path).read_text().splitlines()


def no_traceback(result):
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


# --- 1. outputs over inputs -----------------------------------------------------------------------
# -o / --record / --maps over an input image: test_issue9_outputs.py::
#   test_outputs_never_overwrite_inputs, test_a_shard_never_overwrites_an_input_of_another_shard;
# --record X -o X: test_issue9_outputs.py::test_a_record_on_the_output_itself_is_refused.


def test_outputs_inside_an_input_folder_are_warned_of(folder):
    result = soartc("compute", folder, "-o", folder / "out.csv", "--maps", folder / "maps", *FAST)
    assert result.returncode == 0, result.stderr
    assert f"warning: {folder / 'out.csv'} is inside an input directory" in result.stderr
    assert f"warning: {folder / 'maps'} is inside an input directory" in result.stderr


def test_a_second_run_never_reads_the_pictures_of_the_first(folder, tmp_path):
    first = soartc("compute", folder, "-o", tmp_path / "1.csv", "--maps", folder / "maps", *FAST)
    assert first.returncode == 0, first.stderr
    assert len(list((folder / "maps").glob("*.png"))) == 3
    assert (folder / "maps" / ".soartc-maps").is_file()
    second = soartc("compute", folder, "-o", tmp_path / "2.csv", *FAST)
    assert second.returncode == 0, second.stderr
    assert rows(tmp_path / "2.csv") == rows(tmp_path / "1.csv")  # the 3 inputs, no picture
    record = json.loads((tmp_path / "2.csv.meta.json").read_text())
    assert record["counts"]["found"] == 3


# --- 2. disk full ---------------------------------------------------------------------------------
# test_issue9_outputs.py::test_a_full_device_is_one_error_line_and_exit_1,
# test_a_full_disk_on_a_regular_file_commits_nothing, test_a_record_that_fails_leaves_the_output_
# uncommitted; test_outputs.py::test_a_full_disk_is_one_write_error_naming_the_file.


# --- 3. an interrupt with --maps leaves no half-written picture ---------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_with_maps_leaves_no_part_picture(tmp_path, sig):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        picture(root / f"i{i:02d}.png", i, size=(256, 256))
    maps = tmp_path / "maps"
    cmd = [sys.executable, "-m", "soartc_cli", "compute", str(root), "-o", str(tmp_path / "o.csv"),
           "--maps", str(maps), "--size", "256", "--patch", "16", "--transforms", "all",
           "--metrics", "all", "--workers", "2", "-q"]  # fmt: skip
    for delay in (0.0, 0.03, 0.08):  # a few moments after the first picture
        shutil.rmtree(maps, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_signals)  # fmt: skip
        deadline = time.monotonic() + 60
        while not list(maps.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert [p.name for p in maps.iterdir() if p.name.endswith(".part")] == []


# --- 4. memory per image --------------------------------------------------------------------------
# The 4 MB zip-bomb npz: test_hostile_options.py::test_cli_refuses_hostile_weights_with_the_reason
# [zip bomb] (60 kB declaring 64 MiB, refused by what it declares before anything is inflated).


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """A 5000×5000 PNG of one colour (about 80 kB on disk, 75 MB decoded)."""
    root = tmp_path_factory.mktemp("huge")
    Image.new("RGB", (5000, 5000), (90, 120, 30)).save(root / "big.png")
    return root


HUGE_RUN = ("--size", "0", "--channels", "rgb", "--transforms", "all", "--metrics", "all")


def test_a_huge_image_is_skipped_for_its_working_memory_at_once(huge, tmp_path):
    start = time.monotonic()
    result = soartc("compute", huge, *HUGE_RUN, "-o", tmp_path / "o.csv", "--workers", 1,
                    preexec_fn=_limited)  # fmt: skip
    assert time.monotonic() - start < 20
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert "soartc: skipped big.png: its 312×312 patches would need about" in result.stderr
    assert "of working memory" in result.stderr
    assert rows(tmp_path / "o.csv") == ["path,label,width,height"]  # no grid: no value column


def test_a_huge_image_is_refused_before_it_is_decoded(huge, tmp_path):
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "soartc_cli", "compute", str(huge),
           *HUGE_RUN, "-o", str(tmp_path / "o.csv"), "--workers", "1", "-q"]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, check=False, preexec_fn=_limited
    )
    assert "working memory" in result.stderr
    peak_kib = int(result.stdout.split()[-1])
    assert peak_kib < 90 * 1024  # a run of one 32×32 image peaks at about 40 MB


@pytest.mark.parametrize(
    "args", [("--size", 100000, "--patch", 10000), ("--size", 2**40), ("--patch", 2**40)]
)
def test_impossible_sizes_are_usage_errors(folder, args):
    result = soartc("compute", folder, *args, "-o", "-", "--workers", 1, preexec_fn=_limited)
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


# --- 5. a picture that cannot be written ----------------------------------------------------------


def test_a_picture_that_cannot_be_written_keeps_its_row(folder, tmp_path):
    maps = tmp_path / "maps"
    first = soartc("compute", folder, "-o", tmp_path / "1.csv", "--maps", maps, *FAST)
    assert first.returncode == 0, first.stderr
    (maps / "p1.png").unlink()
    (maps / "p1.png").mkdir()  # a directory where the picture goes
    result = soartc("compute", folder, "-o", tmp_path / "2.csv", "--maps", maps, *FAST)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "warning: --maps: cannot write the picture of p1.png" in result.stderr
    assert rows(tmp_path / "2.csv") == rows(tmp_path / "1.csv")  # every row kept


def test_a_245_byte_name_gets_its_picture_and_its_row(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    name = "n" * 241 + ".png"  # 245 bytes: its hidden temporary name would be 260
    picture(root / name, 1)
    maps = tmp_path / "maps"
    result = soartc("compute", root, "-o", tmp_path / "o.csv", "--maps", maps, *FAST)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert rows(tmp_path / "o.csv")[1].startswith(name + ",")
    assert len(list(maps.glob("*.png"))) == 1


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_maps_directory_that_cannot_be_written_is_refused_up_front(folder, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    maps = blocker if where == "a file" else blocker / "maps"
    result = soartc("compute", folder, "-o", tmp_path / "o.csv", "--maps", maps, *FAST)
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("soartc: error: --maps")
    assert "skipped" not in result.stderr and "processed" not in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_a_maps_directory_refusing_new_files_is_refused_before_any_image(folder, tmp_path):
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
        args = ["compute", str(folder), "-o", str(tmp_path / "o.csv"), "--maps", str(maps), *FAST]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr == f"soartc: error: --maps: cannot write into {maps}: Permission denied\n"
    assert not (tmp_path / "o.csv").exists()


# --- 6. a 4,223-byte path -------------------------------------------------------------------------
# test_discover.py::test_a_file_past_path_max_is_listed_not_lost,
# test_cli_counts_add_up_for_an_image_past_path_max.


# --- 7. shards with --size 0 and the wide layout --------------------------------------------------


@pytest.fixture
def mixed(tmp_path):
    """a 64², b 48², c 48², d 64²: the whole list's first grid is 4×4, shard 1/2's first 3×3."""
    root = tmp_path / "mixed"
    root.mkdir()
    for i, (name, side) in enumerate([("a", 64), ("b", 48), ("c", 48), ("d", 64)]):
        picture(root / f"{name}.png", i, size=(side, side))
    return root


def test_native_size_wide_shards_concatenate_to_the_single_run(mixed, tmp_path):
    args = ("--size", 0, "--patch", 16, "--workers", 1, "-q")
    whole = soartc("compute", mixed, "-o", tmp_path / "whole.csv", *args)
    assert whole.returncode == 1, whole.stderr  # b and c have another grid: skipped
    parts = []
    for index in range(2):
        out = tmp_path / f"part{index}.csv"
        result = soartc("compute", mixed, "--shard", f"{index}/2", "-o", out, *args)
        no_traceback(result)
        parts.append(rows(out))
    assert parts[0][0] == parts[1][0]  # one header for every shard
    assert parts[0] + parts[1][1:] == rows(tmp_path / "whole.csv")
    assert [line.split(",")[0] for line in rows(tmp_path / "whole.csv")[1:]] == ["a.png", "d.png"]


def test_an_empty_shard_is_a_header_only_output(mixed, tmp_path):
    out = tmp_path / "empty.csv"
    result = soartc("compute", mixed, "--shard", "0/6", "-o", out, "--size", 0, "--patch", 16,
                    "--workers", 1)  # fmt: skip
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    whole = soartc("compute", mixed, "-o", tmp_path / "whole.csv", "--size", 0, "--workers", 1)
    assert whole.returncode == 1, whole.stderr  # b and c skipped
    assert rows(out) == rows(tmp_path / "whole.csv")[:1]


# --- 8. tracebacks and exit codes -----------------------------------------------------------------
# A NUL in the stdin list: test_discover.py::test_cli_skips_a_stdin_path_with_a_nul_byte_and_keeps_
# the_other_rows; a .npy renamed .npz: test_hostile_options.py::test_cli_refuses_hostile_weights_
# with_the_reason[npy renamed]; 5000-digit kernels: test_cli_refuses_hostile_kernel_files.


def test_a_closed_stdout_is_one_error_line(folder):
    result = soartc("compute", folder, "-o", "-", *FAST, preexec_fn=lambda: os.close(1),
                    capture_output=False, stderr=subprocess.PIPE)  # fmt: skip
    no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == "soartc: error: --output -: standard output is closed\n"


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_ctrl_c_in_the_first_moments_exits_130_without_a_traceback(folder, delay):
    cmd = [sys.executable, "-m", "soartc_cli", "compute", str(folder), "-o", "-", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr
    # Too late to interrupt on a fast machine: then the run simply ended well.
    assert proc.returncode in (130, 0), stderr
    if proc.returncode == 130:
        assert stderr.startswith("soartc: error: interrupted")


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_kernel_file_with_a_long_integer_is_a_usage_error(folder, tmp_path, digits):
    kernels = tmp_path / "k.json"
    kernels.write_text('{"k": [[' + "9" * digits + "]]}")
    result = soartc("compute", folder, "--kernels", kernels, "-o", "-", *FAST)
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert "--kernels" in result.stderr and "number too long" in result.stderr


def _npy_header(shape):
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def test_an_npz_declaring_186_tib_is_a_usage_error(folder, tmp_path):
    import zipfile

    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:  # 5,050,000² doubles ≈ 186 TiB, 128 bytes stored
        for name in ("W_Q", "W_K", "W_V"):
            archive.writestr(f"{name}.npy", _npy_header((5_050_000, 5_050_000)))
    result = soartc("attention", folder, "--weights", path, "--size", 32, "--patch", 16,
                    "--workers", 1, "-o", "-", preexec_fn=_limited)  # fmt: skip
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("soartc: error: --weights")
    assert len(result.stderr.strip().splitlines()) == 1


# --- 9. an EPS named .png: test_imageio_safety.py::test_eps_named_png_never_reaches_ghostscript


# --- 10. terminal hygiene -------------------------------------------------------------------------
# libtiff warnings: test_imageio_safety.py::test_libtiff_messages_do_not_reach_stderr,
# test_a_run_with_a_corrupt_tiff_prints_only_its_skip_line.


def test_control_characters_in_names_are_escaped_on_stderr(folder, tmp_path):
    (folder / "\x1b[31mred.png").write_bytes(b"not a picture")
    result = soartc("compute", folder, "-o", tmp_path / "o.csv", *FAST)
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr
    assert "soartc: skipped \\x1b[31mred.png:" in result.stderr


def test_control_characters_in_names_are_escaped_in_terminal_tables(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    picture(root / "\x1b[31mred.png", 1)
    result = soartc("compute", root, *FAST, env={**os.environ, "COLUMNS": "120"})  # no -o: tables
    assert result.returncode == 0, result.stderr
    assert "\\x1b[31mred.png" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr


def test_markup_in_names_is_text_in_terminal_tables(tmp_path):
    root = tmp_path / "inp"
    (root / "c[").mkdir(parents=True)
    picture(root / "c[" / "b]x.png", 1)  # the path c[/b]x.png holds a closing tag
    picture(root / "[b]y.png", 2)
    result = soartc("compute", root, *FAST, env={**os.environ, "COLUMNS": "120"})
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert "c[/b]x.png" in result.stdout and "[b]y.png" in result.stdout


def test_quiet_silences_the_maps_name_clash_warnings(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    picture(root / "a.png", 1)
    picture(root / "a.jpg", 2)  # its picture is a.png too
    loud = soartc("compute", root, "-o", tmp_path / "1.csv", "--maps", tmp_path / "m1", *FAST)
    assert "both draw" in loud.stderr  # the warning exists...
    quiet = soartc("compute", root, "-o", tmp_path / "2.csv", "--maps", tmp_path / "m2", *FAST,
                   "-q")  # fmt: skip
    assert quiet.returncode == 0
    assert quiet.stderr == ""  # ...and -q silences it


def test_dev_zero_named_png_is_not_a_regular_file_and_the_counts_add_up(folder, tmp_path):
    (tmp_path / "z.png").symlink_to("/dev/zero")  # named directly (the walk lists regular files)
    (folder / "broken.png").write_bytes(b"nope")
    start = time.monotonic()
    result = soartc("compute", folder, tmp_path / "z.png", "-o", tmp_path / "o.csv", *FAST)
    assert time.monotonic() - start < 30
    assert result.returncode == 1, result.stderr
    assert "z.png: not a regular file (a character device)" in result.stderr
    counts = json.loads((tmp_path / "o.csv.meta.json").read_text())["counts"]
    assert counts == {"found": 5, "processed": 3, "failed": 2}
    assert counts["found"] == counts["processed"] + counts["failed"]


# --- 11. runs racing for one output ---------------------------------------------------------------
# A file replaced by a FIFO mid-run: test_imageio_safety.py::test_fifo_without_writer_is_refused_at_
# once, test_file_replaced_by_a_fifo_after_the_check_is_refused.


def test_two_runs_on_one_output_leave_one_runs_output_and_its_record(folder, tmp_path):
    out = tmp_path / "o.csv"
    command = [sys.executable, "-m", "soartc_cli", "compute", str(folder), "-o", str(out)]
    for _ in range(20):
        procs = [
            subprocess.Popen([*command, "--precision", str(p), *FAST, "-q"], stderr=subprocess.PIPE)
            for p in (3, 6)
        ]
        for proc in procs:
            proc.communicate(timeout=60)
            assert proc.returncode == 0
        record = json.loads((tmp_path / "o.csv.meta.json").read_text())
        values = [v for line in rows(out)[1:] for v in line.split(",")[2:]]
        digits = {len(v.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) for v in values}
        assert max(digits) == record["output"]["precision"], (digits, record["output"])


# --- 12. kernels of 1e308, weights of 1e300 -------------------------------------------------------
# test_hostile_options.py::test_cli_refuses_hostile_kernel_files (1e308: "larger in size than
# 1e+06", exit 2), test_cli_refuses_huge_weights (1e300: "too large", exit 2).
