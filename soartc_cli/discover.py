"""Finding image files: inputs → ordered :class:`ImageFile` records, and shards (SPEC §2.1–2.2, §8).

This module touches the file system only (names and directory entries), never pixels. It is fast on
large folders: one ``os.scandir`` per directory and no ``stat`` per file, except for the rare entry
that is a symbolic link to something other than a file or a directory.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TextIO

from soartc_cli.errors import UsageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFile",
    "discover",
    "display_path",
    "parse_shard",
    "shard",
]

#: File name extensions taken when walking a directory, compared case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
)

_SHARD_PATTERN = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


@dataclass(frozen=True)
class ImageFile:
    """One image file found by :func:`discover`.

    Attributes
    ----------
    source : str
        What to open: the operating-system path. It may hold surrogate escapes (``os.fsdecode``)
        for bytes that are not valid UTF-8, so that it stays openable.
    path : str
        The display and CSV path (SPEC §2.2): POSIX, relative to the input directory the file was
        found under, or as given for a file named directly. Bytes that are not valid UTF-8 are
        written as ``\\xNN`` escapes.
    label : str
        The first component of ``path`` when the file sits in a sub-directory (the ImageFolder
        convention: ``cats/a.png`` → ``cats``), else ``""``.
    """

    source: str
    path: str
    label: str


def display_path(path: str) -> str:
    """Return ``path`` as text fit for display: non-UTF-8 bytes become ``\\xNN`` escapes.

    Parameters
    ----------
    path : str
        A path as the operating system gives it (``os.fsdecode``; surrogate escapes allowed).

    Returns
    -------
    str
        The same path with ``/`` separators where every byte that is not valid UTF-8 is written
        as a four-character ``\\xNN`` escape. Paths that are valid UTF-8 are returned unchanged.
    """
    if os.sep != "/":
        path = path.replace(os.sep, "/")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path


def _label_of(path: str) -> str:
    """First component of a relative display path that goes into a sub-directory, else ``""``."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if len(parts) < 2 or path.startswith("/") or parts[0] == "..":
        return ""
    return parts[0]


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_unusable_link(entry: os.DirEntry[str]) -> bool:
    """True for a symbolic link that leads nowhere (broken, looping or unreadable)."""
    if not entry.is_symlink():
        return False
    try:
        os.stat(entry.path)
    except OSError:
        return True
    # A link to a FIFO, socket or device: not an image file, and opening it could block.
    return False


def _walk(
    root: str,
    *,
    recursive: bool,
    on_error: Callable[[str, str], None] | None,
) -> list[ImageFile]:
    """Image files under directory ``root``, sorted by their relative display path."""
    found: list[ImageFile] = []
    root_stat = os.stat(root)
    # Each stack item: (directory to list, its display prefix, identities of it and its ancestors).
    # Keeping the ancestors' (st_dev, st_ino) stops symbolic-link loops; a directory reached twice
    # through different names (no loop) is listed under both names, as the links say.
    stack: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [
        (root, "", ((root_stat.st_dev, root_stat.st_ino),))
    ]
    while stack:
        directory, prefix, ancestors = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except OSError as exc:
            if not prefix:
                raise UsageError(
                    f"cannot read input directory {display_path(directory)}: {exc.strerror or exc}"
                ) from exc
            reason = f"cannot read directory: {exc.strerror or exc}"
            if on_error is None:
                raise UsageError(f"{display_path(directory)}: {reason}") from exc
            on_error(prefix.rstrip("/"), reason)
            continue
        for entry in listed:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if not recursive:
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    continue
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    continue
                shown = display_path(name)
                stack.append((entry.path, f"{prefix}{shown}/", (*ancestors, key)))
            elif _is_image_name(name) and (is_file or _is_unusable_link(entry)):
                shown = f"{prefix}{display_path(name)}"
                label = prefix[: prefix.index("/")] if prefix else ""
                found.append(ImageFile(source=entry.path, path=shown, label=label))
    found.sort(key=lambda image: image.path)
    return found


def _read_lines(stream: TextIO | BinaryIO) -> list[str]:
    """Paths one per line; blank lines ignored, line endings (``\\n``, ``\\r\\n``) removed."""
    # Read a text stream's binary buffer when it has one (sys.stdin): file names that are not
    # valid UTF-8 then survive through os.fsdecode instead of failing to decode.
    source = getattr(stream, "buffer", stream)
    text = source.read()
    if isinstance(text, bytes):
        lines: Iterable[str] = (os.fsdecode(line) for line in text.split(b"\n"))
    else:
        lines = text.split("\n")
    paths = []
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            paths.append(line)
    return paths


