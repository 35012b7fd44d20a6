"""End-to-end benchmark of ``soartc compute`` on corpora of JPEG photos (``make bench``).

Two corpora (built once by ``make_corpus.py``, cached under ``benchmarks/corpus/``): 2,000 JPEGs
of 640×480 (``vga640``) as users run the tool on web-sized photos, and 100 camera-sized JPEGs
of 4000×3000 (``photo4000``), where decoding dominates. From one run, with the repetitions
interleaved (every repetition runs every measurement once, in a rotating order, so that the noise
of this shared machine hits all of them alike), it reports medians of:

- decode + fit only: ``soartc_cli.imaging.load.load_image`` in a loop, in one process (images/s);
- ``soartc compute CORPUS -o out.csv --workers 1`` and ``--workers 2``: whole process, wall time,
  CSV written (images/s), and their start-up cost (the same command on one image);
- the command lines of :data:`EXTRA_COMMANDS` with 1 worker: Parquet output, the pooled layout
  (issue 9) and ``soartc score`` with a model fitted (untimed) on the first 100 images, each
  with its ratio to ``compute --workers 1``; score's time per image against compute's is issue
  10's target (at most 1.10);
- the acceptance ratios of issue 12 on the 2,000 corpus: compute(1 worker)/decode+fit ≥ 0.65,
  compute(2)/compute(1) ≥ 1.8, and the metric step (``soartc_features``) ≤ 0.3 ms per image;
- the per-image split in one process: decode, fit, transforms + metrics, formatting;
- the peak memory of the whole process tree of ``soartc compute --workers 2`` on 100 images and
  on the whole corpus (target: within 25% of each other);
- the same throughput figures and split on the 4000×3000 corpus;
- the machine: date, CPU, nproc, Python / numpy / Pillow versions, BLAS.

It prints a table and writes every figure (and every repetition) to ``benchmarks/out/last.json``.
``--quick``: one sub-folder of each corpus (100 and 25 images) and one repetition, for a sanity
run.

Only the standard library here; numpy and Pillow are used by the corpus builder and the
measurement child (``_bench_child.py``), which runs each in-process measurement in a fresh
interpreter set up like the ``soartc`` program.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from make_corpus import (  # noqa: E402
    CORPUS_ROOT,
    DEFAULT_SOURCES,
    PHOTO,
    VGA,
    ensure_corpus,
)

CHILD = HERE / "_bench_child.py"
DEFAULT_OUT = HERE / "out" / "last.json"
#: Acceptance targets (issue 12, on the 2,000-image corpus).
TARGET_COMPUTE_VS_DECODE = 0.65
TARGET_TWO_VS_ONE = 1.8
TARGET_METRIC_MS = 0.3
TARGET_MEMORY_GROWTH = 1.25
#: Issue 10: ``soartc score``'s time per image at most this many times ``compute``'s.
TARGET_SCORE_VS_COMPUTE = 1.10
#: Good images the model of the ``score`` row is fitted on (the first ones of the corpus).
MODEL_IMAGES = 100
#: A measurement is "quiet" when other processes used less than this many cores meanwhile.
QUIET_CORES = 0.2
#: Interval between two samples of the process tree's memory, in seconds.
MEMORY_SAMPLE_S = 0.005
#: Images of the per-stage split (every stage of every image is timed, some twice).
STAGE_IMAGES = {"vga": 400, "photo": 10}

#: Extra whole-process rows on the 640×480 corpus: ``(key, label, arguments)``; the arguments
#: follow ``soartc``, with ``{inputs}`` replaced by the corpus folder, ``{out}`` by a folder for
#: outputs and ``{model}`` by the model that :func:`fit_model` made (untimed) on the first
#: :data:`MODEL_IMAGES` images. Each is timed by :func:`run_command` in the same interleaved
#: repetitions as the CSV rows and reported with its ratio to ``compute_w1``; a CSV, JSON Lines or
#: Parquet output (by its suffix) is checked to hold as many rows for each image (Parquet with
#: pyarrow).
EXTRA_COMMANDS: list[tuple[str, str, list[str]]] = [
    (
        "parquet_w1",
        "compute -o out.parquet --workers 1",
        ["compute", "{inputs}", "-o", "{out}/o.parquet", "--workers", "1"],
    ),
    (
        "pooled_w1",
        "compute --layout pooled -o out.csv --workers 1",
        ["compute", "{inputs}", "--layout", "pooled", "-o", "{out}/pooled.csv", "--workers", "1"],
    ),
    (
        "score_w1",
        "score --model M.npz -o out.csv --workers 1",
        ["score", "{inputs}", "--model", "{model}", "-o", "{out}/score.csv", "--workers", "1"],
    ),
]


# ---------------------------------------------------------------------------------------------
# Machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> dict:
    """BLAS in use, from threadpoolctl when installed, else from numpy's build configuration."""
    code = (
        "import json, numpy\n"
        "try:\n"
        "    from threadpoolctl import threadpool_info\n"
        "    info = [{k: d.get(k) for k in ('internal_api', 'version', 'num_threads',"
        " 'architecture', 'threading_layer')} for d in threadpool_info()"
        " if d.get('user_api') == 'blas']\n"
        "    print(json.dumps({'source': 'threadpoolctl', 'libraries': info}))\n"
        "except ImportError:\n"
        "    blas = numpy.show_config(mode='dicts')['Build Dependencies']['blas']\n"
        "    print(json.dumps({'source': 'numpy.show_config', 'name': blas.get('name'),"
        " 'version': blas.get('version'), 'config': blas.get('openblas configuration')}))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(done.stdout)
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return {"source": "unknown", "error": str(exc)}


def _versions() -> dict:
    code = (
        "import json, numpy, PIL, scipy, soartc_cli\n"
        "from PIL import features\n"
        "print(json.dumps({'numpy': numpy.__version__, 'Pillow': PIL.__version__,"
        " 'scipy': scipy.__version__, 'soartc': soartc_cli.__version__,"
        " 'libjpeg_turbo': features.version('libjpeg_turbo')}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def _git() -> dict:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = run("status", "--porcelain", "--", "soartc_cli").splitlines()
    return {"commit": run("rev-parse", "HEAD"), "package_files_changed": changed}


def machine_facts() -> dict:
    """Date, CPU, core count, software versions and BLAS of this machine.

    Returns
    -------
    dict
        JSON-serialisable facts.
    """
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "nproc": affinity,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **_versions(),
        "blas": _blas(),
        "git": _git(),
    }


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# CPU accounting: how much of the machine each measurement had
#
# `soartc compute --workers 2` does not wait for its forkserver (which reaps the workers): once
# the command exits, they are orphans, and their CPU time would be lost to getrusage. As a
# "child subreaper" this process inherits such orphans and reaps them, so that RUSAGE_CHILDREN
# counts every process a measurement started. What the machine did besides is the load of other
# users of this shared machine, reported next to every figure.

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux ``prctl``); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_orphans(timeout: float = 10.0) -> int:
    """Wait for every remaining child (adopted orphans); return how many were reaped."""
    deadline = time.monotonic() + timeout
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
        elif time.monotonic() > deadline:
            return reaped
        else:
            time.sleep(0.005)


