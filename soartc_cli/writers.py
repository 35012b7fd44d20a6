"""Output: the seed demo's renderings, CSV layouts, JSON Lines, run records, atomic files.

Rich tables are built here and printed by ``cli``; nothing here writes to the terminal.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
from rich.table import Table

from soartc_cli.attention import DemoResult

# ---------------------------------------------------------------------------------------------
# The seed demo


def format_demo_number(value: float | int) -> str:
    """Print a number the way numpy printed the article's arrays.

    Integers as integers; floats with at most 8 decimals and no trailing zeros (numpy's default
    ``precision=8``, ``floatmode="maxprec"``), in scientific notation when very small or large.
    """
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if v == 0 or 1e-4 <= abs(v) < 1e16:
        return np.format_float_positional(v, precision=8, unique=True, trim="-")
    return np.format_float_scientific(v, precision=8, unique=True, trim="-")


def _as_python(matrix: np.ndarray) -> list[list[float | int]]:
    """A matrix as nested lists of Python ints or floats (full precision)."""
    return matrix.tolist()


def demo_header(result: DemoResult) -> str:
    """One line that says which softmax made ``probs``."""
    if result.softmax == "global":
        return "softmax: global (one softmax over all of scores/√d, as the article's code)"
    return "softmax: row (each row of probs sums to 1)"


def demo_tables(result: DemoResult) -> list[Table]:
    """One rich table per matrix, in the article's order."""
    tables = []
    for name, matrix in result.matrices().items():
        rows, cols = matrix.shape
        table = Table(title=f"{name} ({rows}×{cols})", title_justify="left", show_header=False)
        for _ in range(cols):
            table.add_column(justify="right")
        for row in matrix:
            table.add_row(*(format_demo_number(v) for v in row.tolist()))
        tables.append(table)
    return tables


def demo_json(result: DemoResult, *, settings: dict[str, object]) -> str:
    """The ten matrices under their names, plus the settings, as one JSON object."""
    payload: dict[str, object] = {"softmax": result.softmax, **settings}
    payload.update({name: _as_python(m) for name, m in result.matrices().items()})
    return json.dumps(payload, indent=2) + "\n"


def demo_csv(result: DemoResult) -> str:
    """The ten matrices in long form: ``matrix,row,col,value`` (values at full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["matrix", "row", "col", "value"])
    for name, matrix in result.matrices().items():
        for (i, j), value in np.ndenumerate(matrix):
            writer.writerow([name, i, j, repr(value.item())])
    return out.getvalue()
