"""Files and texts that options name: ``--kernels`` (JSON), ``--weights`` (.npz), ``--words``.

Every one is untrusted input: sizes are judged before anything is read or allocated, nothing is
unpickled, and every problem is one :class:`~soartc_cli.errors.UsageError` line that starts with
the option's name.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from typing import BinaryIO

import numpy as np

from soartc_cli.core.attention import MAX_WEIGHTS_DIM, WEIGHT_NAMES, Weights, check_weights
from soartc_cli.core.transforms import (
    KERNEL_NAME,
    KERNELS,
    MAX_KERNEL_VALUE,
    ROTATIONS,
    TRANSFORM_PRESETS,
    frozen_kernel,
)
from soartc_cli.errors import UsageError
from soartc_cli.imaging.files import open_option_file

__all__ = ["load_kernels", "load_weights_file", "parse_words", "read_kernel_file"]

#: Largest kernel file read, in bytes, checked with ``os.stat`` before reading: real kernel files
#: are a few hundred bytes, and 1 MiB still holds a 201×201 kernel at full precision.
MAX_KERNEL_FILE_BYTES = 1 << 20
#: Most characters an integer of a kernel file may have: more cannot be a useful kernel value
#: (|v| ≤ 10⁶), and Python refuses to convert integers of more than 4300 digits at all. Numbers
#: with a fraction or exponent become floats (large ones inf), which the value checks refuse.
MAX_INT_CHARS = 40

_PREFIX = "--kernels: "


def _shown(item: object) -> str:
    """A short JSON rendering of a value for a message (at most 40 characters)."""
    try:
        text = json.dumps(item)
    except (RecursionError, ValueError, TypeError):
        text = type(item).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _shown_name(name: str) -> str:
    """``repr(name)``, cut to 40 characters for a message."""
    text = repr(name)
    return text if len(text) <= 40 else text[:37] + "..."


def _kernel_from_json(name: str, value: object) -> np.ndarray:
    """Validate one kernel of a kernel file and return it as a read-only float64 array."""
    where = f"{_PREFIX}kernel {name!r}"
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be a non-empty list of rows, like [[0, 1, 0], ...]")
    if not all(isinstance(row, list) for row in value):
        raise UsageError(f"{where} must be a list of rows (lists of numbers), like [[0, 1, 0]]")
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise UsageError(
            f"{where} is ragged: its rows have lengths {sorted(widths)}; every row needs the "
            "same length"
        )
    (width,) = widths
    if width == 0:
        raise UsageError(f"{where} has empty rows; give at least one number per row")
    for row in value:
        for item in row:
            # bool is an int subclass in Python: JSON true/false are not numbers here.
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise UsageError(f"{where} holds {_shown(item)}, which is not a number")
            # abs() of a long int is exact, and comparing an int with a float is exact too:
            # no float conversion (which overflows past 1e308) happens before the check.
            if isinstance(item, float) and not math.isfinite(item):
                raise UsageError(f"{where} holds {item}: every value must be finite")
            if abs(item) > MAX_KERNEL_VALUE:
                raise UsageError(
                    f"{where} holds {_shown(item)}, larger in size than {MAX_KERNEL_VALUE:g}: "
                    "scale the kernel down (features must stay finite)"
                )
    height = len(value)
    if height % 2 == 0 or width % 2 == 0:
        raise UsageError(
            f"{where} is {height}×{width}: kernel sides must be odd (1, 3, 5, …) so that it has "
            "a centre"
        )
    return frozen_kernel(value)


def _reject_constant(token: str) -> None:
    """json.loads hook: NaN, Infinity and -Infinity are not valid kernel values."""
    raise UsageError(f"{_PREFIX}kernel file holds {token}: every value must be a finite number")


def _parse_int(text: str) -> int:
    """json.loads hook: an integer, refused before conversion when it has too many digits."""
    if len(text) > MAX_INT_CHARS:
        raise UsageError(
            f"{_PREFIX}kernel file holds a number too long ({len(text)} digits, more than "
            f"{MAX_INT_CHARS}): {text[:20]}..."
        )
    return int(text)


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads hook: reject a key given twice in one object (JSON keeps the last silently)."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise UsageError(f"{_PREFIX}kernel file defines {key!r} twice; keep one definition")
        result[key] = value
    return result


def load_kernels(text: str) -> dict[str, np.ndarray]:
    """Read user kernels from the text of a ``--kernels`` JSON file.

    Parameters
    ----------
    text : str
        A JSON object ``{"name": [[row], [row], ...], ...}``.

    Returns
    -------
    dict of str to ndarray
        Name → read-only float64 ``(h, w)`` kernel, in file order.

    Raises
    ------
    UsageError
        One line starting ``--kernels: ``: when the text is not JSON, nested too deeply, not an
        object, or defines no kernel; when a name does not match ``[a-z0-9_]+``, clashes with a
        built-in kernel, rotation or preset name, or is given twice; when a kernel is empty,
        ragged, not made of numbers (``true``, ``"1"``, ``null`` are not), holds ``NaN`` or
        ``±Infinity``, an integer written with more than :data:`MAX_INT_CHARS` characters
        (refused before Python converts it), a value larger in size than
        :data:`MAX_KERNEL_VALUE`, or has an even side.

    Notes
    -----
    The size limit "at most P × P" depends on the patch and is checked by :func:`check_kernels`.
    :func:`read_kernel_file` reads a file with a size budget and calls this function.
    """
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_pairs,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{_PREFIX}kernel file is not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno})"
        ) from None
    except RecursionError:
        raise UsageError(f"{_PREFIX}kernel file is nested too deeply to be a kernel file") from None
    except ValueError as exc:  # a number Python cannot convert; the hooks catch the known ones
        raise UsageError(
            f"{_PREFIX}kernel file holds a number that cannot be read ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(
            f'{_PREFIX}kernel file must hold a JSON object {{"name": [[...], ...]}}, '
            f"not a {type(data).__name__}"
        )
    if not data:
        raise UsageError(
            f'{_PREFIX}kernel file defines no kernel: add one, like {{"edge": [[-1, 0, 1]]}}'
        )
    kernels: dict[str, np.ndarray] = {}
    for name, value in data.items():
        if not KERNEL_NAME.fullmatch(name):
            raise UsageError(
                f"{_PREFIX}kernel name {_shown_name(name)} is not valid: use lower-case letters, "
                "digits and underscores only ([a-z0-9_]+)"
            )
        if name in KERNELS or name in ROTATIONS or name in TRANSFORM_PRESETS:
            raise UsageError(
                f"{_PREFIX}kernel name {name!r} clashes with a built-in kernel, rotation or "
                "preset; rename it"
            )
        kernels[name] = _kernel_from_json(name, value)
    return kernels


def read_kernel_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``--kernels`` file: its size checked first, then its text by :func:`load_kernels`.

    Parameters
    ----------
    path : str or path-like
        A UTF-8 JSON file.

    Returns
    -------
    dict of str to ndarray
        As :func:`load_kernels`.

    Raises
    ------
    UsageError
        One line starting ``--kernels: ``: the file cannot be read (missing, a directory,
        permission denied), is not a regular file, is larger than :data:`MAX_KERNEL_FILE_BYTES`
        (judged by ``os.stat`` before a byte is read), is not UTF-8, or anything
        :func:`load_kernels` refuses.

    Notes
    -----
    The file is opened once and its size taken from that open file (``os.fstat``), and at most
    one byte more than the budget is read, so a file that grows after the check, or a FIFO
    that never ends, cannot make this read without bound. ``O_NONBLOCK`` keeps opening a FIFO
    from waiting for a writer.
    """
    shown = os.fsdecode(path)
    f, info = open_option_file(path, option=_PREFIX.rstrip(": "))
    with f:
        if info.st_size > MAX_KERNEL_FILE_BYTES:
            raise UsageError(
                f"{_PREFIX}{shown} is {info.st_size} bytes, more than the "
                f"{MAX_KERNEL_FILE_BYTES} bytes (1 MiB) a kernel file may have"
            )
        try:
            data = f.read(MAX_KERNEL_FILE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"{_PREFIX}cannot read {shown}: {exc.strerror or exc}") from None
    if len(data) > MAX_KERNEL_FILE_BYTES:
        raise UsageError(
            f"{_PREFIX}{shown} grew past the {MAX_KERNEL_FILE_BYTES} bytes (1 MiB) a kernel "
            "file may have"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{_PREFIX}{shown} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})"
        ) from None
    return load_kernels(text)


