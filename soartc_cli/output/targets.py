"""Where output goes: files that appear complete or not at all, and what ``-o`` may point at.

SPEC §6: a regular file (new or existing) is written to a temporary name in its directory and
renamed at the end; a symbolic link keeps pointing where it did and its target is replaced the same
way; anything else that exists (``/dev/null``, a named pipe) is opened and written in order, never
replaced; ``-`` is standard output. An output and its run record are committed together: both or
neither.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import stat
import sys
import tempfile
from typing import IO

from soartc_cli.errors import SoartcError, UsageError

__all__ = [
    "AtomicFile",
    "ClosedPipe",
    "Target",
    "WriteError",
    "identity",
    "is_special",
    "open_target",
    "record_path",
    "write_text_atomic",
]


class WriteError(SoartcError):
    """Writing an output failed (disk full, I/O error): an environment error, exit 1."""


class ClosedPipe(SoartcError):
    """Standard output was closed by its reader (``soartc … -o - | head``): exit 141, quietly."""


def write_error(exc: OSError, path: str) -> WriteError:
    """One line for a failed write: ``no space left on device writing FILE``."""
    reason = (exc.strerror or str(exc)).lower() if exc.errno != errno.ENOSPC else None
    return WriteError(f"{reason or 'no space left on device'} writing {path}")


class _Guarded:
    """A binary stream whose write errors become :class:`WriteError` (or :class:`ClosedPipe`)."""

    def __init__(self, raw: IO[bytes], name: str, *, pipe: bool = False) -> None:
        self.raw = raw
        self.name = name
        self.pipe = pipe

    def _call(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            if self.pipe:
                raise ClosedPipe("standard output was closed") from None
            raise write_error(OSError(errno.EPIPE, "broken pipe"), self.name) from None
        except OSError as exc:
            raise write_error(exc, self.name) from None

    def write(self, data) -> int:
        return self._call(self.raw.write, data)

    def flush(self) -> None:
        self._call(self.raw.flush)

    def close(self) -> None:
        self._call(self.raw.close)

    # pyarrow asks a Python stream these
    @property
    def closed(self) -> bool:
        return self.raw.closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


class AtomicFile:
    """A file written to a temporary name in the target's directory, renamed at the end.

    ``commit()`` renames it into place; ``discard()`` (or leaving a ``with`` block by an
    exception, KeyboardInterrupt included) removes it, so a reader never sees a partial file.
    Permissions are the usual ones of a new file (umask), not mkstemp's 0600.
    """

    def __init__(self, path: str | os.PathLike[str], *, binary: bool = False) -> None:
        self.path = os.fspath(path)
        directory, name = os.path.split(os.path.abspath(self.path))
        # The temporary name stays short, so that a target name near NAME_MAX still fits.
        fd, self.temporary = tempfile.mkstemp(
            prefix=f".{name[:200]}.", suffix=".part", dir=directory
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.temporary, 0o666 & ~umask)
        self.file: IO = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        self.done = False

    def write(self, data: str | bytes) -> None:
        """Append ``data`` (bytes for a binary file)."""
        try:
            self.file.write(data)
        except OSError as exc:
            raise write_error(exc, self.path) from None

    def close(self) -> None:
        """Close the temporary file (data flushed), without renaming it yet."""
        try:
            self.file.close()
        except OSError as exc:
            raise write_error(exc, self.path) from None

    def rename(self) -> None:
        """Rename the closed temporary file to the target path."""
        os.replace(self.temporary, self.path)
        self.done = True

    def commit(self) -> None:
        """Close the temporary file and rename it to the target path."""
        self.close()
        self.rename()

    def discard(self) -> None:
        """Remove the temporary file, whatever state it is in; the target is left as it was."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError, ValueError):
            self.file.close()  # a full disk fails the flush: the file goes all the same
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()
        else:
            self.discard()


