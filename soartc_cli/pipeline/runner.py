"""A whole run of an image command: files → ordered outcomes → one output, its record, pictures.

:func:`run` is what ``compute``, ``attention DIR``, ``fit`` and ``score`` call with a job and one
:class:`RunSettings`: discovery and shards, the checks that protect the user's files, the worker
pool, the output through its format's sink (or the ``--resume`` journal), failures as data, and the
run record, committed together with the output. The CLI parses, calls and renders.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from soartc_cli.core.patches import patch_names
from soartc_cli.errors import SoartcError, UsageError
from soartc_cli.imaging import discover
from soartc_cli.output import targets
from soartc_cli.output.formats import OutputSpec, choose_format
from soartc_cli.output.layouts import DEFAULT_POOL
from soartc_cli.output.record import record_json, run_record
from soartc_cli.pipeline.jobs import Failure, ImageResult, Outcome, Task, crashed, process_image

__all__ = ["Interrupted", "RunReport", "RunSettings", "StrictStop", "run", "run_job"]


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


@dataclass(frozen=True)
class RunSettings:
    """The options every image command shares, as given on the command line."""

    inputs: tuple[str, ...]
    output: str | None = None
    layout: str = "wide"
    precision: int = 7
    pool: tuple[str, ...] = DEFAULT_POOL
    record: str | None = None
    maps: str | None = None
    workers: int | None = None
    shard: str | None = None
    strict: bool = False
    quiet: bool = False
    recursive: bool = True
    resume: bool = False


@dataclass
class RunReport:
    """What a run did: counts, failures, the terminal-table rows (no file), the job's extras."""

    found: int
    processed: int = 0
    failures: list[Failure] = field(default_factory=list)
    rows: list[ImageResult] = field(default_factory=list)
    extras: list[tuple[str, Any]] = field(default_factory=list)  # (label, extra) per image
    started: str = ""
    finished: str = ""
    record: dict | None = None
    empty_shard: bool = False  # this shard of a non-empty list holds no file: not an error

    @property
    def ok(self) -> bool:
        """True when images were found and every one of them was processed (or the shard of a
        non-empty file list is empty)."""
        return (self.found > 0 or self.empty_shard) and not self.failures


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def fixed_grid(image) -> tuple[int, int] | None:
    """The patch grid every image has, or None with ``size=0`` (it depends on each image)."""
    if image.size == 0:
        return None
    side = image.size // image.patch
    return side, side


Notify = Callable[[str], None]


def _ignore(_: object) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Checks before any work


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def check_outputs(
    files: Sequence[discover.ImageFile], settings: RunSettings, *, extra: Sequence[str] = ()
) -> list[str]:
    """Refuse any output path that is an input file or would land on one; warn (returned lines)
    when outputs go inside an input directory.

    Checked: ``-o`` (and where a link points), its run record, ``--record``, the resume files,
    every picture ``--maps`` would write, and ``extra`` paths (a model file).
    """
    paths: list[tuple[str, str]] = []
    if settings.output not in (None, "-"):
        from soartc_cli.pipeline.resume import partial_paths

        paths.append(("--output", settings.output))
        paths.append(("the run record", targets.record_path(settings.output)))
        if settings.resume:
            paths.extend(("--resume", p) for p in partial_paths(settings.output))
    if settings.record is not None:
        paths.append(("--record", settings.record))
    paths.extend(("--output", p) for p in extra)
    if settings.record is not None and settings.output not in (None, "-"):
        if os.path.realpath(settings.record) == os.path.realpath(settings.output):
            raise UsageError(f"--record {settings.record} is the output file: name another file")
    inputs = {os.path.realpath(f.source) for f in files}
    identities: set[tuple[int, int]] | None = None  # (device, inode): hard links too
    for option, path in paths:
        same = os.path.realpath(path) in inputs
        if not same and os.path.exists(path):
            if identities is None:
                identities = {key for f in files if (key := _identity(f.source)) is not None}
            same = _identity(path) in identities
        if same:
            raise UsageError(
                f"{option} {path} is one of the input images: refusing to overwrite it"
            )
    if settings.maps is not None:
        from soartc_cli.output.pictures import map_filename

        folder = os.path.realpath(settings.maps)
        for f in files:
            picture = os.path.join(folder, map_filename(f.path))
            if picture in inputs:
                raise UsageError(
                    f"--maps: the picture of {f.path} would replace the input image {picture}; "
                    "choose a directory outside the inputs"
                )
    warnings = []
    roots = [os.path.realpath(p) for p in settings.inputs if p != "-" and os.path.isdir(p)]
    named = [p for option, p in paths if option == "--output"]
    named += [settings.maps] if settings.maps else []
    for path in named:
        real = os.path.realpath(path)
        if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            warnings.append(f"warning: {path} is inside an input directory")
    return warnings


