"""A whole run of an image command: files → ordered outcomes → a consumer, its record, pictures.

:func:`run` is what ``compute``, ``attention DIR``, ``fit`` and ``score`` call with a job and one
:class:`~soartc_cli.settings.run.RunSettings`: discovery and shards, the checks that protect the
user's files, the worker pool, the consumer of the rows (an output file, the terminal tables, or
a collector such as ``fit``'s), failures as data, and the run record, committed with the output.
``--resume`` runs through its journal (:mod:`soartc_cli.pipeline.resume`). The CLI parses, calls
and renders.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import IO, Any, Protocol

from soartc_cli import __version__
from soartc_cli.core.patches import patch_names
from soartc_cli.errors import SoartcError, UsageError
from soartc_cli.imaging import discover
from soartc_cli.output import targets
from soartc_cli.output.record import record_json, run_record
from soartc_cli.pipeline.jobs import (
    Encoder,
    Failure,
    FormatEncoder,
    ImageResult,
    Job,
    Outcome,
    Task,
    crashed,
    process_image,
)
from soartc_cli.settings.run import OutputSettings, RunSettings

__all__ = [
    "Consumer",
    "FileConsumer",
    "Interrupted",
    "Observer",
    "RunReport",
    "StrictStop",
    "TableConsumer",
    "run",
    "run_job",
]


class StrictStop(SoartcError):
    """``--strict``: the first unusable image stops the run; no output file is written."""


class Interrupted(SoartcError):
    """Ctrl-C or SIGTERM: the run stopped after ``done`` of ``total`` images, output removed."""

    def __init__(self, done: int, total: int, *, kept: str | None = None) -> None:
        if kept is None:
            text = f"interrupted after {done} of {total} images; no output written"
        else:
            text = (
                f"interrupted after {done} of {total} images; progress kept in {kept}: "
                "run the same command with --resume to go on"
            )
        super().__init__(text)
        self.done = done
        self.total = total


@dataclass
class RunReport:
    """What a run did: counts, failures, the job's extras per image, the record."""

    found: int  # files of this shard, and the inputs that could not be read
    processed: int = 0
    failures: list[Failure] = field(default_factory=list)
    extras: list[tuple[str, Any]] = field(default_factory=list)  # (label, extra) per image
    started: str = ""
    finished: str = ""
    record: dict | None = None
    empty_shard: bool = False  # this shard of a non-empty list holds no file: not an error
    resumed: int = 0  # images taken from the journal of an interrupted run

    @property
    def ok(self) -> bool:
        """True when images were found and every one of them was processed (or the shard of a
        non-empty file list is empty)."""
        return (self.found > 0 or self.empty_shard) and not self.failures


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _ignore(_: object) -> None:
    pass


@dataclass(frozen=True)
class Observer:
    """What the caller sees of a run while it goes (the CLI's progress bar and lines).

    ``on_start(total)`` once the file list is known; ``on_outcome`` for every new outcome (and
    every unreadable input); ``note`` for warnings, one line each without ``soartc:``.
    """

    on_start: Callable[[int], Any] = _ignore
    on_outcome: Callable[[Outcome], Any] = _ignore
    note: Callable[[str], Any] = _ignore


# ---------------------------------------------------------------------------------------------
# Consumers: where a run's results go


class Consumer(Protocol):
    """Where the results of a run go, in input order.

    ``encoder`` says what the workers make of each image (None: no payload); ``grid_hint`` is
    None when every image may have its own grid, else the end of the reason an image with
    another grid than the first is skipped for (the columns depend on the grid). ``begin`` takes
    the patch names once they are known, ``write`` each result, ``close`` the run record (the
    consumer commits), ``discard`` drops what was written.
    """

    encoder: Encoder | None
    grid_hint: str | None

    def begin(self, names: Sequence[str]) -> None: ...

    def write(self, result: ImageResult) -> None: ...

    def close(self, record: dict) -> None: ...

    def discard(self) -> None: ...


