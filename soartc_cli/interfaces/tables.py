"""What soartc shows on a terminal: the seed demo's renderings, the per-image summary tables, the
``transforms`` listing.

Rich tables are built here and printed by ``cli``; nothing here writes to the terminal. Rich is
imported when a table is built, not at start-up.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from soartc_cli.core.attention import DemoResult
from soartc_cli.output.layouts import Columns

if TYPE_CHECKING:
    from rich.table import Table

    from soartc_cli.pipeline.jobs import ImageResult

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
    from rich.table import Table

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
    """The ten matrices in long form, ``matrix,row,col,value,softmax`` (full precision).

    Every row names the softmax that made ``probs`` (SPEC §5: the output says which was used).
    """
    import csv  # the demo alone needs it

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["matrix", "row", "col", "value", "softmax"])
    for name, matrix in result.matrices().items():
        for (i, j), value in np.ndenumerate(matrix):
            writer.writerow([name, i, j, repr(value.item()), result.softmax])
    return out.getvalue()


# ---------------------------------------------------------------------------------------------
# Terminal tables of image runs


#: Terminal tables show at most this many images (SPEC §6); ``-o FILE`` writes them all.
TABLE_ROWS = 50


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def summary_tables(
    rows: Sequence[ImageResult], columns: Columns, *, width: int = 100
) -> list[Table]:
    """Rich tables of per-image means over the patches: one per (channel ×) metric.

    ``rows`` are the results of a run (their path, label, size and ``(C, T, M)`` means).

    Transforms are the columns; as many as fit in ``width`` characters go in one table, the rest
    in the next, so the output stays readable in an 80–120 column terminal.
    """
    channels = columns.channels or [None]
    count = len(columns.transforms)
    tables = []
    for c, channel in enumerate(channels):
        for m, metric in enumerate(columns.metrics):
            needed = -(-count // _transforms_per_table(rows, columns, c, m, width))
            groups = _chunks(list(range(count)), -(-count // needed))  # balanced: 3 + 3, not 5 + 1
            for part, group in enumerate(groups):
                title = f"{metric} (mean over patches)"
                if channel is not None:
                    title = f"channel {channel}: {title}"
                if len(groups) > 1:
                    title += f", part {part + 1} of {len(groups)}"
                tables.append(_summary_table(rows, columns, c, m, group, title))
    return tables


def _summary_table(rows, columns, c, m, group, title) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("path", overflow="fold", min_width=10, max_width=32)
    table.add_column("label", overflow="fold", max_width=20)
    table.add_column("size", justify="right", no_wrap=True)
    for t in group:
        table.add_column(columns.transforms[t], justify="right", no_wrap=True)
    for row in rows:
        cells = ["%.4g" % row.means[c, t, m] for t in group]
        size = f"{row.width}×{row.height}"
        table.add_row(_printable(row.path), _printable(row.label), size, *cells)
    return table


def _transforms_per_table(rows, columns, c: int, m: int, width: int) -> int:
    """The most transforms whose table, as rendered, still fits in ``width`` columns."""
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(width=10_000, file=io.StringIO())
    sample = rows[:50]
    for fit in range(len(columns.transforms), 1, -1):
        widest = max(
            Measurement.get(console, console.options, _summary_table(
                sample, columns, c, m, range(start, min(start + fit, len(columns.transforms))), ""
            )).minimum
            for start in range(0, len(columns.transforms), fit)
        )  # fmt: skip
        if widest <= width:
            return fit
    return 1


def score_table(rows: Sequence, *, threshold: float) -> Table:
    """The ``score`` terminal table: path, label, score, verdict, the worst patch."""
    from rich.table import Table

    table = Table(title=f"anomaly scores (threshold {threshold:.4g})", title_justify="left")
    table.add_column("path", overflow="fold", min_width=10, max_width=40)
    table.add_column("label", overflow="fold", max_width=20)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("anomalous", justify="center", no_wrap=True)
    table.add_column("patch_max", no_wrap=True)
    for row in rows:
        extra = row.extra
        verdict = "yes" if extra["anomalous"] else "no"
        table.add_row(_printable(row.path), _printable(row.label), "%.4g" % extra["score"],
                      verdict, extra["patch_max"])  # fmt: skip
    return table


def evaluation_table(evaluation: dict, *, normal_label: str) -> Table:
    """The evaluation of ``score`` against the normal images: AUROC, precision, recall."""
    from rich.table import Table

    table = Table(title=f"evaluation against '{normal_label}' images", title_justify="left")
    for name in ("label", "images", "AUROC", "precision", "recall"):
        table.add_column(name, justify="left" if name == "label" else "right")

    def number(value) -> str:
        return "–" if value is None else "%.3f" % value

    groups = [*evaluation.get("labels", {}).items(), ("all defects", evaluation.get("all", {}))]
    for label, result in groups:
        table.add_row(_printable(label), str(result.get("n", "")), number(result.get("auroc")),
                      number(result.get("precision")), number(result.get("recall")))  # fmt: skip
    table.caption = (
        f"{evaluation.get('n_normal', 0)} '{normal_label}' images, "
        f"{evaluation.get('normal_flagged', 0)} of them flagged anomalous"
    )
    return table


def _printable(text: str) -> str:
    """Text for a terminal cell: control characters (a newline in a file name) escaped, and rich
    markup too (a path ``c[/b]x.png`` is text, not a closing tag)."""
    from rich.markup import escape

    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return escape(shown)


# ---------------------------------------------------------------------------------------------
# `soartc transforms`


def _kernel_text(kernel: np.ndarray) -> str:
    rows = []
    for row in kernel.tolist():
        rows.append(" ".join(f"{v:g}".rjust(3) for v in row))
    return "\n".join(rows)


def _listing(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A left-titled rich table with these column headers and rows."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def transform_listing(bank: dict[str, np.ndarray], user: set[str]) -> list[Table]:
    """Tables of the kernels (with their values), the rotations, the presets and the metrics."""
    from rich.table import Table

    from soartc_cli.core.metrics import METRIC_PRESETS, METRICS_REGISTRY
    from soartc_cli.core.transforms import ROTATIONS, TRANSFORM_PRESETS

    kernels = Table(title="Kernels (SOARTC: s = x ⋆ datum, m = x ⋆ kernel, inside each patch)",
                    title_justify="left", show_lines=True)  # fmt: skip
    kernels.add_column("name")
    kernels.add_column("size")
    kernels.add_column("values (rows top to bottom)")
    kernels.add_column("use")
    for name, kernel in bank.items():
        use = "default datum" if name == "datum" else ""
        if name in TRANSFORM_PRESETS["soartc"]:
            use = "part (preset soartc)"
        if name in user:
            use = "user kernel"
        kernels.add_row(name, f"{kernel.shape[0]}×{kernel.shape[1]}", _kernel_text(kernel), use)
    what = {
        "rot90": "numpy.rot90(x, 1): 90° counter-clockwise",
        "rot180": "numpy.rot90(x, 2): 180°",
        "rot270": "numpy.rot90(x, 3): 270° counter-clockwise",
        "flip_lr": "mirror left ↔ right",
        "flip_ud": "mirror top ↔ bottom",
    }
    rotations = _listing("Rotations and flips (SOART: s = x, m = the moved patch)", ("name", "m"),
                         [(name, what.get(name, name)) for name in ROTATIONS])  # fmt: skip
    presets = _listing("Presets", ("option", "preset", "expands to"),
                       [("--transforms", name, ",".join(names))
                        for name, names in TRANSFORM_PRESETS.items()]
                       + [("--metrics", name, ",".join(names))
                          for name, names in METRIC_PRESETS.items()])  # fmt: skip
    metrics = _listing("Metrics (per patch, s and m flattened to k values)",
                       ("name", "formula", "neutral value"),
                       [(m.name, m.formula, "%g" % m.neutral)
                        for m in METRICS_REGISTRY.values()])  # fmt: skip
    return [kernels, rotations, presets, metrics]
