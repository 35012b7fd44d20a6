"""Entry point of ``soartc`` and ``python -m soartc_cli``."""

import os
import sys


def main() -> None:
    """Tune the process for numeric work, run the Typer app, and leave at once.

    The interpreter's own teardown (unloading numpy, Pillow and the rest) took about 60 ms of
    every run — a tenth of a batch of 400 images. Every file soartc writes is closed by the time
    the app returns, so the process flushes its standard streams and exits without it.
    """
    code = 0
    try:
        # Imported here, inside the try: a Ctrl-C that lands while it loads is an interrupt too.
        from soartc_cli.pipeline.startup import prepare_process

        prepare_process()
        from soartc_cli.interfaces.cli import app

        app(prog_name="soartc")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        # Ctrl-C before the app took over, while its modules were loading: it can surface as
        # the KeyboardInterrupt itself or as an error about a half-imported module after it.
        if _caused_by_interrupt(exc):
            _write_error("soartc: error: interrupted\n")
            code = 130
        else:
            _write_error(f"soartc: error: internal error: {type(exc).__name__}: {exc}\n")
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError, ValueError, AttributeError):  # closed, or None
            code = code or (1 if stream is sys.stdout else 0)
    os._exit(code)


def _caused_by_interrupt(exc: BaseException | None) -> bool:
    """True when ``exc`` is a KeyboardInterrupt or happened while handling or because of one."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _write_error(text: str) -> None:
    try:
        sys.stderr.write(text)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    main()
