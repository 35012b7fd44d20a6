"""The Typer app of ``soartc``: its group and command classes, errors as one line and an exit
code, the consoles, and the helpers every command uses.

The only code that imports typer or creates a rich Console (with :mod:`.options` and the
command modules). Errors become one line on standard error and an exit code (0 ok, 1 some inputs
failed, 2 usage error, 130 interrupted, 141 closed pipe); no traceback reaches a user.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from soartc_cli import __version__
from soartc_cli.errors import InputError, SoartcError, UsageError
from soartc_cli.output.targets import ClosedPipe, WriteError
from soartc_cli.pipeline.runner import Interrupted, StrictStop

if TYPE_CHECKING:  # rich is imported when something is shown: start-up time counts in batch jobs
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: A closed pipe on standard output ends the run quietly with the shell's 128 + SIGPIPE.
EXIT_CLOSED_PIPE = 141


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
ARGV: list[str] = []


#: The exit code of each kind of soartc error (the first class an error is an instance of).
EXIT_CODES: tuple[tuple[type[SoartcError], int], ...] = (
    (Interrupted, EXIT_INTERRUPTED),
    (UsageError, EXIT_USAGE),
    (WriteError, EXIT_FAILED),
    (StrictStop, EXIT_FAILED),
    (InputError, EXIT_FAILED),
)


def _exit_code(exc: SoartcError) -> int:
    return next((code for kind, code in EXIT_CODES if isinstance(exc, kind)), EXIT_FAILED)


class SoartcGroup(typer.core.TyperGroup):
    """Typer's group, with every usage error or soartc error turned into one line and exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        ARGV[:] = list(sys.argv[1:] if args is None else args)
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
        except ClosedPipe:
            _silence_stdout()
            code = EXIT_CLOSED_PIPE
        except SoartcError as exc:
            code = fail(str(exc), _exit_code(exc))
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
