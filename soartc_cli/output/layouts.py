"""Layouts of SPEC §6: which rows and columns the values of one image become.

Pure: arrays in, column names and arrays (or CSV text) out. A layout knows the *shape* of the
table; a format (:mod:`soartc_cli.output.formats`) knows how a table is written. Adding a
layout is one subclass of :class:`Layout` and one line in :data:`LAYOUTS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from soartc_cli.core.names import parse_names
from soartc_cli.errors import UsageError
from soartc_cli.output.numbers import format_row

__all__ = [
    "LAYOUTS",
    "POOL_STATS",
    "Columns",
    "ImageValues",
    "Layout",
    "csv_field",
    "get_layout",
    "parse_pool",
    "pool_values",
]

_NEEDS_QUOTES = frozenset(',"\r\n')
# Fields that a spreadsheet would read as a formula are quoted too. Quoting does not change the
# value a CSV reader gets back: the path stays exactly the file's path.
_FORMULA_START = ("=", "+", "-", "@")

#: The per-image head of the one-row-per-image layouts, with the types Parquet gives them.
HEAD = ("path", "label", "width", "height")
#: Every key column a layout writes (before its numbers), and how it is typed: text, a whole
#: number, or a float. Readers of written files type their cells by these; any other column
#: holds a number.
KEY_KINDS: dict[str, str] = {
    "path": "str",
    "label": "str",
    "channel": "str",
    "patch": "str",
    "transform": "str",
    "width": "int",
    "height": "int",
    "row": "int",
    "col": "int",
    "score": "float",
    "anomalous": "int",
    "patch_max": "str",
    "cell_max": "str",
}


def column_kind(name: str) -> str:
    """``"str"``, ``"int"`` or ``"float"``: how the column ``name`` of a written file is typed."""
    return KEY_KINDS.get(name, "float")


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
class ImageValues:
    """One image's names, original size, patch grid and ``(C, T, M, N)`` float64 values."""

    path: str
    label: str
    width: int
    height: int
    grid: tuple[int, int]
    values: np.ndarray
    extra: dict | None = None  # a job's per-image key columns (the inspection score)


def csv_field(text: str) -> str:
    """One RFC 4180 field: quoted when it holds a comma, quote or line break (or looks like a
    spreadsheet formula), with quotes doubled."""
    if _NEEDS_QUOTES.intersection(text) or text.startswith(_FORMULA_START):
        return '"' + text.replace('"', '""') + '"'
    return text


def template_text(text: str) -> bytes:
    """``text`` as UTF-8, to stand literally in a ``%`` template."""
    return text.encode().replace(b"%", b"%%")


def number_texts(values: np.ndarray, precision: int) -> list[bytes]:
    """Every number of ``values`` (C order) as its ``%.{precision}g`` text."""
    return format_row(values, precision)[1:].split(b",")