class TableConsumer:
    """The terminal tables: keeps the first ``keep`` results (SPEC §6), counts the rest."""

    encoder = None
    grid_hint = None

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self.rows: list[ImageResult] = []
        self.count = 0

    def begin(self, names: Sequence[str]) -> None:
        pass

    def write(self, result: ImageResult) -> None:
        self.count += 1
        if len(self.rows) < self.keep:
            self.rows.append(result)

    def close(self, record: dict) -> None:
        pass

    def discard(self) -> None:
        pass


class FileConsumer:
    """``-o FILE`` (or ``-o -``): the format's writer on an output target, committed with the
    run record (both or neither)."""

    def __init__(self, settings: OutputSettings, columns, *, stdout: IO[bytes] | None = None):
        self.settings = settings
        spec = settings.spec
        self.encoder: Encoder | None = FormatEncoder(spec, columns)
        self.grid_hint = spec.layout.grid_hint if spec.layout.depends_on_grid() else None
        self.target = targets.open_target(
            settings.path, compression=spec.compression, stdout=stdout
        )
        self.sink = spec.format.sink(self.target.stream, spec, columns)

    @property
    def record_file(self) -> str | None:
        """Where the record goes: ``--record``, else ``FILE.meta.json`` for a file output."""
        return self.settings.record or self.target.record

    def begin(self, names: Sequence[str]) -> None:
        self.sink.begin(names)
        self.sink.stream.flush()  # before any worker is forked

    def write(self, result: ImageResult) -> None:
        self.sink.write(result.payload)

    def close(self, record: dict) -> None:
        self.sink.close(record)
        file = self.record_file
        self.target.commit(record_json(record) if file is not None else None, file)

    def discard(self) -> None:
        self.sink.abort()
        self.target.discard()


# ---------------------------------------------------------------------------------------------
# Checks before any work


def check_outputs(
    files: Sequence[discover.ImageFile], output: OutputSettings, *, extra: Sequence[str] = ()
) -> None:
    """Refuse any output path that is an input file or would land on one.

    Checked: ``-o`` (and where a link points), its run record, ``--record``, the resume files,
    every picture ``--maps`` would write, and ``extra`` paths (a model file).
    """
    from soartc_cli.pipeline.resume import partial_paths

    paths: list[tuple[str, str]] = []
    if output.path not in (None, "-"):
        paths.append(("--output", output.path))
        paths.append(("the run record", targets.record_path(output.path)))
        if output.resume:
            paths.extend(("--resume", p) for p in partial_paths(output.path))
    if output.record is not None:
        paths.append(("--record", output.record))
    paths.extend(("--output", p) for p in extra)
    inputs = {os.path.realpath(f.source) for f in files}
    identities: set[tuple[int, int]] | None = None  # (device, inode): hard links too
    for option, path in paths:
        same = os.path.realpath(path) in inputs
        if not same and os.path.exists(path):
            if identities is None:
                identities = {key for f in files if (key := targets.identity(f.source))}
            same = targets.identity(path) in identities
        if same:
            raise UsageError(
                f"{option} {path} is one of the input images: refusing to overwrite it"
            )
    if output.maps is not None:
        from soartc_cli.output.pictures import map_filename

        folder = os.path.realpath(output.maps)
        for f in files:
            picture = os.path.join(folder, map_filename(f.path))
            if picture in inputs:
                raise UsageError(
                    f"--maps: the picture of {f.path} would replace the input image {picture}; "
                    "choose a directory outside the inputs"
                )


def inside_inputs_warnings(
    inputs: Sequence[str], output: OutputSettings, *, extra: Sequence[str] = ()
) -> list[str]:
    """A warning line for each output that goes inside an input directory."""
    roots = [os.path.realpath(p) for p in inputs if p != "-" and os.path.isdir(p)]
    named = [p for p in (output.path, *extra) if p not in (None, "-")]
    named += [output.maps] if output.maps else []
    warnings = []
    for path in named:
        real = os.path.realpath(path)
        if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            warnings.append(f"warning: {path} is inside an input directory")
    return warnings