# --- --words ---------------------------------------------------------------------------


def parse_words(text: str) -> np.ndarray:
    """Parse ``--words``: rows separated by ``;``, numbers by ``,`` ("1,0,1,0;0,1,0,1").

    Returns
    -------
    (n, k) ndarray
        int64 when every number is a whole number written without a decimal point, else float64.
    """
    rows = [row.strip() for row in text.strip().split(";")]
    if not text.strip() or any(not row for row in rows):
        raise UsageError(f"--words needs rows separated by ';', e.g. '1,0,1,0;0,1,0,1': {text!r}")
    cells = [[c.strip() for c in row.split(",")] for row in rows]
    widths = {len(row) for row in cells}
    if len(widths) != 1:
        raise UsageError(
            f"--words rows must all have the same length; got lengths {sorted(widths)}"
        )
    try:
        if all(c.lstrip("+-").isdigit() for row in cells for c in row):
            words = np.array([[int(c) for c in row] for row in cells], dtype=np.int64)
        else:
            words = np.array([[float(c) for c in row] for row in cells], dtype=np.float64)
    except (ValueError, OverflowError):
        raise UsageError(f"--words must hold numbers only: {text!r}") from None
    if not np.all(np.isfinite(words)):
        raise UsageError(f"--words must hold finite numbers: {text!r}")
    return words