class _InOrder:
    """A side file (a run record) on a device or named pipe: written in order when the output
    is committed, never replaced; the :class:`AtomicFile` methods a commit uses."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.parts: list[str] = []
        self.done = False

    def write(self, data: str) -> None:
        self.parts.append(data)

    def close(self) -> None:
        pass

    def rename(self) -> None:
        try:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write("".join(self.parts))
        except OSError as exc:
            raise write_error(exc, self.path) from None
        self.done = True

    def commit(self) -> None:
        self.rename()

    def discard(self) -> None:
        self.done = True

    def __enter__(self) -> _InOrder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self.done:
            self.commit()


def side_file(path: str | os.PathLike[str]) -> AtomicFile | _InOrder:
    """A text file written where ``path`` points, like ``-o``: a regular file atomically, a
    symbolic link's target (the link kept), a device or named pipe in order (never replaced)."""
    path = os.fspath(path)
    if is_special(path):  # through the links, /proc's too (see open_target)
        return _InOrder(path)
    return AtomicFile(os.path.realpath(path) if os.path.islink(path) else path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` where it points (:func:`side_file`): atomically for a file."""
    try:
        with side_file(path) as f:
            f.write(text)
    except OSError as exc:
        raise write_error(exc, os.fspath(path)) from None


def record_path(output: str) -> str:
    """Where the run record of an output file goes: ``FILE.meta.json`` next to it."""
    return f"{output}.meta.json"


@contextlib.contextmanager
def _directory_lock(path: str):
    """An exclusive ``flock`` on ``path``'s directory while output and record are renamed, so two
    runs writing the same ``-o`` leave one run's output with that run's record."""
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    except ImportError:  # no fcntl (not POSIX): no lock, the renames stay atomic one by one
        yield
    finally:
        os.close(fd)


class Target:
    """An open output: ``stream`` takes bytes; ``commit`` finishes it, ``discard`` drops it.

    ``kind`` is "file" (atomic), "stream" (a device or pipe written in order) or "stdout".
    ``record`` is where the run record goes by default (``FILE.meta.json`` for a file, else None).
    """

    def __init__(self, path: str, kind: str, raw: IO[bytes], atomic: AtomicFile | None,
                 compression: str | None) -> None:  # fmt: skip
        self.path = path
        self.kind = kind
        self.atomic = atomic
        self._raw = raw
        guarded = _Guarded(raw, path, pipe=kind == "stdout")
        self._gzip = None
        if compression == "gzip":
            # mtime 0 and no file name: the same rows give the same bytes on every run.
            self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=guarded, mtime=0,
                                       compresslevel=6)  # fmt: skip
            self.stream: IO[bytes] = _Guarded(self._gzip, path, pipe=kind == "stdout")
        else:
            self.stream = guarded
        self.record = record_path(path) if kind == "file" else None

    def commit(self, record: str | None = None, record_file: str | None = None) -> None:
        """Finish the output, and write ``record`` (text) to ``record_file``: both or neither."""
        try:
            if self._gzip is not None:
                self.stream.close()
            if self.atomic is None:
                _Guarded(self._raw, self.path, pipe=self.kind == "stdout").flush()
                if self.kind == "stream":
                    self._raw.close()
            else:
                self.atomic.close()
            side = None
            if record is not None and record_file is not None:
                side = side_file(record_file)
                try:
                    side.write(record)
                    side.close()
                except BaseException:
                    side.discard()
                    raise
        except BaseException:
            self.discard()
            raise
        with _directory_lock(self.path):
            if self.atomic is not None:
                self.atomic.rename()
            if side is not None:
                side.rename()

    def discard(self) -> None:
        """Drop the output: a temporary file is removed; a stream is closed."""
        if self.atomic is not None:
            self.atomic.discard()
        elif self.kind == "stream":
            with contextlib.suppress(OSError, ValueError):
                self._raw.close()


def identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` names (links followed), or None: two paths with
    the same identity are one file (hard links too)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def is_special(path: str) -> bool:
    """True when ``path`` exists (links followed) and is not a regular file or a directory: a
    device, a named pipe, a socket."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_output_path(output: str) -> None:
    """UsageError when ``-o`` cannot be written: a directory, or a missing parent directory."""
    if output == "-":
        return
    if os.path.isdir(output):
        raise UsageError(f"--output: {output} is a directory")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"--output: directory {directory} does not exist")


def open_target(output: str, *, compression: str | None = None, stdout=None) -> Target:
    """Open ``-o OUTPUT`` for a run (SPEC §6, "Where ``-o`` points").

    Raises UsageError when it cannot be created or opened.
    """
    if output == "-":
        stream = stdout if stdout is not None else getattr(sys.stdout, "buffer", None)
        if stream is None:
            raise UsageError("--output -: standard output is closed")
        return Target("<stdout>", "stdout", stream, None, compression)
    check_output_path(output)
    try:
        # Through the links, /proc's too: /dev/stdout on a pipe is that pipe, while its
        # realpath ("/proc/PID/fd/pipe:[N]") names nothing.
        mode = os.stat(output).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    real = os.path.realpath(output) if os.path.islink(output) else output
    try:
        if mode is not None and not stat.S_ISREG(mode):
            if stat.S_ISDIR(mode):
                raise UsageError(f"--output: {output} is a directory")
            # A device or a named pipe: written in order, never replaced.
            raw = open(output, "wb", buffering=1 << 16)
            return Target(output, "stream", raw, None, compression)
        atomic = AtomicFile(real, binary=True)
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    target = Target(real, "file", atomic.file, atomic, compression)
    target.record = record_path(output)
    return target
