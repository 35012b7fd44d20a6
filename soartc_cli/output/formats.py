"""Output formats of SPEC §6, chosen by the suffix of ``-o``: CSV, JSON Lines (each plain or gzip),
Parquet.

One interface for every format: :meth:`Format.encode` turns one image's values into a payload
(in the worker process: text formats format their numbers there), and a :class:`Sink` takes the
header once, the payloads in input order, and the run record at the end. Adding a format is one
:class:`Format` subclass and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.output.layouts import (
    Columns,
    ImageValues,
    Layout,
    csv_field,
    get_layout,
    number_texts,
    template_text,
)

__all__ = ["COMPRESSIONS", "FORMATS", "Format", "OutputSpec", "Sink", "choose_format"]

#: Significant digits a text format may be asked for (17 round-trips every float64).
PRECISIONS = range(1, 18)


class Sink:
    """Where one run's rows go: ``begin`` (the header), ``write`` per image, ``close``."""

    def __init__(self, stream: IO[bytes], spec: OutputSpec, columns: Columns) -> None:
        self.stream = stream
        self.spec = spec
        self.columns = columns
        self.names: Sequence[str] | None = None

    def begin(self, names: Sequence[str]) -> None:
        """Take the patch names (the columns are known from here on) and write the header."""
        self.names = names

    def write(self, payload: Any) -> None:
        """Write one image's payload, as :meth:`Format.encode` made it."""
        self.stream.write(payload)

    def close(self, record: dict | None) -> None:
        """Finish the file (``record``: the run record, for formats that store it)."""
        self.stream.flush()


class Format:
    """One output format. ``text`` formats honour ``--precision`` and may be gzip-compressed."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    text: bool = True

    def check(self, layout: Layout) -> None:
        """UsageError when this format cannot hold ``layout``."""

    def encode(self, spec: OutputSpec, columns: Columns, image: ImageValues, names) -> Any:
        """One image's payload (runs in a worker: it must be picklable and cheap to send)."""
        raise NotImplementedError

    def sink(self, stream: IO[bytes], spec: OutputSpec, columns: Columns) -> Sink:
        return Sink(stream, spec, columns)


class CsvSink(Sink):
    def begin(self, names):
        super().begin(names)
        fields = self.spec.layout.header(self.columns, names)
        self.stream.write((",".join(csv_field(c) for c in fields) + "\n").encode())


class CsvFormat(Format):
    """RFC 4180 CSV, UTF-8, ``\\n`` line ends, numbers like ``%.{precision}g``."""

    name = "csv"
    suffixes = (".csv",)

    def encode(self, spec, columns, image, names):
        return spec.layout.csv(columns, image, names, spec.precision)

    def sink(self, stream, spec, columns):
        return CsvSink(stream, spec, columns)


class JsonlFormat(Format):
    """JSON Lines: one object per image (one-row-per-image layouts); NaN and ±inf as null."""

    name = "jsonl"
    suffixes = (".jsonl", ".ndjson")

    def check(self, layout):
        if not layout.per_image:
            raise UsageError(
                f"--layout {layout.name} writes several rows per image; JSON Lines hold one object "
                "per image (use --layout wide or pooled, or CSV/Parquet)"
            )

    def encode(self, spec, columns, image, names):
        numbers = spec.layout.numbers(columns, image)
        texts = number_texts(numbers, spec.precision)
        if not np.isfinite(numbers).all():  # JSON has no NaN or infinity
            for i in np.flatnonzero(~np.isfinite(numbers)):
                texts[i] = b"null"
        head = spec.layout.head(image)
        keys = _json_template(spec.layout, columns, tuple(names), template_text)
        return b"".join(
            (json.dumps(head, ensure_ascii=False)[:-1].encode(), b", ", keys % tuple(texts), b"}\n")
        )


_TEMPLATES: dict[tuple, bytes] = {}


def _json_template(layout: Layout, columns: Columns, names: tuple[str, ...], escape) -> bytes:
    """``"name": %s`` of every number column, joined by ", "; made once per layout and grid."""
    key = (layout.name, getattr(layout, "stats", None), columns, names)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) > 16:
            _TEMPLATES.clear()
        template = b", ".join(
            b'"' + escape(json.dumps(k, ensure_ascii=False)[1:-1]) + b'": %s'
            for k in layout.value_names(columns, names)
        )
        _TEMPLATES[key] = template
    return template


# ---------------------------------------------------------------------------------------------
# Parquet

#: Rows per Parquet row group: large groups are fast (PERF_NOTES: 100-row groups were slower
#: than CSV), and a group is flushed once it holds this many rows or ``ROW_GROUP_BYTES``.
ROW_GROUP_ROWS = 4096
ROW_GROUP_BYTES = 64 << 20


def dictionary_columns(schema) -> list[str]:
    """The columns worth Parquet's dictionary encoding: the text ones (paths, labels, names).

    pyarrow tries a dictionary for every column by default; on thousands of float64 columns of
    distinct values it builds each one only to give it up: a 4,096 × 3,528 table of metrics wrote
    3.8× faster, and 14% smaller, with dictionaries for the text columns only.
    """
    import pyarrow as pa

    return [field.name for field in schema if pa.types.is_string(field.type)]