def _prepare_maps(directory: str, files: Sequence[discover.ImageFile], note) -> None:
    """Make the pictures directory, check it is writable, warn of picture-name clashes."""
    from soartc_cli.imaging.discover import MAPS_MARKER
    from soartc_cli.output.pictures import name_collisions

    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--maps: cannot make directory {directory}: {exc.strerror}") from None
    if not os.path.isdir(directory):
        raise UsageError(f"--maps: {directory} is not a directory")
    try:
        with targets.AtomicFile(os.path.join(directory, MAPS_MARKER)) as marker:
            marker.write("soartc pictures: soartc never reads this directory as input images\n")
    except (OSError, SoartcError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"--maps: cannot write into {directory}: {reason}") from None
    for first, second, name in name_collisions(file.path for file in files):
        note(f"warning: --maps: {first} and {second} both draw {name}; the later one is kept")


def _remove_partial_pictures(directory: str) -> None:
    """Remove pictures a killed worker left half-written (hidden ``.NAME.png.*.part`` files)."""
    for path in glob.glob(os.path.join(glob.escape(directory), ".*.png.*.part")):
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------------
# The run


def run_job(
    files: Sequence[discover.ImageFile],
    task: Task,
    consumer: Consumer,
    *,
    workers: int = 1,
    strict: bool = False,
    on_outcome: Callable[[Outcome], Any] = _ignore,
    journal=None,
    done: Iterable[Outcome] = (),
    grid: tuple[int, int] | None = None,
) -> RunReport:
    """Process ``files`` and pass their results to ``consumer``, in input order.

    Parameters
    ----------
    files : sequence of ImageFile
    task : Task
    consumer : Consumer
        Takes the patch names once, then each result.
    workers : int
    strict : bool
        Raise :class:`StrictStop` at the first failure.
    on_outcome : callable, optional
        Called with every new outcome as it is taken (progress, "skipped" lines).
    journal : Journal, optional
        ``--resume``: every new outcome is also appended to it.
    done : iterable of Outcome
        Outcomes of a run being resumed, taken as they are, in order: the first files (read one
        at a time, so a long journal is never held in memory).
    grid : (rows, cols), optional
        The patch grid that fixes the columns (default: the job's fixed grid, else the first
        image's).

    Raises
    ------
    StrictStop, Interrupted
    """
    from soartc_cli.pipeline.pool import imap_ordered

    report = RunReport(found=len(files), started=_now())
    grid = grid or task.job.image.fixed_grid
    hint = consumer.grid_hint
    begun = False

    def begin(names: Sequence[str]) -> None:
        nonlocal begun
        if not begun:
            consumer.begin(names)
        begun = True

    if grid is not None or hint is None:
        begin(patch_names(*grid) if grid is not None else [])

    def take(outcome: Outcome, new: bool) -> None:
        nonlocal grid
        if isinstance(outcome, ImageResult) and hint is not None:
            if grid is None:
                grid = outcome.grid
                begin(patch_names(*grid))
            elif outcome.grid != grid:
                outcome = Failure(
                    outcome.index, outcome.path,
                    f"its patch grid {outcome.grid[0]}×{outcome.grid[1]} differs from the "
                    f"first image's {grid[0]}×{grid[1]} ({hint})",
                )  # fmt: skip
        if new and journal is not None:
            journal.add(outcome)
        if new:
            on_outcome(outcome)
        if isinstance(outcome, Failure):
            report.failures.append(outcome)
            if strict:
                raise StrictStop(f"{outcome.path}: {outcome.error} (--strict: no output written)")
            return
        report.processed += 1
        if outcome.extra is not None:
            report.extras.append((outcome.label, outcome.extra))
        consumer.write(outcome)

    taken = 0
    for outcome in done:
        take(outcome, new=False)
        taken += 1
    report.resumed = taken
    rest = files[taken:]
    results = imap_ordered(
        process_image, rest, task, on_crash=crashed, workers=min(workers, max(1, len(rest)))
    )
    try:
        for outcome in results:
            if taken:
                outcome = replace(outcome, index=outcome.index + taken)
            take(outcome, new=True)
    except KeyboardInterrupt:
        results.close()
        raise Interrupted(report.processed + len(report.failures), len(files)) from None
    finally:
        results.close()
    begin([])
    report.finished = _now()
    return report


