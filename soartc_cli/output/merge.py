"""``soartc merge``: the outputs of the shards of one run joined into one file (SPEC §8).

The parts' run records are checked first (same settings and layout, every shard ``I/N`` of one
``N`` once, none missing unless allowed); the parts are then joined in shard order, whatever order
they were given in. Text parts of the output's own format are copied byte for byte (their headers
once); any other pair of formats (CSV parts → one Parquet file) goes row by row. The joined file
and its record appear complete or not at all. Memory does not depend on the parts' size.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from typing import IO

from soartc_cli.errors import UsageError
from soartc_cli.output import targets
from soartc_cli.output.formats import dictionary_columns, format_of
from soartc_cli.output.record import record_json

__all__ = ["merge_outputs", "merge_records"]

_INT_COLUMNS = frozenset({"width", "height", "row", "col", "anomalous"})
_TEXT_COLUMNS = frozenset({"path", "label", "channel", "patch", "transform", "patch_max"})
_BATCH = 4096


def _load_record(part: str) -> dict:
    """The run record of a part: ``PART.meta.json``, or a Parquet file's own metadata."""
    path = targets.record_path(part)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise UsageError(f"merge: cannot read run record {path}: {exc}") from None
    if format_of(part)[0].name == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(part).metadata or {}  # the file's key-value metadata
        except Exception as exc:
            raise UsageError(f"merge: cannot read {part}: {exc}") from None
        if b"soartc" in meta:
            return json.loads(meta[b"soartc"])
    raise UsageError(f"merge: {part} has no run record ({path} is missing)")


def merge_records(
    records: Sequence[dict], *, parts: Sequence[str], output: str, command: Sequence[str]
) -> dict:
    """One run record for the joined output of shard runs (records in shard order)."""
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
            {"file": p, "shard": r.get("shard"), "command": r.get("command")}
            for p, r in zip(parts, records, strict=True)
        ],
    )
    merged.pop("shard", None)
    merged["output"] = dict(merged.get("output") or {}, file=output)
    return merged


def _check_parts(parts: Sequence[str], records: Sequence[dict], allow_missing: bool):
    """Order parts by shard; UsageError naming the problem. Returns (parts, records, missing)."""
    settings = records[0].get("settings")
    first = records[0].get("output") or {}
    for part, record in zip(parts, records, strict=True):
        if record.get("settings") != settings:
            raise UsageError(f"merge: {part} was made with other settings than {parts[0]}")
        output = record.get("output") or {}
        if output.get("layout") != first.get("layout"):
            raise UsageError(f"merge: {part} has another layout than {parts[0]}")
        # Other --pool statistics are other columns; another --precision, other numbers.
        for key, option in (("pool", "--pool"), ("precision", "--precision")):
            if key in output and key in first and output[key] != first[key]:
                mine, theirs = (
                    ",".join(map(str, v)) if isinstance(v, list) else v
                    for v in (output[key], first[key])
                )
                raise UsageError(
                    f"merge: {part} was made with {option} {mine}, {parts[0]} with {theirs}"
                )
        if not isinstance(record.get("shard"), dict):
            raise UsageError(f"merge: {part} is not a shard (its record has no --shard I/N)")
    shards = [(int(r["shard"]["index"]), int(r["shard"]["count"])) for r in records]
    counts = {count for _, count in shards}
    if len(counts) > 1:
        raise UsageError(f"merge: the parts come from different shard counts {sorted(counts)}")
    count = counts.pop()
    seen: dict[int, str] = {}
    for part, (index, _) in zip(parts, shards, strict=True):
        if index in seen:
            raise UsageError(f"merge: shard {index}/{count} is given twice ({seen[index]}, {part})")
        seen[index] = part
    missing = [i for i in range(count) if i not in seen]
    if missing and not allow_missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        raise UsageError(f"merge: shard {listed} missing (--allow-missing joins what is there)")
    order = sorted(range(len(parts)), key=lambda i: shards[i][0])
    return [parts[i] for i in order], [records[i] for i in order], [f"{i}/{count}" for i in missing]


def _check_not_a_part(output: str, parts: Sequence[str]) -> None:
    """UsageError when the joined file or its record would replace a part or a part's record
    (the same path, through links, or the same file by a hard link)."""

    def identity(path: str):
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    for mine in (output, targets.record_path(output)):
        for part in parts:
            for theirs in (part, targets.record_path(part)):
                same = os.path.realpath(mine) == os.path.realpath(theirs)
                if same or (identity(mine) is not None and identity(mine) == identity(theirs)):
                    raise UsageError(
                        f"merge: -o {output} would replace {theirs}, one of the parts; "
                        "write the joined file elsewhere"
                    )


def _open_text(part: str) -> IO[bytes]:
    _, compression = format_of(part)
    return gzip.open(part, "rb") if compression == "gzip" else open(part, "rb")


def _value(name: str, text: str):
    if name in _TEXT_COLUMNS:
        return text
    if name in _INT_COLUMNS:
        return int(text)
    return float(text) if text not in ("", "null") else math.nan


def _rows(part: str) -> tuple[list[str], Iterator[list]]:
    """A part's header and its rows as typed Python values."""
    fmt, _ = format_of(part)
    if fmt.name == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(part)
        header = table.schema_arrow.names

        def parquet_rows():
            for batch in table.iter_batches(batch_size=_BATCH):
                columns = [c.to_pylist() for c in batch.columns]
                yield from (list(row) for row in zip(*columns, strict=True))

        return header, parquet_rows()
    stream = io.TextIOWrapper(_open_text(part), encoding="utf-8", newline="")
    if fmt.name == "csv":
        reader = csv.reader(stream)
        header = next(reader, [])
        return header, ([_value(n, t) for n, t in zip(header, row, strict=True)] for row in reader)
    first = stream.readline()
    header = list(json.loads(first)) if first else []

    def json_rows():
        for line in [first, *stream]:
            if line.strip():
                obj = json.loads(line)
                yield [math.nan if obj[n] is None else obj[n] for n in header]

    return header, json_rows()


