"""Where ``s`` and ``m`` come from: the kernel bank, rotations and flips, user kernel files.

Two families of transforms turn one patch ``x`` into a standard ``s`` and a measurement ``m``
(SPEC §3):

* **kernel transforms** (SOARTC): ``s = x ⋆ D`` and ``m = x ⋆ K``, 2-D correlation inside the
  patch ("valid"), ``D`` the datum kernel and ``K`` a part kernel, both from :data:`KERNELS` or a
  user kernel file (:func:`load_kernels`);
* **rotation transforms** (SOART): ``s = x`` and ``m`` a rotation or flip of ``x``
  (:data:`ROTATIONS`).

The registries are plain dictionaries keyed by the names users type and CSV columns carry.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from soartc_cli.core.names import parse_names
from soartc_cli.errors import UsageError

__all__ = [
    "KERNELS",
    "ROTATIONS",
    "TRANSFORM_PRESETS",
    "check_kernels",
    "load_kernels",
    "merge_kernels",
    "parse_transforms",
    "read_kernel_file",
]


def _frozen(rows: list[list[int]]) -> np.ndarray:
    """A read-only float64 kernel from its rows."""
    kernel = np.array(rows, dtype=np.float64)
    kernel.flags.writeable = False
    return kernel


def _cross(row: bool, col: bool) -> list[list[int]]:
    """5×5 rows with 1 on the middle row and/or middle column."""
    return [[int((row and i == 2) or (col and j == 2)) for j in range(5)] for i in range(5)]


#: The built-in kernel bank of SPEC §3: 5×5, float64, read-only; rows top to bottom.
#: ``bend1``…``bend4`` and ``line1``, ``line2`` are the blog's convolution parts, the ``datum*``
#: kernels the standards.
KERNELS: dict[str, np.ndarray] = {
    "bend1": _frozen(
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    ),
    "bend2": _frozen(
        [
            [0, 0, 0, -1, -1],
            [0, 0, 0, -1, -1],
            [0, 0, 0, -1, -1],
            [-1, -1, -1, -1, -1],
            [-1, -1, -1, -1, -1],
        ]
    ),
    "bend3": _frozen(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    ),
    "bend4": _frozen(
        [
            [-1, -1, -1, -1, -1],
            [-1, -1, -1, -1, -1],
            [-1, -1, 0, 0, 0],
            [-1, -1, 0, 0, 0],
            [-1, -1, 0, 0, 0],
        ]
    ),
    "line1": _frozen([[-2 * (i == j) for j in range(5)] for i in range(5)]),
    "line2": _frozen([[2 * (i + j == 4) for j in range(5)] for i in range(5)]),
    "datum_h": _frozen(_cross(row=True, col=False)),
    "datum_v": _frozen(_cross(row=False, col=True)),
    "datum": _frozen(_cross(row=True, col=True)),
}


def _rot90(x: np.ndarray) -> np.ndarray:
    """``x`` rotated 90° counter-clockwise on its last two axes (a view)."""
    return np.rot90(x, 1, axes=(-2, -1))


def _rot180(x: np.ndarray) -> np.ndarray:
    """``x`` rotated 180° on its last two axes (a view)."""
    return np.rot90(x, 2, axes=(-2, -1))


def _rot270(x: np.ndarray) -> np.ndarray:
    """``x`` rotated 270° counter-clockwise on its last two axes (a view)."""
    return np.rot90(x, 3, axes=(-2, -1))


def _flip_lr(x: np.ndarray) -> np.ndarray:
    """``x`` mirrored left-right (columns reversed) on its last two axes (a view)."""
    return np.flip(x, axis=-1)


def _flip_ud(x: np.ndarray) -> np.ndarray:
    """``x`` mirrored up-down (rows reversed) on its last two axes (a view)."""
    return np.flip(x, axis=-2)


#: Rotation transforms: name → function ``(..., P, P) -> (..., P, P)`` returning a view.
#: ``rot90``/``rot180``/``rot270`` are ``numpy.rot90(x, k)`` with k = 1, 2, 3
#: (counter-clockwise), ``flip_lr``/``flip_ud`` are ``numpy.fliplr``/``numpy.flipud``, all on the
#: last two axes.
ROTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rot90": _rot90,
    "rot180": _rot180,
    "rot270": _rot270,
    "flip_lr": _flip_lr,
    "flip_ud": _flip_ud,
}

_SOARTC = ("bend1", "bend2", "bend3", "bend4", "line1", "line2")
_SOART = ("rot90", "rot180", "rot270")

#: Named groups of transforms accepted by ``--transforms`` (SPEC §3).
TRANSFORM_PRESETS: dict[str, tuple[str, ...]] = {
    "soartc": _SOARTC,
    "soart": _SOART,
    "all": (*_SOARTC, *_SOART, "flip_lr", "flip_ud"),
}

_NAME = re.compile(r"[a-z0-9_]+")


def merge_kernels(user: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The built-in bank followed by user kernels, as one mapping for the other functions.

    Parameters
    ----------
    user : mapping of str to ndarray, optional
        Kernels from :func:`load_kernels` (names already checked not to clash).

    Returns
    -------
    dict of str to ndarray
        A new dict: :data:`KERNELS` then ``user``.
    """
    merged = dict(KERNELS)
    for name, kernel in (user or {}).items():
        if name in merged or name in ROTATIONS or name in TRANSFORM_PRESETS:
            raise UsageError(f"kernel name {name!r} clashes with a built-in name; rename it")
        merged[name] = kernel
    return merged