# --- --weights -------------------------------------------------------------------------

#: Largest ``--weights`` file read, whatever ``k``: checked with ``os.stat`` before reading.
MAX_WEIGHTS_FILE_BYTES = 1 << 30
#: Room for the zip structure and the ``.npy`` headers on top of the arrays' data, in bytes.
_NPZ_OVERHEAD = 1 << 20
#: Most members a ``--weights`` archive may list: it needs three; the zip reader keeps an
#: object per member in memory, so millions of tiny members must be refused before it reads them.
MAX_NPZ_MEMBERS = 256


class _NotNpz(Exception):
    """The file is not a readable zip of ``.npy`` arrays (turned into one UsageError)."""


def _npy_member(archive: zipfile.ZipFile, name: str, *, k: int, shown: str) -> np.ndarray:
    """Read array ``name`` of an ``.npz`` archive, checking its header before any data."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise UsageError(
            f"--weights: {shown} lacks {name} (needs W_Q, W_K, W_V as {name}.npy members)"
        ) from None
    # Declared sizes first: a few megabytes of deflate can claim gigabytes (a zip bomb).
    limit = _NPZ_OVERHEAD + k * MAX_WEIGHTS_DIM * 8
    if info.file_size > limit:
        raise UsageError(
            f"--weights: {name} in {shown} declares {info.file_size} bytes uncompressed, more "
            f"than a ({k} × d ≤ {MAX_WEIGHTS_DIM}) matrix of 8-byte numbers needs ({limit})"
        )
    if info.flag_bits & 0x1:
        raise UsageError(f"--weights: {name} in {shown} is encrypted")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise _NotNpz(f"{name} is an .npy file of version {version}, not 1.0 or 2.0")
        except ValueError as exc:
            raise _NotNpz(f"{name} is not an .npy array ({exc})") from None
        if dtype.hasobject:
            raise UsageError(
                f"--weights: {name} in {shown} holds Python objects; soartc never unpickles: "
                "save plain float arrays (numpy.savez with float64 arrays)"
            )
        if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "biuf":
            raise UsageError(
                f"--weights: {name} in {shown} holds {dtype}, not real numbers (integers or floats)"
            )
        if dtype.itemsize > 8:
            raise UsageError(
                f"--weights: {name} in {shown} holds {dtype}; use float64 or a smaller type"
            )
        if len(shape) != 2 or shape[0] != k or not 1 <= shape[1] <= MAX_WEIGHTS_DIM:
            raise UsageError(
                f"--weights: {name} in {shown} has shape {shape}; each of W_Q, W_K, W_V must be "
                f"(k, d) = ({k}, d) for these patches, with 1 ≤ d ≤ {MAX_WEIGHTS_DIM}"
            )
        count = shape[0] * shape[1]
        nbytes = count * dtype.itemsize
        if info.file_size < member.tell() + nbytes:
            raise UsageError(
                f"--weights: {name} in {shown} is truncated: its header needs {nbytes} bytes "
                f"of data, the member holds {max(info.file_size - member.tell(), 0)}"
            )
        data = member.read(nbytes)
    if len(data) != nbytes:
        raise _NotNpz(f"{name} ends early")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def _check_zip_directory(f: BinaryIO, size: int) -> None:
    """Refuse an archive whose central directory lists too many members, before reading it.

    Reads the end-of-central-directory record (the last 22 bytes, or up to 64 KiB more when the
    archive has a comment) and checks its member count and directory size. Raises
    :class:`_NotNpz` when there is no such record, :class:`UsageError` when it is too large.
    """
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise _NotNpz("no zip end-of-directory record")
    members, directory_size = struct.unpack_from("<HI", tail, at + 10)
    if members > MAX_NPZ_MEMBERS or directory_size > _NPZ_OVERHEAD:
        shown = "65535 or more" if members == 0xFFFF else str(members)
        raise UsageError(
            f"--weights: the archive lists {shown} members in a {directory_size}-byte "
            f"directory; a weights file needs W_Q, W_K, W_V (at most {MAX_NPZ_MEMBERS} members)"
        )
    f.seek(0)


def load_weights_file(path: str | os.PathLike[str], *, k: int) -> Weights:
    """Read ``--weights FILE``: an ``.npz`` with ``W_Q``, ``W_K``, ``W_V``, read as untrusted data.

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` file (a zip of ``.npy`` arrays, as ``numpy.savez`` or ``savez_compressed``
        write it).
    k : int
        Width of the inputs (``P²``, or ``3·P²`` with RGB): the row count every matrix needs.

    Returns
    -------
    Weights
        The three ``(k, d)`` matrices as float64.

    Raises
    ------
    UsageError
        One line starting ``--weights: ``, when the file is missing, not a regular file, larger
        than its budget (judged by ``os.fstat`` before reading), not an ``.npz`` (a ``.npy``
        renamed, text, a truncated or corrupt zip), lacks an array (naming which), declares
        more uncompressed bytes than a ``(k, d)`` matrix needs (a zip bomb), holds Python
        objects, non-numbers, a wrong shape or ``d > MAX_WEIGHTS_DIM``, or fails
        :func:`check_weights` (NaN, ±inf, weights so large that scores could overflow).

    Notes
    -----
    Nothing is unpickled and nothing is inflated before it is checked. The file may hold at most
    ``min(1 GiB, 3·k·MAX_WEIGHTS_DIM·8 + 1 MiB)`` bytes, and its zip directory (read from the
    end record first) at most :data:`MAX_NPZ_MEMBERS` members in 1 MiB. For each matrix the
    zip's declared uncompressed size is checked, then the ``.npy`` header
    (``numpy.lib.format.read_magic`` and ``read_array_header_1_0``/``2_0``, which parse the
    header as a literal, never as code): its dtype must be plain integers or floats and its
    shape ``(k, d)``; only then are exactly the ``k·d·itemsize`` bytes the header announces read
    (the zip reader never returns more than the declared size, and checks the CRC at the end of
    the member).
    """
    shown = os.fsdecode(path)
    f, info = open_option_file(path, option="--weights", missing_hint=" (or use random, identity)")
    with f:
        budget = min(MAX_WEIGHTS_FILE_BYTES, 3 * k * MAX_WEIGHTS_DIM * 8 + _NPZ_OVERHEAD)
        if info.st_size > budget:
            raise UsageError(
                f"--weights: {shown} is {info.st_size} bytes, more than the {budget} bytes three "
                f"({k} × d ≤ {MAX_WEIGHTS_DIM}) float64 matrices can need"
            )
        try:
            _check_zip_directory(f, info.st_size)
            with zipfile.ZipFile(f) as archive:
                arrays = {n: _npy_member(archive, n, k=k, shown=shown) for n in WEIGHT_NAMES}
        except _NotNpz as exc:
            raise UsageError(
                f"--weights: cannot read {shown}: not an .npz file (a zip of .npy arrays): {exc}"
            ) from None
        except (
            zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError, KeyError, UnicodeDecodeError,
        ) as exc:  # fmt: skip
            text = " ".join(str(exc).split())[:100] or type(exc).__name__
            raise UsageError(
                f"--weights: cannot read {shown}: not an .npz file (a zip of .npy arrays): {text}"
            ) from None
    return check_weights(arrays, k=k)
