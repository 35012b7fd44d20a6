"""``--resume``: the progress of a run kept in ``FILE.partial``, one frame per image (SPEC §6).

The journal holds every image's outcome as the output format made it (its payload), in input
order, flushed after every image, so that a run killed at any moment (SIGKILL, a lost machine, a
batch system's time limit) leaves every finished image behind. A frame is::

    b"%d %d %d\\n" % (index, kind, length)  then  length bytes

``kind`` 0 is a failure (JSON ``{"path", "error"}``), 1 a result (a JSON line of the image's
names, size, grid and job extras, then the payload). A frame cut short by a kill is dropped on
resume. The finished output is written from the journal by the same writer a plain run uses, so
it is byte-identical to one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.pipeline.jobs import Failure, ImageResult, Outcome

__all__ = ["Journal", "partial_paths", "read_journal"]

_NO_MEANS = np.empty(0)  # a resumed run's earlier images need no per-patch means
_MAGIC = b"soartc-journal 1\n"
#: A journal is forced to disk at most this often (seconds): a lost machine loses at most the
#: images of the last interval, while a flush per image already survives any kill of soartc.
SYNC_INTERVAL = 2.0


def partial_paths(output: str) -> tuple[str, str]:
    """``(FILE.partial, FILE.partial.meta.json)`` of an output file."""
    return f"{output}.partial", f"{output}.partial.meta.json"


def _dump_payload(payload: Any) -> tuple[bytes, bytes]:
    """A payload as ``(description, bytes)``: text formats' bytes as they are; Parquet's
    ``(keys, numbers)`` as JSON keys and the raw float64 numbers."""
    if isinstance(payload, bytes):
        return b"b", payload
    keys, numbers = payload
    numbers = np.ascontiguousarray(numbers, dtype=np.float64)
    keys = {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in keys.items()}
    head = json.dumps({"keys": keys, "shape": list(numbers.shape)}, ensure_ascii=False).encode()
    return b"a", head + b"\n" + numbers.tobytes()


def _load_payload(kind: bytes, data: bytes) -> Any:
    if kind == b"b":
        return data
    head, _, raw = data.partition(b"\n")
    meta = json.loads(head)
    numbers = np.frombuffer(raw, dtype=np.float64).reshape(meta["shape"])
    return meta["keys"], numbers


def encode_outcome(outcome: Outcome) -> bytes:
    """One frame for ``outcome``."""
    if isinstance(outcome, Failure):
        body = json.dumps({"path": outcome.path, "error": outcome.error}, ensure_ascii=False)
        data = body.encode()
        return b"%d 0 %d\n" % (outcome.index, len(data)) + data
    kind, payload = _dump_payload(outcome.payload)
    head = {
        "path": outcome.path,
        "label": outcome.label,
        "width": outcome.width,
        "height": outcome.height,
        "grid": list(outcome.grid),
        "extra": outcome.extra,
        "payload": kind.decode(),
        "means": np.asarray(outcome.means).tolist(),
    }
    data = json.dumps(head, ensure_ascii=False, allow_nan=True).encode() + b"\n" + payload
    return b"%d 1 %d\n" % (outcome.index, len(data)) + data


def _decode(index: int, kind: int, data: bytes) -> Outcome:
    if kind == 0:
        body = json.loads(data)
        return Failure(index, body["path"], body["error"])
    head_text, _, payload = data.partition(b"\n")
    head = json.loads(head_text)
    return ImageResult(
        index, head["path"], head["label"], head["width"], head["height"], tuple(head["grid"]),
        _load_payload(head["payload"].encode(), payload), np.asarray(head["means"]),
        head["extra"],
    )  # fmt: skip


def iter_journal(path: str, *, payloads: bool = True) -> Iterator[Outcome]:
    """The complete frames of a journal, one outcome at a time (memory: one frame).

    ``payloads=False`` leaves each result's payload and means out: what a resumed run needs to
    count, check and record the images already done, without holding their rows. A frame cut
    short, or unreadable, ends the journal there.
    """
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise UsageError(f"--resume: {path} is not a soartc progress file")
        for outcome in _frames(f):
            if not payloads and isinstance(outcome, ImageResult):
                outcome = replace(outcome, payload=None, means=_NO_MEANS)
            yield outcome


def _frames(f: IO[bytes]) -> Iterator[Outcome]:
    """The outcome of each complete, decodable frame from ``f``'s position on."""
    while True:
        line = f.readline()
        if not line.endswith(b"\n"):
            return
        try:
            index, kind, length = (int(x) for x in line.split())
        except ValueError:
            return
        data = f.read(length)
        if len(data) < length:
            return
        try:
            outcome = _decode(index, kind, data)
        except (ValueError, KeyError, TypeError):
            return
        yield outcome


def journal_length(path: str) -> int:
    """The byte length of a journal's complete frames (what follows is a torn tail)."""
    with open(path, "rb") as f:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise UsageError(f"--resume: {path} is not a soartc progress file")
        good = f.tell()
        for _ in _frames(f):
            good = f.tell()
    return good


def read_journal(path: str) -> tuple[list[Outcome], int]:
    """Every complete frame of a journal in a list, and the byte length they take (small
    journals and tests; a run reads them one at a time with :func:`iter_journal`)."""
    return list(iter_journal(path)), journal_length(path)


class Journal:
    """An open journal: :meth:`add` appends and flushes one outcome."""

    def __init__(self, path: str, *, keep: int | None = None) -> None:
        self.path = path
        try:
            if keep is None:
                self.file: IO[bytes] = open(path, "wb")
                self.file.write(_MAGIC)
            else:
                self.file = open(path, "r+b")
                self.file.truncate(keep)
                self.file.seek(keep)
            self.file.flush()
        except OSError as exc:
            from soartc_cli.output.targets import write_error

            raise write_error(exc, path) from None
        self.synced = time.monotonic()

    def add(self, outcome: Outcome) -> None:
        """Append one outcome; a full disk is a :class:`~soartc_cli.output.targets.WriteError`."""
        try:
            self.file.write(encode_outcome(outcome))
            self.file.flush()
            now = time.monotonic()
            if now - self.synced > SYNC_INTERVAL:
                os.fsync(self.file.fileno())
                self.synced = now
        except OSError as exc:
            from soartc_cli.output.targets import write_error

            raise write_error(exc, self.path) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()


def replay(outcomes: list[Outcome]) -> Iterator[Outcome]:
    """The outcomes of a journal, in input order (they were written in that order)."""
    yield from outcomes