@dataclass
class _Plan:
    """The files of a run: this shard's, the unreadable inputs, the whole sorted list."""

    files: list[discover.ImageFile]
    unreadable: list[Failure]
    everything: list[discover.ImageFile]


def _plan(settings: RunSettings, *, stdin: IO | None, on_skip) -> _Plan:
    """Discovery and sharding."""
    inputs = settings.inputs
    unreadable: list[Failure] = []

    def cannot_read(path: str, reason: str) -> None:
        failure = Failure(-1, path, reason)
        unreadable.append(failure)
        on_skip(failure)

    everything = discover.discover(
        list(inputs.paths), recursive=inputs.recursive, stdin=stdin, on_error=cannot_read,
        labels=inputs.labels,
    )  # fmt: skip
    if settings.strict and unreadable:
        first = unreadable[0]
        raise StrictStop(f"{first.path}: {first.error} (--strict: no output written)")
    files = everything
    if inputs.shard is not None:
        files = discover.shard(everything, index=inputs.shard.index, count=inputs.shard.count)
    return _Plan(files, unreadable, everything)


def _first_grid(job: Job, everything: Sequence[discover.ImageFile]) -> tuple[int, int] | None:
    """With ``--size 0``, the grid of the first usable image of the whole sorted list (read from
    its header: readable, within the work budget), so that every shard writes the same columns."""
    from soartc_cli.imaging.load import native_grid

    options = {"patch": job.image.patch, "max_pixels": job.image.max_pixels}
    for file in everything[:64]:
        try:
            job.check_grid(native_grid(file.source, orient=False, **options))
            return native_grid(file.source, **options)
        except SoartcError:
            continue
    return None


def run(
    job: Job,
    settings: RunSettings,
    *,
    consumer: Consumer | None = None,
    observer: Observer | None = None,
    command: Sequence[str] = ("soartc",),
    stdin: IO | None = None,
    stdout: IO[bytes] | None = None,
    record_extra: Callable[[RunReport], dict] | None = None,
    protect: Sequence[str] = (),
) -> RunReport:
    """One run of an image command with its outputs (SPEC §2, §6, §7, §8).

    Parameters
    ----------
    job : Job
    settings : RunSettings
    consumer : Consumer, optional
        Where the results go (``fit`` collects features). Default: ``-o``'s file
        (:class:`FileConsumer`), or the terminal tables (:class:`TableConsumer`) without ``-o``.
    observer : Observer, optional
        Progress, "skipped" lines and warnings as the run goes.
    command :
        The command line the run record names.
    stdin, stdout :
        Where ``-`` reads paths from, and the binary stream ``-o -`` writes to.
    record_extra : callable, optional
        Extra keys of the run record, from the finished report (the evaluation of ``score``).
    protect : sequence of str
        Further paths the run writes (a model file): refused when they are input images.

    Returns
    -------
    RunReport
        ``report.record`` is the run record (also written beside a file output).

    Raises
    ------
    UsageError
        An output that would overwrite an input, or one that cannot be made.
    StrictStop, Interrupted
        No output file is left (``--resume`` keeps its progress file).
    WriteError, ClosedPipe
        Writing the output failed; nothing half-written is left.
    """
    observer = observer or Observer()
    output = settings.output
    if job.image.fixed_grid is not None:
        job.check_grid(job.image.fixed_grid, error=UsageError)
    plan = _plan(settings, stdin=stdin, on_skip=observer.on_outcome)
    check_outputs(plan.everything, output, extra=protect)  # every shard's inputs
    for line in inside_inputs_warnings(settings.inputs.paths, output, extra=protect):
        observer.note(line)
    if output.maps is not None:
        _prepare_maps(output.maps, plan.files, observer.note)
        if output.resume:  # pictures a killed run left half-written
            _remove_partial_pictures(output.maps)
    describe = output.describe()

    def make_record(report: RunReport, file: str | None) -> dict:
        extra: dict[str, Any] = {}
        shard = settings.inputs.shard
        extra["inputs"] = {
            "labels": settings.inputs.labels, "recursive": settings.inputs.recursive,
        }  # fmt: skip
        if shard is not None:
            extra["shard"] = shard.to_record([f.path for f in plan.everything])
        if record_extra is not None:
            extra.update(record_extra(report))
        return run_record(
            version=__version__, command=command, settings=job.to_record(),
            output={"file": file, **describe}, found=report.found,
            processed=report.processed, failures=[(f.path, f.error) for f in report.failures],
            started=report.started, finished=report.finished, extra=extra,
        )  # fmt: skip

    observer.on_start(len(plan.files))
    execute = _Execution(job, settings, plan, make_record, observer, stdout)
    try:
        if consumer is not None:
            report = execute.into(consumer)
        elif output.resume:
            from soartc_cli.pipeline.resume import run_resumable

            report = run_resumable(execute)
        elif output.to_file:
            report = execute.into(execute.file_consumer())
        else:  # terminal tables the caller does not show: counts and record only
            report = execute.into(TableConsumer(keep=0))
    except (KeyboardInterrupt, Interrupted, StrictStop):
        if output.maps is not None:
            _remove_partial_pictures(output.maps)
        raise
    report.empty_shard = not plan.files and bool(plan.everything)
    return report


