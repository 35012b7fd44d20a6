"""soartc: SOARTC / SOART metrics and scaled dot-product attention over image patches.

The numeric core (``patches``, ``transforms``, ``rt``, ``attention``, ``features``) is importable
without the command-line interface; ``cli`` is a thin Typer layer over it.
"""

__version__ = "0.1.0"