def qualified_names(columns: Columns, last: Sequence[str] | None = None) -> list[str]:
    """``[{channel}.]{transform}.{metric}[.{last}]`` in channel → transform → metric → last order:
    the wide layout's columns (``last`` the patches), the pooled layout's (the statistics), and,
    with ``last`` None, the features of a patch vector. An empty ``last`` gives no name."""
    prefixes = [""] if columns.channels is None else [f"{c}." for c in columns.channels]
    ends = [""] if last is None else [f".{x}" for x in last]
    return [
        f"{c}{t}.{m}{e}" for c in prefixes for t in columns.transforms for m in columns.metrics
        for e in ends
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Pooled statistics


def _finite_stat(reduce: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A statistic over the last axis that leaves non-finite values out (NaN when none is left)."""

    def stat(values: np.ndarray) -> np.ndarray:
        finite = np.isfinite(values)
        if finite.all():
            return reduce(values)
        masked = np.where(finite, values, np.nan)
        out = np.full(values.shape[:-1], np.nan)
        some = finite.any(axis=-1)
        if some.any():
            out[some] = reduce(masked[some], nan=True)
        return out

    return stat


def _mean(v, nan=False):
    return np.nanmean(v, axis=-1) if nan else v.mean(axis=-1)


def _std(v, nan=False):
    return np.nanstd(v, axis=-1) if nan else v.std(axis=-1)


def _min(v, nan=False):
    return np.nanmin(v, axis=-1) if nan else v.min(axis=-1)


def _max(v, nan=False):
    return np.nanmax(v, axis=-1) if nan else v.max(axis=-1)


def _percentile(q: float):
    def reduce(v, nan=False):
        return (np.nanpercentile if nan else np.percentile)(v, q, axis=-1)

    return reduce


#: ``--pool`` statistics over the patches of an image, by the names users type (SPEC §6):
#: population std, numpy's linear percentiles; non-finite values left out, NaN when none is left.
POOL_STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": _finite_stat(_mean),
    "std": _finite_stat(_std),
    "min": _finite_stat(_min),
    "max": _finite_stat(_max),
    "median": _finite_stat(_percentile(50)),
    "p05": _finite_stat(_percentile(5)),
    "p95": _finite_stat(_percentile(95)),
}
DEFAULT_POOL = ("mean", "std", "min", "max")


def parse_pool(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``--pool`` names in the order given (repeats dropped); UsageError on an unknown name."""
    if not isinstance(spec, str):
        spec = ",".join(spec)
    return parse_names(spec, option="--pool", presets={}, valid=tuple(POOL_STATS))


def pool_values(values: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """``(..., N)`` values → ``(..., S)`` statistics over the last axis, in ``stats`` order."""
    unknown = [s for s in stats if s not in POOL_STATS]
    if unknown:
        raise UsageError(f"unknown --pool statistic {unknown[0]!r}; valid: {', '.join(POOL_STATS)}")
    values = np.asarray(values, dtype=np.float64)
    return np.stack([POOL_STATS[s](values) for s in stats], axis=-1)


# ---------------------------------------------------------------------------------------------
# Layouts


class Layout:
    """How one image's values become table rows.

    ``per_image`` layouts write one row per image: ``path,label,width,height`` then a fixed list of
    numbers (:meth:`numbers`); they also fit JSON Lines. The others write several rows per image:
    key columns then numbers (:meth:`rows`).
    """

    name: str = ""
    per_image: bool = True
    #: Why every image needs the first one's patch grid, and what to do: the end of the reason an
    #: image with another grid is skipped for (layouts whose columns depend on the grid).
    grid_hint: str = "every image needs the same patch grid here; use --size"

    def value_names(self, columns: Columns, names: Sequence[str]) -> list[str]:
        """Names of the number columns."""
        raise NotImplementedError

    def key_names(self, columns: Columns) -> list[str]:
        """Names of the columns before the numbers."""
        return list(HEAD)

    def key_type(self, name: str) -> str:
        """``"str"``, ``"int"`` or ``"float"``: how a typed format (Parquet) stores a key column."""
        return column_kind(name)

    def head(self, image: ImageValues) -> dict[str, object]:
        """Per-image layouts: the key columns of the image's row."""
        return {"path": image.path, "label": image.label, "width": image.width,
                "height": image.height}  # fmt: skip

    def header(self, columns: Columns, names: Sequence[str]) -> list[str]:
        """Every column name, in order."""
        return [*self.key_names(columns), *self.value_names(columns, names)]

    def depends_on_grid(self) -> bool:
        """True when the columns depend on the patch grid (every row then needs the same grid)."""
        return False

    def numbers(self, columns: Columns, image: ImageValues) -> np.ndarray:
        """Per-image layouts: the row's numbers as a flat float64 array."""
        raise NotImplementedError

    def rows(self, columns: Columns, image: ImageValues, names: Sequence[str]):
        """Several-row layouts: ``(keys, numbers)`` — a dict of key columns (lists) and a
        ``(rows, values)`` float64 array."""
        raise NotImplementedError

    def csv(self, columns: Columns, image: ImageValues, names: Sequence[str], precision: int):
        """The image's CSV rows as UTF-8 bytes (numbers like ``%.{precision}g``)."""
        prefix = f"{csv_field(image.path)},{csv_field(image.label)}".encode()
        numbers = format_row(self.numbers(columns, image), precision)
        return b"".join((prefix, f",{image.width},{image.height}".encode(), numbers, b"\n"))


class WideLayout(Layout):
    """One row per image: ``[{channel}.]{transform}.{metric}.{patch}`` for every patch."""

    name = "wide"
    grid_hint = (
        "the wide layout needs the same columns in every row; use --size, or --layout long, "
        "summary or pooled"
    )

    def value_names(self, columns, names):
        return qualified_names(columns, names)

    def depends_on_grid(self):
        return True

    def numbers(self, columns, image):
        return image.values.ravel()


class PooledLayout(Layout):
    """One row per image: ``[{channel}.]{transform}.{metric}.{stat}`` over the image's patches.

    The shape a classifier wants: a few dozen columns whatever the image size.
    """

    name = "pooled"

    def __init__(self, stats: Sequence[str] = DEFAULT_POOL) -> None:
        self.stats = tuple(stats)

    def value_names(self, columns, names):
        return qualified_names(columns, self.stats)

    def numbers(self, columns, image):
        return pool_values(image.values, self.stats).ravel()


SUMMARY_STATS = ("mean", "std", "min", "max")


def summary_values(values: np.ndarray) -> np.ndarray:
    """Per-patch statistics: ``(C, T, M, N)`` → ``(C, T, M, 4)`` mean, std (ddof 0), min, max."""
    return np.stack(
        [values.mean(axis=-1), values.std(axis=-1), values.min(axis=-1), values.max(axis=-1)],
        axis=-1,
    )


class LongLayout(Layout):
    """One row per image × [channel ×] patch × transform: the metrics as columns."""

    name = "long"
    per_image = False

    def key_names(self, columns):
        channel = [] if columns.channels is None else ["channel"]
        return ["path", "label", *channel, "patch", "row", "col", "transform"]

    def value_names(self, columns, names):
        return list(columns.metrics)

    def rows(self, columns, image, names):
        c_count, t_count, m_count, n_count = image.values.shape
        # (C, T, M, N) → (C, N, T, M): the rows in file order.
        numbers = np.moveaxis(image.values, -1, 1).reshape(-1, m_count)
        cols = image.grid[1]
        index = np.arange(n_count)
        keys = {
            "path": [image.path] * len(numbers),
            "label": [image.label] * len(numbers),
        }
        if columns.channels is not None:
            keys["channel"] = np.repeat(np.asarray(columns.channels), n_count * t_count).tolist()
        keys["patch"] = np.tile(np.repeat(np.asarray(names), t_count), c_count).tolist()
        keys["row"] = np.tile(np.repeat(index // cols, t_count), c_count)
        keys["col"] = np.tile(np.repeat(index % cols, t_count), c_count)
        keys["transform"] = np.tile(np.asarray(columns.transforms), c_count * n_count).tolist()
        return keys, numbers

    def csv(self, columns, image, names, precision):
        # No Python loop over the patches: all numbers formatted at once, then one cached
        # ``%`` template per layout and grid fills the rows.
        prefix = f"{csv_field(image.path)},{csv_field(image.label)}".encode()
        texts = number_texts(np.moveaxis(image.values, -1, 1), precision)
        metrics = len(columns.metrics)
        args = [prefix] * (len(texts) // metrics * (metrics + 1))
        for m in range(metrics):
            args[m + 1 :: metrics + 1] = texts[m::metrics]
        return _long_template(columns, tuple(names), image.grid[1]) % tuple(args)


@functools.lru_cache(maxsize=16)
def _long_template(columns: Columns, names: tuple[str, ...], cols: int) -> bytes:
    """The long layout's rows of one image as a ``%`` template: ``%s`` for ``path,label`` at the
    head of every row, then ``,%s`` for each metric; made once per layout and grid."""
    numbers = b",%s" * len(columns.metrics) + b"\n"
    rows = []
    for channel in columns.channels or [None]:
        lead = b"" if channel is None else b"," + template_text(channel)
        for n, name in enumerate(names):
            cell = lead + template_text(f",{name},{n // cols},{n % cols},")
            rows.extend(b"%s" + cell + template_text(t) + numbers for t in columns.transforms)
    return b"".join(rows)


class SummaryLayout(Layout):
    """One row per image × [channel ×] transform: mean, std, min, max of each metric."""

    name = "summary"
    per_image = False

    def key_names(self, columns):
        channel = [] if columns.channels is None else ["channel"]
        return ["path", "label", *channel, "transform"]

    def value_names(self, columns, names):
        return [f"{m}_{s}" for m in columns.metrics for s in SUMMARY_STATS]

    def rows(self, columns, image, names):
        stats = summary_values(image.values)  # (C, T, M, 4)
        c_count, t_count = stats.shape[:2]
        numbers = stats.reshape(c_count * t_count, -1)
        keys = {"path": [image.path] * len(numbers), "label": [image.label] * len(numbers)}
        if columns.channels is not None:
            keys["channel"] = [c for c in columns.channels for _ in range(t_count)]
        keys["transform"] = list(columns.transforms) * c_count
        return keys, numbers

    def csv(self, columns, image, names, precision):
        keys, numbers = self.rows(columns, image, names)
        prefix = f"{csv_field(image.path)},{csv_field(image.label)}"
        stat_part = f",%.{precision}g" * numbers.shape[1]
        channels = keys.get("channel")
        lines = []
        for r, transform in enumerate(keys["transform"]):
            head = prefix if channels is None else f"{prefix},{channels[r]}"
            lines.append(f"{head},{transform}" + stat_part % tuple(numbers[r].tolist()))
        return ("\n".join(lines) + "\n").encode()


#: Layouts by the names ``--layout`` takes. Each value makes the layout from the ``--pool`` stats.
LAYOUTS: dict[str, Callable[[Sequence[str]], Layout]] = {
    "wide": lambda pool: WideLayout(),
    "long": lambda pool: LongLayout(),
    "summary": lambda pool: SummaryLayout(),
    "pooled": lambda pool: PooledLayout(pool),
}


def get_layout(name: str, *, pool: Sequence[str] = DEFAULT_POOL) -> Layout:
    """The layout called ``name``; UsageError naming the known ones for anything else."""
    try:
        make = LAYOUTS[name]
    except (KeyError, TypeError):
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, not {name!r}") from None
    return make(parse_pool(pool))
