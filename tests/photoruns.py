"""Shared helpers of the CLI tests (moved from an issue-named file)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from soartc_cli.interfaces.cli import app
from soartc_cli.pipeline.resume import iter_journal, journal_length

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


FAST = ("--size", "64")  # 4×4 patches of 16: quick, yet every code path


IMAGES = sorted(
    p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob("*") if p.suffix in (".jpg", ".png")
)


STATS = ("mean", "std", "min", "max", "median", "p05", "p95")


cli = CliRunner()


def invoke(*args, input=None):
    return cli.invoke(app, [str(a) for a in args], input=input)


def soartc(*args, **kwargs):
    """``python -m soartc_cli ARGS`` in a subprocess (a real process: signals, pipes, fds)."""
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, check=False, timeout=120, **kwargs)


def _csv_frame(path):
    return pd.read_csv(path, keep_default_na=False, na_values=["nan"], dtype={"label": str})


INTS = {"width", "height", "row", "col"}


TEXTS = {"path", "label", "channel", "patch", "transform"}


COUNTS = {"found": 97, "processed": 96, "failed": 1}


#: Enough work per image that a run lasts a while after its first images (the kill lands mid-run).
HEAVY = (*FAST, "--transforms", "all", "--metrics", "all")


def _group_members(pgid):
    """Processes of the process group ``pgid`` that are still running (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _killed_run(args, partial, *, frames=3):
    """Start ``soartc ARGS`` in its own process group, SIGKILL the group once ``partial`` holds
    ``frames`` images; check that no process of the group survives. Returns the frames kept."""
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    pgid = proc.pid
    deadline = time.monotonic() + 60
    size = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            now = os.path.getsize(partial) if os.path.exists(partial) else 0
            if now != size and len(_read_journal(partial)[0]) >= frames:
                break
            size = now
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(pgid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _group_members(pgid) and time.monotonic() < deadline:  # workers die with their parent
        time.sleep(0.02)
    assert _group_members(pgid) == [], "a worker survived the SIGKILL of its run"
    return len(_read_journal(partial)[0])


def _parts(folder, order=(0, 1, 2)):
    return [folder / f"part{i}.csv" for i in order]


def _enospc(*args):
    raise OSError(28, "No space left on device")


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _read_journal(path):
    """Every complete frame of a journal and the byte length they take."""
    path = str(path)
    return list(iter_journal(path)), journal_length(path)
