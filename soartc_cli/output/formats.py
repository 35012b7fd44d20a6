"""Output formats of SPEC §6, chosen by the suffix of ``-o``: CSV, JSON Lines (each plain or gzip),
Parquet — each one class that writes and reads.

A :class:`Format` has two sides:

- **writing a run**: :meth:`Format.encode` turns one image's values into a payload (in the
  worker process: text formats format their numbers there), and :meth:`Format.sink` takes the
  header once, the payloads in input order, and the run record at the end;
- **rows of a written file**: :meth:`Format.reader` reads a file back as its header and typed
  rows (text columns ``str``, whole-number columns ``int``, numbers :class:`Number`), and
  :meth:`Format.rows_writer` writes typed rows. ``merge``, tests and the API read through the
  class that wrote, so that any format joins into any other.

A text format needs only :meth:`TextFormat.header_bytes`, :meth:`TextFormat.row_bytes` and
:meth:`TextFormat.read_rows`; everything else follows. Adding a format is one subclass and one
line in :data:`FORMATS`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.output.layouts import (
    KEY_KINDS,
    Columns,
    ImageValues,
    Layout,
    column_kind,
    csv_field,
    get_layout,
    number_texts,
    template_text,
)

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "Format",
    "Number",
    "OutputSpec",
    "RowsWriter",
    "Sink",
    "TableReader",
    "TextFormat",
    "choose_format",
    "format_of",
]

#: Significant digits a text format may be asked for (17 round-trips every float64).
PRECISIONS = range(1, 18)


class Number(float):
    """A number read from a text file, that remembers the text it was written as.

    Written again to a text format of the same precision it is that very text, so joining text
    parts gives the bytes one run would have written (a float parsed from 16 significant digits
    does not always print back as the same 16 digits).
    """

    __slots__ = ("text",)

    def __new__(cls, text: str) -> Number:
        value = super().__new__(cls, text)
        value.text = text
        return value


def number_text(value: float, precision: int) -> str:
    """``value`` as a text format writes it: its own text when it was read as one."""
    if isinstance(value, Number):
        return value.text
    return "%.*g" % (precision, value)


class BadRow(ValueError):
    """A row of a written file that cannot be right: ``line`` (1-based) and why."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


#: A number as soartc writes it (``%g``: digits, a point, an exponent; nan, inf).
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf)")


def typed(header: Sequence[str], cells: Sequence[Any], line: int) -> tuple:
    """``cells`` of one row typed by their column (:func:`~soartc_cli.output.layouts.column_kind`):
    BadRow when the row is short, long, or a cell is not of its column's kind."""
    if len(cells) != len(header):
        raise BadRow(line, f"{len(cells)} cells, the header has {len(header)}")
    out = []
    for name, cell in zip(header, cells, strict=True):
        kind = column_kind(name)
        if kind == "str":
            if not isinstance(cell, str):
                raise BadRow(line, f"column {name!r} holds {cell!r}, not text")
            out.append(cell)
            continue
        if cell is None:  # JSON null: a number that is not finite
            if kind == "int":
                raise BadRow(line, f"column {name!r} is empty")
            out.append(math.nan)
            continue
        text = cell.text if isinstance(cell, Number) else cell
        if isinstance(text, str) and not _NUMBER_TEXT.fullmatch(text):
            raise BadRow(line, f"column {name!r} holds {text[:30]!r}, not a number")
        try:
            if kind == "int":
                out.append(int(text) if isinstance(text, str) else _whole(text))
            else:
                out.append(Number(text) if isinstance(text, str) else float(text))
        except (TypeError, ValueError):
            raise BadRow(line, f"column {name!r} holds {str(text)[:30]!r}, not a number") from None
    return tuple(out)


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(value)
    return int(value)


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

    def abort(self) -> None:
        """Give up without finishing the file (its stream is discarded by its owner)."""


