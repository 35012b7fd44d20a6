"""The SOART comparison of a measurement ``m`` with a standard ``s`` (SPEC §4).

Every function here is vectorised over any number of leading axes: one call compares all the
patches of an image under all of its transforms at once, in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soartc_cli.errors import UsageError
from soartc_cli.names import parse_names

__all__ = ["METRICS", "METRIC_PRESETS", "parse_metrics", "soart_compare"]

#: Metric names, in their canonical order (SPEC §4).
METRICS: tuple[str, ...] = ("beta", "delta", "distance", "noise", "vol", "shear")

#: Named groups of metrics accepted by ``--metrics``.
METRIC_PRESETS: dict[str, tuple[str, ...]] = {
    "soart3": ("beta", "delta", "distance"),
    "soart2022": ("beta", "vol", "shear"),
    "rt": ("beta", "noise"),
    "all": METRICS,
}

#: Thresholds of SPEC §4 under which a ratio falls back to its neutral value.
TINY = 1e-12


def parse_metrics(spec: str) -> tuple[str, ...]:
    """Parse a ``--metrics`` value into metric names.

    Parameters
    ----------
    spec : str
        Comma-separated metric names and presets (``soart3``, ``soart2022``, ``rt``, ``all``),
        e.g. ``"rt,vol"``. Spaces around names are ignored.

    Returns
    -------
    tuple of str
        Names in the order given, presets expanded, repeats dropped (the first occurrence wins).

    Raises
    ------
    UsageError
        On an empty value or item, or an unknown name; the message lists the valid names.
    """
    return parse_names(spec, option="metrics", presets=METRIC_PRESETS, valid=METRICS)


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Validate a sequence of metric names (a string is parsed by :func:`parse_metrics`).

    Returns the names as a tuple, in the order given (repeats kept); raises UsageError on an
    empty sequence or an unknown name.
    """
    if isinstance(metrics, str):
        return parse_metrics(metrics)
    metrics = tuple(metrics)
    if not metrics:
        raise UsageError("metrics must name at least one metric")
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise UsageError(
            f"unknown metrics {', '.join(map(repr, unknown))}; valid names: {', '.join(METRICS)}"
        )
    return metrics


