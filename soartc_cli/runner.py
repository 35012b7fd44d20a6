"""Many images → ordered results: the per-image job, worker processes, failures as data.

``process_image`` turns one file into one :class:`ImageResult` (or :class:`Failure`): load and fit,
compute the features, format the output text, draw the picture. ``run_images`` maps it over a list
of files, in this process or in worker processes, and yields the results in input order with a
bounded number in flight, so memory does not grow with the folder.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO

import numpy as np

from soartc_cli import attention, imageio, writers
from soartc_cli._startup import limit_blas_threads, single_thread_environment, tune_malloc
from soartc_cli.discover import ImageFile
from soartc_cli.errors import InputError, SoartcError, UsageError
from soartc_cli.patches import patch_grid, patch_names


@dataclass(frozen=True)
class ImageSettings:
    """The image pipeline of SPEC §2: fit size, patch size, channels, inversion, pixel limit."""

    size: int = 224
    patch: int = 16
    channels: str = "luma"
    invert: bool = False
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class SoartcJob:
    """SOARTC / SOART features: transforms (in column order), metrics, datum, kernels in use."""

    image: ImageSettings
    transforms: tuple[str, ...]
    metrics: tuple[str, ...]
    datum: str
    kernels: dict[str, np.ndarray] = field(compare=False)

    @property
    def columns(self) -> writers.Columns:
        """Output names of this job's values."""
        channels = ("R", "G", "B") if self.image.channels == "rgb" else None
        return writers.Columns(channels, self.transforms, self.metrics)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(C, T, M, N)`` float64 values."""
        from soartc_cli.features import soartc_features

        return soartc_features(
            pixels,
            patch=self.image.patch,
            transforms=self.transforms,
            datum=self.datum,
            metrics=self.metrics,
            kernels=self.kernels,
        )


@dataclass(frozen=True)
class AttentionJob:
    """Attention over the patches of an image (SPEC §5): normalisation and projections."""

    image: ImageSettings
    norm: str
    weights: attention.Weights = field(compare=False)

    @property
    def columns(self) -> writers.Columns:
        """Output names of this job's values (channels are concatenated into each patch row)."""
        return writers.Columns(None, ("attention",), attention.ATTENTION_METRICS)

    def compute(self, pixels: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` fitted pixels → ``(1, 1, 2, N)`` float64 values (received, entropy)."""
        return attention.image_attention(
            pixels, patch=self.image.patch, weights=self.weights, norm=self.norm
        )


Job = SoartcJob | AttentionJob


@dataclass(frozen=True)
class Task:
    """Everything a worker needs besides the file: the job and where its outputs go."""

    job: Job
    output: writers.OutputFormat | None  # None: no file output (terminal tables only)
    maps_dir: str | None = None


@dataclass(frozen=True)
class ImageResult:
    """One processed image: names, original size, patch grid, output bytes and per-patch means.

    ``data`` is the image's output text (CSV rows or a JSON line) encoded as UTF-8: bytes cross
    the pipe from a worker without the encode/decode a str costs there.
    """

    index: int
    path: str
    label: str
    width: int
    height: int
    grid: tuple[int, int]
    data: bytes
    means: np.ndarray  # (C, T, M)


@dataclass(frozen=True)
class Failure:
    """One image that could not be used, and why."""

    index: int
    path: str
    error: str


Outcome = ImageResult | Failure


@functools.lru_cache(maxsize=64)
def _names(grid: tuple[int, int]) -> tuple[str, ...]:
    """Patch names of a grid, made once per grid size rather than once per image."""
    return tuple(patch_names(*grid))


def process_image(index: int, file: ImageFile, task: Task) -> Outcome:
    """Load, compute, format and draw one image; every error becomes a :class:`Failure`."""
    with warnings.catch_warnings():
        # Pillow warns about odd but usable files ("Corrupt EXIF data"): they are used as they
        # are, and a multi-line warning must not land among the output lines.
        warnings.simplefilter("ignore")
        return _process_image(index, file, task)


def _process_image(index: int, file: ImageFile, task: Task) -> Outcome:
    try:
        settings = task.job.image
        loaded = imageio.load_image(
            file.source,
            size=settings.size,
            patch=settings.patch,
            channels=settings.channels,
            invert=settings.invert,
            max_pixels=settings.max_pixels,
        )
        values = task.job.compute(loaded.pixels)
        grid = patch_grid(loaded.pixels.shape[-2:], patch=settings.patch)
        names = _names(grid)
        columns = task.job.columns
        data = b""
        if task.output is not None:
            data = writers.format_image(
                task.output, columns, path=file.path, label=file.label,
                width=loaded.width, height=loaded.height, grid=grid, names=names, values=values,
            )  # fmt: skip
        if task.maps_dir is not None:
            from soartc_cli import maps

            picture = maps.render_map(
                loaded.pixels, values, grid=grid, channels=columns.channels or (settings.channels,),
                transforms=columns.transforms, metrics=columns.metrics, title=file.path,
            )  # fmt: skip
            maps.write_map(picture, task.maps_dir, file.path)
        return ImageResult(
            index, file.path, file.label, loaded.width, loaded.height, grid, data,
            values.mean(axis=-1),
        )  # fmt: skip
    except InputError as exc:
        return Failure(index, file.path, str(exc))
    except MemoryError:
        return Failure(index, file.path, "out of memory")
    except OSError as exc:
        return Failure(index, file.path, f"cannot write its outputs: {exc.strerror or exc}")
    except Exception as exc:  # a bug must not lose the other images' rows
        return Failure(index, file.path, f"internal error: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------
# Worker processes


def _worker_main(conn, task: Task) -> None:
    """Worker loop: receive a chunk of ``(index, file)``, send back its outcomes; ``None`` ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not run the parent's
    tune_malloc()
    limit_blas_threads(1)  # forked from a numpy that may have started several BLAS threads
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        conn.send([process_image(index, file, task) for index, file in chunk])


_READY = "ready"


class WorkerStartError(SoartcError):
    """A worker process died before it could take any image (for example a broken install)."""


class _Worker:
    """One worker process, its pipe and the tasks sent to it, oldest first."""

    def __init__(self, context, task: Task) -> None:
        parent, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, task), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent
        self.busy: deque[list[tuple[int, ImageFile]]] = deque()  # chunks sent, oldest first
        self.ready = False

    def send(self, chunk: list[tuple[int, ImageFile]]) -> None:
        self.conn.send(chunk)
        self.busy.append(chunk)

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=None if not kill else 5)
        self.conn.close()


def _context():
    """How to start workers: fork when this process has one thread, else forkserver or spawn.

    A fork starts at once with everything imported (0.2–0.5 s less per run than a fresh
    interpreter, which counts in batch jobs); forking a process that runs other threads can
    deadlock the child, so then a start method that begins from a fresh interpreter is used.
    """
    import multiprocessing  # only runs with workers need it: 6 ms less start-up for the others

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # The server imports the pipeline once; each worker is a fork of it, ready at once.
        context.set_forkserver_preload(["soartc_cli.runner", "soartc_cli.features"])
        return context
    return multiprocessing.get_context("spawn")


def _prepare_environment() -> None:
    """Give worker processes one BLAS thread each (unless the user chose otherwise)."""
    for name, value in single_thread_environment().items():
        os.environ.setdefault(name, value)


def run_images(
    files: Sequence[ImageFile],
    task: Task,
    *,
    workers: int = 1,
    per_worker: int = 2,
    chunk: int = 8,
    window: int | None = None,
) -> Iterator[Outcome]:
    """Process ``files`` and yield one outcome per file, in input order.

    Parameters
    ----------
    files : sequence of ImageFile
    task : Task
    workers : int
        1 runs in this process; more start that many worker processes.
    per_worker : int
        Chunks sent ahead to each worker, so that none waits for the next one.
    chunk : int
        Consecutive images per message (8): the parent wakes once per chunk, not per image
        (each wake-up takes a core from a worker when there are as many workers as cores).
    window : int, optional
        At most this many images are in flight or waiting to be yielded (default
        ``4 * workers * per_worker * chunk``): memory stays flat however long ``files`` is.

    Notes
    -----
    A worker process that dies (a crash in a decoder) fails only the image it was working on:
    the images of its chunk are tried again one by one by a new worker, and the one that kills
    its worker again is reported as a :class:`Failure`; the others' outcomes are not lost.
    Closing the generator early (or an exception such as KeyboardInterrupt) kills the workers.
    """
    if workers <= 1:
        for index, file in enumerate(files):
            yield process_image(index, file, task)
        return
    from multiprocessing import connection

    window = window or 4 * workers * per_worker * chunk
    _prepare_environment()
    context = _context()
    # A forked child flushes the standard streams when it ends: nothing may wait in them.
    sys.stdout.flush()
    sys.stderr.flush()
    pool = [_Worker(context, task) for _ in range(workers)]
    queue: deque[list[tuple[int, ImageFile]]] = deque()  # chunks to send again, first
    source = iter(enumerate(files))
    done: dict[int, Outcome] = {}
    next_out = 0
    pending: list[tuple[int, ImageFile]] = []
    taken = 0  # images taken from ``files`` so far
    exhausted = False
    try:
        while True:
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            # Feed the workers: chunks to retry first, then new ones within the window.
            for worker in pool:
                while len(worker.busy) < per_worker:
                    if queue:
                        worker.send(queue.popleft())
                        continue
                    # Guided sizes: full chunks while much is left, then smaller ones, so that
                    # no worker idles through the last chunk of another.
                    left = len(files) - (pending[0][0] if pending else taken)
                    size = max(1, min(chunk, left // (2 * workers)))
                    while len(pending) < size and not exhausted:
                        item = next(source, None)
                        exhausted = item is None
                        if item is not None:
                            pending.append(item)
                            taken = item[0] + 1
                    beyond = pending and pending[-1][0] >= next_out + window
                    if not pending or (beyond and any(w.busy for w in pool)):
                        break  # (with nothing in flight, a chunk goes out whatever the window)
                    worker.send(pending)
                    pending = []
            if not any(w.busy for w in pool):
                if not exhausted or pending or queue or done:
                    raise RuntimeError("the runner stopped with images left")  # never silently
                break  # nothing in flight, nothing left to send: every outcome was yielded
            ready = connection.wait([w.conn for w in pool] + [w.process.sentinel for w in pool])
            for i, worker in enumerate(pool):
                if worker.conn in ready or worker.process.sentinel in ready:
                    pool[i] = _collect(worker, done, queue, context, task)
    finally:
        for worker in pool:
            worker.stop(kill=bool(worker.busy) or not exhausted)


def _collect(worker: _Worker, done: dict[int, Outcome], queue: deque, context, task: Task):
    """Take what ``worker`` has sent; replace it when it died. Returns the worker to keep."""
    try:
        while worker.conn.poll():
            message = worker.conn.recv()
            if message == _READY:
                worker.ready = True
                continue
            worker.busy.popleft()
            for outcome in message:
                done[outcome.index] = outcome
    except (EOFError, OSError):
        pass
    alive = worker.process.is_alive()  # asked once: the answer may change between two calls
    if not worker.ready and not alive:
        worker.stop(kill=True)
        raise WorkerStartError(
            f"a worker process could not start (exit code {worker.process.exitcode}); "
            "try --workers 1"
        )
    if alive:
        return worker
    if worker.busy:
        crashed = worker.busy.popleft()  # the chunk it was working on
        if len(crashed) == 1:
            index, file = crashed[0]
            code = worker.process.exitcode
            reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            done[index] = Failure(index, file.path, f"the worker process crashed on it ({reason})")
        # Chunks not started go back as they were; a crashed chunk goes back one image at a
        # time, so that the image that kills a worker is found and only it is lost.
        queue.extendleft(reversed(worker.busy))
        queue.extendleft([item] for item in reversed(crashed) if len(crashed) > 1)
        worker.busy.clear()
    worker.stop(kill=True)
    return _Worker(context, task)


# ---------------------------------------------------------------------------------------------
# A whole run: outcomes → output file, terminal rows, failures


class StrictStop(SoartcError):
    """``--strict``: the first unusable image stops the run; no output file is written."""


class Interrupted(SoartcError):
    """Ctrl-C or SIGTERM: the run stopped after ``done`` of ``total`` images, output removed."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} images; no output written")
        self.done = done
        self.total = total


@dataclass
class RunReport:
    """What a run did: counts, failures, and the terminal-table rows when there was no file."""

    found: int
    processed: int = 0
    failures: list[Failure] = field(default_factory=list)
    rows: list[writers.TableRow] = field(default_factory=list)
    started: str = ""
    finished: str = ""

    @property
    def ok(self) -> bool:
        """True when images were found and every one of them was processed."""
        return self.found > 0 and not self.failures


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def fixed_grid(settings: ImageSettings) -> tuple[int, int] | None:
    """The patch grid every image has, or None with ``size=0`` (it depends on each image)."""
    if settings.size == 0:
        return None
    side = settings.size // settings.patch
    return side, side


def run_job(
    files: Sequence[ImageFile],
    task: Task,
    *,
    sink: IO[bytes] | None,
    workers: int = 1,
    strict: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> RunReport:
    """Process ``files`` and stream their output text to ``sink``, in input order.

    Parameters
    ----------
    files : sequence of ImageFile
    task : Task
        ``task.output`` None collects terminal-table rows instead of text.
    sink : binary file or None
        Where the CSV header and rows (or JSON lines) go, UTF-8. The caller makes it atomic.
    workers : int
    strict : bool
        Raise :class:`StrictStop` at the first failure.
    on_outcome : callable, optional
        Called with every outcome as it is taken (progress, "skipped" lines).

    Raises
    ------
    StrictStop, Interrupted
    """
    report = RunReport(found=len(files), started=_now())
    columns = task.job.columns
    grid = fixed_grid(task.job.image)
    wide = task.output is not None and task.output.kind == "csv" and task.output.layout == "wide"
    header_written = False

    def write_header(names: Sequence[str]) -> None:
        nonlocal header_written
        if sink is not None and task.output is not None and not header_written:
            sink.write(writers.header(task.output, columns, names).encode("utf-8"))
            sink.flush()  # before any worker is forked
        header_written = True

    if grid is not None or not wide:
        write_header(patch_names(*grid) if grid is not None else [])
    outcomes = run_images(files, task, workers=workers)
    try:
        for outcome in outcomes:
            if isinstance(outcome, ImageResult) and wide:
                if grid is None:
                    grid = outcome.grid
                    write_header(patch_names(*grid))
                elif outcome.grid != grid:
                    outcome = Failure(
                        outcome.index, outcome.path,
                        f"its patch grid {outcome.grid[0]}×{outcome.grid[1]} differs from the "
                        f"first image's {grid[0]}×{grid[1]} (the wide layout needs the same "
                        "columns in every row; use --size, or --layout long or summary)",
                    )  # fmt: skip
            if on_outcome is not None:
                on_outcome(outcome)
            if isinstance(outcome, Failure):
                report.failures.append(outcome)
                if strict:
                    raise StrictStop(
                        f"{outcome.path}: {outcome.error} (--strict: no output written)"
                    )
                continue
            report.processed += 1
            if sink is not None and task.output is not None:
                sink.write(outcome.data)
            else:
                report.rows.append(
                    writers.TableRow(
                        outcome.path, outcome.label, outcome.width, outcome.height, outcome.means
                    )
                )
    except KeyboardInterrupt:
        outcomes.close()
        raise Interrupted(report.processed + len(report.failures), len(files)) from None
    finally:
        outcomes.close()
    write_header([])
    report.finished = _now()
    return report


def run_to_output(
    files: Sequence[ImageFile],
    task: Task,
    *,
    output: str | None,
    fmt: writers.OutputFormat,
    settings: dict,
    command: Sequence[str],
    version: str,
    record: str | None = None,
    workers: int = 1,
    strict: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
    failures: Sequence[Failure] = (),
    stdout: IO[bytes] | None = None,
) -> RunReport:
    """A whole run with its outputs: the rows to ``output``, then the run record.

    Parameters
    ----------
    output : str or None
        A file (written to a temporary name and renamed when complete; removed on any error or
        interrupt), ``"-"`` for the binary stream ``stdout``, or None for terminal-table rows.
    fmt : OutputFormat
        The format, as the run record states it.
    settings, command, version :
        What the run record says of the run.
    record : str, optional
        Where the run record goes; default ``OUTPUT.meta.json`` for a file output, none else.
    failures : sequence of Failure
        Failures found before the run (unreadable directories), counted and recorded too.

    Raises
    ------
    UsageError
        The output file cannot be created.
    StrictStop, Interrupted
        As :func:`run_job`; no output file is left.
    """
    try:
        target = writers.AtomicFile(output, binary=True) if output not in (None, "-") else None
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    sink = target.file if target is not None else (stdout if output == "-" else None)
    try:
        report = run_job(
            files, task, sink=sink, workers=min(workers, max(1, len(files))), strict=strict,
            on_outcome=on_outcome,
        )  # fmt: skip
    except BaseException:
        if target is not None:
            target.discard()
        raise
    report.failures[:0] = failures
    if target is not None:
        target.commit()
    record_file = record or (writers.record_path(output) if target is not None else None)
    if record_file is not None:
        data = run_record(
            report, settings=settings, output=writers.describe_output(output, fmt),
            command=command, version=version,
        )  # fmt: skip
        writers.write_text_atomic(record_file, writers.record_json(data))
    return report


def job_settings(job: Job, *, weights_source: str | None = None, seed: int | None = None) -> dict:
    """Every setting of a job, for the run record (kernels written out with their values)."""
    settings: dict[str, object] = {
        "size": job.image.size,
        "patch": job.image.patch,
        "channels": job.image.channels,
        "invert": job.image.invert,
        "max_pixels": job.image.max_pixels,
    }
    if isinstance(job, SoartcJob):
        from soartc_cli.transforms import ROTATIONS

        settings["datum"] = {"name": job.datum, "kernel": job.kernels[job.datum].tolist()}
        settings["transforms"] = [
            {"name": t, "rotation": t}
            if t in ROTATIONS
            else {"name": t, "kernel": job.kernels[t].tolist()}
            for t in job.transforms
        ]
        settings["metrics"] = list(job.metrics)
    else:
        k, d = job.weights.shape
        settings.update(
            norm=job.norm, weights=weights_source, seed=seed, dim=d, k=k,
            transforms=["attention"], metrics=list(attention.ATTENTION_METRICS),
        )  # fmt: skip
    return settings


def run_record(
    report: RunReport, *, settings: dict, output: dict, command: Sequence[str], version: str
) -> dict:
    """The run record of SPEC §6 as a JSON-ready dict."""
    return {
        "tool": "soartc",
        "version": version,
        "command": list(command),
        "settings": settings,
        "output": output,
        "counts": {
            "found": report.found,
            "processed": report.processed,
            "failed": len(report.failures),
        },
        "failures": [{"path": f.path, "error": f.error} for f in report.failures],
        "started": report.started,
        "finished": report.finished,
    }