def _prepare_maps(directory: str, files: Sequence[discover.ImageFile], note: Notify) -> None:
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
    *,
    sink=None,
    workers: int = 1,
    strict: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
    journal=None,
    done: Iterable[Outcome] = (),
    grid: tuple[int, int] | None = None,
) -> RunReport:
    """Process ``files`` and stream their payloads to ``sink`` (a format's sink), in input order.

    Parameters
    ----------
    files : sequence of ImageFile
    task : Task
        ``task.output`` None collects terminal-table rows instead.
    sink : Sink, optional
        Where the header and the payloads go.
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
        The patch grid that fixes the wide layout's columns (default: the task's fixed grid,
        else the first image's).

    Raises
    ------
    StrictStop, Interrupted
    """
    from soartc_cli.pipeline.pool import imap_ordered

    report = RunReport(found=len(files), started=_now())
    spec: OutputSpec | None = task.output
    grid = grid or fixed_grid(task.job.image)
    by_grid = spec is not None and spec.layout.depends_on_grid()
    begun = False

    def begin(names: Sequence[str]) -> None:
        nonlocal begun
        if sink is not None and not begun:
            sink.begin(names)
            sink.stream.flush()  # before any worker is forked
        begun = True

    if grid is not None or not by_grid:
        begin(patch_names(*grid) if grid is not None else [])

    def take(outcome: Outcome, new: bool) -> None:
        nonlocal grid
        if isinstance(outcome, ImageResult) and by_grid:
            if grid is None:
                grid = outcome.grid
                begin(patch_names(*grid))
            elif outcome.grid != grid:
                outcome = Failure(
                    outcome.index, outcome.path,
                    f"its patch grid {outcome.grid[0]}×{outcome.grid[1]} differs from the "
                    f"first image's {grid[0]}×{grid[1]} ({spec.layout.grid_hint})",
                )  # fmt: skip
        if new and journal is not None:
            journal.add(outcome)
        if new and on_outcome is not None:
            on_outcome(outcome)
        if isinstance(outcome, Failure):
            report.failures.append(outcome)
            if strict:
                raise StrictStop(f"{outcome.path}: {outcome.error} (--strict: no output written)")
            return
        report.processed += 1
        if outcome.extra is not None:
            report.extras.append((outcome.label, outcome.extra))
        if sink is not None:
            sink.write(outcome.payload)
        elif spec is None:
            report.rows.append(outcome)

    taken = 0
    for outcome in done:
        take(outcome, new=False)
        taken += 1
    rest = files[taken:]
    results = imap_ordered(
        process_image, rest, task, on_crash=crashed, workers=min(workers, max(1, len(rest)))
    )
    try:
        for outcome in results:
            if taken:
                outcome = _shift(outcome, taken)
            take(outcome, new=True)
    except KeyboardInterrupt:
        results.close()
        raise Interrupted(report.processed + len(report.failures), len(files)) from None
    finally:
        results.close()
    begin([])
    report.finished = _now()
    return report


