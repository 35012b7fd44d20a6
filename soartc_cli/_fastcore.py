"""Optional compiled core of :func:`soartc_cli.features.soartc_features` (numba, ``soartc[fast]``).

The numpy core correlates all patches at once with matrix products over every kernel tap and
then reduces large temporaries; this core visits one patch at a time, keeps it (and its
correlations) in L1 cache, and visits only the non-zero taps of each kernel (the built-in 5×5
kernels have 9–16 of 25). It writes the same ``(C, T, M, N)`` array; the numbers agree with the
numpy core to rounding (the tests hold them to 1e-12 relative).

It is off unless a caller turns it on with :func:`enable`, which imports numba and loads the
kernel from numba's on-disk cache (measured on this project's machine: 0.4–1.0 s in all, +126 MiB
of resident memory; a cold compile, the first time ever or after an edit of this file, 2.4–6 s).
That only pays on large batches (:func:`worth_it`); the runner decides, in the parent process,
before workers fork, so that each worker inherits the compiled kernel. Without numba,
:func:`enable` returns False and the numpy core runs; the numpy core stays the default and the
reference.

The two cores round differently (sums in another order): values that are themselves
cancellations (``delta`` of a rotation or of a near-identity kernel, ``distance`` of a nearly flat
patch) can differ in their last printed digit — 62 of 353,200 values of a wide CSV of 100 photos
at the default 7 digits.

This module imports nothing heavy itself: importing it without numba installed is free.
"""

from __future__ import annotations

import numpy as np

from soartc_cli.errors import InputError

__all__ = ["MIN_IMAGES", "available", "disable", "enable", "enabled", "features", "worth_it"]

#: Images each worker must handle before the compiled core pays for its start. Measured on this
#: project's machine (2,000 JPEGs of 640×480, README, Speed): the start costs 0.42 s more than
#: the numpy core's (numba imported, kernel loaded from its cache; paid once, in the parent) and
#: the core saves 0.68 ms per image, so one worker breaks even at ≈ 620 images; 1,000 leaves a
#: margin. (A cold compile, once per installation, costs 2.4–6 s more.)
MIN_IMAGES = 1000
#: Codes of the metrics, in :data:`soartc_cli.rt.METRICS` order.
_METRIC_CODES = {"beta": 0, "delta": 1, "distance": 2, "noise": 3, "vol": 4, "shear": 5}
#: Codes of the rotations of :data:`soartc_cli.transforms.ROTATIONS`.
_TURN_CODES = {"rot90": 0, "rot180": 1, "rot270": 2, "flip_lr": 3, "flip_ud": 4}
#: Threshold of SPEC §4 (``soartc_cli.rt.TINY``).
_TINY = 1e-12

#: Whether :func:`soartc_cli.features.soartc_features` dispatches here.
enabled = False
_kernel = None  # the compiled function, once enable() has built it
_tables: tuple = (None, None)  # (plan, its tap tables): the last plan seen


def available() -> bool:
    """Whether numba can be imported (imports it: 0.3–0.4 s the first time).

    Returns
    -------
    bool
        False when numba is missing or broken.
    """
    try:
        import numba  # noqa: F401
    except Exception:  # ImportError, or a numba that does not match this numpy
        return False
    return True


def worth_it(images: int, *, workers: int = 1) -> bool:
    """Whether a run over ``images`` images should turn the compiled core on.

    Parameters
    ----------
    images : int
        Images of the run.
    workers : int, optional
        Worker processes sharing them. The parent pays the start once, before it forks, while
        each worker saves time on its own share only: the wall time gained is about
        ``images / workers × saving − start``.

    Returns
    -------
    bool
        True when each worker gets at least :data:`MIN_IMAGES` images.
    """
    return images >= max(1, workers) * MIN_IMAGES


def enable() -> bool:
    """Import numba, build the kernel (numba's on-disk cache when it can) and turn the core on.

    Call it in the parent before workers fork: they inherit the compiled kernel.

    Returns
    -------
    bool
        True when the compiled core is on; False (numpy core kept) when numba is unavailable
        or the kernel cannot be built.
    """
    global enabled, _kernel
    if _kernel is None:
        try:
            _kernel = _build()
            probe = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
            _run(_kernel, probe[None], _probe_tables(), patch=8)  # compile / load from cache
        except Exception:
            _kernel = None
            return False
    enabled = True
    return True


def disable() -> None:
    """Turn the compiled core off (the numpy core runs); the kernel stays built."""
    global enabled
    enabled = False


