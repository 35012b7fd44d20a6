"""The ``soartc`` command line: parse → call one library function → render.

The only module that imports typer or creates a rich Console. Errors become one line on standard
error and an exit code (0 ok, 1 some inputs failed, 2 usage error, 130 interrupted); no traceback
reaches a user.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from soartc_cli import __version__, attention, discover, imageio, rt, runner, writers
from soartc_cli import transforms as transforms_module
from soartc_cli.errors import InputError, SoartcError, UsageError

if TYPE_CHECKING:  # rich is imported when something is shown: start-up time counts in batch jobs
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

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


def one_line(text: str) -> str:
    """``text`` with line breaks escaped, so that a message stays on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def fail(message: str, code: int) -> int:
    """Print ``soartc: error: MESSAGE`` on stderr and return ``code``."""
    sys.stderr.write(f"soartc: error: {one_line(message)}\n")
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
            code = EXIT_FAILED
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


app = typer.Typer(
    cls=SoartcGroup,
    name="soartc",
    help="SOARTC / SOART metrics and scaled dot-product attention over the patches of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
        metavar="PATH",
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
Output = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write CSV (or JSON Lines for *.jsonl) to FILE; '-' is stdout.",
    ),
]
Layout = Annotated[
    str, typer.Option(help="CSV layout: wide, long or summary.", metavar="wide|long|summary")
]
Precision = Annotated[
    int, typer.Option(help="Significant digits of the numbers written.", metavar="N")
]
Record = Annotated[
    str | None,
    typer.Option(
        help="Where the run record goes (default: OUTPUT.meta.json next to -o FILE).",
        metavar="FILE",
    ),
]
Maps = Annotated[
    str | None,
    typer.Option(help="Write one heat-map PNG per image into this directory.", metavar="DIR"),
]
Workers = Annotated[
    int | None,
    typer.Option(help="Worker processes (default: the CPU count; 1 = in-process).", metavar="N"),
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
        metavar="D", help="Width d of the projections (default 3 for the demo, 64 for images)."
    ),
]


@dataclass(frozen=True)
class RunOptions:
    """The options every image command shares, as given on the command line."""

    inputs: list[str]
    output: str | None
    layout: str
    precision: int
    record: str | None
    maps: str | None
    workers: int | None
    shard: str | None
    strict: bool
    quiet: bool
    recursive: bool


def _image_settings(size, patch, channels, invert, max_pixels) -> runner.ImageSettings:
    attention.check_choice(channels, name="--channels", choices=("luma", "rgb"))
    imageio.check_geometry(size, patch=patch)
    if max_pixels < 1:
        raise UsageError(f"--max-pixels must be at least 1, not {max_pixels}")
    return runner.ImageSettings(size, patch, channels, invert, max_pixels)