def _cpu_snapshot() -> tuple[float, float, float, float]:
    """``(wall, machine busy s, machine steal s, own CPU s)`` at this moment."""
    busy = steal = 0.0
    try:
        with open("/proc/stat") as stream:
            ticks = [int(v) for v in stream.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal
        busy = (sum(ticks) - ticks[3] - ticks[4] - ticks[7]) / hz
        steal = ticks[7] / hz
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        own += usage.ru_utime + usage.ru_stime
    return time.perf_counter(), busy, steal, own


def accounted(run: Callable[[], dict]) -> dict:
    """Run one measurement; add ``cpu``: its own CPU seconds and what else the machine did.

    Parameters
    ----------
    run : callable
        The measurement; returns a dict.

    Returns
    -------
    dict
        Its result, with ``cpu``: ``own_s`` (CPU seconds of every process it started, orphans
        included), ``others_cores`` (CPU used meanwhile by other processes of the machine, in
        cores), ``steal_cores`` (CPU taken by the hypervisor), ``window_s``.
    """
    wall0, busy0, steal0, own0 = _cpu_snapshot()
    result = run()
    reap_orphans()
    wall1, busy1, steal1, own1 = _cpu_snapshot()
    window = max(wall1 - wall0, 1e-9)
    own = own1 - own0
    result["cpu"] = {
        "own_s": own,
        "others_cores": max(0.0, (busy1 - busy0) - own) / window,
        "steal_cores": (steal1 - steal0) / window,
        "window_s": window,
    }
    return result


class QuietGate:
    """Wait, within a time budget, until other processes leave the machine (mostly) idle.

    Before each measurement the machine is watched for ``probe`` seconds while this benchmark
    does nothing; if other processes used more than ``threshold`` cores, it waits and looks
    again, until the total ``budget`` of waiting for the whole run is spent. Measurements are
    never skipped: a busy machine only costs time, and its load is reported with the figures.

    Parameters
    ----------
    budget : float
        Seconds of waiting allowed over the whole run.
    threshold : float
        Cores of other load under which the machine counts as quiet.
    probe : float
        Length of one look, in seconds.
    """

    def __init__(self, budget: float, threshold: float = 0.2, probe: float = 0.4) -> None:
        self.budget = budget
        self.threshold = threshold
        self.probe = probe

    def others_now(self) -> float:
        """Cores used by other processes over the next ``probe`` seconds."""
        wall0, busy0, _, own0 = _cpu_snapshot()
        time.sleep(self.probe)
        wall1, busy1, _, own1 = _cpu_snapshot()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall1 - wall0, 1e-9)

    def wait(self) -> dict:
        """Wait for a quiet machine (or the end of the budget); return what was seen."""
        waited = 0.0
        load = self.others_now()
        while load > self.threshold and self.budget > 0:
            pause = min(1.0, self.budget)
            time.sleep(pause)
            self.budget -= pause + self.probe
            waited += pause + self.probe
            load = self.others_now()
        return {"others_before": load, "waited_s": waited}


# ---------------------------------------------------------------------------------------------
# Running soartc


def soartc_command() -> list[str]:
    """How to start the ``soartc`` program of this interpreter's environment."""
    script = Path(sys.executable).parent / "soartc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "soartc_cli"]