def _shift(outcome: Outcome, by: int) -> Outcome:
    from dataclasses import replace

    return replace(outcome, index=outcome.index + by)


def resolve_files(
    settings: RunSettings, *, stdin: IO | None, on_skip: Callable[[Failure], None]
) -> tuple[list[discover.ImageFile], list[Failure], list[discover.ImageFile]]:
    """Discovery and sharding: ``(files of this shard, unreadable inputs, the whole list)``."""
    shard = discover.parse_shard(settings.shard) if settings.shard is not None else None
    unreadable: list[Failure] = []

    def cannot_read(path: str, reason: str) -> None:
        failure = Failure(-1, path, reason)
        unreadable.append(failure)
        on_skip(failure)

    everything = discover.discover(
        list(settings.inputs), recursive=settings.recursive, stdin=stdin, on_error=cannot_read
    )
    if settings.strict and unreadable:
        first = unreadable[0]
        raise StrictStop(f"{first.path}: {first.error} (--strict: no output written)")
    files = everything
    if shard is not None:
        files = discover.shard(everything, index=shard[0], count=shard[1])
    return files, unreadable, everything


def _first_grid(job, everything: Sequence[discover.ImageFile]) -> tuple[int, int] | None:
    """With ``--size 0``, the grid of the first usable image of the whole sorted list (read from
    its header: readable, within the work budget), so that every shard writes the same columns."""
    from soartc_cli.imaging.load import native_grid
    from soartc_cli.pipeline.jobs import check_work

    for file in everything[:64]:
        options = {"patch": job.image.patch, "max_pixels": job.image.max_pixels}
        try:
            if hasattr(job, "work_bytes"):  # an image refused for its size fixes no columns
                check_work(job, native_grid(file.source, orient=False, **options))
            return native_grid(file.source, **options)
        except SoartcError:
            continue
    return None


