"""Cut an image into non-overlapping ViT-style patches, name them, and put them back together.

A patch grid splits an ``(H, W)`` image into ``rows × cols`` blocks of ``P × P`` pixels, numbered
row-major: patch ``n`` sits at block row ``n // cols`` and block column ``n % cols`` and is named
``rIIcJJ`` (SPEC §2.6).
"""

from __future__ import annotations

import operator

import numpy as np

from soartc_cli.errors import UsageError

__all__ = ["from_patches", "patch_grid", "patch_names", "patch_view", "to_patches"]


def _check_patch(patch: object) -> int:
    """Return ``patch`` as an int, or raise UsageError if it is not a positive integer."""
    if isinstance(patch, bool):
        raise UsageError(f"patch must be a positive integer, got {patch!r}")
    try:
        value = operator.index(patch)
    except TypeError:
        raise UsageError(f"patch must be a positive integer, got {patch!r}") from None
    if value < 1:
        raise UsageError(f"patch must be a positive integer, got {value}")
    return value


def patch_grid(shape: tuple[int, int], *, patch: int) -> tuple[int, int]:
    """Number of patch rows and columns of an image.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``, the image height and width in pixels.
    patch : int
        Side ``P`` of the square patches, in pixels.

    Returns
    -------
    rows, cols : int
        ``H // P`` and ``W // P``.

    Raises
    ------
    UsageError
        When ``patch`` is not a positive integer, or does not divide both ``H`` and ``W``.
    """
    patch = _check_patch(patch)
    if len(shape) != 2:
        raise UsageError(f"shape must be (height, width), got {tuple(shape)!r}")
    height, width = (operator.index(side) for side in shape)
    for name, side in (("height", height), ("width", width)):
        if side < patch or side % patch:
            raise UsageError(
                f"patch must divide the image {name}: {side} is not a multiple of {patch} "
                f"(choose a size that is a multiple of the patch, or another patch)"
            )
    return height // patch, width // patch


def patch_names(rows: int, cols: int) -> list[str]:
    """Names ``rIIcJJ`` of the patches of a ``rows × cols`` grid, row-major.

    Parameters
    ----------
    rows, cols : int
        Number of patch rows and columns (each at least 1).

    Returns
    -------
    list of str
        ``rows * cols`` names. Both indices use the same number of digits,
        ``max(2, len(str(max(rows, cols) - 1)))``: ``r00c00`` … ``r13c13`` for a 14 × 14 grid,
        ``r000c000`` … ``r100c100`` for 101 × 101.
    """
    rows, cols = operator.index(rows), operator.index(cols)
    if rows < 1 or cols < 1:
        raise UsageError(f"rows and cols must be at least 1, got rows={rows}, cols={cols}")
    width = max(2, len(str(max(rows, cols) - 1)))
    return [f"r{i:0{width}d}c{j:0{width}d}" for i in range(rows) for j in range(cols)]


def patch_view(image: np.ndarray, *, patch: int) -> np.ndarray:
    """The patches of an image as a 4-D view, never a copy.

    Parameters
    ----------
    image : (..., H, W) ndarray
        Image or stack of images; ``P`` must divide ``H`` and ``W``.
    patch : int
        Side ``P`` of the square patches.

    Returns
    -------
    (..., rows, cols, P, P) ndarray
        A strided view on ``image``: ``out[..., i, j, u, v] == image[..., i*P + u, j*P + v]``.
        Writing through it writes into ``image``.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise UsageError(f"image must have at least 2 dimensions, got shape {image.shape}")
    rows, cols = patch_grid(image.shape[-2:], patch=patch)
    # Splitting an axis in two never needs a copy, whatever the strides: H → (rows, P) and
    # W → (cols, P) is a view, and swapping two axes is one too.
    split = image.reshape(*image.shape[:-2], rows, patch, cols, patch)
    return split.swapaxes(-3, -2)


def to_patches(image: np.ndarray, *, patch: int) -> np.ndarray:
    """Cut an image into its patches, row-major.

    Parameters
    ----------
    image : (H, W) or (C, H, W) ndarray
        One image, or ``C`` channels of it.
    patch : int
        Side ``P`` of the square patches; must divide ``H`` and ``W``.

    Returns
    -------
    (N, P, P) or (C, N, P, P) ndarray
        ``N = (H // P) * (W // P)`` patches, same dtype as ``image``:
        ``out[..., i * cols + j, u, v] == image[..., i*P + u, j*P + v]``. A view on ``image``
        when the memory layout allows it (one patch row or column, or ``P == 1``), else a copy;
        :func:`patch_view` always gives a 4-D view.

    Raises
    ------
    UsageError
        When ``image`` is not 2-D or 3-D, or ``patch`` does not divide its sides.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise UsageError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    view = patch_view(image, patch=patch)
    return view.reshape(*image.shape[:-2], -1, patch, patch)


def from_patches(patches: np.ndarray, *, rows: int, cols: int) -> np.ndarray:
    """Put patches back together: the inverse of :func:`to_patches`.

    Parameters
    ----------
    patches : (..., N, P, P) ndarray
        ``N = rows * cols`` square patches, row-major.
    rows, cols : int
        Shape of the patch grid.

    Returns
    -------
    (..., rows * P, cols * P) ndarray
        A new array (same dtype as ``patches``).

    Raises
    ------
    UsageError
        When the patches are not square or their number is not ``rows * cols``.
    """
    patches = np.asarray(patches)
    rows, cols = operator.index(rows), operator.index(cols)
    if patches.ndim < 3 or patches.shape[-1] != patches.shape[-2]:
        raise UsageError(f"patches must be (..., N, P, P), got shape {patches.shape}")
    if rows < 1 or cols < 1 or patches.shape[-3] != rows * cols:
        raise UsageError(
            f"rows * cols must equal the number of patches: {rows} * {cols} != {patches.shape[-3]}"
        )
    lead = patches.shape[:-3]
    size = patches.shape[-1]
    grid = patches.reshape(*lead, rows, cols, size, size)
    grid = np.moveaxis(grid, -3, -2)  # (..., rows, P, cols, P)
    image = grid.reshape(*lead, rows * size, cols * size)
    # reshape copies except in degenerate layouts; the result never aliases the input.
    return image.copy() if np.shares_memory(image, patches) else image
