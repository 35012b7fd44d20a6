"""What every image command does around its run: the settings of the shared options, the
progress bar and "skipped" lines, the terminal tables and the closing line."""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager

from soartc_cli.interfaces import tables
from soartc_cli.interfaces.cli.base import (
    ARGV,
    EXIT_FAILED,
    EXIT_OK,
    error_console,
    note,
    output_console,
    printable,
)
from soartc_cli.pipeline.jobs import Failure, ImageResult
from soartc_cli.pipeline.runner import Observer, RunReport, TableConsumer, run
from soartc_cli.settings.features import FeatureSettings
from soartc_cli.settings.image import ImageSettings
from soartc_cli.settings.run import InputSettings, OutputSettings, RunSettings


def image_settings(image) -> ImageSettings:
    """The image options' settings (the ``image`` group)."""
    return ImageSettings(image.size, image.patch, image.channels, image.invert, image.max_pixels)


def feature_settings(image, features) -> FeatureSettings:
    """The feature options' settings (the ``image`` and ``features`` groups)."""
    return FeatureSettings.parse(image=image_settings(image), **vars(features))


def output_settings(rows, **fixed) -> OutputSettings:
    """The output options' settings (the ``rows`` group; ``fixed`` what a command fixes, such as
    score's layout)."""
    given = {**vars(rows), **fixed}
    pool = given.get("pool", "mean,std,min,max")
    return OutputSettings(
        given.get("output"), given.get("layout", "wide"),
        tuple(p.strip() for p in pool.split(",")), given.get("precision", 7),
        given.get("record"), given.get("maps"), given.get("resume", False),
    )  # fmt: skip


def run_settings(inputs, run, *, output: OutputSettings | None = None) -> RunSettings:
    """The settings of the options every image command shares (the ``run`` group)."""
    paths = InputSettings.parse(
        tuple(inputs or ()), recursive=not run.no_recursive, labels=run.labels,
        shard=getattr(run, "shard", None),
    )  # fmt: skip
    return RunSettings(paths, output or OutputSettings(), run.workers, run.strict, run.quiet)


def command_line() -> list[str]:
    """The command line the run record names."""
    return ["soartc", *ARGV]


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run like Ctrl-C: workers stopped, temporary output removed, exit 130."""
    raise KeyboardInterrupt


@contextmanager
def observed(settings: RunSettings):
    """Yield the :class:`Observer` of a run: SIGTERM as Ctrl-C, a progress bar on a terminal,
    "skipped" and warning lines on stderr."""
    signal.signal(signal.SIGTERM, _interrupt)
    if settings.output.path == "-" and sys.stdout is not None:
        sys.stdout.flush()
    show = not settings.quiet and sys.stderr.isatty()

    def warn(line: str) -> None:
        if not settings.quiet:
            note("soartc: " + printable(line))

    with _progress(show=show) as (start, on_outcome):
        yield Observer(on_start=start, on_outcome=on_outcome, note=warn)


def run_images(job, settings: RunSettings, **options) -> tuple[RunReport, TableConsumer | None]:
    """Run an image command; the terminal tables' rows when there is no ``-o``."""
    table = None
    if not settings.output.to_file and "consumer" not in options:
        table = options["consumer"] = TableConsumer(keep=tables.TABLE_ROWS)
    with observed(settings) as observer:
        report = run(
            job, settings, observer=observer, command=command_line(), stdin=sys.stdin, **options
        )
    return report, table


def finish(
    report: RunReport, settings: RunSettings, *, table: TableConsumer | None = None, columns=None
) -> int:
    """Render what a run did: tables without -o, the closing line, the exit code."""
    if table is not None and table.rows and columns is not None:
        out = output_console()
        for item in tables.summary_tables(table.rows, columns, width=out.width):
            out.print(item)
        if table.count > len(table.rows):
            note(
                f"soartc: {table.count - len(table.rows)} more images not shown; "
                "-o FILE writes them all"
            )
    closing(report, settings)
    return EXIT_OK if report.ok else EXIT_FAILED


def closing(report: RunReport, settings: RunSettings) -> None:
    """The closing line: how many images were processed and skipped."""
    shard = settings.inputs.shard
    if report.empty_shard:
        if not settings.quiet:
            note(f"soartc: shard {shard} holds no file (fewer files than shards)")
    elif report.found == 0 and not report.failures:
        note("soartc: no image files found in " + ", ".join(map(printable, settings.inputs.paths)))
    elif not settings.quiet:
        note(
            f"soartc: {report.processed} of {report.found} images processed"
            + (f", {len(report.failures)} skipped" if report.failures else "")
        )


@contextmanager
def _progress(*, show: bool):
    """Yield ``(start, on_outcome)``: ``start(total)`` opens a progress bar on a terminal once the
    file list is known; ``on_outcome`` advances it and prints "skipped" lines (always).

    The bar is refreshed from the callback, not by a thread of its own, so that worker processes
    can be forked from a single-threaded process.
    """
    state: dict = {"bar": None, "printer": note, "last": 0.0}

    def start(total: int) -> None:
        if not show or total == 0:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TaskProgressColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        progress = Progress(*columns, console=error_console(), transient=True, auto_refresh=False)
        progress.start()
        state.update(progress=progress, printer=progress.console.print, total=total)
        state["bar"] = progress.add_task("images", total=total, rate="")

    def on_outcome(outcome) -> None:
        if isinstance(outcome, Failure):
            state["printer"](
                f"soartc: skipped {printable(outcome.path)}: {printable(outcome.error)}"
            )
        if isinstance(outcome, ImageResult) and outcome.warning:
            state["printer"](f"soartc: warning: {printable(outcome.warning)}")
        if state["bar"] is None or outcome.index < 0:
            return
        progress = state["progress"]
        progress.advance(state["bar"])
        now = time.monotonic()
        if now - state["last"] > 0.1 or progress.tasks[0].completed == state["total"]:
            speed = progress.tasks[0].speed
            progress.update(state["bar"], rate="" if speed is None else f"{speed:.1f} images/s")
            progress.refresh()
            state["last"] = now

    try:
        yield start, on_outcome
    finally:
        if state["bar"] is not None:
            state["progress"].stop()