def run(
    job,
    settings: RunSettings,
    *,
    command: Sequence[str],
    version: str,
    stdin: IO | None = None,
    stdout: IO[bytes] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_progress_start: Callable[[int], Any] | None = None,
    note: Notify = _ignore,
    spec: OutputSpec | None = None,
    record_extra: Callable[[RunReport], dict] | None = None,
    protect: Sequence[str] = (),
    sink=None,
) -> RunReport:
    """One run of an image command with its outputs (SPEC §2, §6, §7, §8).

    Parameters
    ----------
    job : SoartcJob, AttentionJob or an inspection job
    settings : RunSettings
    command, version :
        What the run record says of the run.
    stdin, stdout :
        Where ``-`` reads paths from, and the binary stream ``-o -`` writes to.
    on_outcome : callable, optional
        Every outcome as it is taken (progress, "skipped" lines); unreadable inputs too.
    note : callable
        Warnings (one line each, without the ``soartc:`` prefix).
    spec : OutputSpec, optional
        The output format (default: chosen from ``settings``).
    record_extra : callable, optional
        Extra keys of the run record, from the finished report (the evaluation of ``score``).
    protect : sequence of str
        Further paths the run writes (a model file): refused when they are input images.
    sink : Sink, optional
        Take the payloads of ``sink.spec`` here instead of an output file (``fit`` collects the
        features); the run record is then only returned, in ``report.record``.

    Returns
    -------
    RunReport

    Raises
    ------
    UsageError
        A bad option, an output that would overwrite an input, or an output that cannot be made.
    StrictStop, Interrupted
        No output file is left (``--resume`` keeps its progress file).
    WriteError, ClosedPipe
        Writing the output failed; nothing half-written is left.
    """
    on_outcome = on_outcome or _ignore
    if spec is None:
        spec = choose_format(
            settings.output, layout=settings.layout, precision=settings.precision,
            pool=settings.pool,
        )  # fmt: skip
    if settings.workers is not None and settings.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {settings.workers}")
    if settings.resume and (settings.output in (None, "-") or targets.is_special(settings.output)):
        raise UsageError("--resume needs -o FILE (a regular file to finish into)")
    if settings.output is not None:
        targets.check_output_path(settings.output)
    if settings.record is not None:
        directory = os.path.dirname(os.path.abspath(settings.record))
        if not os.path.isdir(directory):
            raise UsageError(f"--record: directory of {settings.record} does not exist")
        if not os.access(directory, os.W_OK):
            raise UsageError(f"--record: cannot write into {directory}")
    grid = fixed_grid(job.image)
    if grid is not None and hasattr(job, "work_bytes"):
        from soartc_cli.pipeline.jobs import check_work

        check_work(job, grid, error=UsageError)
    workers = settings.workers or os.cpu_count() or 1
    files, unreadable, everything = resolve_files(settings, stdin=stdin, on_skip=on_outcome)
    for line in check_outputs(everything, settings, extra=protect):  # every shard's inputs
        note(line)
    if settings.maps is not None:
        _prepare_maps(settings.maps, files, note)
        if settings.resume:  # pictures a killed run left half-written
            _remove_partial_pictures(settings.maps)
    grid = None
    if spec.layout.depends_on_grid() and job.image.size == 0:
        grid = _first_grid(job, everything)
    if sink is not None:
        spec = sink.spec
    task = Task(job, spec if settings.output is not None or sink else None, settings.maps)
    job_settings = job.settings()
    described = spec.describe() if settings.output is not None else {"format": "table"}

    def make_record(report: RunReport, file: str | None) -> dict:
        failures = [(f.path, f.error) for f in report.failures]
        extra: dict[str, Any] = {}
        if settings.shard is not None:
            index, count = discover.parse_shard(settings.shard)
            extra["shard"] = {"index": index, "count": count, "files": len(everything)}
        if record_extra is not None:
            extra.update(record_extra(report))
        return run_record(
            version=version, command=command, settings=job_settings,
            output={"file": file, **described}, found=report.found + len(unreadable),
            processed=report.processed, failures=failures, started=report.started,
            finished=report.finished, extra=extra,
        )  # fmt: skip

    if on_progress_start is not None:
        on_progress_start(len(files))
    if sink is not None and hasattr(sink, "reserve"):
        sink.reserve(len(files))
    try:
        if sink is not None:
            report = run_job(
                files, task, sink=sink, workers=workers, strict=settings.strict,
                on_outcome=on_outcome, grid=grid,
            )  # fmt: skip
            report.failures[:0] = unreadable
            report.record = make_record(report, None)
        elif settings.resume:
            report = _run_resumable(
                files, task, settings, spec, workers=workers, grid=grid,
                on_outcome=on_outcome, make_record=make_record, job_settings=job_settings,
                unreadable=unreadable,
            )  # fmt: skip
        else:
            report = _run_once(
                files, task, settings, spec, workers=workers, grid=grid, stdout=stdout,
                on_outcome=on_outcome, make_record=make_record, unreadable=unreadable,
            )  # fmt: skip
    except (KeyboardInterrupt, Interrupted, StrictStop):
        if settings.maps is not None:
            _remove_partial_pictures(settings.maps)
        raise
    report.empty_shard = not files and bool(everything)
    return report


def _record_file(settings: RunSettings, target) -> str | None:
    if settings.record is not None:
        return settings.record
    return target.record if target is not None else None


def _run_once(files, task, settings, spec, *, workers, grid, stdout, on_outcome, make_record,
              unreadable) -> RunReport:  # fmt: skip
    """A run straight into its output (no journal)."""
    target = None
    if settings.output is not None:
        target = targets.open_target(settings.output, compression=spec.compression, stdout=stdout)
    sink = spec.format.sink(target.stream, spec, task.job.columns) if target else None
    try:
        report = run_job(
            files, task, sink=sink, workers=workers, strict=settings.strict,
            on_outcome=on_outcome, grid=grid,
        )  # fmt: skip
        report.failures[:0] = unreadable
        record_file = _record_file(settings, target)
        report.record = make_record(report, settings.output)
        if sink is not None:
            sink.close(report.record)
        text = record_json(report.record) if record_file is not None else None
        if target is not None:
            target.commit(text, record_file)
        elif record_file is not None:
            targets.write_text_atomic(record_file, text)
    except BaseException:
        if target is not None:
            target.discard()
        raise
    return report