def _probe_tables() -> tuple:
    """Tap tables of a tiny problem, to compile the kernel: datum and one part, every metric."""
    datum = np.zeros((3, 3))
    datum[1, :] = datum[:, 1] = 1.0
    part = np.arange(9.0).reshape(3, 3)
    return _taps(
        np.stack([datum.ravel(), part.ravel()]),
        (3, 3),
        kernel_of=np.array([1, -1], dtype=np.int64),
        turn_of=np.array([-1, 0], dtype=np.int64),
        metrics=tuple(_METRIC_CODES),
    )


def _taps(weights, shape, *, kernel_of, turn_of, metrics) -> tuple:
    """The non-zero taps of every kernel, flattened, and the per-transform codes."""
    height, width = shape
    starts = [0]
    rows, cols, values = [], [], []
    for kernel in weights:
        for index in np.flatnonzero(kernel):
            rows.append(index // width)
            cols.append(index % width)
            values.append(kernel[index])
        starts.append(len(values))
    return (
        np.array(starts, dtype=np.int64),
        np.array(rows, dtype=np.int64),
        np.array(cols, dtype=np.int64),
        np.array(values, dtype=np.float64),
        height,
        width,
        kernel_of,
        turn_of,
        np.array([_METRIC_CODES[name] for name in metrics], dtype=np.int64),
    )


def _plan_tables(plan, transforms: tuple[str, ...]) -> tuple:
    """Tap tables of a :class:`soartc_cli.features._Plan` (cached for the last plan)."""
    global _tables
    if _tables[0] is plan:
        return _tables[1]
    count = len(transforms)
    kernel_of = np.full(count, -1, dtype=np.int64)
    turn_of = np.full(count, -1, dtype=np.int64)
    for t, row in zip(plan.parts, plan.part_rows, strict=True):
        kernel_of[t] = row
    for t in plan.turns:
        turn_of[t] = _TURN_CODES[transforms[t]]
    if plan.weights is None:
        weights, shape = np.zeros((1, 1)), (1, 1)
    else:
        weights, shape = plan.weights, plan.shape
    tables = _taps(weights, shape, kernel_of=kernel_of, turn_of=turn_of, metrics=plan.metrics)
    _tables = (plan, tables)
    return tables


def features(image: np.ndarray, plan, *, patch: int, transforms: tuple[str, ...]) -> np.ndarray:
    """:func:`~soartc_cli.features.soartc_features` by the compiled core.

    Parameters
    ----------
    image : (C, H, W) ndarray
        Checked by the caller: real, 3-D, ``patch`` divides ``H`` and ``W``.
    plan : soartc_cli.features._Plan
        The checked plan of the call.
    patch : int
        Patch side ``P``.
    transforms : tuple of str
        Transform names (the rotations are looked up by name).

    Returns
    -------
    (C, T, M, N) ndarray of float64
        As :func:`~soartc_cli.features.soartc_features`.

    Raises
    ------
    InputError
        When the image holds NaN, infinite or overflowing values (checked on the same chunks
        of patch rows as the numpy core).
    """
    if _kernel is None:
        raise RuntimeError("the compiled core is not built: call enable() first")
    return _run(_kernel, image, _plan_tables(plan, transforms), patch=patch)


def _run(kernel, image: np.ndarray, tables: tuple, *, patch: int) -> np.ndarray:
    """Check the values, call the compiled kernel, return the ``(C, T, M, N)`` result."""
    from soartc_cli.features import CHUNK_PIXELS

    if image.dtype != np.float32:
        image = image.astype(np.float64, copy=False)  # what the numpy core computes in
    image = np.ascontiguousarray(image)
    channels, height, width = image.shape
    rows, cols = height // patch, width // patch
    step = max(1, CHUNK_PIXELS // (channels * patch * patch * cols))
    for first in range(0, rows, step):
        band = image[:, first * patch : min(rows, first + step) * patch]
        if not np.isfinite(np.add.reduce(band, axis=None, dtype=np.float64)):
            raise InputError("image holds NaN, infinite or overflowing values")
    starts, tap_rows, tap_cols, values, a, b, kernel_of, turn_of, codes = tables
    result = np.empty((channels, len(kernel_of), len(codes), rows * cols))
    kernel(
        image, patch, starts, tap_rows, tap_cols, values, a, b, kernel_of, turn_of, codes, result
    )
    return result


def _build():
    """Compile the per-patch kernel with numba; the compiled code is cached on disk when it can.

    The functions below are plain Python until then: this replaces the helpers in this
    module's namespace by their compiled versions (so that the compiled ``_patches`` calls
    compiled code) and returns the compiled ``_patches``.
    """
    import numba

    options = {"nogil": True, "boundscheck": False, "error_model": "numpy"}
    namespace = globals()
    compiled = {}
    for cache in (True, False):  # no cache where no folder is writable
        try:
            for name, reassociate in _COMPILED:
                # Sums may be reassociated (so that they vectorise); nothing else of fast-math:
                # NaN and inf keep their meaning.
                extra = {"fastmath": {"reassoc"}} if reassociate else {}
                compiled[name] = numba.njit(cache=cache, **options, **extra)(_PYTHON[name])
            break
        except RuntimeError:
            continue
    namespace.update(compiled)
    return compiled["_patches"]


def _correlate(x, patch, starts, tap_rows, tap_cols, values, k, out_h, out_w, out):
    """``out = x ⋆ kernel k`` ("valid"), from kernel k's non-zero taps, in rows of ``patch``.

    ``out[u * patch + v]`` for ``v < out_w``; the other ``patch - out_w`` values of each row
    are set to 0, so that sums over all ``out_h * patch`` values are the sums over the
    output. Rows of the patch and of the output share the stride ``patch``, so each tap adds
    one contiguous run of ``x`` to the whole output; four taps are added per pass over the
    output, which vectorises and loads and stores the output a quarter as often.
    """
    span = (out_h - 1) * patch + out_w
    first, last = starts[k], starts[k + 1]
    for i in range(out_h * patch):
        out[i] = 0.0
    tap = first
    while tap + 4 <= last:
        w0, w1, w2, w3 = values[tap], values[tap + 1], values[tap + 2], values[tap + 3]
        o0 = tap_rows[tap] * patch + tap_cols[tap]
        o1 = tap_rows[tap + 1] * patch + tap_cols[tap + 1]
        o2 = tap_rows[tap + 2] * patch + tap_cols[tap + 2]
        o3 = tap_rows[tap + 3] * patch + tap_cols[tap + 3]
        x0 = x[o0 : o0 + span]
        x1 = x[o1 : o1 + span]
        x2 = x[o2 : o2 + span]
        x3 = x[o3 : o3 + span]
        for i in range(span):
            out[i] += (w0 * x0[i] + w1 * x1[i]) + (w2 * x2[i] + w3 * x3[i])
        tap += 4
    while tap < last:
        weight = values[tap]
        offset = tap_rows[tap] * patch + tap_cols[tap]
        src = x[offset : offset + span]
        for i in range(span):
            out[i] += weight * src[i]
        tap += 1
    for u in range(out_h - 1):
        for v in range(out_w, patch):
            out[u * patch + v] = 0.0


def _turn(x, patch, code, out):
    """``out`` = rotation ``code`` of the ``patch × patch`` patch ``x`` (row-major)."""
    last = patch - 1
    for u in range(patch):
        for v in range(patch):
            if code == 0:  # rot90: out[u, v] = x[v, P-1-u]
                value = x[v * patch + last - u]
            elif code == 1:  # rot180
                value = x[(last - u) * patch + last - v]
            elif code == 2:  # rot270: out[u, v] = x[P-1-v, u]
                value = x[(last - v) * patch + u]
            elif code == 3:  # flip_lr
                value = x[u * patch + last - v]
            else:  # flip_ud
                value = x[(last - u) * patch + v]
            out[u * patch + v] = value


def _compare(s, m, size, k, ss, sum_s, abs_s, codes, result, c, t, n):
    """The metrics ``codes`` of one (s, m) pair into ``result[c, t, :, n]`` (SPEC §4).

    ``s`` and ``m`` hold ``k`` values and ``size - k`` zeros (in the same places) each;
    ``ss = ⟨s, s⟩``, ``sum_s = Σs`` and ``abs_s = Σ|s|`` are given. With ``e = m − β s``:
    β = ⟨s, m⟩ / ⟨s, s⟩ (1 when ⟨s, s⟩ ≤ 1e-12); δ = Σm / Σs − β (0 when |Σs| ≤ 1e-12);
    distance = Σ|e| / k; noise = √(Σe² / (k − 1)) (NaN when k = 1); vol = (Σ|m| / k) /
    (|β| Σ|s| / k) (1 when that denominator ≤ 1e-12); shear = Σ|m − β vol s| / k. Only the
    passes the requested metrics need are made.
    """
    sm = 0.0
    sum_m = 0.0
    abs_m = 0.0
    for i in range(size):
        sm += s[i] * m[i]
        sum_m += m[i]
        abs_m += abs(m[i])
    beta = sm / ss if ss > _TINY else 1.0
    need_e = False
    need_shear = False
    for q in range(codes.shape[0]):
        if codes[q] == 2 or codes[q] == 3:
            need_e = True
        elif codes[q] == 5:
            need_shear = True
    abs_e = 0.0
    sq_e = 0.0
    if need_e:
        for i in range(size):
            e = m[i] - beta * s[i]
            abs_e += abs(e)
            sq_e += e * e
    vol = 1.0
    denominator = abs(beta) * (abs_s / k)
    if denominator > _TINY:
        vol = (abs_m / k) / denominator
    abs_shear = 0.0
    if need_shear:
        scale = beta * vol
        for i in range(size):
            abs_shear += abs(m[i] - scale * s[i])
    for q in range(codes.shape[0]):
        code = codes[q]
        if code == 0:
            value = beta
        elif code == 1:
            value = sum_m / sum_s - beta if abs(sum_s) > _TINY else 0.0
        elif code == 2:
            value = abs_e / k
        elif code == 3:
            value = np.sqrt(sq_e / (k - 1)) if k > 1 else np.nan
        elif code == 4:
            value = vol
        else:
            value = abs_shear / k
        result[c, t, q, n] = value


def _stats(s, k):
    """⟨s, s⟩, Σs and Σ|s| of the first ``k`` values of ``s``."""
    ss = 0.0
    total = 0.0
    absolute = 0.0
    for i in range(k):
        ss += s[i] * s[i]
        total += s[i]
        absolute += abs(s[i])
    return ss, total, absolute


def _patches(
    image, patch, starts, tap_rows, tap_cols, values, a, b, kernel_of, turn_of, codes, result
):
    """Every metric of every transform of every patch of ``image`` into ``result``.

    One patch at a time: its values are copied to ``x`` (float64), ``s = x ⋆ D`` once, then for
    each transform ``t``, ``m`` is ``x ⋆ K`` (``kernel_of[t] > 0``), ``s`` itself (the datum as
    a part, 0) or rotation ``turn_of[t]`` of ``x`` (``kernel_of[t] = -1``; ``s = x``), and
    ``result[c, t, :, n]`` gets the metrics ``codes``. ``x``, ``s`` and ``m`` stay in L1 cache.
    """
    channels, height, width = image.shape
    rows, cols = height // patch, width // patch
    out_h, out_w = patch - a + 1, patch - b + 1
    k_kernel = out_h * out_w
    wide = out_h * patch  # values of s and m, in rows of ``patch`` (see _correlate)
    k_turn = patch * patch
    has_kernels = False
    has_turns = False
    for t in range(kernel_of.shape[0]):
        if kernel_of[t] >= 0:
            has_kernels = True
        else:
            has_turns = True
    x = np.empty(patch * patch)
    s = np.empty(wide)
    m = np.empty(k_turn)
    for c in range(channels):
        for i in range(rows):
            for j in range(cols):
                n = i * cols + j
                for u in range(patch):
                    src = image[c, i * patch + u, j * patch : (j + 1) * patch]
                    dst = x[u * patch : (u + 1) * patch]
                    for v in range(patch):
                        dst[v] = src[v]
                ss = sum_s = abs_s = 0.0
                if has_kernels:
                    _correlate(x, patch, starts, tap_rows, tap_cols, values, 0, out_h, out_w, s)
                    ss, sum_s, abs_s = _stats(s, wide)
                xx = sum_x = abs_x = 0.0
                if has_turns:
                    xx, sum_x, abs_x = _stats(x, k_turn)
                for t in range(kernel_of.shape[0]):
                    k = kernel_of[t]
                    if k == 0:
                        _compare(s, s, wide, k_kernel, ss, sum_s, abs_s, codes, result, c, t, n)
                    elif k > 0:
                        _correlate(x, patch, starts, tap_rows, tap_cols, values, k, out_h, out_w, m)
                        _compare(s, m, wide, k_kernel, ss, sum_s, abs_s, codes, result, c, t, n)
                    else:
                        _turn(x, patch, turn_of[t], m)
                        _compare(x, m, k_turn, k_turn, xx, sum_x, abs_x, codes, result, c, t, n)


#: The functions compiled by :func:`_build`, and whether their sums may be reassociated.
_COMPILED = (
    ("_correlate", False),
    ("_turn", False),
    ("_compare", True),
    ("_stats", True),
    ("_patches", False),
)
#: Their plain Python versions.
_PYTHON = {name: globals()[name] for name, _ in _COMPILED}
