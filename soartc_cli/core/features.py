"""One image → its SOARTC / SOART features: every transform × metric × patch, in one pass.

Pure and picklable: arrays in, arrays out, no I/O. The work is vectorised over all patches,
channels and transforms at once; the plain per-patch loop it must agree with lives in
``tests/oracle.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from soartc_cli.core.metrics import METRIC_PRESETS, check_metrics, compare_prepared
from soartc_cli.core.patches import patch_grid, patch_view
from soartc_cli.core.transforms import KERNELS, ROTATIONS, TRANSFORM_PRESETS, check_kernels
from soartc_cli.errors import InputError

__all__ = ["soartc_features"]

#: Pixels (all channels) of the patches handled in one pass: bounds the temporaries for large
#: native-size images, while a 224 × 224 × 3 image is one pass.
CHUNK_PIXELS = 1 << 18
#: Columns of one matrix product at most: bounds the blocks read by one product on large chunks.
BLOCK_COLUMNS = 8192
#: Plans kept by :func:`_plan` (one per distinct set of arguments; the CLI uses one).
PLAN_CACHE_SIZE = 16


class _Plan(NamedTuple):
    """What :func:`soartc_features` derives from its arguments alone, checked and cached."""

    metrics: tuple[str, ...]
    parts: list[int]  # transform columns computed by kernels
    turns: list[int]  # transform columns computed by rotations
    weights: np.ndarray | None  # (K, a * b) distinct kernels, the datum first, read-only
    shape: tuple[int, int]  # (a, b) of the kernels
    part_rows: list[int]  # row of ``weights`` of each part
    part_slice: slice | None  # ``part_rows`` as a slice when they are consecutive
    parts_slice: slice | None  # ``parts`` as a slice when they are consecutive
    turns_slice: slice | None  # ``turns`` as a slice when they are consecutive


_PLANS: dict[tuple, _Plan] = {}


def _as_slice(indices: list[int]) -> slice | None:
    """``indices`` as a slice when they are consecutive and increasing, else None."""
    if indices and indices == list(range(indices[0], indices[0] + len(indices))):
        return slice(indices[0], indices[0] + len(indices))
    return None


def _plan_key(patch, transforms, datum, metrics, kernels) -> tuple:
    """A hashable key that determines the plan: names, and the values of every used kernel."""
    used = [name for name in transforms if name in kernels]
    arrays = []
    for name in dict.fromkeys([datum, *used]):
        if kernels[name] is KERNELS.get(name):
            arrays.append((name, "built-in"))  # read-only: its values cannot change
            continue
        kernel = np.asarray(kernels[name])
        if kernel.dtype.kind not in "biuf":
            raise TypeError  # not cached: check_kernels reports it
        arrays.append((name, kernel.dtype.str, kernel.shape, kernel.tobytes()))
    membership = tuple(name in kernels for name in transforms)
    return (type(patch), patch, transforms, membership, datum, metrics, tuple(arrays))


def _plan(patch, transforms, datum, metrics, kernels) -> _Plan:
    """Check the arguments and derive the plan; cached on names and kernel values.

    A cache hit skips the checks: the key holds everything they depend on (the patch and its
    type, the names, which transforms are kernels, and the dtype, shape and bytes of every
    kernel used), so a kernel that changes under the same name is a different key. Metrics are
    looked up by name at every call (:func:`~soartc_cli.core.metrics.compare_prepared`), so a metric
    unregistered or registered again at run time needs no new plan.
    """
    try:
        key = _plan_key(patch, transforms, datum, metrics, kernels)
        plan = _PLANS.get(key)
    except Exception:  # unhashable or odd arguments: the checks below report them
        key = plan = None
    if plan is not None:
        return plan
    metrics = check_metrics(metrics)
    check_kernels(datum=datum, transforms=transforms, kernels=kernels, patch=patch)
    parts = [t for t, name in enumerate(transforms) if name in kernels]
    turns = [t for t, name in enumerate(transforms) if name not in kernels]
    weights, shape, part_rows = None, (0, 0), []
    if parts:
        # Each distinct kernel once, the datum first: one product serves s and every m.
        names = list(dict.fromkeys([datum, *(transforms[t] for t in parts)]))
        stack = np.stack([np.asarray(kernels[name], dtype=np.float64) for name in names])
        shape = stack.shape[1:]
        weights = np.ascontiguousarray(stack.reshape(len(names), -1))
        weights.flags.writeable = False
        part_rows = [names.index(transforms[t]) for t in parts]
    plan = _Plan(
        metrics=metrics,
        parts=parts,
        turns=turns,
        weights=weights,
        shape=shape,
        part_rows=part_rows,
        part_slice=_as_slice(part_rows),
        parts_slice=_as_slice(parts),
        turns_slice=_as_slice(turns),
    )
    if key is not None:
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.pop(next(iter(_PLANS)), None)  # the oldest
        _PLANS[key] = plan
    return plan


def _patches_last(image: np.ndarray, *, patch: int, first: int, stop: int) -> np.ndarray:
    """Patch rows ``first:stop`` of ``(C, H, W)`` ``image`` as a float64 ``(C, P, P, n)`` copy.

    ``out[c, u, v, (i - first) * cols + j] == image[c, i*P + u, j*P + v]``: patches run along
    the last axis, so that every per-patch product below is a contiguous, vectorised loop.
    """
    # (C, rows, cols, P, P) view of the patch rows → (C, P, P, rows, cols): still a view.
    view = patch_view(image[:, first * patch : stop * patch], patch=patch).transpose(0, 3, 4, 1, 2)
    out = np.empty(view.shape)
    np.copyto(out, view)  # the one cast to float64
    return out.reshape(*view.shape[:3], -1)


def _correlate(patches: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Correlate each patch with each kernel, "valid", inside the patch only.

    Parameters
    ----------
    patches : (C, P, P, n) ndarray of float64, C-contiguous
        Patches along the last axis (see :func:`_patches_last`).
    weights : (K, a * b) ndarray of float64
        Kernels of one shape ``(a, b)``, at most P × P, flattened row-major.
    shape : (int, int)
        The kernels' shape ``(a, b)``.

    Returns
    -------
    (K, C, (P - a + 1) * (P - b + 1), n) ndarray of float64
        ``out[k, c, :, j]`` is ``scipy.signal.correlate2d(patch, kernel_k, mode="valid")``
        of patch ``j`` of channel ``c``, flattened row-major.

    Notes
    -----
    ``(x ⋆ K)[u, v] = Σ_{i, j} x[u + i, v + j] K[i, j]``. One copy builds the column shifts
    ``shifted[c, r, j, v·n + p] = patches[c, r, v + j, p]`` (``b`` shifted copies of the
    patches: each row ``(r, j)`` is one contiguous run of the patches-last layout). Then the
    ``a · b`` im2col rows of output row ``u``, ``(i, j) → x[u + i, v + j]``, are rows
    ``(u + i) · b + j`` of ``shifted[c]``: one contiguous ``(a·b, (P − b + 1)·n)`` block, used
    in place by one float64 matrix product per output row (all rows in one batched call) —
    no im2col copy at all.
    """
    channels, size, _, count = patches.shape
    height, width = shape
    kernels = weights.shape[0]
    out_h, out_w = size - height + 1, size - width + 1
    run = out_w * count
    out = np.empty((kernels, channels, out_h, run))
    stride_c, stride_u, stride_v, stride_n = patches.strides
    view = np.lib.stride_tricks.as_strided(
        patches,
        shape=(channels, size, width, run),
        strides=(stride_c, stride_u, stride_v, stride_n),
        writeable=False,
    )
    shifted = np.empty(view.shape)
    np.copyto(shifted, view)
    taps = height * width
    _, _, stride_j, stride_run = shifted.strides
    for c in range(channels):
        # Output row u reads rows u·b … u·b + a·b − 1 of shifted[c]: as one (out_h, taps, run)
        # strided view, every row's product is one batched matmul call.
        blocks = np.lib.stride_tricks.as_strided(
            shifted[c],
            shape=(out_h, taps, run),
            strides=(width * stride_j, stride_j, stride_run),
            writeable=False,
        )
        target = out[:, c].transpose(1, 0, 2)  # (out_h, kernels, run) view of the result
        for start in range(0, run, BLOCK_COLUMNS):
            stop = min(run, start + BLOCK_COLUMNS)
            np.matmul(weights, blocks[:, :, start:stop], out=target[:, :, start:stop])
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
    transforms : sequence of str or str, optional
        Transform names, in output order: kernels of ``kernels`` (SOARTC parts) and rotations
        of :data:`~soartc_cli.core.transforms.ROTATIONS` (SOART). Default: the ``soartc`` preset. A
        string is read as ``--transforms`` is: names and presets, comma-separated (``"soart"``).
    datum : str, optional
        Name of the datum kernel ``D`` in ``kernels``. Default ``"datum"``.
    metrics : sequence of str or str, optional
        Metric names of :data:`~soartc_cli.core.metrics.METRICS_REGISTRY`, in output order. Default:
        ``soart3``. A string is read as ``--metrics`` is (``"rt"``, ``"beta,vol"``).
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
        (see :func:`~soartc_cli.core.transforms.check_kernels`).
    InputError
        When the image is not 2-D or 3-D, not real, or holds NaN or infinite values
        (or values so large that their sum overflows).

    Notes
    -----
    For patch ``x`` (P × P): a kernel transform ``K`` compares ``s = x ⋆ D`` with ``m = x ⋆ K``
    (2-D correlation, "valid", inside the patch); a rotation transform compares ``s = x`` with
    ``m = rot(x)``. Both are flattened row-major and compared by
    :func:`~soartc_cli.core.metrics.soart_compare`. Each distinct kernel is correlated once,
    even when it is both the datum and a part.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.dtype.kind not in "biuf":
        raise InputError(
            f"image must be a real (H, W) or (C, H, W) array, got {image.dtype} {image.shape}"
        )
    if isinstance(transforms, str):  # "soart", "bend1,rot90": as --transforms reads them
        from soartc_cli.core.transforms import parse_transforms

        transforms = parse_transforms(transforms, kernels=kernels)
    if isinstance(metrics, str):  # "rt", "beta,vol": as --metrics reads them
        from soartc_cli.core.metrics import parse_metrics

        metrics = parse_metrics(metrics)
    plan = _plan(patch, tuple(transforms), datum, tuple(metrics), kernels)
    metrics, parts, turns = plan.metrics, plan.parts, plan.turns
    if image.ndim == 2:
        image = image[None]
    rows, cols = patch_grid(image.shape[1:], patch=patch)
    channels = image.shape[0]

    # The result in its final (C, T, M, N) layout, written through an (M, T, C, N) view.
    result = np.empty((channels, len(transforms), len(metrics), rows * cols))
    by_metric = result.transpose(2, 1, 0, 3)
    step = max(1, CHUNK_PIXELS // (channels * patch * patch * cols))
    for first in range(0, rows, step):
        stop = min(rows, first + step)
        done = slice(first * cols, stop * cols)
        x = _patches_last(image, patch=patch, first=first, stop=stop)  # (C, P, P, n)
        # NaN and ±inf propagate into the sum: one cheap pass instead of a boolean mask.
        if not np.isfinite(np.add.reduce(x, axis=None)):
            raise InputError("image holds NaN, infinite or overflowing values")
        if parts:
            _kernel_parts(x, plan, by_metric, done)
        if turns:
            count = x.shape[-1]
            standard = x.reshape(channels, patch * patch, count)
            measured = np.empty((len(turns), channels, patch, patch, count))
            patch_first = np.moveaxis(x, -1, 1)  # (C, n, P, P) view, as ROTATIONS expect
            for slot, t in enumerate(turns):
                turned = ROTATIONS[transforms[t]](patch_first)
                np.copyto(measured[slot], np.moveaxis(turned, 1, -1))
            measured = measured.reshape(len(turns), channels, patch * patch, count)
            if plan.turns_slice is not None:
                target = by_metric[:, plan.turns_slice, :, done]
                compare_prepared(standard, measured, metrics=metrics, axis=-2, out=target)
            else:
                by_metric[:, turns, :, done] = compare_prepared(
                    standard, measured, metrics=metrics, axis=-2
                )

    return result


def _kernel_parts(x: np.ndarray, plan: _Plan, by_metric: np.ndarray, done: slice) -> None:
    """The metrics of the kernel parts of patches ``x`` into ``by_metric[:, parts, :, done]``.

    ``⟨s, s⟩`` and every ``⟨s, m⟩`` come from one pass over all the correlations;
    :func:`~soartc_cli.core.metrics.compare_prepared` does the rest.
    """
    corr = _correlate(x, plan.weights, plan.shape)  # (kernels, C, L, n)
    standard = corr[0]
    rows = plan.part_slice if plan.part_slice is not None else plan.part_rows
    measured = corr[rows]  # a view in the usual case (consecutive rows)
    dots = np.einsum("kcln,cln->kcn", corr, standard)  # ⟨s, s⟩ and every ⟨s, m⟩
    stats = {"axis": -2, "ss": dots[0], "sm": dots[rows]}
    if plan.parts_slice is not None:
        target = by_metric[:, plan.parts_slice, :, done]
        compare_prepared(standard, measured, metrics=plan.metrics, out=target, **stats)
    else:
        by_metric[:, plan.parts, :, done] = compare_prepared(
            standard, measured, metrics=plan.metrics, **stats
        )