def _write_rows(fmt_name: str, stream: IO[bytes], header: list[str], rows, precision: int):
    """Rows of typed values written as ``fmt_name`` to a binary stream."""
    if fmt_name == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        kinds = [
            pa.string() if n in _TEXT_COLUMNS else pa.int32() if n in _INT_COLUMNS else pa.float64()
            for n in header
        ]
        schema = pa.schema([pa.field(n, k) for n, k in zip(header, kinds, strict=True)])
        writer = pq.ParquetWriter(stream, schema, use_dictionary=dictionary_columns(schema))
        batch: list[list] = []
        written = [False]

        def flush():
            columns = list(zip(*batch, strict=True)) if batch else [[] for _ in header]
            arrays = [pa.array(list(c), type=k) for c, k in zip(columns, kinds, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            batch.clear()
            written[0] = True

        for row in rows:
            batch.append(row)
            if len(batch) >= _BATCH:
                flush()
        if batch or not written[0]:
            flush()
        return writer
    if fmt_name == "csv":
        from soartc_cli.output.layouts import csv_field

        def cell(name, value):
            if name in _TEXT_COLUMNS:
                return csv_field(value)
            if name in _INT_COLUMNS:
                return str(value)
            return "%.*g" % (precision, value)

        stream.write((",".join(csv_field(n) for n in header) + "\n").encode())
        stream.flush()  # where a run flushes (after its header): the same gzip bytes
        for row in rows:
            line = ",".join(cell(n, v) for n, v in zip(header, row, strict=True)) + "\n"
            stream.write(line.encode())
        return None
    stream.flush()  # where a run flushes (before its first row): the same gzip bytes
    for row in rows:
        obj = {
            n: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for n, v in zip(header, row, strict=True)
        }
        stream.write((json.dumps(obj, ensure_ascii=False) + "\n").encode())
    return None


def merge_outputs(
    parts: Sequence[str],
    output: str,
    *,
    command: Sequence[str],
    allow_missing: bool = False,
    stdout: IO[bytes] | None = None,
    record: str | None = None,
) -> dict:
    """Join the outputs of the shards of one run into ``output`` (``-``: CSV on stdout).

    Returns the joined run record, written as ``OUTPUT.meta.json`` for a file output, or where
    ``record`` says (with ``-o -`` too).

    Raises
    ------
    UsageError
        No parts, a missing part or record, parts of other settings or layouts, a shard given
        twice, a missing shard (unless ``allow_missing``), or an output that cannot be written.
    """
    if not parts:
        raise UsageError("merge needs at least one part")
    for part in parts:
        if not os.path.isfile(part):
            raise UsageError(f"merge: no such file {part}")
        format_of(part)
    out_fmt, _ = format_of(output) if output != "-" else (None, None)
    out_name = out_fmt.name if out_fmt is not None else "csv"
    if output != "-":
        _check_not_a_part(output, parts)
    records = [_load_record(p) for p in parts]
    parts, records, missing = _check_parts(list(parts), records, allow_missing)
    layout = (records[0].get("output") or {}).get("layout")
    if out_name == "jsonl" and layout in ("long", "summary"):
        raise UsageError(f"merge: --layout {layout} parts cannot be joined into JSON Lines")
    merged = merge_records(records, parts=parts, output=output, command=command)
    if missing:
        merged["missing_shards"] = missing
    precision = int((records[0].get("output") or {}).get("precision") or 7)
    merged["output"].update(format=out_name)
    if out_name != "parquet":
        merged["output"]["precision"] = precision
    # The joined file's own compression, not the first part's.
    merged["output"].pop("compression", None)
    if output != "-" and format_of(output)[1] is not None:
        merged["output"]["compression"] = format_of(output)[1]
    target = targets.open_target(
        output, compression=format_of(output)[1] if output != "-" else None, stdout=stdout
    )
    try:
        same = {format_of(p)[0].name for p in parts} == {out_name} and out_name != "parquet"
        if same:
            header = None
            for part in parts:
                with _open_text(part) as f:
                    if out_name == "csv":
                        line = f.readline()
                        if header is not None and line != header:
                            raise UsageError(f"merge: {part} has other columns than {parts[0]}")
                        if header is None:
                            header = line
                            target.stream.write(line)
                    if part == parts[0]:
                        # A run flushes its stream after the header (before any worker starts):
                        # flushing here too gives a joined .gz the single run's very bytes.
                        target.stream.flush()
                    for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                        target.stream.write(chunk)
        else:
            header = None
            opened = []
            for part in parts:
                part_header, rows = _rows(part)
                if not part_header:  # an empty JSON Lines part (a shard without rows): no names
                    continue
                if header is None:
                    header = part_header
                elif part_header != header:
                    raise UsageError(f"merge: {part} has other columns than {parts[0]}")
                opened.append(rows)
            writer = _write_rows(
                out_name, target.stream, header or [], (r for rows in opened for r in rows),
                precision,
            )  # fmt: skip
            if writer is not None:
                writer.add_key_value_metadata({"soartc": record_json(merged)})
                writer.close()
        target.stream.flush()  # as a run's sink does when it closes: the same gzip bytes
        record_file = record or target.record
        target.commit(record_json(merged) if record_file else None, record_file)
    except BaseException:
        target.discard()
        raise
    return merged
