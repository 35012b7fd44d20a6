"""The ``soartc`` command line: parse → call one library function → render.

The only module that imports typer or creates a rich Console. Errors become one line on standard
error and an exit code (0 ok, 1 some inputs failed, 2 usage error, 130 interrupted); no traceback
reaches a user.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from soartc_cli import __version__
from soartc_cli.core import attention
from soartc_cli.core import transforms as transforms_module
from soartc_cli.errors import InputError, SoartcError, UsageError
from soartc_cli.imaging import load
from soartc_cli.interfaces import tables
from soartc_cli.output import targets
from soartc_cli.pipeline import jobs, runner

if TYPE_CHECKING:  # rich is imported when something is shown: start-up time counts in batch jobs
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: A closed pipe on standard output ends the run quietly with the shell's 128 + SIGPIPE.
EXIT_CLOSED_PIPE = 141

#: Defaults of the attention options that differ between the seed demo and images (SPEC §5).
DEMO_HIGH, DEMO_DIM, IMAGE_DIM = 3, 3, 64
#: The demo's output formats, and the -o suffixes that choose one.
DEMO_FORMATS = ("table", "json", "csv")
DEMO_SUFFIXES = {".json": "json", ".csv": "csv"}
#: Memory an image's attention may take: the N × N scores, probs and a temporary, float64 each.
#: (Belongs in attention.py beside image_attention; checked here while N is known from --size.)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that flushing at exit does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


# Typer bundles its own copy of click's exception classes (older releases use click itself);
# take the base class from typer's public BadParameter instead of importing click.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_Abort = typer.Abort


def error_console() -> Console:
    """The stderr console: progress, warnings and errors (data goes to stdout)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def note(line: str) -> None:
    """One line on stderr (rich is not needed for that, and costs start-up time)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def output_console() -> Console:
    """The stdout console for tables."""
    from rich.console import Console

    return Console(highlight=False)


def printable(text: str) -> str:
    """``text`` safe for one terminal line: backslashes doubled, control characters (ESC
    sequences, line breaks) escaped as ``\\xNN``/``\\n``, so a message is one unambiguous line."""
    text = text.replace("\\", "\\\\")
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode()
        for ch in text
    )


def fail(message: str, code: int) -> int:
    """Print ``soartc: error: MESSAGE`` on stderr and return ``code``."""
    sys.stderr.write(f"soartc: error: {printable(message)}\n")
    sys.stderr.flush()
    return code


#: The arguments of the running command, for the run record's command line.
_ARGV: list[str] = []


class SoartcGroup(typer.core.TyperGroup):
    """Typer's group, with every usage error or soartc error turned into one line and exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _ARGV
        _ARGV = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `soartc`: the help, not an error
                sys.stdout.write(exc.ctx.get_help() + "\n")
                code = EXIT_OK
                if standalone_mode:
                    sys.exit(code)
                return code
            hint = ""
            if getattr(exc, "ctx", None) is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            code = fail(exc.format_message() + hint, exc.exit_code)
        except targets.ClosedPipe:
            _silence_stdout()
            code = EXIT_CLOSED_PIPE
        except targets.WriteError as exc:
            code = fail(str(exc), EXIT_FAILED)
        except runner.Interrupted as exc:
            code = fail(str(exc), EXIT_INTERRUPTED)
        except runner.StrictStop as exc:
            code = fail(str(exc), EXIT_FAILED)
        except UsageError as exc:
            code = fail(str(exc), EXIT_USAGE)
        except InputError as exc:
            code = fail(str(exc), EXIT_FAILED)
        except SoartcError as exc:
            code = fail(str(exc), EXIT_FAILED)
        except (KeyboardInterrupt, _Abort):
            code = fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _silence_stdout()
            code = EXIT_CLOSED_PIPE
        except Exception as exc:
            if os.environ.get("SOARTC_DEBUG"):
                raise
            code = fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(a bug: please report it; SOARTC_DEBUG=1 shows the traceback)",
                EXIT_FAILED,
            )
        code = code if isinstance(code, int) else EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


_DEFAULT_IN_PARENS = re.compile(r"\[default: \((.*?)\)\]")


