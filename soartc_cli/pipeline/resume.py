"""``--resume``: the progress of a run kept in ``FILE.partial``, one frame per image (SPEC §6).

The journal holds every image's outcome as the output format made it (its payload), in input
order, flushed after every image, so that a run killed at any moment (SIGKILL, a lost machine, a
batch system's time limit) leaves every finished image behind. It is created complete with its
header (a temporary file renamed into place), so a kill while it is made leaves no journal or a
whole one. A frame is::

    b"%d %d %d %08x\\n" % (index, kind, length, crc32)  then  length bytes

``kind`` 0 is a failure (JSON ``{"path", "error"}``), 1 a result (a JSON line of the image's
names, size, grid and job extras, then the payload); ``crc32`` is the CRC-32 of those bytes. A
frame cut short by a kill, or whose bytes no longer match their checksum, ends the journal there:
that image and the ones after it are done again. The finished output is written from the journal
by the same writer a plain run uses, so it is byte-identical to one uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import IO, Any

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.pipeline.jobs import Failure, ImageResult, Outcome

__all__ = ["Journal", "iter_journal", "journal_length", "partial_paths", "run_resumable"]

_NO_MEANS = np.empty(0)  # a resumed run's earlier images need no per-patch means
_MAGIC = b"soartc-journal 2\n"
#: Largest frame a journal may declare: a wide row of an image at the work budget is far less.
MAX_FRAME_BYTES = 1 << 31
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
        return _frame(outcome.index, 0, body.encode())
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
    return _frame(outcome.index, 1, data)


def _frame(index: int, kind: int, data: bytes) -> bytes:
    return b"%d %d %d %08x\n" % (index, kind, len(data), zlib.crc32(data)) + data


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
            index, kind, length, crc = line.split()
            index, kind, length, crc = int(index), int(kind), int(length), int(crc, 16)
        except ValueError:
            return
        if not 0 <= length <= MAX_FRAME_BYTES:
            return
        data = f.read(length)
        if len(data) < length or zlib.crc32(data) != crc:
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


def _create(path: str) -> None:
    """A new journal holding only its header, renamed into place whole (a device or pipe in its
    place is written in order, never replaced)."""
    from soartc_cli.output.targets import AtomicFile, is_special

    if is_special(path):
        with open(path, "wb") as device:
            device.write(_MAGIC)
        return
    with AtomicFile(path, binary=True) as new:
        new.write(_MAGIC)


class Journal:
    """An open journal: :meth:`add` appends and flushes one outcome."""

    def __init__(self, path: str, *, keep: int | None = None) -> None:
        self.path = path
        try:
            if keep is None:
                _create(path)
                self.file: IO[bytes] = open(path, "r+b")
                self.file.seek(0, os.SEEK_END)
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


# ---------------------------------------------------------------------------------------------
# A resumable run


def _identity(execute) -> dict:
    """What a resumed run must share with the interrupted one: the job's settings, the output,
    the inputs' labels and the shard (the file list is compared too)."""
    settings = execute.settings
    shard = settings.inputs.shard
    return {
        "settings": execute.job.to_record(),
        "output": settings.output.spec.describe(),
        "inputs": {"labels": settings.inputs.labels, "recursive": settings.inputs.recursive},
        "shard": None if shard is None else str(shard),
    }


def run_resumable(execute):
    """``--resume``: outcomes go to ``FILE.partial`` first; the output is written from it.

    ``execute`` is the runner's execution of this run (its job, settings, files and record).
    """
    from soartc_cli.output.targets import write_text_atomic
    from soartc_cli.pipeline.runner import Interrupted

    output = execute.settings.output
    journal_path, meta_path = partial_paths(output.path)
    files = execute.plan.files
    paths = [f.path for f in files]
    identity = _identity(execute)
    done: list[Outcome] = []  # the images already done, without their rows
    keep = None
    if os.path.exists(journal_path):
        try:
            with open(meta_path, encoding="utf-8") as f:
                before = json.load(f)
        except (OSError, ValueError):
            raise UsageError(
                f"--resume: {meta_path} is missing or unreadable; remove {journal_path} to start "
                "again"
            ) from None
        _check_same_run(before, identity)
        keep = journal_length(journal_path)
        done = list(iter_journal(journal_path, payloads=False))
        done_paths = before.get("paths", [])[: len(done)]
        if [o.path for o in done] != paths[: len(done)] or done_paths != paths[: len(done)]:
            first = next(
                (i for i, (a, b) in enumerate(zip(done_paths, paths, strict=False)) if a != b),
                min(len(done_paths), len(paths)),
            )
            raise UsageError(
                f"--resume: the file list differs from the interrupted run's at position {first} "
                f"({(done_paths[first : first + 1] or ['(end)'])[0]!r} before, "
                f"{(paths[first : first + 1] or ['(end)'])[0]!r} now); remove {journal_path} to "
                "start again"
            )
    write_text_atomic(meta_path, json.dumps({**identity, "paths": paths}) + "\n")
    journal = Journal(journal_path, keep=keep)
    progress = _JournalOnly(execute.file_encoder(), execute.file_grid_hint())
    try:
        first = execute.into(progress, journal=journal, done=done)
    except KeyboardInterrupt:
        journal.close()
        raise Interrupted(0, len(files), kept=journal_path) from None
    except Interrupted as exc:
        journal.close()
        raise Interrupted(exc.done, exc.total, kept=journal_path) from None
    except BaseException:
        journal.close()
        raise
    journal.close()
    # The finished output, from the journal, by the writer a plain run uses.
    final = execute.replay(iter_journal(journal_path), report=first)
    for path in (journal_path, meta_path):
        with contextlib.suppress(OSError):
            os.unlink(path)
    return final


class _JournalOnly:
    """The consumer of a resumable run's first pass: the journal keeps every outcome; nothing
    else is written until the run is complete."""

    def __init__(self, encoder, grid_hint) -> None:
        self.encoder = encoder
        self.grid_hint = grid_hint

    def begin(self, names) -> None:
        pass

    def write(self, result) -> None:
        pass

    def close(self, record) -> None:
        pass

    def discard(self) -> None:
        pass


def _check_same_run(before: dict, now: dict) -> None:
    """UsageError naming the first setting that differs between the interrupted run and this one."""
    for key in ("settings", "output", "inputs", "shard"):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    raise UsageError(
                        f"--resume: {key} {name!r} differs from the interrupted run's "
                        f"({old.get(name)!r} before, {new.get(name)!r} now)"
                    )
        raise UsageError(
            f"--resume: {key} differs from the interrupted run's ({old!r} before, {new!r} now)"
        )
