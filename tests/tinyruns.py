"""Shared helpers of the CLI tests (moved from an issue-named file)."""

import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def rows(path):
    return Path(path).read_text().splitlines()


def no_traceback(result):
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr


HUGE_RUN = ("--size", "0", "--channels", "rgb", "--transforms", "all", "--metrics", "all")


def _npy_header(shape):
    header = repr({"descr": "<f8", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
