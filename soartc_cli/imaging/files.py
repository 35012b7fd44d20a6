"""Opening a file named by a user as untrusted input: regular files only, never blocking.

One rule for images, kernel files and weights files: the type is checked before opening, so that
no device is ever opened (opening one can have side effects), and again on the open descriptor,
so that a file replaced by a FIFO or a device in between is refused too; ``O_NONBLOCK`` makes that
open return at once even for a FIFO with no writer.
"""

from __future__ import annotations

import os
import stat
from typing import IO

__all__ = ["NotRegularFile", "open_option_file", "open_regular"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class NotRegularFile(Exception):
    """The path names something other than a regular file; ``kind`` says what
    ("a directory", "a named pipe", …)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _check(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFile(
            next((words for test, words in _KINDS if test(mode)), "a special file")
        )


def open_regular(path: str | bytes | os.PathLike[str]) -> tuple[IO[bytes], os.stat_result]:
    """Open ``path`` (links followed) for reading if it is a regular file: ``(file, its stat)``.

    Raises
    ------
    NotRegularFile
        A directory, FIFO, device or socket (checked before and after opening).
    OSError
        As ``os.stat`` and ``os.open`` raise it (FileNotFoundError, PermissionError, …).
    """
    _check(os.stat(path).st_mode)
    fd = os.open(path, _OPEN_FLAGS)
    try:
        status = os.fstat(fd)
        _check(status.st_mode)
        return os.fdopen(fd, "rb"), status  # O_NONBLOCK does nothing to regular files
    except BaseException:
        os.close(fd)
        raise


def open_option_file(path, *, option: str, missing_hint: str = ""):
    """Open a file an option names (``--kernels``, ``--weights``) with :func:`open_regular`:
    ``(file, its stat)``, or a UsageError starting with ``option``."""
    from soartc_cli.errors import UsageError

    shown = os.fsdecode(path)
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise UsageError(f"{option}: no such file {shown!r}{missing_hint}") from None
    except NotRegularFile as exc:
        what = "a directory" if exc.kind == "a directory" else "not a regular file"
        raise UsageError(f"{option}: cannot read {shown}: it is {what} ({exc.kind})") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"{option}: cannot read {shown}: {reason}") from None