class ParquetSink(Sink):
    """Rows gathered into row groups as the run goes (memory flat), written by pyarrow."""

    def __init__(self, stream, spec, columns):
        super().__init__(stream, spec, columns)
        self.writer = None
        self.keys: dict[str, list] = {}
        self.numbers: list[np.ndarray] = []
        self.rows = 0
        self.bytes = 0

    def _schema(self):
        import pyarrow as pa

        fields = []
        kinds = {"int": pa.int32(), "str": pa.string(), "float": pa.float64()}
        for name in self.spec.layout.key_names(self.columns):
            fields.append(pa.field(name, kinds[self.spec.layout.key_type(name)]))
        fields += [
            pa.field(name, pa.float64())
            for name in self.spec.layout.value_names(self.columns, self.names or ())
        ]
        return pa.schema(fields)

    def write(self, payload):
        keys, numbers = payload
        for name, column in keys.items():
            self.keys.setdefault(name, []).extend(
                column.tolist() if isinstance(column, np.ndarray) else column
            )
        numbers = np.atleast_2d(numbers)
        self.numbers.append(numbers)
        self.rows += len(numbers)
        self.bytes += numbers.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self._schema()
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.stream, schema, use_dictionary=dictionary_columns(schema)
            )
        key_names = self.spec.layout.key_names(self.columns)
        width = len(schema) - len(key_names)
        numbers = np.concatenate(self.numbers) if self.numbers else np.empty((0, width))
        by_column = np.ascontiguousarray(numbers.T)
        arrays = [pa.array(self.keys.get(n, []), type=schema.field(n).type) for n in key_names]
        arrays += [pa.array(by_column[j], type=pa.float64()) for j in range(width)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        self.keys, self.numbers, self.rows, self.bytes = {}, [], 0, 0

    def close(self, record):
        if self.rows or self.writer is None:
            self._flush()
        if record is not None:
            from soartc_cli.output.record import record_json

            self.writer.add_key_value_metadata({"soartc": record_json(record)})
        self.writer.close()
        self.stream.flush()


class ParquetFormat(Format):
    """Apache Parquet through pyarrow (``soartc[parquet]``): numbers as float64, unrounded."""

    name = "parquet"
    suffixes = (".parquet",)
    text = False

    def check(self, layout):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(
                "Parquet output needs pyarrow: pip install 'soartc[parquet]'"
            ) from None

    def encode(self, spec, columns, image, names):
        layout = spec.layout
        if layout.per_image:
            keys = {name: [value] for name, value in layout.head(image).items()}
            return keys, layout.numbers(columns, image)
        return layout.rows(columns, image, names)

    def sink(self, stream, spec, columns):
        return ParquetSink(stream, spec, columns)


#: Formats by name; :func:`choose_format` picks one by the suffix of ``-o``.
FORMATS: dict[str, Format] = {f.name: f for f in (CsvFormat(), JsonlFormat(), ParquetFormat())}
#: Compressions by suffix, for text formats: the stream is wrapped as it is written.
COMPRESSIONS: dict[str, str] = {".gz": "gzip"}


@dataclass(frozen=True)
class OutputSpec:
    """A format, a layout, the precision of text numbers and an optional compression."""

    format: Format = field(default_factory=CsvFormat)
    layout: Layout = field(default_factory=lambda: get_layout("wide"))
    precision: int = 7
    compression: str | None = None

    def describe(self) -> dict[str, object]:
        """The output part of the run record."""
        out: dict[str, object] = {"format": self.format.name, "layout": self.layout.name}
        if self.layout.name == "pooled":
            out["pool"] = list(self.layout.stats)
        if self.format.text:
            out["precision"] = self.precision
        if self.compression:
            out["compression"] = self.compression
        return out


def known_suffixes() -> list[str]:
    """Every suffix ``-o`` accepts, for messages."""
    out = []
    for f in FORMATS.values():
        for suffix in f.suffixes:
            out.append(suffix)
            if f.text:
                out.extend(suffix + c for c in COMPRESSIONS)
    return out


def _is_stream(path: str) -> bool:
    """True when ``path`` exists and is neither a regular file nor a directory (a device, a
    named pipe, a socket): written in order like standard output, whatever its name."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def format_of(path: str) -> tuple[Format, str | None]:
    """The format and compression a file name asks for; UsageError listing the known suffixes."""
    name = os.path.basename(path).lower()
    compression = None
    for suffix, method in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = method, name[: -len(suffix)]
    for fmt in FORMATS.values():
        if name.endswith(fmt.suffixes):
            if compression and not fmt.text:
                break
            return fmt, compression
    else:
        # /dev/null, /dev/stdout, a named pipe without a suffix: CSV, as on standard output (an
        # unknown suffix is refused whatever the file is: never a silent CSV for "out.json").
        if not os.path.splitext(name)[1] and _is_stream(path):
            return FORMATS["csv"], compression
    raise UsageError(
        f"--output: cannot tell the format of {path!r} by its suffix; known: "
        + ", ".join(known_suffixes())
        + " ('-' writes CSV to stdout)"
    )


def choose_format(
    output: str | None,
    *,
    layout: str = "wide",
    precision: int = 7,
    pool: Sequence[str] | str = ("mean", "std", "min", "max"),
) -> OutputSpec:
    """The :class:`OutputSpec` of ``-o OUTPUT``: by suffix (:func:`format_of`); ``-`` and no
    output are CSV.

    Raises UsageError for an unknown suffix, layout or pool statistic, a layout the format cannot
    hold, or a precision outside 1–17.
    """
    chosen = get_layout(layout, pool=pool)
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be between 1 and 17, not {precision}")
    fmt, compression = (FORMATS["csv"], None) if output in (None, "-") else format_of(output)
    fmt.check(chosen)
    return OutputSpec(fmt, chosen, precision, compression)