class RowsWriter:
    """Typed rows written to a stream: ``write`` per row, ``close`` (with the record) at the end."""

    def write(self, row: Sequence[Any]) -> None:
        raise NotImplementedError

    def close(self, record: dict | None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Give up without finishing the file (its stream is discarded by its owner)."""


class TableReader:
    """A written file read back: ``header`` (column names) and its rows (iterate: typed tuples,
    :func:`typed`); ``record`` is the run record the file itself holds, if any. A row that
    cannot be right raises :class:`BadRow` naming its line."""

    def __init__(self, header: list[str], rows: Iterator[tuple], record: dict | None = None):
        self.header = header
        self._rows = rows
        self.record = record

    def __iter__(self) -> Iterator[tuple]:
        return self._rows


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

    def reader(self, stream: IO[bytes]) -> TableReader:
        """The rows of a file this format wrote (``stream`` decompressed already)."""
        raise NotImplementedError

    def rows_writer(
        self, stream: IO[bytes], header: Sequence[str], *, precision: int
    ) -> RowsWriter:
        """A writer of typed rows under ``header``."""
        raise NotImplementedError


def image_rows(layout: Layout, columns: Columns, image: ImageValues, names) -> list[tuple]:
    """The rows ``layout`` makes of one image, typed as a reader gives them back."""
    if layout.per_image:
        head = tuple(layout.head(image).values())
        return [head + tuple(layout.numbers(columns, image).tolist())]
    keys, numbers = layout.rows(columns, image, names)
    key_columns = [list(keys[name]) for name in layout.key_names(columns)]
    return [(*(c[r] for c in key_columns), *numbers[r].tolist()) for r in range(numbers.shape[0])]


class TextFormat(Format):
    """A text format: one header (possibly empty) and one text row per table row.

    Subclasses give :meth:`header_bytes`, :meth:`row_bytes` and :meth:`read_rows`; the payloads
    of a run, its sink, the reader and the rows writer follow from those.
    """

    def header_bytes(self, header: Sequence[str]) -> bytes:
        raise NotImplementedError

    def row_bytes(self, header: Sequence[str], row: Sequence[Any], precision: int) -> bytes:
        raise NotImplementedError

    def read_rows(self, stream: IO[str]) -> tuple[list[str], Iterator[tuple[int, list]]]:
        """The header and the raw cells of each row with its line number."""
        raise NotImplementedError

    def encode(self, spec, columns, image, names):
        header = spec.layout.header(columns, names)
        rows = image_rows(spec.layout, columns, image, names)
        return b"".join(self.row_bytes(header, row, spec.precision) for row in rows)

    def sink(self, stream, spec, columns):
        return _TextSink(stream, spec, columns, self)

    def reader(self, stream):
        text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
        header, raw = self.read_rows(text)
        return TableReader(header, (typed(header, cells, line) for line, cells in raw))

    def rows_writer(self, stream, header, *, precision):
        return _TextRows(stream, list(header), precision, self)


class _TextSink(Sink):
    def __init__(self, stream, spec, columns, fmt: TextFormat) -> None:
        super().__init__(stream, spec, columns)
        self.format = fmt

    def begin(self, names):
        super().begin(names)
        self.stream.write(self.format.header_bytes(self.spec.layout.header(self.columns, names)))


class _TextRows(RowsWriter):
    def __init__(self, stream, header, precision, fmt: TextFormat) -> None:
        self.stream = stream
        self.header = header
        self.precision = precision
        self.format = fmt
        stream.write(fmt.header_bytes(header))
        stream.flush()  # where a run flushes (after its header): the same gzip bytes

    def write(self, row):
        self.stream.write(self.format.row_bytes(self.header, row, self.precision))

    def close(self, record):
        self.stream.flush()


def _cell_text(name: str, value: Any, precision: int) -> str:
    kind = column_kind(name)
    if kind == "str":
        return csv_field(value)
    if kind == "int":
        return str(value)
    return number_text(value, precision)


class CsvFormat(TextFormat):
    """RFC 4180 CSV, UTF-8, ``\\n`` line ends, numbers like ``%.{precision}g``."""

    name = "csv"
    suffixes = (".csv",)

    def encode(self, spec, columns, image, names):
        return spec.layout.csv(columns, image, names, spec.precision)  # the fast path

    def header_bytes(self, header):
        return (",".join(csv_field(c) for c in header) + "\n").encode()

    def row_bytes(self, header, row, precision):
        cells = (_cell_text(n, v, precision) for n, v in zip(header, row, strict=True))
        return (",".join(cells) + "\n").encode()

    def read_rows(self, stream):
        reader = csv.reader(stream, strict=True)
        try:
            header = next(reader, [])
        except csv.Error as exc:
            raise BadRow(1, f"not CSV ({exc})") from None

        def rows():
            line = 1
            try:
                for cells in reader:
                    line = reader.line_num
                    yield line, cells
            except csv.Error as exc:
                raise BadRow(line + 1, f"not CSV ({exc})") from None

        return header, rows()


def _number(text: str) -> Number:
    return Number(text)


class JsonlFormat(TextFormat):
    """JSON Lines: one object per image (one-row-per-image layouts); NaN and ±inf as null."""

    name = "jsonl"
    suffixes = (".jsonl", ".ndjson")

    def check(self, layout):
        if not layout.per_image:
            raise UsageError(
                f"--layout {layout.name} writes several rows per image; JSON Lines hold one object "
                "per image (use --layout wide or pooled, or CSV/Parquet)"
            )

    def encode(self, spec, columns, image, names):  # the fast path
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

    def header_bytes(self, header):
        return b""

    def row_bytes(self, header, row, precision):
        cells = []
        for name, value in zip(header, row, strict=True):
            kind = column_kind(name)
            if kind == "str":
                text = json.dumps(value, ensure_ascii=False)
            elif kind == "int":
                text = str(value)
            elif math.isfinite(value):
                text = number_text(value, precision)
            else:
                text = "null"
            cells.append(f"{json.dumps(name, ensure_ascii=False)}: {text}")
        return ("{" + ", ".join(cells) + "}\n").encode()

    def read_rows(self, stream):
        first = stream.readline()
        header: list[str] = []
        if first.strip():
            header = list(_json_object(first, 1))

        def rows():
            for line, text in enumerate([first, *stream], start=1):
                if not text.strip():
                    continue
                if not text.endswith("\n"):
                    raise BadRow(line, "the last line is cut short (no line end)")
                obj = _json_object(text, line)
                if list(obj) != header:
                    raise BadRow(line, "its keys differ from the first line's")
                yield line, list(obj.values())

        return header, rows()


def _json_object(text: str, line: int) -> dict:
    try:
        obj = json.loads(text, parse_float=_number, parse_int=_number, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRow(line, f"not a JSON object ({' '.join(str(exc).split())[:60]})") from None
    if not isinstance(obj, dict):
        raise BadRow(line, "not a JSON object")
    return obj


def _no_constant(token: str):
    raise ValueError(f"{token} is not JSON")


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


class _ParquetTable:
    """Rows gathered into row groups (memory flat) and written by pyarrow: key columns as lists,
    numbers as a ``(rows, values)`` float64 array."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.writer = None
        self.schema = None
        self.keys: dict[str, list] = {}
        self.numbers: list[np.ndarray] = []
        self.rows = 0
        self.bytes = 0

    def set_header(self, key_names: Sequence[str], value_names: Sequence[str]) -> None:
        import pyarrow as pa

        kinds = {"int": pa.int32(), "str": pa.string(), "float": pa.float64()}
        fields = [pa.field(n, kinds[column_kind(n)]) for n in key_names]
        fields += [pa.field(n, pa.float64()) for n in value_names]
        self.key_names = list(key_names)
        self.schema = pa.schema(fields)

    def add(self, keys: dict[str, Any], numbers: np.ndarray) -> None:
        for name, column in keys.items():
            self.keys.setdefault(name, []).extend(
                column.tolist() if isinstance(column, np.ndarray) else column
            )
        numbers = np.atleast_2d(numbers)
        self.numbers.append(numbers)
        self.rows += len(numbers)
        self.bytes += numbers.nbytes
        if self.rows >= ROW_GROUP_ROWS or self.bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = self.schema
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.stream, schema, use_dictionary=dictionary_columns(schema)
            )
        width = len(schema) - len(self.key_names)
        numbers = np.concatenate(self.numbers) if self.numbers else np.empty((0, width))
        by_column = np.ascontiguousarray(numbers.T)
        arrays = [pa.array(self.keys.get(n, []), type=schema.field(n).type) for n in self.key_names]
        arrays += [pa.array(by_column[j], type=pa.float64()) for j in range(width)]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        self.keys, self.numbers, self.rows, self.bytes = {}, [], 0, 0

    def close(self, record: dict | None) -> None:
        if self.rows or self.writer is None:
            self.flush()
        if record is not None:
            from soartc_cli.output.record import record_json

            self.writer.add_key_value_metadata({"soartc": record_json(record)})
        self.writer.close()
        self.stream.flush()

    def abort(self) -> None:
        """Close the writer without a complete file (its stream is discarded by its owner), so
        that pyarrow has nothing left to finish when it is collected."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # the stream may be gone: the file is discarded anyway
                pass
            self.writer = None


class ParquetSink(Sink):
    """A run's payloads ``(keys, numbers)`` into row groups as the run goes."""

    def __init__(self, stream, spec, columns):
        super().__init__(stream, spec, columns)
        self.table = _ParquetTable(stream)

    def write(self, payload):
        if self.table.schema is None:
            self._header()
        keys, numbers = payload
        self.table.add(keys, numbers)

    def _header(self):
        layout = self.spec.layout
        self.table.set_header(
            layout.key_names(self.columns), layout.value_names(self.columns, self.names or ())
        )

    def close(self, record):
        if self.table.schema is None:
            self._header()
        self.table.close(record)

    def abort(self):
        self.table.abort()


