"""Output: the seed demo's renderings, CSV layouts, JSON Lines, run records, atomic files.

Rich tables are built here and printed by ``cli``; nothing here writes to the terminal.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from soartc_cli.attention import DemoResult
from soartc_cli.errors import UsageError
from soartc_cli.numfmt import format_row

if TYPE_CHECKING:  # rich is imported when a table is built, not at start-up
    from rich.table import Table

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
# Image results: CSV layouts and JSON Lines

LAYOUTS = ("wide", "long", "summary")
SUMMARY_STATS = ("mean", "std", "min", "max")
_NEEDS_QUOTES = frozenset(',"\r\n')
# Fields that a spreadsheet would read as a formula are quoted too. Quoting does not change the
# value a CSV reader gets back: the path stays exactly the file's path.
_FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True)
class Columns:
    """What the value array of one image means: its channel, transform and metric names.

    ``channels`` is None when there is no channel dimension in the output (luma images, and
    attention, whose inputs concatenate the channels); else ("R", "G", "B").
    """

    channels: tuple[str, ...] | None
    transforms: tuple[str, ...]
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class OutputFormat:
    """How results are written: ``kind`` "csv" or "jsonl", the CSV ``layout``, ``precision``."""

    kind: str = "csv"
    layout: str = "wide"
    precision: int = 7


def csv_field(text: str) -> str:
    """One RFC 4180 field: quoted when it holds a comma, quote or line break (or looks like a
    spreadsheet formula), with quotes doubled."""
    if _NEEDS_QUOTES.intersection(text) or text.startswith(_FORMULA_START):
        return '"' + text.replace('"', '""') + '"'
    return text


def wide_columns(columns: Columns, names: Sequence[str]) -> list[str]:
    """Value column names of the wide layout: ``[{channel}.]{transform}.{metric}.{patch}``."""
    prefixes = [""] if columns.channels is None else [f"{c}." for c in columns.channels]
    return [
        f"{c}{t}.{m}.{p}"
        for c in prefixes
        for t in columns.transforms
        for m in columns.metrics
        for p in names
    ]


def header(fmt: OutputFormat, columns: Columns, names: Sequence[str]) -> str:
    """The CSV header line (with its line end); empty for JSON Lines."""
    if fmt.kind != "csv":
        return ""
    channel = [] if columns.channels is None else ["channel"]
    if fmt.layout == "wide":
        cols = ["path", "label", "width", "height", *wide_columns(columns, names)]
    elif fmt.layout == "long":
        cols = ["path", "label", *channel, "patch", "row", "col", "transform", *columns.metrics]
    else:
        stats = [f"{m}_{s}" for m in columns.metrics for s in SUMMARY_STATS]
        cols = ["path", "label", *channel, "transform", *stats]
    return ",".join(csv_field(c) for c in cols) + "\n"


def summary_values(values: np.ndarray) -> np.ndarray:
    """Per-patch statistics: ``(C, T, M, N)`` → ``(C, T, M, 4)`` mean, std (ddof 0), min, max."""
    return np.stack(
        [values.mean(axis=-1), values.std(axis=-1), values.min(axis=-1), values.max(axis=-1)],
        axis=-1,
    )


def format_image(
    fmt: OutputFormat,
    columns: Columns,
    *,
    path: str,
    label: str,
    width: int,
    height: int,
    grid: tuple[int, int],
    names: Sequence[str],
    values: np.ndarray,
) -> bytes:
    """The output of one image, UTF-8: its CSV rows (layout of ``fmt``) or its JSON line.

    ``values`` is the ``(C, T, M, N)`` float64 array of the image. Numbers are written like
    ``%.{precision}g`` by :func:`~soartc_cli.numfmt.format_row`, all values of the image at once
    with no Python object per value; the long and JSON layouts then fill one cached ``bytes``
    template per layout, so no Python loop runs over the patches.
    """
    if fmt.kind == "jsonl":
        return _json_line(fmt.precision, columns, path, label, width, height, names, values)
    prefix = f"{csv_field(path)},{csv_field(label)}".encode()
    if fmt.layout == "wide":
        numbers = format_row(values, fmt.precision)
        return b"".join((prefix, f",{width},{height}".encode(), numbers, b"\n"))
    if fmt.layout == "long":
        # (C, T, M, N) → (C, N, T, M): one row per channel × patch × transform, M numbers each.
        texts = _texts(np.moveaxis(values, -1, 1), fmt.precision)
        metrics = len(columns.metrics)
        args = [prefix] * (len(texts) // metrics * (metrics + 1))
        for m in range(metrics):
            args[m + 1 :: metrics + 1] = texts[m::metrics]
        return _long_template(columns, tuple(names), grid[1]) % tuple(args)
    stats = summary_values(values)
    stat_part = f",%.{fmt.precision}g" * (len(columns.metrics) * len(SUMMARY_STATS))
    lines = []
    for c, channel in enumerate(columns.channels or [None]):
        head = prefix.decode() if channel is None else f"{prefix.decode()},{channel}"
        for t, transform in enumerate(columns.transforms):
            lines.append(f"{head},{transform}" + stat_part % tuple(stats[c, t].ravel().tolist()))
    return ("\n".join(lines) + "\n").encode()


def _texts(values: np.ndarray, precision: int) -> list[bytes]:
    """Every number of ``values`` (C order) as its ``%.{precision}g`` text."""
    return format_row(values, precision)[1:].split(b",")


def _escape(text: str) -> bytes:
    """``text`` as UTF-8, to stand literally in a ``%`` template."""
    return text.encode().replace(b"%", b"%%")


@functools.lru_cache(maxsize=16)
def _long_template(columns: Columns, names: tuple[str, ...], cols: int) -> bytes:
    """The long layout's rows of one image as a ``%`` template: ``%s`` for ``path,label`` at the
    head of every row, then ``,%s`` for each metric; made once per layout and grid."""
    numbers = b",%s" * len(columns.metrics) + b"\n"
    rows = []
    for channel in columns.channels or [None]:
        lead = b"" if channel is None else b"," + _escape(channel)
        for n, name in enumerate(names):
            cell = lead + _escape(f",{name},{n // cols},{n % cols},")
            rows.extend(b"%s" + cell + _escape(t) + numbers for t in columns.transforms)
    return b"".join(rows)


@functools.lru_cache(maxsize=16)
def _json_template(columns: Columns, names: tuple[str, ...]) -> bytes:
    """``"name": %s`` of every wide column, joined by ", ": the numbers of one JSON line."""
    return b", ".join(b'"' + _escape(key) + b'": %s' for key in wide_columns(columns, names))


def _json_line(precision, columns, path, label, width, height, names, values) -> bytes:
    texts = _texts(values, precision)
    flat = values.ravel()
    if not np.isfinite(flat).all():  # JSON has no NaN or infinity: they are written as null
        for i in np.flatnonzero(~np.isfinite(flat)):
            texts[i] = b"null"
    head = {"path": path, "label": label, "width": width, "height": height}
    body = _json_template(columns, tuple(names)) % tuple(texts)
    return b"".join((json.dumps(head, ensure_ascii=False)[:-1].encode(), b", ", body, b"}\n"))


# ---------------------------------------------------------------------------------------------
# Files that appear complete or not at all


class AtomicFile:
    """A text file written to a temporary name in the target's directory, renamed at the end.

    ``commit()`` renames it into place; ``discard()`` (or leaving a ``with`` block by an
    exception, KeyboardInterrupt included) removes it, so a reader never sees a partial file.
    """

    def __init__(self, path: str | os.PathLike[str], *, binary: bool = False) -> None:
        self.path = os.fspath(path)
        directory, name = os.path.split(os.path.abspath(self.path))
        fd, self.temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        # mkstemp makes the file private (0600); the result gets the usual umask permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temporary, 0o666 & ~umask)
        if binary:
            self.file: IO = os.fdopen(fd, "wb")
        else:
            self.file = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.done = False

    def write(self, data: str | bytes) -> None:
        """Append ``data`` (bytes for a binary file)."""
        self.file.write(data)

    def commit(self) -> None:
        """Close the temporary file and rename it to the target path."""
        self.file.close()
        os.replace(self.temporary, self.path)
        self.done = True

    def discard(self) -> None:
        """Close and remove the temporary file; the target is left as it was."""
        if self.done:
            return
        self.file.close()
        try:
            os.unlink(self.temporary)
        except FileNotFoundError:
            pass
        self.done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()
        else:
            self.discard()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through an :class:`AtomicFile`."""
    with AtomicFile(path) as f:
        f.write(text)


