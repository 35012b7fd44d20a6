"""``soartc merge``: the outputs of the shards of one run joined into one file (SPEC §8, §12).

The parts' run records are checked first (same settings, layout, pool and precision, the same
run's file list, every shard ``I/N`` of one ``N`` once, none missing unless allowed). The parts
are then read, in shard order whatever order they were given in, through the class of the format
that wrote them, and their rows written through the output's format: any format joins into any
other. Reading is the verification: every row complete and of the header's width, every numeric
cell a number, a gzip part read to its end, and each part's rows as many as its record says —
one streaming pass, memory bounded; a part that fails a check is a usage error naming it and the
line, and nothing is written. Numbers read from text keep their text, so text parts join into
the very bytes one run would have written.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Sequence
from typing import IO

from soartc_cli.errors import UsageError
from soartc_cli.output import targets
from soartc_cli.output.formats import BadRow, format_of
from soartc_cli.output.record import record_json

__all__ = ["merge_outputs", "merge_records", "rows_per_image"]


def _load_record(part: str) -> dict:
    """The run record of a part: ``PART.meta.json``, or a Parquet file's own metadata."""
    path = targets.record_path(part)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        record = None
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"merge: cannot read run record {path}: {exc}") from None
    if record is None and format_of(part)[0].name == "parquet":
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(part).metadata or {}  # the file's key-value metadata
            if b"soartc" in meta:
                record = json.loads(meta[b"soartc"])
        except Exception as exc:
            raise UsageError(f"merge: cannot read {part}: {exc}") from None
    if record is None:
        raise UsageError(f"merge: {part} has no run record ({path} is missing)")
    if not isinstance(record, dict):
        raise UsageError(f"merge: the run record of {part} is not a JSON object")
    return record


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


def _shard_of(part: str, record: dict) -> tuple[int, int]:
    shard = record.get("shard")
    if not isinstance(shard, dict):
        raise UsageError(f"merge: {part} is not a shard (its record has no --shard I/N)")
    try:
        index, count = shard["index"], shard["count"]
    except KeyError:
        raise UsageError(f"merge: the record of {part} names no shard index and count") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, count)) or not (
        0 <= index < count
    ):
        raise UsageError(f"merge: the record of {part} names a bad shard {index!r}/{count!r}")
    return index, count


def _check_parts(parts: Sequence[str], records: Sequence[dict], allow_missing: bool):
    """Order parts by shard; UsageError naming the problem. Returns (parts, records, missing)."""
    settings = records[0].get("settings")
    first = records[0].get("output") or {}
    shards = [_shard_of(p, r) for p, r in zip(parts, records, strict=True)]
    fingerprint = (records[0].get("shard") or {}).get("fingerprint")
    for part, record in zip(parts, records, strict=True):
        if record.get("settings") != settings or record.get("inputs") != records[0].get("inputs"):
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
        if record["shard"].get("fingerprint") != fingerprint:
            raise UsageError(
                f"merge: {part} and {parts[0]} are shards of different runs (their file lists "
                "differ: other inputs, or files added or removed between the runs)"
            )
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


def _check_not_a_part(output: str, record: str | None, parts: Sequence[str]) -> None:
    """UsageError when the joined file or its record would replace a part or a part's record
    (the same path, through links, or the same file by a hard link)."""
    mine = [output, record or targets.record_path(output)]
    for path in mine:
        for part in parts:
            for theirs in (part, targets.record_path(part)):
                same = os.path.realpath(path) == os.path.realpath(theirs)
                found = targets.identity(path)
                if same or (found is not None and found == targets.identity(theirs)):
                    raise UsageError(
                        f"merge: {'--record' if path is record else '-o'} {path} would replace "
                        f"{theirs}, one of the parts or their records; write elsewhere"
                    )


