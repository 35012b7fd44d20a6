"""The ``soartc`` command line: parse → call one library function → render.

:mod:`.app` holds the Typer app and turns errors into one line and an exit code; each command
lives in a module of its own (:mod:`.compute`, :mod:`.attention`, :mod:`.inspect` for ``fit`` and
``score``, :mod:`.tools` for ``transforms`` and ``merge``), importing which registers it.
"""

import importlib
from typing import Any

from soartc_cli.interfaces.cli.base import app

__all__ = ["app", "run"]

#: The command modules, in the order ``soartc --help`` lists their commands.
COMMAND_MODULES = ("compute", "attention", "inspect", "tools")
for _module in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_module}")


def run(argv: list[str] | None = None) -> Any:
    """Run the app as the console script does (``sys.exit`` with the exit code)."""
    return app(args=argv, prog_name="soartc")