def record_path(output: str) -> str:
    """Where the run record of an output file goes: ``FILE.meta.json`` next to it."""
    return f"{output}.meta.json"


def record_json(record: dict[str, object]) -> str:
    """The run record as indented JSON (UTF-8 text, non-ASCII kept)."""
    text = json.dumps(record, indent=2, ensure_ascii=False)
    # Lists of numbers (kernel rows) on one line each, so that a kernel reads as a matrix.
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]")


# ---------------------------------------------------------------------------------------------
# Terminal tables


@dataclass(frozen=True)
class TableRow:
    """One image in the terminal tables: its names, original size and per-patch means."""

    path: str
    label: str
    width: int
    height: int
    means: np.ndarray  # (C, T, M) float64


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def summary_tables(rows: Sequence[TableRow], columns: Columns, *, width: int = 100) -> list[Table]:
    """Rich tables of per-image means over the patches: one per (channel ×) metric.

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


def _printable(text: str) -> str:
    """Text for a terminal cell: control characters (a newline in a file name) escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


# ---------------------------------------------------------------------------------------------
# Choosing the output

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def output_format(output: str | None, *, layout: str = "wide", precision: int = 7) -> OutputFormat:
    """The format of ``-o OUTPUT``: JSON Lines for ``*.jsonl``/``*.ndjson``, else CSV.

    Raises UsageError for an unknown layout, a layout other than wide with JSON Lines, or a
    precision outside 1–17 (17 significant digits round-trip every float64).
    """
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    if not 1 <= precision <= 17:
        raise UsageError(f"--precision must be between 1 and 17, not {precision}")
    kind = "jsonl" if output and output.lower().endswith(JSONL_SUFFIXES) else "csv"
    if kind == "jsonl" and layout != "wide":
        raise UsageError(
            f"--layout {layout} is for CSV output; JSON Lines hold one object per image"
        )
    if output not in (None, "-"):
        directory = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(directory):
            raise UsageError(f"--output: directory {directory} does not exist")
        if os.path.isdir(output):
            raise UsageError(f"--output: {output} is a directory")
    return OutputFormat(kind, layout, precision)


