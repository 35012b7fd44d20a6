"""Finding image files: inputs → ordered :class:`ImageFile` records, and shards (SPEC §2.1–2.2, §8).

This module touches the file system only (names and directory entries), never pixels. It is fast on
large folders: one ``os.scandir`` per directory and no ``stat`` per file, except for the rare entry
that is a symbolic link to something other than a file or a directory.

Nothing found is lost silently: every file with an image name is either listed (and, if it cannot
be opened, fails later with a reason, as a path longer than the system's ``PATH_MAX`` does) or
reported through ``on_error``. A directory whose path is longer than ``PATH_MAX`` (4096 bytes on
Linux), which ``os.scandir`` refuses, is opened a few thousand bytes at a time, each part relative
to the last, and listed through its descriptor (``stat`` of its entries relative to it), so that
deep trees are walked to the bottom.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, TextIO

from soartc_cli.core.names import check_choice
from soartc_cli.errors import UsageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABELS",
    "ImageFile",
    "discover",
    "display_path",
    "label_of",
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

#: The file ``--maps`` leaves in its directory: a directory holding it is never walked for
#: input images, so soartc's pictures are not taken for photos by a later run.
MAPS_MARKER = ".soartc-maps"

_SHARD_PATTERN = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")
#: Most shards ``--shard I/N`` accepts: far more than any array job has machines.
MAX_SHARDS = 1_000_000_000

_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
#: Longest piece of a path opened in one call when the whole path is too long (below PATH_MAX).
_PATH_PIECE = 3072
#: Directories are listed through descriptors where the platform can (POSIX).
_SCANDIR_FD = os.scandir in os.supports_fd and os.stat in os.supports_dir_fd


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
        found under (with several input directories, to their deepest common parent), or as given
        for a file named directly. Bytes that are not valid UTF-8 are written as ``\\xNN``
        escapes.
    label : str
        By ``labels`` (:data:`LABELS`): ``first``, the first directory component below the root
        (the ImageFolder convention: ``cats/a.png`` → ``cats``); ``parent``, the name of the
        image's own directory; ``none``, ``""``. An image directly in the root has ``""``.
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


#: ``labels``: how an image's label is found (SPEC §2.2).
LABELS: tuple[str, ...] = ("first", "parent", "none")


def label_of(relative: str, *, labels: str = "first") -> str:
    """The label of an image whose path below its root is ``relative`` (POSIX).

    ``first``: its first directory component; ``parent``: its own directory's name; ``none``:
    ``""``. An image directly in the root (one component) has ``""`` whatever ``labels`` is.
    """
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if len(parts) < 2 or labels == "none":
        return ""
    return parts[0] if labels == "first" else parts[-2]


def _common_parent(paths: Sequence[str]) -> str:
    """The deepest directory that holds every one of ``paths`` (absolute, normalised)."""
    absolute = [os.path.abspath(p) for p in paths]
    try:
        return os.path.commonpath(absolute)
    except ValueError:  # different drives (Windows): no common parent
        return ""


def _below(path: str, root: str) -> str:
    """``path`` relative to directory ``root`` as POSIX display text (``root`` "": unchanged)."""
    if not root:
        return display_path(path)
    return display_path(os.path.relpath(os.path.abspath(path), root))


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _entry_stat(entry: os.DirEntry[str], source: str) -> os.stat_result:
    """``entry.stat()`` (links followed), through :func:`_stat` when the full path is too long."""
    try:
        return entry.stat()
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    return _stat(source)


def _kind(entry: os.DirEntry[str], source: str) -> tuple[bool, bool]:
    """``(is_dir, is_file)`` of an entry, links followed; raises ``OSError`` when unknowable."""
    try:
        is_dir = entry.is_dir()
        return is_dir, not is_dir and entry.is_file()
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    mode = _stat(source).st_mode
    return stat.S_ISDIR(mode), stat.S_ISREG(mode)


def _is_unusable_link(entry: os.DirEntry[str], source: str) -> bool:
    """True for a symbolic link that leads nowhere (broken, looping or unreadable)."""
    if not entry.is_symlink():
        return False
    try:
        _entry_stat(entry, source)
    except OSError:
        return True
    # A link to a FIFO, socket or device: not an image file, and opening it could block.
    return False


def _list_directory(directory: str) -> tuple[list[os.DirEntry[str]], int | None]:
    """The entries of ``directory``, and the descriptor they were listed through (or None).

    ``os.scandir(directory)``; when the path is too long for the system, the directory is
    opened in pieces (:func:`_open_directory`) and listed through its descriptor, which the
    caller closes once done with the entries (their ``stat`` is relative to it).
    """
    try:
        with os.scandir(directory) as entries:
            return list(entries), None
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or not _SCANDIR_FD:
            raise
    fd = _open_directory(directory)
    try:
        with os.scandir(fd) as entries:
            return list(entries), fd
    except BaseException:
        os.close(fd)
        raise


def _open_directory(path: str) -> int:
    """Open directory ``path`` for listing; a path longer than ``PATH_MAX`` is opened in pieces.

    Each piece (whole components, at most ``_PATH_PIECE`` bytes) is opened relative to the
    descriptor of the pieces before it (``openat``), so the length of the whole path never
    reaches the kernel. Raises ``OSError`` as ``os.open`` does.
    """
    try:
        return os.open(path, _DIRECTORY_FLAGS)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    raw = os.fsencode(path)
    pieces: list[bytes] = []
    for component in raw.split(b"/"):
        if pieces and len(pieces[-1]) + 1 + len(component) <= _PATH_PIECE:
            pieces[-1] += b"/" + component
        else:
            pieces.append(component)
    # An absolute path splits into "" first: its first piece then starts with "/".
    fd = os.open(pieces[0] or b"/", _DIRECTORY_FLAGS)
    try:
        for piece in pieces[1:]:
            if piece:
                following = os.open(piece, _DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = following
    except BaseException:
        os.close(fd)
        raise
    return fd


def _stat(path: str) -> os.stat_result:
    """``os.stat(path)``, also for a path longer than ``PATH_MAX`` (through its directory)."""
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG or not _SCANDIR_FD:
            raise
    head, tail = os.path.split(path)
    fd = _open_directory(head or ".")
    try:
        return os.stat(tail or ".", dir_fd=fd)
    finally:
        os.close(fd)


def _report(
    on_error: Callable[[str, str], None] | None, path: str, reason: str, *, full: str
) -> None:
    """Pass a failure to ``on_error``, or raise it as a UsageError naming ``full``."""
    if on_error is None:
        raise UsageError(f"{display_path(full)}: {reason}")
    on_error(path, reason)


def _walk(
    root: str,
    *,
    recursive: bool,
    on_error: Callable[[str, str], None] | None,
    prefix: str = "",
) -> list[ImageFile]:
    """Image files under directory ``root``, sorted by their relative display path (each path
    after ``prefix``: the root's own path below the common parent of several input roots)."""
    found: list[ImageFile] = []
    root_stat = _stat(root)
    # Each stack item: (directory to list, its display prefix, identities of it and its ancestors).
    # Keeping the ancestors' (st_dev, st_ino) stops symbolic-link loops; a directory reached twice
    # through different names (no loop) is listed under both names, as the links say.
    stack: list[tuple[str, str, tuple[tuple[int, int], ...]]] = [
        (root, prefix, ((root_stat.st_dev, root_stat.st_ino),))
    ]
    while stack:
        directory, prefix, ancestors = stack.pop()
        try:
            listed, fd = _list_directory(directory)
        except OSError as exc:
            if directory is root:
                raise UsageError(
                    f"cannot read input directory {display_path(directory)}: {exc.strerror or exc}"
                ) from exc
            reason = f"cannot read directory: {exc.strerror or exc}"
            _report(on_error, prefix.rstrip("/"), reason, full=directory)
            continue
        try:
            if any(entry.name == MAPS_MARKER for entry in listed):
                continue  # soartc's own pictures (--maps): never read back as input images
            _take(listed, directory, prefix, ancestors, recursive, on_error, found, stack)
        finally:
            if fd is not None:
                os.close(fd)
    found.sort(key=lambda image: image.path)
    return found


def _take(
    listed: list[os.DirEntry[str]],
    directory: str,
    prefix: str,
    ancestors: tuple[tuple[int, int], ...],
    recursive: bool,
    on_error: Callable[[str, str], None] | None,
    found: list[ImageFile],
    stack: list[tuple[str, str, tuple[tuple[int, int], ...]]],
) -> None:
    """Sort one directory's entries into image files (``found``) and sub-directories (``stack``)."""
    for entry in listed:
        name = entry.name
        if name.startswith("."):
            continue
        source = os.path.join(directory, name)
        shown = f"{prefix}{display_path(name)}"
        try:
            is_dir, is_file = _kind(entry, source)
            unknown = False
        except OSError:  # cannot tell what it is (a looping link, an I/O error)
            is_dir = is_file = False
            unknown = True
        if is_dir:
            if not recursive:
                continue
            try:
                info = _entry_stat(entry, source)
            except OSError as exc:
                reason = f"cannot read directory: {exc.strerror or exc}"
                _report(on_error, shown, reason, full=source)
                continue
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                continue
            stack.append((source, f"{shown}/", (*ancestors, key)))
        elif _is_image_name(name) and (is_file or unknown or _is_unusable_link(entry, source)):
            found.append(ImageFile(source=source, path=shown, label=""))


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
    labels: str = "first",
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
    labels : {"first", "parent", "none"}, default "first"
        How each image's label is found (SPEC §2.2; see :func:`label_of`).

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

    With several input directories, every path is relative to their deepest common parent
    (``two/cats two/dogs`` → ``cats/a.png``, ``dogs/a.png``), so that no two rows share a path
    by accident, and labels are taken below that parent.

    A file named directly, on the command line or on a line of ``stdin``, is taken whatever its
    name or extension: the user asked for it. Its ``path`` is the name as given (POSIX
    separators); its label is taken from its path below the deepest common parent directory of
    all the files named directly (``find photos -name '*.jpg'`` labels ``photos/cats/a.jpg``
    ``cats``; a single file, directly in that parent, has the empty label). A directory named
    directly is walked even if its name starts with ``.``.
    A path read from ``stdin`` that names a directory is walked like any input directory.

    A path holding a NUL byte (possible on a line of ``stdin`` or through the API, never on a
    command line) cannot name a file on POSIX systems: it is reported to ``on_error`` as
    ``path holds a NUL byte`` (shown with ``\\x00``) and the other paths go on; without
    ``on_error`` it is a :class:`~soartc_cli.errors.UsageError`. A path named directly that
    exists but cannot be examined (longer than ``PATH_MAX`` and not reachable in pieces, behind
    a looping link, not permitted) is listed, so that loading it fails with the system's reason.
    Inside directories, paths longer than ``PATH_MAX`` are walked too (see the module notes);
    opening such a file then fails with ``File name too long`` as a reported failure.
    """
    check_choice(labels, name="labels", choices=LABELS)
    named: list[str] = []
    for given in inputs:
        named.extend(
            _read_lines(stdin if stdin is not None else sys.stdin) if given == "-" else [given]
        )
    kinds = [(given, _input_kind(given, on_error=on_error)) for given in named]
    directories = [given for given, kind in kinds if kind == "directory"]
    files = [given for given, kind in kinds if kind == "file"]
    # Several directories: paths below their deepest common parent, so no two rows share a path
    # by accident; files named directly keep their path, labelled below their common parent.
    directory_root = _common_parent(directories) if len(directories) > 1 else ""
    file_root = _common_parent([os.path.dirname(os.path.abspath(f)) for f in files])
    result: list[ImageFile] = []
    for given, kind in kinds:
        if kind == "directory":
            below = _below(given, directory_root) if directory_root else "."
            prefix = "" if below == "." else below.rstrip("/") + "/"
            walked = _walk(given, recursive=recursive, on_error=on_error, prefix=prefix)
            result.extend(replace(f, label=label_of(f.path, labels=labels)) for f in walked)
        elif kind == "file":
            label = label_of(_below(given, file_root), labels=labels)
            result.append(ImageFile(source=given, path=display_path(given), label=label))
    return result


def _input_kind(given: str, *, on_error: Callable[[str, str], None] | None) -> str | None:
    """``"directory"`` or ``"file"`` for one input (a file that cannot be examined counts as a
    file: it fails when loaded, with the system's reason); None for a path holding NUL."""
    if "\0" in given:
        # No POSIX path holds a NUL byte, so no file can be meant: say so and go on.
        shown = display_path(given).replace("\0", "\\x00")
        _report(on_error, shown, "path holds a NUL byte (no file can have such a name)", full=shown)
        return None
    try:
        mode = _stat(given).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.lexists(given):
            raise UsageError(f"input not found: {display_path(given)}") from None
        # A broken or looping link, a path too long or not permitted: it fails when loaded,
        # with the system's reason, instead of vanishing.
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "file"


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
        Text not of the form ``I/N`` (signs, decimals and non-ASCII digits are refused), ``N < 1``,
        ``I`` outside ``[0, N)``, or a number above :data:`MAX_SHARDS`.

    Notes
    -----
    More shards than files is not an error: the extra shards are empty (:func:`shard` gives
    them no file), so an array job may use a fixed ``N`` whatever the folder holds.
    """
    match = _SHARD_PATTERN.fullmatch(text)
    if match is None:
        raise UsageError(f"shard must be I/N with 0 ≤ I < N (for example 0/4), got {text[:40]!r}")
    # Compare digit counts first: Python refuses to convert integers of over 4300 digits.
    if any(len(group.lstrip("0")) > len(str(MAX_SHARDS)) for group in match.groups()):
        raise UsageError(f"shard numbers must be at most {MAX_SHARDS}, got {text[:40]!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count > MAX_SHARDS or index > MAX_SHARDS:
        raise UsageError(f"shard numbers must be at most {MAX_SHARDS}, got {text[:40]!r}")
    _check_shard(index, count=count)
    return index, count
