"""One image → its SOARTC / SOART features: every transform × metric × patch, in one pass.

Pure and picklable: arrays in, arrays out, no I/O. The work is vectorised over all patches,
channels and transforms at once; the plain per-patch loop it must agree with lives in
``tests/oracle.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from soartc_cli.errors import InputError, UsageError
from soartc_cli.patches import patch_grid
from soartc_cli.rt import METRIC_PRESETS, _compare, check_metrics
from soartc_cli.transforms import KERNELS, ROTATIONS, TRANSFORM_PRESETS, check_kernels

__all__ = ["soartc_features"]

#: Pixels (all channels) of the patches handled in one pass: bounds the temporaries for large
#: native-size images, while a 224 × 224 × 3 image is one pass.
CHUNK_PIXELS = 1 << 18
#: Columns of one im2col block: small enough for the block to stay in the L2 cache.
BLOCK_COLUMNS = 4096


def _patches_last(image: np.ndarray, *, patch: int, first: int, stop: int) -> np.ndarray:
    """Patch rows ``first:stop`` of ``(C, H, W)`` ``image`` as a float64 ``(C, P, P, n)`` copy.

    ``out[c, u, v, (i - first) * cols + j] == image[c, i*P + u, j*P + v]``: patches run along
    the last axis, so that every per-patch product below is a contiguous, vectorised loop.
    """
    channels, _, width = image.shape
    cols = width // patch
    stride_c, stride_y, stride_x = image.strides
    view = np.lib.stride_tricks.as_strided(
        image[:, first * patch : stop * patch],
        shape=(channels, patch, patch, stop - first, cols),
        strides=(stride_c, stride_y, stride_x, patch * stride_y, patch * stride_x),
        writeable=False,
    )
    out = np.empty(view.shape)
    np.copyto(out, view)  # the one cast to float64
    return out.reshape(channels, patch, patch, -1)


def _correlate(patches: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """Correlate each patch with each kernel, "valid", inside the patch only.

    Parameters
    ----------
    patches : (C, P, P, n) ndarray of float64, C-contiguous
        Patches along the last axis (see :func:`_patches_last`).
    stack : (K, a, b) ndarray of float64
        Kernels of one shape, at most P × P.

    Returns
    -------
    (K, C, (P - a + 1) * (P - b + 1), n) ndarray of float64
        ``out[k, c, :, j]`` is ``scipy.signal.correlate2d(patch, stack[k], mode="valid")``
        of patch ``j`` of channel ``c``, flattened row-major.

    Notes
    -----
    ``(x ⋆ K)[u, v] = Σ_{i, j} x[u + i, v + j] K[i, j]``. Computed as float64 matrix products
    of the ``(K, a·b)`` stacked kernels with im2col blocks ``(a·b, columns)``; in the patches-last
    layout each block row is a run of contiguous memory, so building a block is a few long
    copies, and each block stays in cache for its product.
    """
    channels, size, _, count = patches.shape
    kernels, height, width = stack.shape
    out_h, out_w = size - height + 1, size - width + 1
    out = np.empty((kernels, channels, out_h, out_w * count))
    weights = stack.reshape(kernels, height * width)
    stride_c, stride_u, stride_v, stride_n = patches.strides
    # windows[i, j, c, u, v*count + n] = patches[c, u + i, v + j, n]  (a view)
    windows = np.lib.stride_tricks.as_strided(
        patches,
        shape=(height, width, channels, out_h, out_w * count),
        strides=(stride_u, stride_v, stride_c, stride_u, stride_n),
        writeable=False,
    )
    group = max(1, min(out_h, BLOCK_COLUMNS // (out_w * count)))
    buffer = np.empty(height * width * group * out_w * count)
    for c in range(channels):
        for u in range(0, out_h, group):
            rows = min(group, out_h - u)
            block = buffer[: height * width * rows * out_w * count]
            block = block.reshape(height, width, rows, out_w * count)
            np.copyto(block, windows[:, :, c, u : u + rows])
            target = out[:, c, u : u + rows].reshape(kernels, -1)  # a view: rows are contiguous
            np.matmul(weights, block.reshape(height * width, -1), out=target)
    return out.reshape(kernels, channels, out_h * out_w, count)


def soartc_features(
    image: np.ndarray,
    *,
    patch: int = 16,
    transforms: Sequence[str] = TRANSFORM_PRESETS["soartc"],
    datum: str = "datum",
    metrics: Sequence[str] = METRIC_PRESETS["soart3"],
    kernels: Mapping[str, np.ndarray] = KERNELS,
) -> np.ndarray:
    """SOARTC / SOART metrics of every patch of one image.

    Parameters
    ----------
    image : (H, W) or (C, H, W) ndarray
        Luma or channels of one image (float32 from the loader; any real dtype works).
        Computed in float64; never modified.
    patch : int, optional
        Patch side ``P``; must divide ``H`` and ``W``. Default 16.
    transforms : sequence of str, optional
        Transform names, in output order: kernels of ``kernels`` (SOARTC parts) and rotations
        of :data:`~soartc_cli.transforms.ROTATIONS` (SOART). Default: the ``soartc`` preset.
    datum : str, optional
        Name of the datum kernel ``D`` in ``kernels``. Default ``"datum"``.
    metrics : sequence of str, optional
        Metric names of :data:`~soartc_cli.rt.METRICS`, in output order. Default: ``soart3``.
    kernels : mapping of str to ndarray, optional
        Built-in and user kernels, merged by the caller. Default: the built-in bank.

    Returns
    -------
    (C, T, M, N) ndarray of float64
        Channel, transform (order given), metric (order given), patch (row-major,
        ``N = (H // P) * (W // P)``). A 2-D image gives ``C = 1``.

    Raises
    ------
    UsageError
        When the patch does not divide the image, a name is unknown, or the kernels do not fit
        (see :func:`~soartc_cli.transforms.check_kernels`).
    InputError
        When the image is not 2-D or 3-D, not real, or holds NaN or infinite values
        (or values so large that their sum overflows).

    Notes
    -----
    For patch ``x`` (P × P): a kernel transform ``K`` compares ``s = x ⋆ D`` with ``m = x ⋆ K``
    (2-D correlation, "valid", inside the patch); a rotation transform compares ``s = x`` with
    ``m = rot(x)``. Both are flattened row-major and compared by
    :func:`~soartc_cli.rt.soart_compare`. Each distinct kernel is correlated once, even when it
    is both the datum and a part.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.dtype.kind not in "biuf":
        raise InputError(
            f"image must be a real (H, W) or (C, H, W) array, got {image.dtype} {image.shape}"
        )
    if isinstance(transforms, str) or isinstance(metrics, str):
        raise UsageError(
            "transforms and metrics must be sequences of names; parse option strings with "
            "parse_transforms / parse_metrics"
        )
    transforms = tuple(transforms)
    metrics = check_metrics(metrics)
    check_kernels(datum=datum, transforms=transforms, kernels=kernels, patch=patch)
    if image.ndim == 2:
        image = image[None]
    rows, cols = patch_grid(image.shape[1:], patch=patch)
    channels = image.shape[0]

    parts = [t for t, name in enumerate(transforms) if name in kernels]
    turns = [t for t, name in enumerate(transforms) if name not in kernels]
    if parts:
        # Each distinct kernel once, the datum first: one product serves s and every m.
        names = list(dict.fromkeys([datum, *(transforms[t] for t in parts)]))
        stack = np.stack([np.asarray(kernels[name], dtype=np.float64) for name in names])
        part_rows = [names.index(transforms[t]) for t in parts]

    # Work in (M, T, C, N): each group's result drops into its transform columns.
    result = np.empty((len(metrics), len(transforms), channels, rows * cols))
    step = max(1, CHUNK_PIXELS // (channels * patch * patch * cols))
    for first in range(0, rows, step):
        stop = min(rows, first + step)
        done = slice(first * cols, stop * cols)
        x = _patches_last(image, patch=patch, first=first, stop=stop)  # (C, P, P, n)
        # NaN and ±inf propagate into the sum: one cheap pass instead of a boolean mask.
        if not np.isfinite(np.add.reduce(x, axis=None)):
            raise InputError("image holds NaN, infinite or overflowing values")
        if parts:
            corr = _correlate(x, stack)  # (kernels, C, L, n)
            if part_rows == list(range(1, len(parts) + 1)):
                measured = corr[1 : len(parts) + 1]  # a view: the usual case
            else:
                measured = corr[part_rows]
            result[:, parts, :, done] = _compare(corr[0], measured, metrics, axis=-2)
        if turns:
            count = x.shape[-1]
            standard = x.reshape(channels, patch * patch, count)
            measured = np.empty((len(turns), channels, patch, patch, count))
            patch_first = np.moveaxis(x, -1, 1)  # (C, n, P, P) view, as ROTATIONS expect
            for slot, t in enumerate(turns):
                turned = ROTATIONS[transforms[t]](patch_first)
                np.copyto(measured[slot], np.moveaxis(turned, 1, -1))
            measured = measured.reshape(len(turns), channels, patch * patch, count)
            result[:, turns, :, done] = _compare(standard, measured, metrics, axis=-2)

    return np.ascontiguousarray(result.transpose(2, 1, 0, 3))
