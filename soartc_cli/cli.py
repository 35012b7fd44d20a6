"""The ``soartc`` command line: parse → call one library function → render.

The only module that imports typer or creates a rich Console. Errors become one line on standard
error and an exit code (0 ok, 1 some inputs failed, 2 usage error, 130 interrupted); no traceback
reaches a user.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.columns import Columns
from rich.console import Console

from soartc_cli import __version__, attention, writers
from soartc_cli.errors import InputError, SoartcError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Typer bundles its own copy of click's exception classes (older releases use click itself);
# take the base class from typer's public BadParameter instead of importing click.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_Abort = typer.Abort


def error_console() -> Console:
    """The stderr console: progress, warnings and errors (data goes to stdout)."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def one_line(text: str) -> str:
    """``text`` with line breaks escaped, so that a message stays on one line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def fail(message: str, code: int) -> int:
    """Print ``soartc: error: MESSAGE`` on stderr and return ``code``."""
    sys.stderr.write(f"soartc: error: {one_line(message)}\n")
    sys.stderr.flush()
    return code


class SoartcGroup(typer.core.TyperGroup):
    """Typer's group, with every usage error or soartc error turned into one line and exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as exc:
            hint = ""
            if getattr(exc, "ctx", None) is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            code = fail(exc.format_message() + hint, exc.exit_code)
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

Seed = Annotated[int, typer.Option(help="Random seed of the weights.")]
Dim = Annotated[
    int | None,
    typer.Option(help="Width d of the projections (default 3 for the demo, 64 for images)."),
]


@app.command("attention")
def attention_command(
    seed: Seed = 42,
    high: Annotated[int, typer.Option(help="Demo: weights are integers drawn from [0, HIGH).")] = 3,
    dim: Dim = None,
    words: Annotated[
        str | None,
        typer.Option(help="Demo: the input X, rows separated by ';' (e.g. '1,0,1,0;0,1,0,1')."),
    ] = None,
    softmax: Annotated[
        str,
        typer.Option(help="Demo: 'row' (standard) or 'global' (the article's code)."),
    ] = "row",
    fmt: Annotated[
        str, typer.Option("--format", help="Demo output: table, json or csv.")
    ] = "table",
) -> int:
    """Scaled dot-product attention: the seed article's demo (no inputs)."""
    attention.check_choice(fmt, name="--format", choices=("table", "json", "csv"))
    x = attention.parse_words(words) if words is not None else attention.SEED_WORDS
    d = 3 if dim is None else dim
    result = attention.seed_demo(x, seed=seed, high=high, dim=d, softmax=softmax)
    if fmt == "json":
        settings = {"seed": seed, "high": high, "dim": d}
        sys.stdout.write(writers.demo_json(result, settings=settings))
    elif fmt == "csv":
        sys.stdout.write(writers.demo_csv(result))
    else:
        out = Console(highlight=False)
        out.print(writers.demo_header(result))
        out.print(Columns(writers.demo_tables(result), padding=(0, 2)))
        if softmax == "row":
            error_console().print(
                "hint: the article's printed probs and attention come from --softmax global"
            )
    return EXIT_OK


def run(argv: list[str] | None = None) -> Any:
    """Run the app as the console script does (``sys.exit`` with the exit code)."""
    return app(args=argv, prog_name="soartc")