def parse_transforms(spec: str, *, kernels: Mapping[str, np.ndarray] = KERNELS) -> tuple[str, ...]:
    """Parse a ``--transforms`` value into transform names.

    Parameters
    ----------
    spec : str
        Comma-separated kernel names, rotation names and presets (``soartc``, ``soart``,
        ``all``), e.g. ``"soartc,rot90"``. Spaces around names are ignored.
    kernels : mapping of str to ndarray, optional
        The kernels that may be named (built-in and user kernels merged).

    Returns
    -------
    tuple of str
        Names in the order given, presets expanded, repeats dropped (the first occurrence wins).

    Raises
    ------
    UsageError
        On an empty value or item, or names that are neither a kernel, a rotation nor a preset;
        the message lists the valid names.
    """
    valid = [*kernels, *(name for name in ROTATIONS if name not in kernels)]
    return parse_names(spec, option="transforms", presets=TRANSFORM_PRESETS, valid=valid)


#: Largest ``|value|`` a kernel file may hold. Features stay finite far beyond it: pixels are in
#: [0, 1], a kernel file of at most 1 MiB holds fewer than 2¹⁹ numbers (each needs a digit and a
#: separator), so ``|s|, |m| < 2¹⁹·10⁶ < 10¹²``; a patch has fewer than 2²⁷ positions (the
#: 10⁸-pixel limit), so the RT sums of squares stay below ``2²⁷·10²⁴ < 10³³`` and even their
#: products below 10⁶⁶, some 240 orders of magnitude short of float64's 1.8·10³⁰⁸. No kernel of
#: image features needs larger values: scale such a kernel down (β and Δ scale with it).
MAX_KERNEL_VALUE = 1e6
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
    return _frozen(value)


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
        if not _NAME.fullmatch(name):
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
    from soartc_cli.imaging.files import open_option_file

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


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(side) for side in shape)


def check_kernels(
    *,
    datum: str,
    transforms: Sequence[str],
    kernels: Mapping[str, np.ndarray],
    patch: int,
) -> None:
    """Check that a datum, a list of transforms and a patch size fit together.

    Parameters
    ----------
    datum : str
        Name of the datum kernel ``D``; must be a kernel of ``kernels``.
    transforms : sequence of str
        Transform names: kernels of ``kernels`` or rotations of :data:`ROTATIONS`.
    kernels : mapping of str to ndarray
        Built-in and user kernels, merged.
    patch : int
        Patch side ``P``.

    Raises
    ------
    UsageError
        When ``datum`` is not a kernel; a transform is unknown; a used kernel is not a 2-D
        array of finite numbers of size at most :data:`MAX_KERNEL_VALUE`; a part kernel's shape
        differs from the datum's; or, when any kernel transform is selected, the datum is larger
        than ``P × P``.

    Notes
    -----
    The datum's shape is checked against the patch only when a kernel transform is selected:
    ``--transforms soart`` works with any patch size, whatever ``--datum`` says.
    """
    if isinstance(patch, bool):
        raise UsageError(f"patch must be a positive integer, got {patch!r}")
    patch = operator.index(patch)
    if patch < 1:
        raise UsageError(f"patch must be a positive integer, got {patch}")
    if datum not in kernels:
        hint = " (a rotation cannot be the datum)" if datum in ROTATIONS else ""
        raise UsageError(
            f"datum {datum!r} is not a kernel{hint}; choose one of: {', '.join(kernels)}"
        )
    if isinstance(transforms, str) or not len(transforms):
        raise UsageError("transforms must be a non-empty sequence of transform names")
    unknown = [name for name in transforms if name not in kernels and name not in ROTATIONS]
    if unknown:
        raise UsageError(
            f"unknown transforms {', '.join(map(repr, unknown))}; valid names: "
            f"{', '.join([*kernels, *ROTATIONS])}"
        )
    parts = [name for name in transforms if name in kernels]
    for name in dict.fromkeys([datum, *parts]):
        if kernels[name] is KERNELS.get(name):
            continue  # the read-only built-in bank is known to be valid
        kernel = np.asarray(kernels[name])
        if kernel.ndim != 2 or kernel.size == 0 or not np.issubdtype(kernel.dtype, np.number):
            raise UsageError(f"kernel {name!r} must be a non-empty 2-D array of numbers")
        if not np.isfinite(kernel).all():
            raise UsageError(f"kernel {name!r} holds non-finite values")
        if np.abs(kernel).max() > MAX_KERNEL_VALUE:
            raise UsageError(
                f"kernel {name!r} holds values larger in size than {MAX_KERNEL_VALUE:g}: scale "
                "it down (features must stay finite)"
            )
    if not parts:
        return
    shape = np.shape(kernels[datum])
    for name in parts:
        if np.shape(kernels[name]) != shape:
            raise UsageError(
                f"kernel {name!r} is {_shape_text(np.shape(kernels[name]))} but the datum "
                f"{datum!r} is {_shape_text(shape)}: the datum and every part must have the same "
                "shape (choose a datum of the parts' size)"
            )
    if shape[0] > patch or shape[1] > patch:
        raise UsageError(
            f"kernels are {_shape_text(shape)}, larger than the {patch}×{patch} patch: use a "
            "larger patch or smaller kernels"
        )