class _ParquetRows(RowsWriter):
    def __init__(self, stream, header):
        self.table = _ParquetTable(stream)
        self.header = list(header)
        keys = [n for n in header if n in KEY_KINDS]
        values = [n for n in header if n not in KEY_KINDS]
        if [*keys, *values] != self.header:
            raise UsageError("Parquet rows need their key columns before the numbers")
        self.table.set_header(keys, values)
        self.key_names = keys
        self.batch: list[Sequence[Any]] = []

    def write(self, row):
        self.batch.append(row)
        if len(self.batch) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self):
        k = len(self.key_names)
        keys = {n: [row[i] for row in self.batch] for i, n in enumerate(self.key_names)}
        numbers = np.array([row[k:] for row in self.batch], dtype=np.float64)
        self.table.add(keys, numbers.reshape(len(self.batch), len(self.header) - k))
        self.batch = []

    def close(self, record):
        if self.batch:
            self._flush()
        self.table.close(record)

    def abort(self):
        self.table.abort()


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

    def reader(self, stream):
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(stream)
            meta = table.metadata.metadata or {}
        except Exception as exc:
            raise BadRow(0, f"not a Parquet file ({' '.join(str(exc).split())[:80]})") from None
        header = table.schema_arrow.names
        record = None
        if b"soartc" in meta:
            try:
                record = json.loads(meta[b"soartc"])
            except ValueError:
                record = None

        def rows():
            line = 0
            try:
                for batch in table.iter_batches(batch_size=ROW_GROUP_ROWS):
                    columns = [c.to_pylist() for c in batch.columns]
                    for cells in zip(*columns, strict=True):
                        line += 1
                        yield typed(header, [math.nan if c is None else c for c in cells], line)
            except BadRow:
                raise
            except Exception as exc:
                raise BadRow(line + 1, f"unreadable ({' '.join(str(exc).split())[:80]})") from None

        return TableReader(header, rows(), record)

    def rows_writer(self, stream, header, *, precision):
        return _ParquetRows(stream, header)


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


def format_of(path: str) -> tuple[Format, str | None]:
    """The format and compression a file name asks for; UsageError listing the known suffixes."""
    from soartc_cli.output.targets import is_special

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
        if not os.path.splitext(name)[1] and is_special(path):
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