def _run_resumable(files, task, settings, spec, *, workers, grid, on_outcome, make_record,
                   job_settings, unreadable) -> RunReport:  # fmt: skip
    """``--resume``: outcomes go to ``FILE.partial`` first; the output is written from it."""
    import json

    from soartc_cli.pipeline.resume import Journal, iter_journal, journal_length, partial_paths

    journal_path, meta_path = partial_paths(settings.output)
    paths = [f.path for f in files]
    identity = {"settings": job_settings, "output": spec.describe(), "shard": settings.shard}
    done: list[Outcome] = []  # the images already done, without their rows
    keep = None
    if os.path.exists(journal_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                before = json.load(f)
        except (OSError, ValueError):
            raise UsageError(
                f"--resume: {meta_path} is missing or unreadable; remove {journal_path} to start "
                "again"
            ) from None
        _check_same_run(before, identity)
        keep = journal_length(journal_path)
        done = list(iter_journal(journal_path, payloads=False))
        done_paths = before.get("paths", [])[: len(done)]
        if [o.path for o in done] != paths[: len(done)] or done_paths != paths[: len(done)]:
            first = next(
                (i for i, (a, b) in enumerate(zip(done_paths, paths, strict=False)) if a != b),
                min(len(done_paths), len(paths)),
            )
            raise UsageError(
                f"--resume: the file list differs from the interrupted run's at position {first} "
                f"({(done_paths[first : first + 1] or ['(end)'])[0]!r} before, "
                f"{(paths[first : first + 1] or ['(end)'])[0]!r} now); remove {journal_path} to "
                "start again"
            )
    targets.write_text_atomic(meta_path, json.dumps({**identity, "paths": paths}) + "\n")
    journal = Journal(journal_path, keep=keep)
    try:
        report = run_job(
            files, Task(task.job, spec, task.maps_dir), sink=None, workers=workers,
            strict=settings.strict, on_outcome=on_outcome, journal=journal, done=done, grid=grid,
        )  # fmt: skip
    except KeyboardInterrupt:
        journal.close()
        raise Interrupted(0, len(files), kept=journal_path) from None
    except Interrupted as exc:
        journal.close()
        raise Interrupted(exc.done, exc.total, kept=journal_path) from None
    except BaseException:
        journal.close()
        raise
    journal.close()
    # The finished output, from the journal, by the writer a plain run uses.
    outcomes = iter_journal(journal_path)  # one frame at a time
    target = targets.open_target(settings.output, compression=spec.compression)
    sink = spec.format.sink(target.stream, spec, task.job.columns)
    try:
        final = run_job([], Task(task.job, spec), sink=sink, done=outcomes, grid=grid)
        final.found = len(files)
        final.started = report.started
        final.finished = report.finished
        final.failures[:0] = unreadable
        final.record = make_record(final, settings.output)
        sink.close(final.record)
        target.commit(record_json(final.record), _record_file(settings, target))
    except BaseException:
        target.discard()
        raise
    for path in (journal_path, meta_path):
        with contextlib.suppress(OSError):
            os.unlink(path)
    return final


def _check_same_run(before: dict, now: dict) -> None:
    """UsageError naming the first setting that differs between the interrupted run and this one."""
    for key in ("settings", "output", "shard"):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    raise UsageError(
                        f"--resume: {key} {name!r} differs from the interrupted run's "
                        f"({old.get(name)!r} before, {new.get(name)!r} now)"
                    )
        raise UsageError(f"--resume: {key} differs from the interrupted run's ({old!r} before, "
                         f"{new!r} now)")  # fmt: skip