def count_rows(path: Path) -> tuple[str, int | None]:
    """SHA-256 of an output file and its number of image rows (None: unknown format).

    CSV: lines minus the header; JSON Lines: lines; Parquet: rows of the file's metadata
    (pyarrow, imported only here); a folder (several files): None.

    Raises
    ------
    RuntimeError
        When a ``.parquet`` file is not Parquet.
    """
    if path.is_dir():
        return "", None
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as stream:
        for line in stream:
            digest.update(line)
            lines += 1
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return digest.hexdigest(), lines - 1
    if suffix in (".jsonl", ".ndjson"):
        return digest.hexdigest(), lines
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return digest.hexdigest(), None
        try:
            return digest.hexdigest(), pq.read_metadata(path).num_rows
        except Exception as exc:  # pyarrow's errors: a .parquet output that is not Parquet
            raise RuntimeError(f"{path}: not a readable Parquet file ({exc})") from exc
    return digest.hexdigest(), None


def run_command(
    inputs: str,
    arguments: Sequence[str],
    *,
    expect: int,
    out: Path,
    model: Path | None = None,
) -> dict:
    """Time one whole ``soartc ARGUMENTS…`` process.

    Parameters
    ----------
    inputs : str
        Folder or file given to the command: replaces ``{inputs}`` in ``arguments``.
    arguments : sequence of str
        The command line after ``soartc`` (sub-command first); ``{inputs}``, ``{out}`` and
        ``{model}`` in an argument are replaced by ``inputs``, ``out`` and ``model``. The
        output file is the argument after ``-o``/``--output``.
    expect : int
        Number of images; a CSV, JSON Lines or Parquet output must hold a whole positive
        multiple of it as rows (one per image, or as many per image in a long layout).
    out : Path
        Folder for the outputs (overwritten).
    model : Path, optional
        Model file of ``soartc score`` (``{model}``).

    Returns
    -------
    dict
        ``seconds`` (wall), ``images_per_s``, ``sha256`` of the output.

    Raises
    ------
    RuntimeError
        When the command fails or writes the wrong number of rows.
    """
    places = {"{inputs}": inputs, "{out}": str(out), "{model}": str(model)}
    for key, value in places.items():
        arguments = [a.replace(key, value) for a in arguments]
    command = [*soartc_command(), *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    _check(done.returncode, done.stderr, command)
    digest, rows = "", None
    for flag in ("-o", "--output"):
        if flag in arguments[:-1]:
            digest, rows = count_rows(Path(arguments[arguments.index(flag) + 1]))
    if rows is not None and (rows < expect or rows % expect):
        # One row per image (wide, JSON Lines), or the same number for each (long layout).
        raise RuntimeError(f"{' '.join(command)}: {rows} rows written for {expect} images")
    return {"seconds": seconds, "images_per_s": expect / seconds, "sha256": digest}


def run_compute(inputs: str, workdir: Path, workers: int, *, expect: int) -> dict:
    """Run ``soartc compute INPUTS -o out.csv --workers N`` and time the whole process.

    Parameters
    ----------
    inputs : str
        Folder or file given to the command.
    workdir : Path
        Where the CSV goes (overwritten).
    workers : int
        ``--workers``.
    expect : int
        Number of images; the CSV must have one row per image.

    Returns
    -------
    dict
        See :func:`run_command`.
    """
    arguments = [
        "compute",
        "{inputs}",
        "-o",
        f"{{out}}/out-w{workers}.csv",
        "--workers",
        str(workers),
    ]
    return run_command(inputs, arguments, expect=expect, out=workdir)


def fit_model(inputs: str, workdir: Path, *, expect: int) -> Path:
    """Make the model of the ``score`` row: ``soartc fit INPUTS -o MODEL.npz`` (untimed).

    Default settings, so its features are those of ``compute``'s default.

    Parameters
    ----------
    inputs : str
        Folder of the good images.
    workdir : Path
        Where the model goes.
    expect : int
        Number of images in ``inputs`` (checked against the model's record).

    Returns
    -------
    Path
        The model file.

    Raises
    ------
    RuntimeError
        When ``soartc fit`` fails or fits on another number of images.
    """
    model = workdir / "model.npz"
    command = [*soartc_command(), "fit", inputs, "-o", str(model), "--workers", "2", "-q"]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _check(done.returncode, done.stderr, command)
    record = Path(f"{model}.meta.json")
    if record.exists():
        fitted = json.loads(record.read_text()).get("counts", {}).get("processed")
        if fitted is not None and fitted != expect:
            raise RuntimeError(f"{' '.join(command)}: fitted on {fitted} images, not {expect}")
    return model


def _check(returncode: int, stderr: str, command: list[str]) -> None:
    if returncode != 0:
        text = " ".join(c if "\n" not in c else "<program>" for c in command)
        raise RuntimeError(f"{text} exited {returncode}: {stderr.strip()[-2000:]}")


def _process_table() -> dict[int, int]:
    """``{pid: parent pid}`` of every process visible in /proc."""
    parents = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stream:
                stat = stream.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _process_table().items():
        children.setdefault(parent, []).append(pid)
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


def _memory_kib(pid: int) -> tuple[int, int] | None:
    """``(VmRSS, VmHWM)`` of a process in KiB, or None once it is gone."""
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    return None if rss is None or hwm is None else (rss, hwm)


def run_memory(inputs: str | list[str], workdir: Path, workers: int, *, expect: int) -> dict:
    """Peak memory of the whole process tree of ``soartc compute`` (workers included).

    The tree (the command, its forkserver and workers, any helper process) is sampled every
    few milliseconds from ``/proc``.

    Parameters
    ----------
    inputs : str or list of str
        Folder(s) given to the command.
    workdir : Path
        Where the CSV goes.
    workers : int
        ``--workers``.
    expect : int
        Number of images (rows checked).

    Returns
    -------
    dict
        ``peak_tree_rss_mib``: largest sum of the resident sizes of all processes of the tree at
        one sample; ``sum_process_peaks_mib``: sum over the processes of each one's own peak
        (``VmHWM``, exact whatever the sampling), an upper bound of the tree's peak;
        ``largest_process_mib``; ``processes`` seen; ``samples``.
    """
    if not Path("/proc/self/status").exists():
        return {"error": "no /proc: memory not measured"}
    output = workdir / f"mem-w{workers}.csv"
    inputs = [inputs] if isinstance(inputs, str) else inputs
    command = [*soartc_command(), "compute", *inputs, "-o", str(output), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, int] = {}
    peak_tree = samples = 0
    while process.poll() is None:
        tree_rss = 0
        for pid in _descendants(process.pid):
            memory = _memory_kib(pid)
            if memory is not None:
                tree_rss += memory[0]
                peaks[pid] = max(peaks.get(pid, 0), memory[1])
        peak_tree = max(peak_tree, tree_rss)
        samples += 1
        time.sleep(MEMORY_SAMPLE_S)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    _check(process.wait(), stderr, command)
    rows = count_rows(output)[1]
    if rows != expect:
        raise RuntimeError(f"{' '.join(command)}: {rows} rows written, {expect} expected")
    return {
        "peak_tree_rss_mib": peak_tree / 1024,
        "sum_process_peaks_mib": sum(peaks.values()) / 1024,
        "largest_process_mib": max(peaks.values(), default=0) / 1024,
        "processes": len(peaks),
        "samples": samples,
    }


def run_child(mode: str, root: Path, relative: list[str], *options: str) -> dict:
    """Run one in-process measurement of ``_bench_child.py`` in a fresh interpreter.

    Parameters
    ----------
    mode : {"decode", "stages"}
        Which measurement.
    root : Path
        Folder the paths are relative to.
    relative : list of str
        Image paths relative to ``root``.
    *options : str
        More arguments of the child.

    Returns
    -------
    dict
        The child's JSON result.
    """
    command = [sys.executable, str(CHILD), mode, str(root), *options]
    done = subprocess.run(
        command, input="\n".join(relative), capture_output=True, text=True, cwd=REPO
    )
    _check(done.returncode, done.stderr, command)
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------------
# The run


def list_images(root: Path) -> list[str]:
    """JPEG paths under ``root``, relative and sorted as ``soartc`` sorts them."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _warm(root: Path, relative: list[str]) -> None:
    """Read every file once so that all measurements start from the page cache."""
    for rel in relative:
        (root / rel).read_bytes()


def corpus_measurements(
    prefix: str, root: Path, images: list[str], workdir: Path, *, stage_images: int
) -> dict[str, Callable[[], dict]]:
    """Throughput measurements of one corpus (keys start with ``prefix``)."""
    n = len(images)
    staged = images[:stage_images]
    return {
        f"{prefix}decode_fit": lambda: run_child("decode", root, images),
        f"{prefix}compute_w1": lambda: run_compute(str(root), workdir, 1, expect=n),
        f"{prefix}compute_w2": lambda: run_compute(str(root), workdir, 2, expect=n),
        f"{prefix}stages": lambda: run_child("stages", root, staged),
    }


def measure(
    corpus: Path,
    photo_corpus: Path | None,
    *,
    quick: bool,
    reps: int,
    wait_budget: float,
    log: Callable[[str], None],
) -> dict:
    """Run every measurement ``reps`` times, interleaved; return raw figures and medians.

    Parameters
    ----------
    corpus : Path
        The 640×480 corpus folder (sub-folders ``set00`` … of 100 images each).
    photo_corpus : Path or None
        The 4000×3000 corpus folder (sub-folders of 25), or None to skip it.
    quick : bool
        Throughput on the first sub-folder of each corpus only.
    reps : int
        Repetitions of every measurement.
    wait_budget : float
        Seconds the run may spend waiting for other processes to leave the machine quiet
        before a measurement (see :class:`QuietGate`).
    log : callable
        Progress lines.

    Returns
    -------
    dict
        ``runs``: per measurement, the list of per-repetition results; plus the set-up.
    """
    folders = sorted(p for p in corpus.iterdir() if p.is_dir())
    small_root = folders[0]
    small = list_images(small_root)
    # Memory on one sub-folder against the whole corpus (4 sub-folders with --quick).
    memory_roots = folders[:4] if quick else [corpus]
    everything = [i for root in memory_roots for i in list_images(root)]
    root, images = (small_root, small) if quick else (corpus, everything)
    one = str(small_root / small[0])
    n = len(images)
    photo_root = photo_images = None
    if photo_corpus is not None:
        photo_all = list_images(photo_corpus)
        photo_root = sorted(p for p in photo_corpus.iterdir() if p.is_dir())[0] if quick else None
        photo_root = photo_root or photo_corpus
        photo_images = list_images(photo_root)
        _warm(photo_corpus, photo_all)
    log(
        f"{n} images of 640×480 for throughput, memory on {len(small)} and {len(everything)}"
        + (f", {len(photo_images)} of 4000×3000" if photo_images else "")
        + f"; {reps} reps"
    )
    _warm(corpus, list_images(corpus))
    subreaper = become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="soartc-bench-"))
    stage_images = min(n, STAGE_IMAGES["vga"])
    try:
        # Untimed: byte-compiled files, the forkserver's first start, the page cache,
        # and the model of the score row (fitted on the first sub-folder: the first images).
        run_compute(one, workdir, 2, expect=1)
        model = fit_model(str(small_root), workdir, expect=len(small))
        run_child("decode", root, images[:20])
        reap_orphans()
        measurements = corpus_measurements("", root, images, workdir, stage_images=stage_images)
        measurements |= {
            "startup_w1": lambda: run_compute(one, workdir, 1, expect=1),
            "startup_w2": lambda: run_compute(one, workdir, 2, expect=1),
            "memory_100": lambda: run_memory(str(small_root), workdir, 2, expect=len(small)),
            "memory_all": lambda: run_memory(
                [str(r) for r in memory_roots], workdir, 2, expect=len(everything)
            ),
        }
        for key, _, arguments in EXTRA_COMMANDS:
            measurements[key] = lambda arguments=arguments: run_command(
                str(root), arguments, expect=n, out=workdir, model=model
            )
        if photo_root is not None:
            measurements |= corpus_measurements(
                "photo_", photo_root, photo_images, workdir,
                stage_images=min(len(photo_images), STAGE_IMAGES["photo"]),
            )  # fmt: skip
        gate = QuietGate(wait_budget, QUIET_CORES)
        names = list(measurements)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for rep in range(reps):
            shift = rep % len(names)
            order = names[shift:] + names[:shift]
            started = time.perf_counter()
            for name in order:
                seen = gate.wait()
                result = accounted(measurements[name])
                result["cpu"].update(seen)
                runs[name].append(result)
            log(f"repetition {rep + 1}/{reps} done in {time.perf_counter() - started:.1f} s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "images": n,
        "images_all": len(everything),
        "images_photo": len(photo_images) if photo_images else 0,
        "stage_images": stage_images,
        "throughput_root": str(root),
        "photo_root": str(photo_root) if photo_root else None,
        "model_images": len(small),
        "extra_commands": [[key, label] for key, label, _ in EXTRA_COMMANDS],
        "subreaper": subreaper,
        "quiet_threshold_cores": QUIET_CORES,
        "wait_budget_left_s": gate.budget,
        "runs": runs,
    }


def _spread(values: list[float]) -> dict:
    return {"median": _median(values), "min": min(values), "max": max(values), "all": values}


def _target(value: float, target: float, *, at_most: bool = False) -> dict:
    ok = value <= target if at_most else value >= target
    return {"value": value, "target": f"{'<=' if at_most else '>='} {target}", "pass": ok}


def summarise(raw: dict) -> dict:
    """Medians, ratios and PASS/FAIL of the raw figures.

    Parameters
    ----------
    raw : dict
        What :func:`measure` returned.

    Returns
    -------
    dict
        The figures of the report.
    """
    runs = raw["runs"]
    n = raw["images"]

    def rates(name: str) -> list[float]:
        return [r["images_per_s"] for r in runs[name]]

    def rate(name: str) -> float:
        return _median(rates(name)) if name in runs else float("nan")

    throughput_keys = [
        k for k, v in runs.items() if v and "images_per_s" in v[0] and not k.startswith("startup")
    ]
    throughput = {k: _spread(rates(k)) for k in throughput_keys}
    decode, w1, w2 = rate("decode_fit"), rate("compute_w1"), rate("compute_w2")
    start1 = _median([r["seconds"] for r in runs["startup_w1"]])
    start2 = _median([r["seconds"] for r in runs["startup_w2"]])
    sec1 = _median([r["seconds"] for r in runs["compute_w1"]])
    sec2 = _median([r["seconds"] for r in runs["compute_w2"]])
    steady1 = (n - 1) / (sec1 - start1) if sec1 > start1 else float("nan")
    steady2 = (n - 1) / (sec2 - start2) if sec2 > start2 else float("nan")
    identical = all(
        a["sha256"] == b["sha256"]
        for a, b in zip(runs["compute_w1"], runs["compute_w2"], strict=True)
    )

    def stages(name: str) -> dict:
        keys = runs[name][0]["ms"].keys()
        ms = {k: _median([r["ms"][k] for r in runs[name]]) for k in keys}
        main = ("decode", "fit", "features", "format")
        total = sum(ms[k] for k in main)
        return {"ms": ms, "share": {k: ms[k] / total for k in main}, "total_ms": total}

    def memory(name: str, key: str) -> float:
        return _median([r[key] for r in runs[name]])

    mem = {
        size: {
            key: memory(f"memory_{size}", key)
            for key in ("peak_tree_rss_mib", "sum_process_peaks_mib", "largest_process_mib")
        }
        | {"processes": max(r["processes"] for r in runs[f"memory_{size}"])}
        for size in ("100", "all")
    }
    growth = mem["all"]["peak_tree_rss_mib"] / mem["100"]["peak_tree_rss_mib"]
    growth_hwm = mem["all"]["sum_process_peaks_mib"] / mem["100"]["sum_process_peaks_mib"]
    split = stages("stages")
    metric_ms = split["ms"]["features"]
    targets = {
        "compute_w1_over_decode_fit": _target(w1 / decode, TARGET_COMPUTE_VS_DECODE),
        "compute_w2_over_w1": _target(w2 / w1, TARGET_TWO_VS_ONE),
        "metric_step_ms": _target(metric_ms, TARGET_METRIC_MS, at_most=True),
        "memory_all_over_100": _target(growth, TARGET_MEMORY_GROWTH, at_most=True)
        | {"value_sum_of_process_peaks": growth_hwm},
    }
    extra = {}
    for key, _ in raw["extra_commands"]:
        extra[key] = {"images_per_s": rate(key), "over_compute_w1": rate(key) / w1}
    if "score_w1" in runs:
        # Time per image of score over compute's: the inverse ratio of their throughputs.
        targets["score_over_compute_time"] = _target(
            w1 / rate("score_w1"), TARGET_SCORE_VS_COMPUTE, at_most=True
        )
    photo = None
    if raw["images_photo"]:
        p_decode, p1, p2 = rate("photo_decode_fit"), rate("photo_compute_w1"), rate(
            "photo_compute_w2"
        )  # fmt: skip
        photo = {
            "images": raw["images_photo"],
            "compute_w1_over_decode_fit": p1 / p_decode,
            "compute_w2_over_w1": p2 / p1,
            "stages": stages("photo_stages"),
        }

    def quiet_rates(name: str) -> list[float]:
        return [r["images_per_s"] for r in runs[name] if r["cpu"]["others_cores"] < QUIET_CORES]

    quiet = {k: quiet_rates(k) for k in ("decode_fit", "compute_w1", "compute_w2")}
    quiet_median = {k: _median(v) if v else None for k, v in quiet.items()}

    def quiet_ratio(a: str, b: str) -> float | None:
        if quiet_median[a] is None or quiet_median[b] is None:
            return None
        return quiet_median[a] / quiet_median[b]

    quiet_summary = {
        "threshold_cores": QUIET_CORES,
        "counts": {k: len(v) for k, v in quiet.items()},
        "medians": quiet_median,
        "compute_w1_over_decode_fit": quiet_ratio("compute_w1", "decode_fit"),
        "compute_w2_over_w1": quiet_ratio("compute_w2", "compute_w1"),
    }

    def per_image(name: str) -> int:
        if name.startswith("photo_"):
            return raw["images_photo"]
        return n if name in throughput_keys else 1

    load = {
        name: {
            "others_cores": _median([r["cpu"]["others_cores"] for r in results]),
            "steal_cores": _median([r["cpu"]["steal_cores"] for r in results]),
            "own_cpu_ms_per_image": 1000.0
            * _median([r["cpu"]["own_s"] for r in results])
            / per_image(name),
        }
        for name, results in runs.items()
    }

    def cpu_ratio(name: str) -> float:
        """decode+fit's CPU ms per image over ``name``'s (start-up included in both)."""
        return load["decode_fit"]["own_cpu_ms_per_image"] / load[name]["own_cpu_ms_per_image"]

    # Less sensitive than wall time to what other users of the machine run meanwhile (but not
    # blind to it: they share caches and cores), so reported next to the targets, not instead.
    cpu_ratios = {"compute_w1_over_decode_fit": cpu_ratio("compute_w1")}
    return {
        "images": n,
        "cpu_time_ratios": cpu_ratios,
        "throughput": throughput,
        "startup_seconds": {"w1": start1, "w2": start2},
        "steady_state_images_per_s": {"w1": steady1, "w2": steady2},
        "csv_identical_w1_w2": identical,
        "targets": targets,
        "extra_commands": extra,
        "photo": photo,
        "stages": split,
        "memory_mib": mem,
        "cpu": load,
        "quiet_only": quiet_summary,
        "others_cores_median": _median(
            [r["cpu"]["others_cores"] for results in runs.values() for r in results]
        ),
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _quiet_lines(summary: dict) -> list[str]:
    """Lines on the load of other processes, and the figures of the quiet measurements."""
    quiet = summary["quiet_only"]
    lines = []
    others = summary["others_cores_median"]
    if others >= QUIET_CORES:
        lines.append(
            f"  WARNING: other processes used {others:.2f} cores (median over the measurements)"
            " of this machine meanwhile: throughput and ratios are pessimistic"
        )
    counts = quiet["counts"]
    figures = ", ".join(
        f"{key} {value:.1f} (n={counts[key]})"
        for key, value in quiet["medians"].items()
        if value is not None
    )
    lines.append(f"  quiet measurements only (others < {QUIET_CORES} cores): {figures or 'none'}")
    ratios = []
    for key, label, target in (
        ("compute_w1_over_decode_fit", "compute(1)/decode+fit", TARGET_COMPUTE_VS_DECODE),
        ("compute_w2_over_w1", "compute(2)/compute(1)", TARGET_TWO_VS_ONE),
    ):
        if quiet[key] is not None:
            ratios.append(f"{label} {quiet[key]:.3f} ({_verdict(quiet[key] >= target)})")
    if ratios:
        lines.append("  quiet ratios: " + "; ".join(ratios))
    return lines


#: Labels of the throughput rows, in report order (extra commands are added after them).
ROW_LABELS = {
    "decode_fit": "decode+fit only (load_image loop, 1 process)",
    "compute_w1": "soartc compute -o out.csv --workers 1",
    "compute_w2": "soartc compute -o out.csv --workers 2",
}


def _throughput_lines(summary: dict, prefix: str, labels: dict[str, str]) -> list[str]:
    t, cpu = summary["throughput"], summary["cpu"]
    lines = []
    base = t[prefix + "compute_w1"]["median"]
    for key, label in labels.items():
        if prefix + key not in t:
            continue
        s = t[prefix + key]
        spread = f"[{s['min']:.1f}–{s['max']:.1f}]"
        load = cpu[prefix + key]
        lines.append(
            f"  {label:<52} {s['median']:8.1f} {spread:>15} {s['median'] / base:8.3f}"
            f" {load['own_cpu_ms_per_image']:11.2f} {load['others_cores']:7.2f}"
        )
    return lines


def _stage_lines(split: dict) -> list[str]:
    ms, share = split["ms"], split["share"]
    lines = []
    for key, label in (
        ("decode", "decode (Pillow open + load)"),
        ("fit", "fit (luma + resize = load_image − decode)"),
        ("features", "transforms + metrics (soartc_features)"),
        ("format", "formatting (CSV encoder, wide layout)"),
    ):
        lines.append(f"  {label:<44} {ms[key]:7.3f} ms  {100 * share[key]:5.1f}%")
    lines.append(
        f"  {'total':<44} {split['total_ms']:7.3f} ms  (≈ {1000 / split['total_ms']:.0f} images/s)"
    )
    lines.append(
        f"  detail: imageio.decode {ms['d_decode']:.3f} ms (open + load + EXIF), "
        f"to_array (luma) {ms['d_to_array']:.3f} ms, fit (resize) {ms['d_fit']:.3f} ms"
    )
    return lines


def render(facts: dict, summary: dict, raw: dict, *, reps: int, quick: bool) -> str:
    """The readable report.

    Parameters
    ----------
    facts : dict
        :func:`machine_facts`.
    summary : dict
        :func:`summarise`.
    raw : dict
        :func:`measure` (for the set-up).
    reps : int
        Repetitions.
    quick : bool
        Whether this was a ``--quick`` run.

    Returns
    -------
    str
        Lines of text.
    """
    blas = facts["blas"]
    if blas.get("source") == "threadpoolctl":
        blas_text = (
            ", ".join(
                f"{lib['internal_api']} {lib['version']} ({lib['architecture']})"
                for lib in blas["libraries"]
            )
            or "none found"
        )
    else:
        blas_text = f"{blas.get('name')} {blas.get('version')}"
    n = summary["images"]
    tg = summary["targets"]
    mem = summary["memory_mib"]
    changed = facts["git"]["package_files_changed"]
    header = (
        f"  {'Throughput (images/s)':<52} {'median':>8} {'[min–max]':>15} {'×comp(1)':>8}"
        f" {'CPU ms/img':>11} {'others':>7}"
    )
    lines = [
        f"soartc benchmark{' (QUICK: indicative only)' if quick else ''}",
        f"  date {facts['date']}   commit {facts['git']['commit'][:12]}"
        + (f" + {len(changed)} changed/untracked package files" if changed else ""),
        f"  CPU {facts['cpu']}, nproc {facts['nproc']}; Python {facts['python']}, "
        f"numpy {facts['numpy']}, Pillow {facts['Pillow']} (libjpeg-turbo "
        f"{facts['libjpeg_turbo']}), scipy {facts['scipy']}, BLAS {blas_text}",
        f"  {n} JPEG photos 640×480; medians of {reps} interleaved repetition(s) "
        f"[min–max]; load average {facts.get('loadavg_before')} → {facts.get('loadavg_after')}",
        "  ×comp(1) = median images/s over compute --workers 1's; others = CPU cores used by"
        " other processes of this machine meanwhile (median); CPU ms/img: every process of the"
        " measurement, start-up included",
        "",
        header,
    ]
    labels = dict(ROW_LABELS)
    for key, label in raw["extra_commands"]:
        labels[key] = f"soartc {label}"
    lines += _throughput_lines(summary, "", labels)
    st = summary["startup_seconds"]
    ss = summary["steady_state_images_per_s"]
    lines += [
        f"  start-up (same command on 1 image): {st['w1']:.2f} s (1 worker), "
        f"{st['w2']:.2f} s (2 workers)",
        f"  without start-up: {ss['w1']:.1f} images/s (1 worker), {ss['w2']:.1f} (2 workers)",
        "  CSV byte-identical for 1 and 2 workers: "
        + ("yes" if summary["csv_identical_w1_w2"] else "NO"),
        *_quiet_lines(summary),
        "",
        f"Acceptance targets (issue 12, {n} images)",
        f"  compute(1 worker) / decode+fit     {tg['compute_w1_over_decode_fit']['value']:6.3f}"
        f"   target ≥ {TARGET_COMPUTE_VS_DECODE}  "
        + _verdict(tg["compute_w1_over_decode_fit"]["pass"]),
        f"  compute(2 workers) / compute(1)    {tg['compute_w2_over_w1']['value']:6.3f}"
        f"   target ≥ {TARGET_TWO_VS_ONE}   " + _verdict(tg["compute_w2_over_w1"]["pass"]),
        f"  metric step, ms per image          {tg['metric_step_ms']['value']:6.3f}"
        f"   target ≤ {TARGET_METRIC_MS}   " + _verdict(tg["metric_step_ms"]["pass"]),
        f"  peak memory all / 100 images       {tg['memory_all_over_100']['value']:6.3f}"
        f"   target ≤ {TARGET_MEMORY_GROWTH}  " + _verdict(tg["memory_all_over_100"]["pass"]),
    ]
    if "score_over_compute_time" in tg:
        score = tg["score_over_compute_time"]
        lines.append(
            f"  score / compute time per image     {score['value']:6.3f}"
            f"   target ≤ {TARGET_SCORE_VS_COMPUTE}  "
            + _verdict(score["pass"])
            + f"  (issue 10; model fitted on {raw['model_images']} images)"
        )
    cpu_ratios = summary["cpu_time_ratios"]
    lines.append(
        "  by CPU time (start-ups included; less sensitive to other load): compute(1 worker) /"
        f" decode+fit {cpu_ratios['compute_w1_over_decode_fit']:.3f}"
    )
    lines += [
        "",
        f"Per image, one process, first {raw['stage_images']} images (ms, share of the total)",
        *_stage_lines(summary["stages"]),
    ]
    photo = summary["photo"]
    if photo:
        lines += [
            "",
            f"{photo['images']} camera photos 4000×3000 (images/s)",
            header,
            *_throughput_lines(summary, "photo_", ROW_LABELS),
            f"  compute(1 worker) / decode+fit {photo['compute_w1_over_decode_fit']:.3f}, "
            f"compute(2) / compute(1) {photo['compute_w2_over_w1']:.3f}",
            "  per image, one process:",
            *_stage_lines(photo["stages"]),
        ]
    lines += [
        "",
        "Peak memory of soartc compute --workers 2, whole process tree (MiB)",
        f"  {'images':>8} {'tree RSS':>10} {'Σ process peaks':>16} {'largest process':>16}"
        f" {'processes':>10}",
    ]
    for size, count in (("100", 100), ("all", raw["images_all"])):
        m = mem[size]
        lines.append(
            f"  {count:>8} {m['peak_tree_rss_mib']:10.1f} {m['sum_process_peaks_mib']:16.1f}"
            f" {m['largest_process_mib']:16.1f} {m['processes']:>10}"
        )
    lines.append(
        f"  ratio all/100: {tg['memory_all_over_100']['value']:.3f} (tree RSS), "
        f"{tg['memory_all_over_100']['value_sum_of_process_peaks']:.3f} (Σ process peaks)"
    )
    return "\n".join(lines)


def _finite(value):
    """``value`` with every NaN or infinite float replaced by None (strict JSON)."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark.

    Parameters
    ----------
    argv : list of str, optional
        Arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 when the benchmark ran (whether or not the targets pass), 1 when it could not run.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sub-folder each, 1 repetition")
    parser.add_argument("--reps", type=int, help="repetitions (default 5; 1 with --quick)")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder of photos")
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS_ROOT / VGA.folder, help="640×480 corpus folder"
    )
    parser.add_argument(
        "--photo-corpus",
        type=Path,
        default=CORPUS_ROOT / PHOTO.folder,
        help="4000×3000 corpus folder",
    )
    parser.add_argument("--no-photo", action="store_true", help="skip the 4000×3000 corpus")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    parser.add_argument(
        "--wait-budget",
        type=float,
        help="seconds the run may wait for a quiet machine in all (default 150; 10 with --quick)",
    )
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 5)

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    manifest = ensure_corpus(args.sources, args.corpus, VGA, log=log)
    photo_manifest = None
    if not args.no_photo:
        photo_manifest = ensure_corpus(args.sources, args.photo_corpus, PHOTO, log=log)
    facts = machine_facts()
    facts["loadavg_before"] = _loadavg()
    try:
        budget = args.wait_budget if args.wait_budget is not None else (10 if args.quick else 150)
        raw = measure(
            args.corpus,
            None if args.no_photo else args.photo_corpus,
            quick=args.quick,
            reps=reps,
            wait_budget=budget,
            log=log,
        )
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    facts["loadavg_after"] = _loadavg()
    summary = summarise(raw)
    print(render(facts, summary, raw, reps=reps, quick=args.quick), flush=True)
    corpora = {"vga": manifest} | ({"photo": photo_manifest} if photo_manifest else {})
    report = {
        "quick": args.quick,
        "repetitions": reps,
        "machine": facts,
        "corpora": {
            kind: {
                "images": len(m["images"]),
                "megabytes": sum(item.get("bytes", 0) for item in m["images"]) / 1e6,
                "size": m["size"],
                "sources": sorted(m["sources"]),
            }
            for kind, m in corpora.items()
        },
        "summary": summary,
        "raw": raw,
        "seconds": time.perf_counter() - started,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(report), indent=1, ensure_ascii=False, allow_nan=False)
    args.json.write_text(text + "\n")
    log(f"figures written to {args.json} ({report['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