class SoartcCommand(typer.core.TyperCommand):
    """Typer's command, with a written-out default shown like the others (``[default: 3]``)
    and a required argument shown as ``PART...`` (typer writes ``{PART...}``).

    Options whose default is None but means something (``--dim``, ``--workers``) name it with
    ``show_default="…"``, which click would print as ``[default: (3)]``.
    """

    def collect_usage_pieces(self, ctx) -> list[str]:
        """The usage line's arguments, a required one without typer's braces: ``PART...``."""
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def format_options(self, ctx, formatter) -> None:
        write_dl = formatter.write_dl

        def plain(rows, *args, **kwargs):
            rows = [(term, _DEFAULT_IN_PARENS.sub(r"[default: \1]", text)) for term, text in rows]
            return write_dl(rows, *args, **kwargs)

        formatter.write_dl = plain
        try:
            super().format_options(ctx, formatter)
        finally:
            del formatter.write_dl


app = typer.Typer(
    cls=SoartcGroup,
    name="soartc",
    help="SOARTC / SOART metrics and scaled dot-product attention over the patches of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"soartc {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """SOARTC / SOART metrics and scaled dot-product attention over the patches of images."""


# --- shared option aliases -------------------------------------------------------------------

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files and/or directories (walked recursively); '-' reads paths from stdin.",
        metavar="PATH...",
        show_default=False,
    ),
]
Size = Annotated[
    int,
    typer.Option(
        help="Fit: centred square resized to SIZE×SIZE; 0 keeps the native size.", metavar="SIZE"
    ),
]
Patch = Annotated[
    int, typer.Option(help="Patch side P; SIZE must be a multiple of it.", metavar="P")
]
Channels = Annotated[
    str, typer.Option(help="'luma' (one grey channel) or 'rgb' (R, G, B).", metavar="luma|rgb")
]
Invert = Annotated[bool, typer.Option("--invert", help="Use 1 − v (dark objects on light).")]
MaxPixels = Annotated[
    int,
    typer.Option(
        help="Refuse images with more pixels than this (checked from the header).", metavar="N"
    ),
]
NoRecursive = Annotated[
    bool, typer.Option("--no-recursive", help="Only the top level of each directory.")
]
Datum = Annotated[str, typer.Option(help="Kernel that makes the standard s.", metavar="NAME")]
Kernels = Annotated[
    str | None,
    typer.Option(help='JSON file of extra kernels: {"name": [[...], ...]}.', metavar="FILE"),
]
Transforms = Annotated[
    str,
    typer.Option(
        help="Transforms or presets: soartc, soart, all (see 'transforms').", metavar="NAMES"
    ),
]
Metrics = Annotated[
    str, typer.Option(help="Metrics or presets: soart3, soart2022, rt, all.", metavar="NAMES")
]
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the rows to FILE, format by suffix: .csv .jsonl .ndjson (each may end .gz), "
        ".parquet; '-' is CSV on stdout.",
    ),
]
Layout = Annotated[
    str,
    typer.Option(
        help="Rows: wide (one per image), long (per patch), summary (per transform), pooled "
        "(one per image, --pool stats over the patches: for machine learning).",
        metavar="wide|long|summary|pooled",
    ),
]
Pool = Annotated[
    str,
    typer.Option(
        help="Statistics of --layout pooled: mean, std, min, max, median, p05, p95.",
        metavar="STATS",
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Keep progress in FILE.partial; run the same command again to go on after a kill.",
    ),
]
Precision = Annotated[
    int, typer.Option(help="Significant digits of the numbers written.", metavar="N")
]
Record = Annotated[
    str | None,
    typer.Option(
        help="Where the run record goes.", metavar="FILE", show_default="FILE.meta.json of -o FILE"
    ),
]
Maps = Annotated[
    str | None,
    typer.Option(help="Write one heat-map PNG per image into this directory.", metavar="DIR"),
]
Workers = Annotated[
    int | None,
    typer.Option(
        help="Worker processes (1 = in-process).", metavar="N", show_default="the CPU count"
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(help="Process only slice I of N of the sorted file list ('I/N').", metavar="I/N"),
]
Strict = Annotated[bool, typer.Option("--strict", help="Stop at the first unusable file.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Seed = Annotated[int, typer.Option(help="Random seed of the weights.", metavar="SEED")]
Dim = Annotated[
    int | None,
    typer.Option(
        metavar="D",
        help="Width d of the projections (images: only with --weights random).",
        show_default="3 for the demo, 64 for images",
    ),
]


def _image_settings(size, patch, channels, invert, max_pixels) -> jobs.ImageSettings:
    attention.check_choice(channels, name="--channels", choices=("luma", "rgb"))
    load.check_geometry(size, patch=patch, channels=channels)
    if max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1, not {max_pixels}")
    return jobs.ImageSettings(size, patch, channels, invert, max_pixels)


def _run(job, settings: runner.RunSettings, **extra) -> runner.RunReport:
    """Run an image command through the library, with progress and "skipped" lines on stderr."""
    signal.signal(signal.SIGTERM, _interrupt)
    if settings.output == "-" and sys.stdout is not None:
        sys.stdout.flush()
    show = not settings.quiet and sys.stderr.isatty()

    def warn(line: str) -> None:
        if not settings.quiet:
            note("soartc: " + printable(line))

    with _progress(show=show) as (start, on_outcome):
        report = runner.run(
            job, settings, command=["soartc", *_ARGV], version=__version__, stdin=sys.stdin,
            on_outcome=on_outcome, on_progress_start=start,
            note=warn,
            **extra,
        )  # fmt: skip
    return report


def _finish(report: runner.RunReport, settings: runner.RunSettings, columns) -> int:
    """Render what a run did: tables without -o, the closing line, the exit code."""
    if settings.output is None and report.rows and columns is not None:
        out = output_console()
        rows = report.rows[: tables.TABLE_ROWS]
        for table in tables.summary_tables(rows, columns, width=out.width):
            out.print(table)
        if len(report.rows) > tables.TABLE_ROWS:
            note(
                f"soartc: {len(report.rows) - tables.TABLE_ROWS} more images not shown; "
                "-o FILE writes them all"
            )
    if report.empty_shard:
        if not settings.quiet:
            note(f"soartc: shard {settings.shard} holds no file (fewer files than shards)")
    elif report.found == 0 and not report.failures:
        note("soartc: no image files found in " + ", ".join(map(printable, settings.inputs)))
    elif not settings.quiet:
        note(
            f"soartc: {report.processed} of {report.found} images processed"
            + (f", {len(report.failures)} skipped" if report.failures else "")
        )
    return EXIT_OK if report.ok else EXIT_FAILED


def _settings(inputs, output, layout, precision, pool, record, maps, workers, shard, strict,
              quiet, no_recursive, resume) -> runner.RunSettings:  # fmt: skip
    return runner.RunSettings(
        tuple(_need_inputs(inputs)), output, layout, precision,
        tuple(p.strip() for p in pool.split(",")), record, maps, workers, shard, strict, quiet,
        not no_recursive, resume,
    )  # fmt: skip


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run like Ctrl-C: workers stopped, temporary output removed, exit 130."""
    raise KeyboardInterrupt


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
        if isinstance(outcome, jobs.Failure):
            state["printer"](
                f"soartc: skipped {printable(outcome.path)}: {printable(outcome.error)}"
            )
        if isinstance(outcome, jobs.ImageResult) and outcome.warning:
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


@app.command(
    "compute", cls=SoartcCommand,
    short_help="SOARTC (convolution) and SOART (rotation) metrics of every patch of every image.",
)  # fmt: skip
def compute_command(
    inputs: Inputs = None,
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    datum: Datum = "datum",
    kernels: Kernels = None,
    transforms: Transforms = "soartc",
    metrics: Metrics = "soart3",
    output: Output = None,
    layout: Layout = "wide",
    pool: Pool = "mean,std,min,max",
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    resume: Resume = False,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
) -> int:
    """SOARTC (convolution) and SOART (rotation) metrics of every patch of every image."""
    job = _soartc_job(
        size, patch, channels, invert, max_pixels, datum, kernels, transforms, metrics
    )
    settings = _settings(
        inputs, output, layout, precision, pool, record, maps, workers, shard, strict, quiet,
        no_recursive, resume,
    )  # fmt: skip
    return _finish(_run(job, settings), settings, job.columns)


def _soartc_job(size, patch, channels, invert, max_pixels, datum, kernels, transforms, metrics):
    """The SOARTC/SOART job of the feature options (``compute`` and ``fit``)."""
    from soartc_cli.interfaces.api import soartc_job

    user = transforms_module.read_kernel_file(kernels) if kernels else None
    return soartc_job(
        size=size, patch=patch, channels=channels, invert=invert, max_pixels=max_pixels,
        datum=datum, kernels=user, transforms=transforms, metrics=metrics,
    )  # fmt: skip


@app.command(
    "attention", cls=SoartcCommand,
    short_help="Scaled dot-product attention: the seed article's demo, or over image patches.",
)  # fmt: skip
def attention_command(
    inputs: Inputs = None,
    seed: Seed = 42,
    high: Annotated[
        int | None,
        typer.Option(
            help="Demo: weights are integers drawn from [0, HIGH).",
            metavar="HIGH",
            show_default=str(DEMO_HIGH),
        ),
    ] = None,
    dim: Dim = None,
    words: Annotated[
        str | None,
        typer.Option(
            metavar="ROWS",
            help="Demo: the input X, rows separated by ';' (e.g. '1,0,1,0;0,1,0,1').",
        ),
    ] = None,
    softmax: Annotated[
        str | None,
        typer.Option(
            help="Demo: 'row' (standard) or 'global' (the article's code).",
            metavar="row|global",
            show_default="row",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="table|json|csv",
            help="Demo output format (-o FILE: json or csv, else chosen by FILE's suffix).",
            show_default="table",
        ),
    ] = None,
    norm: Annotated[
        str,
        typer.Option(
            help="Images: 'layer' (standardise each patch) or 'none'.", metavar="layer|none"
        ),
    ] = "layer",
    weights: Annotated[
        str,
        typer.Option(
            help="Images: 'random', 'identity' or an .npz with W_Q, W_K, W_V.", metavar="MODE|FILE"
        ),
    ] = "random",
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    output: Output = None,
    layout: Layout = "wide",
    pool: Pool = "mean,std,min,max",
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    resume: Resume = False,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
) -> int:
    """Scaled dot-product attention: the seed article's demo, or over the patches of images.

    Without inputs: the seed demo (--seed, --high, --dim, --words, --softmax, --format).
    With inputs: per-patch 'received' and 'entropy' of every image, written like 'compute'.
    """
    if not inputs:
        return _demo(seed, high, dim, words, softmax, fmt, output=output, quiet=quiet)
    demo_only = {"--high": high, "--words": words, "--softmax": softmax, "--format": fmt}
    given = [name for name, value in demo_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for the seed demo (no image inputs)")
    if dim is not None and weights != "random":
        raise UsageError(
            f"--dim: only with --weights random (with {weights} the weights fix d)"
            if weights in attention.WEIGHT_MODES
            else "--dim: only with --weights random (an .npz file's arrays fix d)"
        )
    image = _image_settings(size, patch, channels, invert, max_pixels)
    k = (3 if channels == "rgb" else 1) * patch * patch
    d = IMAGE_DIM if dim is None else dim
    source = weights if weights in attention.WEIGHT_MODES else os.path.abspath(weights)
    job = jobs.AttentionJob(
        image,
        attention.check_choice(norm, name="--norm", choices=attention.NORMS),
        _weights(weights, k=k, dim=d, seed=seed),
        source,
        seed,
    )
    settings = _settings(
        inputs, output, layout, precision, pool, record, maps, workers, shard, strict, quiet,
        no_recursive, resume,
    )  # fmt: skip
    return _finish(_run(job, settings), settings, job.columns)


def _demo_format(fmt: str | None, output: str | None) -> str:
    """The demo's format: ``--format``, else the suffix of ``-o FILE``, else a table (-o -: CSV)."""
    if fmt is not None:
        fmt = attention.check_choice(fmt, name="--format", choices=DEMO_FORMATS)
    if output is None:
        return fmt or "table"
    if output == "-":
        return fmt or "csv"
    suffix = os.path.splitext(output)[1].lower()
    by_suffix = DEMO_SUFFIXES.get(suffix)
    if fmt is None:
        if by_suffix is None:
            raise UsageError(
                f"--output: the demo writes {', '.join(DEMO_SUFFIXES)} files, not {output!r} "
                "(or give --format json|csv)"
            )
        return by_suffix
    if fmt == "table":
        raise UsageError("--format table is for the terminal; -o FILE takes json or csv")
    if by_suffix is not None and by_suffix != fmt:
        raise UsageError(f"--format {fmt} does not match the suffix of -o {output}")
    return fmt


def _demo(seed, high, dim, words, softmax, fmt, *, output: str | None, quiet: bool) -> int:
    """The seed demo: compute, then render as a table, JSON or CSV (to stdout or -o FILE)."""
    fmt = _demo_format(fmt, output)
    if output not in (None, "-"):
        targets.check_output_path(output)
    x = attention.parse_words(words) if words is not None else attention.SEED_WORDS
    high = DEMO_HIGH if high is None else high
    d = DEMO_DIM if dim is None else dim
    result = attention.seed_demo(x, seed=seed, high=high, dim=d, softmax=softmax or "row")
    if fmt in ("json", "csv"):
        if fmt == "json":
            text = tables.demo_json(result, settings={"seed": seed, "high": high, "dim": d})
        else:
            text = tables.demo_csv(result)
        if output in (None, "-"):
            sys.stdout.write(text)
        else:
            targets.write_text_atomic(output, text)
            if not quiet:
                note(f"soartc: the demo's matrices written to {printable(output)} ({fmt})")
        return EXIT_OK
    out = output_console()
    out.print(tables.demo_header(result))
    from rich.columns import Columns

    out.print(Columns(tables.demo_tables(result), padding=(0, 2)))
    if result.softmax == "row" and not quiet:
        note("hint: the article's printed probs and attention come from --softmax global")
    return EXIT_OK


def _weights(spec: str, *, k: int, dim: int, seed: int) -> attention.Weights:
    """``--weights``: random, identity, or the arrays of an .npz file (read as untrusted data)."""
    if spec == "random":
        return attention.random_weights(k, dim=dim, seed=seed)
    if spec == "identity":
        return attention.identity_weights(k)
    return attention.load_weights_file(spec, k=k)


@app.command(
    "fit", cls=SoartcCommand,
    short_help="Learn the unit space of good images: the model file for 'score'.",
)  # fmt: skip
def fit_command(
    inputs: Inputs = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", metavar="MODEL.npz", help="Where the model goes."),
    ] = None,
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    datum: Datum = "datum",
    kernels: Kernels = None,
    transforms: Transforms = "soartc",
    metrics: Metrics = "soart3",
    unit_space: Annotated[
        str,
        typer.Option(
            help="One mean and covariance per patch position, or one shared by every patch.",
            metavar="position|shared",
        ),
    ] = "position",
    quantile: Annotated[
        float,
        typer.Option(
            help="Quantile of the out-of-fold good scores that sets the threshold.", metavar="Q"
        ),
    ] = 0.99,
    record: Record = None,
    workers: Workers = None,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
) -> int:
    """Learn the unit space of good images (SPEC §10): the model file for 'score'."""
    from soartc_cli.pipeline import inspection

    inspection.check_fit_options(output, unit_space=unit_space, quantile=quantile)
    job = _soartc_job(
        size, patch, channels, invert, max_pixels, datum, kernels, transforms, metrics
    )
    settings = runner.RunSettings(
        tuple(_need_inputs(inputs)), None, record=record, workers=workers, strict=strict,
        quiet=quiet, recursive=not no_recursive,
    )  # fmt: skip
    collector = inspection.FeatureCollector()
    report = _run(job, settings, sink=collector, protect=[output])
    model = inspection.finish_fit(
        collector, job, report.record, output=output, record_file=record,
        unit_space=unit_space, quantile=quantile, version=__version__,
    )  # fmt: skip
    if not quiet:
        note(
            f"soartc: model of {collector.count} good images written to {printable(output)}; "
            f"threshold {model.threshold:.4g} (quantile {quantile} of out-of-fold scores)"
        )
    return EXIT_OK if report.ok else EXIT_FAILED


@app.command(
    "score", cls=SoartcCommand,
    short_help="Anomaly scores of images against a model: patch distances, verdicts, AUROC.",
)  # fmt: skip
def score_command(
    inputs: Inputs = None,
    model: Annotated[
        str | None, typer.Option(metavar="MODEL.npz", help="The model 'fit' wrote.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Anomalous above this score.", metavar="T", show_default="the model's threshold"
        ),
    ] = None,
    normal_label: Annotated[
        str, typer.Option(help="The label of good images, for the evaluation.", metavar="LABEL")
    ] = "good",
    output: Output = None,
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    resume: Resume = False,
    strict: Strict = False,
    quiet: Quiet = False,
    no_recursive: NoRecursive = False,
) -> int:
    """Anomaly scores of images against a model: patch distances, verdicts, AUROC per label."""
    from soartc_cli.pipeline import inspection

    if model is None:
        raise UsageError("score needs --model MODEL.npz (made by 'soartc fit')")
    job = inspection.score_job(model, threshold=threshold)
    settings = runner.RunSettings(
        tuple(_need_inputs(inputs)), output, "score", precision, record=record, maps=maps,
        workers=workers, shard=shard, strict=strict, quiet=quiet, recursive=not no_recursive,
        resume=resume,
    )  # fmt: skip
    spec = inspection.score_spec(output, precision=precision)

    def evaluation(report: runner.RunReport) -> dict:
        result = inspection.evaluation(report.extras, normal_label=normal_label)
        return {} if result is None else {"evaluation": result}

    report = _run(job, settings, spec=spec, record_extra=evaluation)
    if output is None and report.rows:
        out = output_console()
        out.print(tables.score_table(report.rows[: tables.TABLE_ROWS], threshold=job.threshold))
    evaluated = (report.record or {}).get("evaluation")
    if evaluated and not quiet:
        out = output_console() if output != "-" else error_console()
        out.print(tables.evaluation_table(evaluated, normal_label=normal_label))
    return _finish(report, settings, None)


@app.command(
    "transforms", cls=SoartcCommand,
    short_help="List every transform and kernel (with its values), the presets and the metrics.",
)  # fmt: skip
def transforms_command(
    kernels: Annotated[
        str | None, typer.Option(help="Also list the kernels of this JSON file.", metavar="FILE")
    ] = None,
) -> int:
    """List every transform and kernel (with its values), the presets and the metrics."""
    user = transforms_module.read_kernel_file(kernels) if kernels else {}
    out = output_console()
    for item in tables.transform_listing(transforms_module.merge_kernels(user), set(user)):
        out.print(item)
    return EXIT_OK


@app.command(
    "merge", cls=SoartcCommand,
    short_help="Join the outputs of the shards of one run (any formats) and their run records.",
)  # fmt: skip
def merge_command(
    parts: Annotated[
        list[str], typer.Argument(metavar="PART...", help="Shard outputs, in any order.")
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="The joined file, format by suffix like compute's -o ('-': CSV on stdout).",
        ),
    ],
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Join the shards that are there; the record says which are missing.",
        ),
    ] = False,
    record: Record = None,
) -> int:
    """Join the outputs of the shards of one run (any formats) and their run records."""
    from soartc_cli.output.merge import merge_outputs

    merge_outputs(
        parts, output, command=["soartc", *_ARGV], allow_missing=allow_missing, record=record
    )
    return EXIT_OK


def _need_inputs(inputs: list[str] | None) -> list[str]:
    if not inputs:
        raise UsageError("give at least one image file or directory (or '-' to read stdin)")
    return inputs


def run(argv: list[str] | None = None) -> Any:
    """Run the app as the console script does (``sys.exit`` with the exit code)."""
    return app(args=argv, prog_name="soartc")