def _run(job: runner.Job, opts: RunOptions, settings: dict) -> int:
    """Discover, run, write and render: what ``compute`` and ``attention DIR`` share."""
    fmt = writers.output_format(opts.output, layout=opts.layout, precision=opts.precision)
    if opts.workers is not None and opts.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {opts.workers}")
    workers = opts.workers or os.cpu_count() or 1
    unreadable: list[runner.Failure] = []

    def cannot_read(path: str, reason: str) -> None:
        unreadable.append(runner.Failure(-1, path, reason))
        print(f"soartc: skipped {one_line(path)}: {one_line(reason)}", file=sys.stderr)

    files = discover.discover(
        opts.inputs, recursive=opts.recursive, stdin=sys.stdin, on_error=cannot_read
    )
    if opts.strict and unreadable:
        raise runner.StrictStop(
            f"{unreadable[0].path}: {unreadable[0].error} (--strict: no output written)"
        )
    if opts.record is not None and not os.path.isdir(os.path.dirname(os.path.abspath(opts.record))):
        raise UsageError(f"--record: directory of {opts.record} does not exist")
    if opts.shard is not None:
        index, count = discover.parse_shard(opts.shard)
        files = discover.shard(files, index=index, count=count)
    # Terminal tables need only the means: no text is formatted for them.
    task = runner.Task(job, fmt if opts.output is not None else None, opts.maps)
    if opts.maps is not None:
        try:
            os.makedirs(opts.maps, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--maps: cannot make directory {opts.maps}: {exc.strerror}") from None
        _warn_map_collisions(files)
    signal.signal(signal.SIGTERM, _interrupt)
    if opts.output == "-":
        sys.stdout.flush()
    with _progress(len(files), show=not opts.quiet and sys.stderr.isatty()) as on_outcome:
        report = runner.run_to_output(
            files, task, output=opts.output, fmt=fmt, record=opts.record, workers=workers,
            strict=opts.strict, on_outcome=on_outcome, failures=unreadable, settings=settings,
            command=["soartc", *_ARGV], version=__version__, stdout=sys.stdout.buffer,
        )  # fmt: skip
    if opts.output is None and report.rows:
        out = output_console()
        for table in writers.summary_tables(report.rows, job.columns, width=out.width):
            out.print(table)
    if not files:
        note("soartc: no image files found in " + ", ".join(opts.inputs))
    elif not opts.quiet:
        note(
            f"soartc: {report.processed} of {report.found} images processed"
            + (f", {len(report.failures)} skipped" if report.failures else "")
        )
    return EXIT_OK if report.ok else EXIT_FAILED


def _warn_map_collisions(files: list[discover.ImageFile]) -> None:
    """Say when two images would get the same picture name (``a.jpg`` and ``a.png``)."""
    from soartc_cli.maps import name_collisions

    for first, second, name in name_collisions(file.path for file in files):
        note(
            f"soartc: warning: --maps: {one_line(first)} and {one_line(second)} "
            f"both draw {name}; the later one is kept"
        )


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run like Ctrl-C: workers stopped, temporary output removed, exit 130."""
    raise KeyboardInterrupt


@contextmanager
def _progress(total: int, *, show: bool):
    """Yield the per-outcome callback: a progress bar on a terminal, "skipped" lines always.

    The bar is refreshed from the callback, not by a thread of its own, so that worker processes
    can be forked from a single-threaded process.
    """

    def skipped(outcome, printer) -> None:
        if isinstance(outcome, runner.Failure):
            printer(f"soartc: skipped {one_line(outcome.path)}: {one_line(outcome.error)}")

    if not show or total == 0:
        yield lambda outcome: skipped(outcome, note)
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
    console = error_console()
    with Progress(*columns, console=console, transient=True, auto_refresh=False) as progress:
        bar = progress.add_task("images", total=total, rate="")
        last = 0.0

        def advance(outcome) -> None:
            nonlocal last
            skipped(outcome, progress.console.print)
            progress.advance(bar)
            now = time.monotonic()
            if now - last > 0.1 or progress.tasks[0].completed == total:
                speed = progress.tasks[0].speed
                progress.update(bar, rate="" if speed is None else f"{speed:.1f} images/s")
                progress.refresh()
                last = now

        yield advance


@app.command("compute")
def compute_command(
    inputs: Inputs = None,
    size: Size = 224,
    patch: Patch = 16,
    channels: Channels = "luma",
    invert: Invert = False,
    datum: Annotated[
        str, typer.Option(help="Kernel that makes the standard s.", metavar="NAME")
    ] = "datum",
    kernels: Annotated[
        str | None,
        typer.Option(help='JSON file of extra kernels: {"name": [[...], ...]}.', metavar="FILE"),
    ] = None,
    transforms: Annotated[
        str,
        typer.Option(
            help="Transforms or presets: soartc, soart, all (see 'transforms').", metavar="NAMES"
        ),
    ] = "soartc",
    metrics: Annotated[
        str, typer.Option(help="Metrics or presets: soart3, soart2022, rt, all.", metavar="NAMES")
    ] = "soart3",
    output: Output = None,
    layout: Layout = "wide",
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
    strict: Strict = False,
    quiet: Quiet = False,
    max_pixels: MaxPixels = 100_000_000,
    no_recursive: NoRecursive = False,
) -> int:
    """SOARTC (convolution) and SOART (rotation) metrics of every patch of every image."""
    image = _image_settings(size, patch, channels, invert, max_pixels)
    user = transforms_module.load_kernels(_read_text(kernels, "--kernels")) if kernels else {}
    bank = transforms_module.merge_kernels(user)
    chosen = transforms_module.parse_transforms(transforms, kernels=bank)
    transforms_module.check_kernels(datum=datum, transforms=chosen, kernels=bank, patch=patch)
    job = runner.SoartcJob(image, chosen, rt.parse_metrics(metrics), datum, bank)
    opts = RunOptions(
        _need_inputs(inputs), output, layout, precision, record, maps, workers, shard, strict,
        quiet, not no_recursive,
    )  # fmt: skip
    return _run(job, opts, runner.job_settings(job))


@app.command("attention")
def attention_command(
    inputs: Inputs = None,
    seed: Seed = 42,
    high: Annotated[
        int | None,
        typer.Option(help="Demo: weights are integers drawn from [0, HIGH). [3]", metavar="HIGH"),
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
            help="Demo: 'row' (standard) or 'global' (the article's code). [row]",
            metavar="row|global",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", metavar="table|json|csv", help="Demo output format. [table]"),
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
    precision: Precision = 7,
    record: Record = None,
    maps: Maps = None,
    workers: Workers = None,
    shard: Shard = None,
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
        return _demo(seed, high, dim, words, softmax, fmt)
    demo_only = {"--high": high, "--words": words, "--softmax": softmax, "--format": fmt}
    given = [name for name, value in demo_only.items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for the seed demo (no image inputs)")
    image = _image_settings(size, patch, channels, invert, max_pixels)
    k = (3 if channels == "rgb" else 1) * patch * patch
    d = 64 if dim is None else dim
    job = runner.AttentionJob(
        image,
        attention.check_choice(norm, name="--norm", choices=attention.NORMS),
        _weights(weights, k=k, dim=d, seed=seed),
    )
    opts = RunOptions(
        inputs, output, layout, precision, record, maps, workers, shard, strict, quiet,
        not no_recursive,
    )  # fmt: skip
    source = weights if weights in attention.WEIGHT_MODES else os.path.abspath(weights)
    return _run(job, opts, runner.job_settings(job, weights_source=source, seed=seed))


def _demo(seed, high, dim, words, softmax, fmt) -> int:
    """The seed demo: compute, then render as a table, JSON or CSV."""
    fmt = attention.check_choice(fmt or "table", name="--format", choices=("table", "json", "csv"))
    x = attention.parse_words(words) if words is not None else attention.SEED_WORDS
    high = 3 if high is None else high
    d = 3 if dim is None else dim
    result = attention.seed_demo(x, seed=seed, high=high, dim=d, softmax=softmax or "row")
    if fmt == "json":
        settings = {"seed": seed, "high": high, "dim": d}
        sys.stdout.write(writers.demo_json(result, settings=settings))
    elif fmt == "csv":
        sys.stdout.write(writers.demo_csv(result))
    else:
        out = output_console()
        out.print(writers.demo_header(result))
        from rich.columns import Columns

        out.print(Columns(writers.demo_tables(result), padding=(0, 2)))
        if result.softmax == "row":
            error_console().print(
                "hint: the article's printed probs and attention come from --softmax global"
            )
    return EXIT_OK


def _weights(spec: str, *, k: int, dim: int, seed: int) -> attention.Weights:
    """``--weights``: random, identity, or the arrays of an .npz file (shapes checked)."""
    if spec == "random":
        return attention.random_weights(k, dim=dim, seed=seed)
    if spec == "identity":
        return attention.identity_weights(k)
    import zipfile  # numpy reads .npz files with it

    try:
        with open(spec, "rb") as f, np.load(f, allow_pickle=False) as arrays:
            return attention.check_weights(dict(arrays), k=k)
    except FileNotFoundError:
        raise UsageError(f"--weights: no such file {spec!r} (or use random, identity)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"--weights: cannot read {spec}: {exc}") from None


@app.command("transforms")
def transforms_command(
    kernels: Annotated[
        str | None, typer.Option(help="Also list the kernels of this JSON file.", metavar="FILE")
    ] = None,
) -> int:
    """List every transform and kernel (with its values), the presets and the metrics."""
    user = transforms_module.load_kernels(_read_text(kernels, "--kernels")) if kernels else {}
    out = output_console()
    for item in writers.transform_listing(transforms_module.merge_kernels(user), set(user)):
        out.print(item)
    return EXIT_OK


@app.command("merge")
def merge_command(
    parts: Annotated[
        list[str], typer.Argument(metavar="PART", help="Shard outputs, in shard order.")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="FILE", help="The joined file ('-': stdout).")
    ],
) -> int:
    """Join shard outputs (CSV with one header, or JSON Lines) and their run records."""
    writers.merge_outputs(parts, output, command=["soartc", *_ARGV])
    return EXIT_OK


def _need_inputs(inputs: list[str] | None) -> list[str]:
    if not inputs:
        raise UsageError("give at least one image file or directory (or '-' to read stdin)")
    return inputs


def _read_text(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option}: cannot read {path}: {exc}") from None


def run(argv: list[str] | None = None) -> Any:
    """Run the app as the console script does (``sys.exit`` with the exit code)."""
    return app(args=argv, prog_name="soartc")