@dataclass
class _Execution:
    """One run's job, settings, files and record maker: what the ways of running share."""

    job: Job
    settings: RunSettings
    plan: _Plan
    make_record: Callable[[RunReport, str | None], dict]
    observer: Observer
    stdout: IO[bytes] | None = None
    consumer: Consumer | None = None

    @property
    def grid(self) -> tuple[int, int] | None:
        """The columns' grid with ``--size 0``: the first usable image's of the whole list."""
        if self.job.image.size != 0 or not self.plan.everything:
            return None
        return _first_grid(self.job, self.plan.everything)

    def task(self, consumer: Consumer) -> Task:
        return Task(self.job, consumer.encoder, self.settings.output.maps)

    def file_consumer(self, stdout: IO[bytes] | None = None) -> FileConsumer:
        columns = self.job.columns
        return FileConsumer(self.settings.output, columns, stdout=stdout or self.stdout)

    def file_encoder(self) -> Encoder:
        """What the workers make of each image for ``-o``'s format."""
        return FormatEncoder(self.settings.output.spec, self.job.columns)

    def file_grid_hint(self) -> str | None:
        layout = self.settings.output.spec.layout
        return layout.grid_hint if layout.depends_on_grid() else None

    def replay(self, outcomes: Iterable[Outcome], *, report: RunReport) -> RunReport:
        """Write ``-o``'s file from the outcomes of a finished journal, with the record of
        ``report`` (the run that made them)."""
        consumer = self.file_consumer()
        grid = self.grid if consumer.grid_hint is not None else None
        try:
            final = run_job([], Task(self.job, None), consumer, done=outcomes, grid=grid)
            final.found = report.found  # the unreadable inputs counted already
            final.started, final.finished = report.started, report.finished
            final.resumed = report.resumed
            final.failures[:0] = self.plan.unreadable
            final.record = self.make_record(final, self.settings.output.path)
            consumer.close(final.record)
        except BaseException:
            consumer.discard()
            raise
        return final

    def into(self, consumer: Consumer, *, journal=None, done: Iterable[Outcome] = ()) -> RunReport:
        """Run every file into ``consumer`` and close it with the record (discard on error)."""
        self.consumer = consumer
        grid = self.grid if consumer.grid_hint is not None else None
        try:
            report = run_job(
                self.plan.files, self.task(consumer), consumer,
                workers=self.settings.worker_count, strict=self.settings.strict,
                on_outcome=self.observer.on_outcome, journal=journal, done=done, grid=grid,
            )  # fmt: skip
            report.failures[:0] = self.plan.unreadable
            report.found += len(self.plan.unreadable)
            file = self.settings.output.path if isinstance(consumer, FileConsumer) else None
            report.record = self.make_record(report, file)
            consumer.close(report.record)
        except BaseException:
            consumer.discard()
            raise
        return report
