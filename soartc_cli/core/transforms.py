"""Where ``s`` and ``m`` come from: the kernel bank, rotations and flips, user kernel files.

Two families of transforms turn one patch ``x`` into a standard ``s`` and a measurement ``m``
(SPEC §3):

* **kernel transforms** (SOARTC): ``s = x ⋆ D`` and ``m = x ⋆ K``, 2-D correlation inside the
  patch ("valid"), ``D`` the datum kernel and ``K`` a part kernel, both from :data:`KERNELS` or a
  user kernel file (:func:`soartc_cli.settings.optionfiles.load_kernels`);
* **rotation transforms** (SOART): ``s = x`` and ``m`` a rotation or flip of ``x``
  (:data:`ROTATIONS`).

The registries are plain dictionaries keyed by the names users type and CSV columns carry.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from soartc_cli.core.names import parse_names
from soartc_cli.errors import UsageError

__all__ = [
    "KERNELS",
    "KERNEL_NAME",
    "ROTATIONS",
    "TRANSFORM_PRESETS",
    "check_kernels",
    "frozen_kernel",
    "merge_kernels",
    "parse_transforms",
]


def frozen_kernel(rows: list[list[int]]) -> np.ndarray:
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
    "bend1": frozen_kernel(
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]
    ),
    "bend2": frozen_kernel(
        [
            [0, 0, 0, -1, -1],
            [0, 0, 0, -1, -1],
            [0, 0, 0, -1, -1],
            [-1, -1, -1, -1, -1],
            [-1, -1, -1, -1, -1],
        ]
    ),
    "bend3": frozen_kernel(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    ),
    "bend4": frozen_kernel(
        [
            [-1, -1, -1, -1, -1],
            [-1, -1, -1, -1, -1],
            [-1, -1, 0, 0, 0],
            [-1, -1, 0, 0, 0],
            [-1, -1, 0, 0, 0],
        ]
    ),
    "line1": frozen_kernel([[-2 * (i == j) for j in range(5)] for i in range(5)]),
    "line2": frozen_kernel([[2 * (i + j == 4) for j in range(5)] for i in range(5)]),
    "datum_h": frozen_kernel(_cross(row=True, col=False)),
    "datum_v": frozen_kernel(_cross(row=False, col=True)),
    "datum": frozen_kernel(_cross(row=True, col=True)),
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

#: The names a user kernel may have (SPEC §3).
KERNEL_NAME = re.compile(r"[a-z0-9_]+")


#: Largest ``|value|`` a kernel file may hold. Features stay finite far beyond it: pixels are in
#: [0, 1], a kernel file of at most 1 MiB holds fewer than 2¹⁹ numbers (each needs a digit and a
#: separator), so ``|s|, |m| < 2¹⁹·10⁶ < 10¹²``; a patch has fewer than 2²⁷ positions (the
#: 10⁸-pixel limit), so the RT sums of squares stay below ``2²⁷·10²⁴ < 10³³`` and even their
#: products below 10⁶⁶, some 240 orders of magnitude short of float64's 1.8·10³⁰⁸. No kernel of
#: image features needs larger values: scale such a kernel down (β and Δ scale with it).
MAX_KERNEL_VALUE = 1e6


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