def rows_per_image(record: dict) -> int | None:
    """Rows one image makes in the layout a record names (None: it depends on each image)."""
    layout = (record.get("output") or {}).get("layout")
    if layout in ("wide", "pooled", "score"):
        return 1
    settings = record.get("settings") or {}
    try:
        channels = 3 if settings["channels"] == "rgb" else 1
        if "k" in settings:  # attention joins the channels into each patch's row
            channels = 1
        transforms = len(settings["transforms"])
        if layout == "summary":
            return channels * transforms
        if layout == "long" and int(settings["size"]) > 0:
            side = int(settings["size"]) // int(settings["patch"])
            return channels * transforms * side * side
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return None


def _open_part(part: str) -> IO[bytes]:
    _, compression = format_of(part)
    return gzip.open(part, "rb") if compression == "gzip" else open(part, "rb")


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
    ``record`` says (with ``-o -`` too). The record lists ``missing_shards`` when
    ``allow_missing`` joined fewer than all.

    Raises
    ------
    UsageError
        No parts, a missing part or record, parts of other settings, layouts or runs, a shard
        given twice, a missing shard (unless ``allow_missing``), a part whose rows are not what
        its record says (torn, cut short, a cell that is not a number), or an output that would
        replace a part.
    """
    if not parts:
        raise UsageError("merge needs at least one part")
    for part in parts:
        if not os.path.isfile(part):
            raise UsageError(f"merge: no such file {part}")
        format_of(part)
    out_fmt, compression = format_of(output) if output != "-" else (None, None)
    out_name = out_fmt.name if out_fmt is not None else "csv"
    if output != "-":
        _check_not_a_part(output, record, parts)
    elif record is not None:
        _check_not_a_part(record, None, parts)
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
    if compression is not None:
        merged["output"]["compression"] = compression
    from soartc_cli.output.formats import FORMATS

    target = targets.open_target(output, compression=compression, stdout=stdout)
    writer = None
    try:
        header = None
        for part, part_record in zip(parts, records, strict=True):
            fmt = format_of(part)[0]
            with _open_part(part) as stream:
                try:
                    reader = fmt.reader(stream)
                    if not reader.header:  # an empty JSON Lines part (a shard without rows)
                        for _ in reader:
                            pass
                        _check_count(part, part_record, 0, 0)
                        continue
                    if header is None:
                        header = reader.header
                        writer = (out_fmt or FORMATS["csv"]).rows_writer(
                            target.stream, header, precision=precision
                        )
                    elif reader.header != header:
                        raise UsageError(f"merge: {part} has other columns than {parts[0]}")
                    rows = images = 0
                    last = None
                    for row in reader:
                        writer.write(row)
                        rows += 1
                        if row[0] != last:
                            images += 1
                            last = row[0]
                except BadRow as exc:
                    raise UsageError(
                        f"merge: {part}: {exc}; nothing written (is the part complete?)"
                    ) from None
                except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    raise UsageError(
                        f"merge: {part} is cut short or corrupt ({exc or 'unexpected end'}); "
                        "nothing written"
                    ) from None
                except UnicodeDecodeError:
                    raise UsageError(f"merge: {part} is not UTF-8 text; nothing written") from None
            _check_count(part, part_record, rows, images)
        if writer is None:
            writer = (out_fmt or FORMATS["csv"]).rows_writer(
                target.stream, header or [], precision=precision
            )
        writer.close(merged)
        record_file = record or target.record
        target.commit(record_json(merged) if record_file else None, record_file)
    except BaseException:
        if writer is not None:
            writer.abort()
        target.discard()
        raise
    return merged


def _check_count(part: str, record: dict, rows: int, images: int) -> None:
    """UsageError when a part holds other rows than its record says it wrote."""
    processed = (record.get("counts") or {}).get("processed")
    if not isinstance(processed, int):
        raise UsageError(f"merge: the record of {part} does not say how many images it processed")
    per_image = rows_per_image(record)
    expected = processed * per_image if per_image is not None else None
    if expected is not None and rows != expected:
        raise UsageError(
            f"merge: {part} holds {rows} rows, its record says {processed} images "
            f"({expected} rows); nothing written (is the part complete?)"
        )
    if expected is None and images != processed:
        raise UsageError(
            f"merge: {part} holds rows of {images} images, its record says {processed}; nothing "
            "written (is the part complete?)"
        )