def describe_output(output: str | None, fmt: OutputFormat) -> dict[str, object]:
    """The output part of the run record."""
    return {
        "file": output,
        "format": fmt.kind,
        "layout": fmt.layout,
        "precision": fmt.precision,
    }


# ---------------------------------------------------------------------------------------------
# Joining shard outputs


def _read_first_line(path: str) -> str:
    with open(path, encoding="utf-8", newline="") as f:
        return f.readline()


def merge_outputs(parts: Sequence[str], output: str, *, command: Sequence[str]) -> None:
    """Join shard outputs in the order given: CSV bodies under one header, or JSON lines.

    Every part must exist and CSV parts must share one header. The run records
    (``PART.meta.json``) found next to the parts are joined too: counts added, failures
    concatenated, earliest start and latest end; their settings must agree. The joined file and
    record appear complete or not at all. Memory use does not depend on the parts' size.
    """
    if not parts:
        raise UsageError("merge needs at least one part")
    for part in parts:
        if not os.path.isfile(part):
            raise UsageError(f"merge: no such file {part}")
    kinds = {"jsonl" if p.lower().endswith(JSONL_SUFFIXES) else "csv" for p in parts}
    if len(kinds) > 1:
        raise UsageError("merge: the parts mix CSV and JSON Lines")
    if output != "-" and output_format(output).kind not in kinds:
        raise UsageError(f"merge: {output} does not end like the parts ({kinds.pop()})")
    headers = {_read_first_line(p) for p in parts} if kinds == {"csv"} else set()
    if len(headers) > 1:
        raise UsageError("merge: the CSV parts have different headers (different settings?)")
    target = AtomicFile(output) if output != "-" else None
    sink = target.file if target is not None else None
    try:
        for i, part in enumerate(parts):
            with open(part, encoding="utf-8", newline="") as f:
                if kinds == {"csv"} and i > 0:
                    f.readline()
                for chunk in iter(lambda f=f: f.read(1 << 20), ""):
                    (sink or _stdout()).write(chunk)
        records = [_load_record(record_path(p)) for p in parts]
        if all(r is not None for r in records):
            merged = merge_records(records, parts=parts, output=output, command=command)
            if target is not None:
                write_text_atomic(record_path(output), record_json(merged))
    except BaseException:
        if target is not None:
            target.discard()
        raise
    if target is not None:
        target.commit()


def _stdout() -> IO[str]:
    import sys

    return sys.stdout


def _load_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"merge: cannot read run record {path}: {exc}") from None


def merge_records(
    records: Sequence[dict], *, parts: Sequence[str], output: str, command: Sequence[str]
) -> dict:
    """One run record for the joined output of shard runs."""
    settings = [r.get("settings") for r in records]
    if any(s != settings[0] for s in settings):
        raise UsageError("merge: the parts' run records have different settings")
    counts = {
        key: sum(int(r.get("counts", {}).get(key, 0)) for r in records)
        for key in ("found", "processed", "failed")
    }
    merged = dict(records[0])
    merged.update(
        command=list(command),
        counts=counts,
        failures=[f for r in records for f in r.get("failures", [])],
        started=min(str(r.get("started", "")) for r in records),
        finished=max(str(r.get("finished", "")) for r in records),
        merged_from=[
            {"file": p, "command": r.get("command")} for p, r in zip(parts, records, strict=True)
        ],
    )
    merged["output"] = dict(merged.get("output") or {}, file=output)
    return merged


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

    from soartc_cli.rt import METRIC_PRESETS, METRICS
    from soartc_cli.transforms import ROTATIONS, TRANSFORM_PRESETS

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
    formulas = {
        "beta": "β = ⟨s,m⟩ / ⟨s,s⟩ (1 when ⟨s,s⟩ ≤ 1e-12)",
        "delta": "Σm / Σs − β (0 when |Σs| ≤ 1e-12)",
        "distance": "mean |m − βs|",
        "noise": "√(Σ(m − βs)² / (k − 1))",
        "vol": "mean |m| / mean |βs| (1 when the denominator ≤ 1e-12)",
        "shear": "mean |m − β·vol·s|",
    }
    metrics = _listing("Metrics (per patch, s and m flattened to k values)", ("name", "formula"),
                       [(name, formulas[name]) for name in METRICS])  # fmt: skip
    return [kernels, rotations, presets, metrics]
