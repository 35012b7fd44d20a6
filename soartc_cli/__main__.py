"""Entry point of ``soartc`` and ``python -m soartc_cli``."""

import os
import sys

from soartc_cli._startup import prepare_process


def main() -> None:
    """Tune the process for numeric work, run the Typer app, and leave at once.

    The interpreter's own teardown (unloading numpy, Pillow and the rest) took about 60 ms of
    every run — a tenth of a batch of 400 images. Every file soartc writes is closed by the time
    the app returns, so the process flushes its standard streams and exits without it.
    """
    prepare_process()
    from soartc_cli.cli import app

    code = 0
    try:
        app(prog_name="soartc")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        code = code or 1
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