def discover(
    inputs: Sequence[str],
    *,
    recursive: bool = True,
    stdin: TextIO | BinaryIO | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> list[ImageFile]:
    """Find the image files named by ``inputs``, in a fixed order.

    Parameters
    ----------
    inputs : sequence of str
        Directories and/or files. ``"-"`` reads one path per line from ``stdin``.
    recursive : bool, default True
        Walk sub-directories; ``False`` lists the top level of each directory only.
    stdin : text or binary stream, optional
        Where ``"-"`` reads from; default ``sys.stdin``. Bytes are decoded with ``os.fsdecode``,
        and a text stream that has a binary ``buffer`` (as ``sys.stdin`` does) is read through
        it, so that file names that are not valid UTF-8 survive.
    on_error : callable, optional
        Called as ``on_error(path, reason)`` for a sub-directory that cannot be read (for example
        permission denied), after which the walk goes on; ``path`` is relative to its input
        directory, like :attr:`ImageFile.path`. Without it such a directory raises
        :class:`~soartc_cli.errors.UsageError` naming its full path.

    Returns
    -------
    list of ImageFile
        One record per file.

    Raises
    ------
    UsageError
        An input that does not exist (``input not found: PATH``), an input directory that cannot
        be read, or (without ``on_error``) an unreadable sub-directory.

    Notes
    -----
    Inputs are processed in the order given and their files concatenated; the files found under one
    input directory are sorted by their relative display path compared as strings (code points), so
    the order is the same on every machine. A file listed twice is kept twice.

    Inside a directory, a file is taken when its name ends with one of :data:`IMAGE_EXTENSIONS`
    (any case) and is a regular file or a symbolic link that cannot be followed (broken, looping):
    such a link is listed so that loading it fails with a reason instead of the file disappearing
    silently. FIFOs, sockets and devices are skipped. Names starting with ``.`` are skipped, files
    and directories alike. Symbolic links to directories are followed; a link back to a directory
    being walked (a loop) is not.

    A file named directly, on the command line or on a line of ``stdin``, is taken whatever its
    name or extension: the user asked for it. Its ``path`` is the name as given (POSIX
    separators) and its ``label`` the first component of that path when it is relative and goes
    down into a sub-directory (``cats/a.png`` → ``cats``, ``./cats/a.png`` → ``cats``; ``a.png``,
    ``/abs/a.png``, ``../a.png`` → ``""``), so that naming ``cats/*.png`` gives the same rows as
    walking ``.``. A directory named directly is walked even if its name starts with ``.``.
    A path read from ``stdin`` that names a directory is walked like any input directory.
    """
    result: list[ImageFile] = []
    for given in inputs:
        if given == "-":
            lines = _read_lines(stdin if stdin is not None else sys.stdin)
            for line in lines:
                result.extend(_one_input(line, recursive=recursive, on_error=on_error))
        else:
            result.extend(_one_input(given, recursive=recursive, on_error=on_error))
    return result


def _one_input(
    given: str,
    *,
    recursive: bool,
    on_error: Callable[[str, str], None] | None,
) -> list[ImageFile]:
    try:
        mode = os.stat(given).st_mode
    except OSError:
        if os.path.lexists(given):
            mode = None  # a broken or looping link named directly: fails later, with a reason
        else:
            raise UsageError(f"input not found: {display_path(given)}") from None
    if mode is not None and stat.S_ISDIR(mode):
        return _walk(given, recursive=recursive, on_error=on_error)
    shown = display_path(given)
    return [ImageFile(source=given, path=shown, label=_label_of(shown))]


def shard(files: Sequence[ImageFile], *, index: int, count: int) -> list[ImageFile]:
    """Return the ``index``-th of ``count`` contiguous slices of ``files`` (SPEC §8).

    Parameters
    ----------
    files : sequence of ImageFile
        The whole, ordered file list (n files).
    index : int
        Which slice, ``0 <= index < count``.
    count : int
        How many slices, at least 1.

    Returns
    -------
    list of ImageFile
        The files at positions ``floor(index·n/count)`` to ``floor((index+1)·n/count) − 1``.
        The slices for ``index = 0 … count−1`` concatenate to ``files``; their sizes differ by
        at most one.

    Raises
    ------
    UsageError
        ``count < 1`` or ``index`` outside ``[0, count)``.
    """
    _check_shard(index, count=count)
    n = len(files)
    return list(files[index * n // count : (index + 1) * n // count])


def _check_shard(index: int, *, count: int) -> None:
    if count < 1:
        raise UsageError(f"shard count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise UsageError(f"shard index must be in 0…{count - 1} for {count} shards, got {index}")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"I/N"`` (the ``--shard`` option) into ``(index, count)``.

    Parameters
    ----------
    text : str
        ``I/N`` with whole numbers ``0 <= I < N``; spaces around the numbers are allowed.

    Returns
    -------
    tuple of int
        ``(I, N)``.

    Raises
    ------
    UsageError
        Text not of the form ``I/N``, ``N < 1`` or ``I`` outside ``[0, N)``.
    """
    match = _SHARD_PATTERN.fullmatch(text)
    if match is None:
        raise UsageError(f"shard must be I/N with 0 ≤ I < N (for example 0/4), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    _check_shard(index, count=count)
    return index, count