def _dot(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Inner product over ``axis`` (-1 or -2), broadcasting the other axes; float64 sums."""
    if axis == -1:
        return np.einsum("...k,...k->...", a, b)
    return np.einsum("...kn,...kn->...n", a, b)


def _sum(a: np.ndarray, axis: int) -> np.ndarray:
    """Sum over ``axis`` (-1 or -2) as a product with a vector of ones: one BLAS pass."""
    ones = np.ones(a.shape[axis])
    return a @ ones if axis == -1 else ones @ a


def _as_float64(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim < 1 or array.shape[-1] < 1:
        raise UsageError(f"{name} must be a (..., k) array with k >= 1, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def soart_compare(
    s: np.ndarray, m: np.ndarray, *, metrics: Sequence[str] | str = METRICS
) -> np.ndarray:
    """Compare measurements ``m`` with standards ``s`` by the SOART metrics.

    Parameters
    ----------
    s : (..., k) ndarray
        Standards: each comparison uses one row of ``k`` values (flatten 2-D patches first).
        Any real dtype; computed in float64. Never modified.
    m : (..., k) ndarray
        Measurements, same ``k``; the leading axes of ``s`` and ``m`` broadcast, so one
        ``(n, k)`` standard serves a ``(t, n, k)`` stack of measurements.
    metrics : sequence of str or str, optional
        Names from :data:`METRICS`, in the output order (default: all six). A string is read
        as a comma-separated list with presets, like ``--metrics``.

    Returns
    -------
    (len(metrics), ...) ndarray of float64
        The metric axis first, then the broadcast leading axes of ``s`` and ``m``.

    Raises
    ------
    UsageError
        When a metric is unknown, the arrays are not real, or their shapes do not fit.

    Notes
    -----
    With ``⟨a, b⟩ = Σ_i a_i b_i`` over the last axis, for each row:

    .. math::

        β = ⟨s, m⟩ / ⟨s, s⟩ \\quad (β = 1 \\text{ when } ⟨s, s⟩ ≤ 10^{-12}), \\qquad e = m − β s

    - ``beta`` = β, the least-squares slope of ``m`` on ``s`` (RT's sensitivity Y1);
    - ``delta`` = Σm / Σs − β, 0 when \\|Σs\\| ≤ 1e-12;
    - ``distance`` = mean \\|e\\|;
    - ``noise`` = √(Σ e² / (k − 1)), RT's Y2, computed from ``e`` itself (never as
      ``S_T − L²/r``, which cancels catastrophically when ``m ≈ β s``); NaN when k = 1 (no
      degree of freedom left);
    - ``vol`` = mean \\|m\\| / mean \\|β s\\|, 1 when that denominator ≤ 1e-12;
    - ``shear`` = mean \\|m − β · vol · s\\|.

    Only the quantities the requested metrics need are computed.

    References
    ----------
    G. Taguchi, R. Jugulum, *The Mahalanobis-Taguchi Strategy*, Wiley, 2002 (the RT method).
    """
    metrics = check_metrics(metrics)
    s = _as_float64(s, "s")
    m = _as_float64(m, "m")
    if s.shape[-1] != m.shape[-1]:
        raise UsageError(
            f"s and m must have the same last axis k, got shapes {s.shape} and {m.shape}"
        )
    try:
        np.broadcast_shapes(s.shape, m.shape)
    except ValueError:
        raise UsageError(
            f"the leading axes of s and m do not broadcast: shapes {s.shape} and {m.shape}"
        ) from None
    return _compare(s, m, metrics)


def _drop(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` without the (negative) ``axis``."""
    index = len(shape) + axis
    return shape[:index] + shape[index + 1 :]


def _compare(
    s: np.ndarray,
    m: np.ndarray,
    metrics: tuple[str, ...],
    axis: int = -1,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`soart_compare` on validated float64 arrays, the values along ``axis``.

    ``axis`` is -1 (rows of ``k`` values, the public layout) or -2: ``(..., k, n)`` arrays,
    the layout of :mod:`soartc_cli.features`, where the patches run along the last, contiguous
    axis so that the broadcast products below vectorise over them. ``out``, when given, is a
    ``(len(metrics), ...batch)`` array (a view is fine) that receives the result.
    """
    wanted = set(metrics)
    ss = _dot(s, s, axis)
    sm = _dot(s, m, axis)
    sum_s = sum_m = None
    if "delta" in wanted:
        sum_s = _sum(s, axis)
        sum_m = _sum(m, axis)
    return _finish(s, m, metrics, axis, ss=ss, sm=sm, sum_s=sum_s, sum_m=sum_m, out=out)


def _finish(
    s: np.ndarray,
    m: np.ndarray,
    metrics: tuple[str, ...],
    axis: int,
    *,
    ss: np.ndarray,
    sm: np.ndarray,
    sum_s: np.ndarray | None,
    sum_m: np.ndarray | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The metrics from ⟨s, s⟩, ⟨s, m⟩ and (for ``delta``) Σs and Σm already computed.

    ``ss``, ``sm``, ``sum_s`` and ``sum_m`` are float64 sums over ``axis`` (``sum_*`` may be
    None when ``delta`` is not requested); the residual metrics still read ``s`` and ``m``.
    """
    k = s.shape[axis]
    batch = np.broadcast_shapes(_drop(s.shape, axis), _drop(m.shape, axis))
    wanted = set(metrics)
    if out is None:
        out = np.empty((len(metrics), *batch))
    views = [out[row, ...] for row in range(len(metrics))]
    rows = {name: views[row] for row, name in reversed(list(enumerate(metrics)))}

    # Statistics of s alone keep s's own (often smaller) shape and broadcast later.
    beta = rows.get("beta")
    if beta is None:
        beta = np.empty(batch)
    beta[...] = 1.0
    np.divide(sm, ss, out=beta, where=ss > TINY)

    if "delta" in wanted:
        delta = rows["delta"]
        usable = np.abs(sum_s) > TINY
        np.divide(sum_m, sum_s, out=delta, where=usable)
        np.subtract(delta, beta, out=delta)
        np.copyto(delta, 0.0, where=~usable)

    residual = None
    if wanted & {"distance", "noise"}:
        residual = np.multiply(np.expand_dims(beta, axis), s)
        np.subtract(m, residual, out=residual)
        if "noise" in wanted:
            if k > 1:
                np.sqrt(_dot(residual, residual, axis) / (k - 1), out=rows["noise"])
            else:
                rows["noise"][...] = np.nan
        if "distance" in wanted:
            np.abs(residual, out=residual)
            np.divide(_sum(residual, axis), k, out=rows["distance"])

    if wanted & {"vol", "shear"}:
        mean_abs_m = _sum(np.abs(m), axis) / k
        denominator = np.abs(beta) * (_sum(np.abs(s), axis) / k)
        vol = rows.get("vol")
        if vol is None:
            vol = np.empty(batch)
        vol[...] = 1.0
        np.divide(mean_abs_m, denominator, out=vol, where=denominator > TINY)
        if "shear" in wanted:
            scale = np.expand_dims(beta * vol, axis)
            if residual is None:
                residual = np.multiply(scale, s)
            else:
                np.multiply(scale, s, out=residual)
            np.subtract(m, residual, out=residual)
            np.abs(residual, out=residual)
            np.divide(_sum(residual, axis), k, out=rows["shear"])

    # A metric named twice is computed into its first row; copy it to the others.
    for row, name in enumerate(metrics):
        if rows[name] is not views[row]:
            views[row][...] = rows[name]
    return out
