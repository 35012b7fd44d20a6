"""The SOART comparison of a measurement ``m`` with a standard ``s`` (SPEC §4), and its metrics.

Every metric is one function of a :class:`Shared` context, its formula in its docstring,
registered by name in :data:`METRICS_REGISTRY` (with a one-line formula and its neutral value) by
:func:`register_metric`. The context computes what several metrics share (⟨s, s⟩, ⟨s, m⟩, β, the
residual ``e = m − β s``, …) once, on first use, vectorised over any number of leading axes: one
call compares all the patches of an image under all of its transforms at once, in float64.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from soartc_cli.core.names import parse_names
from soartc_cli.errors import UsageError

__all__ = [
    "METRICS",
    "METRICS_REGISTRY",
    "METRIC_PRESETS",
    "TINY",
    "Metric",
    "Shared",
    "check_metrics",
    "compare_prepared",
    "parse_metrics",
    "register_metric",
    "soart_compare",
    "unregister_metric",
]

#: Thresholds of SPEC §4 under which a ratio falls back to its neutral value.
TINY = 1e-12

#: Named groups of metrics accepted by ``--metrics`` (``all``: :data:`METRICS`, set below).
METRIC_PRESETS: dict[str, tuple[str, ...]] = {
    "soart3": ("beta", "delta", "distance"),
    "soart2022": ("beta", "vol", "shear"),
    "rt": ("beta", "noise"),
    "all": (),
}

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes
    ----------
    name : str
        The name users type in ``--metrics`` and CSV columns carry (``[a-z][a-z0-9_]*``).
    func : callable
        ``func(shared) -> ndarray``: the metric of every comparison of a :class:`Shared` context
        at once, as float64 values broadcastable to ``shared.batch``. Never modifies ``s``,
        ``m`` or the shared quantities it reads.
    formula : str
        The formula on one line, as ``soartc transforms`` lists it.
    neutral : float
        Its value for an all-zero patch (``s = m = 0``), the value it falls back to.
    """

    name: str
    func: Callable[[Shared], np.ndarray]
    formula: str
    neutral: float


#: Every metric by the name users type, built-ins first in their canonical order, then the ones
#: registered at run time. Filled by :func:`register_metric` only.
METRICS_REGISTRY: dict[str, Metric] = {}


def register_metric(
    name: str, *, formula: str, neutral: float
) -> Callable[[Callable[[Shared], np.ndarray]], Callable[[Shared], np.ndarray]]:
    """Register the decorated function as the metric ``name``.

    Parameters
    ----------
    name : str
        A new name of lower-case letters, digits and ``_``, starting with a letter; not a preset.
    formula : str
        The formula on one line (for ``soartc transforms``); the full one goes in the
        function's docstring.
    neutral : float
        The metric's value for an all-zero patch.

    Returns
    -------
    callable
        A decorator that registers ``func(shared) -> ndarray`` and returns it unchanged.

    Raises
    ------
    UsageError
        When the name is malformed, a preset or already registered, or the formula is not one
        non-empty line.

    Examples
    --------
    >>> @register_metric("sum_ratio", formula="Σm / Σs (1 when |Σs| ≤ 1e-12)", neutral=1.0)
    ... def sum_ratio(shared):
    ...     '''Σm / Σs, 1 when |Σs| ≤ 1e-12.'''
    ...     usable = np.abs(shared.sum_s) > TINY
    ...     out = np.ones(shared.batch)
    ...     return np.divide(shared.sum_m, shared.sum_s, out=out, where=usable)
    >>> soart_compare([1.0, 2.0], [2.0, 4.0], metrics=["sum_ratio"])
    array([2.])
    >>> _ = unregister_metric("sum_ratio")
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(
            f"metric name {name!r} must be lower-case letters, digits and _, starting with a letter"
        )
    if name in METRIC_PRESETS:
        raise UsageError(f"metric name {name!r} is a preset of --metrics: choose another name")
    if name in METRICS_REGISTRY:
        raise UsageError(f"metric {name!r} is already registered")
    if not isinstance(formula, str) or not formula.strip() or "\n" in formula:
        raise UsageError(f"the formula of metric {name!r} must be one non-empty line")
    if isinstance(neutral, bool) or not isinstance(neutral, (int, float, np.floating)):
        raise UsageError(f"the neutral value of metric {name!r} must be a number, got {neutral!r}")

    def register(func: Callable[[Shared], np.ndarray]) -> Callable[[Shared], np.ndarray]:
        if not callable(func):
            raise UsageError(f"metric {name!r} must be a function of a Shared context")
        if name in METRICS_REGISTRY:  # registered since the decorator was made
            raise UsageError(f"metric {name!r} is already registered")
        METRICS_REGISTRY[name] = Metric(name, func, formula, float(neutral))
        return func

    return register


def unregister_metric(name: str) -> Metric:
    """Remove the metric ``name`` registered at run time and return it.

    Raises
    ------
    UsageError
        When ``name`` is not registered, or is one of the built-in :data:`METRICS`.
    """
    if name in METRICS:
        raise UsageError(f"metric {name!r} is built in and cannot be unregistered")
    if name not in METRICS_REGISTRY:
        raise UsageError(f"metric {name!r} is not registered")
    return METRICS_REGISTRY.pop(name)


def _unknown(names: Sequence[str]) -> UsageError:
    listed = ", ".join(repr(name) for name in dict.fromkeys(names))
    return UsageError(f"unknown metrics {listed}; valid names: {', '.join(METRICS_REGISTRY)}")


def parse_metrics(spec: str) -> tuple[str, ...]:
    """Parse a ``--metrics`` value into metric names.

    Parameters
    ----------
    spec : str
        Comma-separated metric names (any of :data:`METRICS_REGISTRY`, read at call time) and
        presets (``soart3``, ``soart2022``, ``rt``, ``all``), e.g. ``"rt,vol"``. Spaces around
        names are ignored.

    Returns
    -------
    tuple of str
        The metric names, as :func:`~soartc_cli.core.names.parse_names` reads them (presets
        expanded, the first of repeats kept); UsageError for an empty or unknown name.
    """
    return parse_names(
        spec, option="metrics", presets=METRIC_PRESETS, valid=tuple(METRICS_REGISTRY)
    )


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Validate a sequence of metric names (a string is parsed by :func:`parse_metrics`).

    Returns the names as a tuple, in the order given (repeats kept); raises UsageError on an
    empty sequence or a name that is not in :data:`METRICS_REGISTRY`.
    """
    if isinstance(metrics, str):
        return parse_metrics(metrics)
    metrics = tuple(metrics)
    if not metrics:
        raise UsageError("metrics must name at least one metric")
    unknown = [name for name in metrics if name not in METRICS_REGISTRY]
    if unknown:
        raise _unknown(unknown)
    return metrics


def _dot(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Inner product over ``axis`` (-1 or -2), broadcasting the other axes; float64 sums."""
    if axis == -1:
        return np.einsum("...k,...k->...", a, b)
    return np.einsum("...kn,...kn->...n", a, b)


def _sum(a: np.ndarray, axis: int, ones: np.ndarray | None = None) -> np.ndarray:
    """Sum over ``axis`` (-1 or -2) as a product with a vector of ones: one BLAS pass."""
    if ones is None:
        ones = np.ones(a.shape[axis])
    return a @ ones if axis == -1 else ones @ a


def _drop(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    """``shape`` without the (negative) ``axis``."""
    index = len(shape) + axis
    return shape[:index] + shape[index + 1 :]


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of two shapes known to broadcast (``np.broadcast_shapes`` costs ~10 µs)."""
    if a == b:
        return a
    if len(a) < len(b):
        a, b = b, a
    b = (1,) * (len(a) - len(b)) + b
    return tuple(x if y == 1 else y for x, y in zip(a, b, strict=True))


class _cached:  # like functools.cached_property, at a fraction of its cost
    """A computed attribute stored in the instance on first read, then read like any other."""

    def __init__(self, func: Callable[[Shared], object]) -> None:
        self.func = func
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, shared: Shared | None, owner: type | None = None) -> object:
        if shared is None:
            return self
        value = shared.__dict__[self.name] = self.func(shared)
        return value


class _Lend:
    """The context manager of :meth:`Shared.scratch`."""

    __slots__ = ("buffer", "free")

    def __init__(self, buffer: np.ndarray, free: list[np.ndarray]) -> None:
        self.buffer = buffer
        self.free = free

    def __enter__(self) -> np.ndarray:
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        self.free.append(self.buffer)


class Shared:
    """What the metrics of one batch of comparisons share, each computed once, on first use.

    Parameters
    ----------
    s, m : ndarray of float64
        Standards and measurements, their ``k`` values along ``axis``; the other axes
        broadcast (not checked here). Never modified.
    axis : {-1, -2}, optional
        -1: ``(..., k)`` rows (the public layout); -2: ``(..., k, n)``, the layout of
        :mod:`soartc_cli.core.features`, where the patches run along the last, contiguous axis.
    ss, sm : ndarray, optional
        ⟨s, s⟩ and ⟨s, m⟩ when the caller already has them (features gets both from one pass
        over all its correlations).

    Notes
    -----
    Sums run over the ``k`` values of each comparison, ``⟨a, b⟩ = Σ_i a_i b_i``. Read as
    attributes, each computed on first read:

    - ``ss`` = ⟨s, s⟩, ``sm`` = ⟨s, m⟩, ``sum_s`` = Σs, ``sum_m`` = Σm;
    - ``mean_abs_s`` = mean \\|s\\|, ``mean_abs_m`` = mean \\|m\\|;
    - ``beta`` = β, the value of the metric ``beta``;
    - ``residual`` = ``e = m − β s`` and ``abs_residual`` = \\|e\\|, full-shape arrays.

    Values over the comparisons have :attr:`batch` shape, or broadcast to it (those of ``s``
    alone keep ``s``'s smaller shape). :meth:`value` gives any registered metric, computed
    once; :meth:`scratch` lends a work buffer of the full shape. Nothing read here may be
    modified in place.
    """

    def __init__(
        self,
        s: np.ndarray,
        m: np.ndarray,
        *,
        axis: int = -1,
        ss: np.ndarray | None = None,
        sm: np.ndarray | None = None,
    ) -> None:
        if axis not in (-1, -2):
            raise UsageError(f"axis must be -1 or -2, got {axis!r}")
        self.s = s
        self.m = m
        self.axis = axis
        #: The number of values ``k`` of each comparison.
        self.k = s.shape[axis]
        #: The shape of one metric's values: the broadcast axes of ``s`` and ``m`` but ``axis``.
        self.batch = _broadcast(_drop(s.shape, axis), _drop(m.shape, axis))
        for name, known in (("ss", ss), ("sm", sm)):
            if known is not None:
                self.__dict__[name] = known
        self._values: dict[str, np.ndarray] = {}
        self._busy: set[str] = set()
        self._free: list[np.ndarray] = []

    def has(self, name: str) -> bool:
        """Whether the shared quantity ``name`` (e.g. ``"abs_residual"``) is computed already."""
        return name in self.__dict__

    def dot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """⟨a, b⟩ over the values of each comparison, float64 sums."""
        return _dot(a, b, self.axis)

    def total(self, a: np.ndarray) -> np.ndarray:
        """Σ a over the values of each comparison (one BLAS pass)."""
        return _sum(a, self.axis, self._ones)

    def expand(self, values: np.ndarray) -> np.ndarray:
        """One value per comparison as a view that broadcasts against ``s`` and ``m``."""
        return values[..., None] if self.axis == -1 else values[..., None, :]

    def scratch(self, *, reuse_residual: bool = False) -> _Lend:
        """Lend a float64 work buffer of the full broadcast shape of ``s`` and ``m``.

        Use as ``with shared.scratch() as work:``. Its contents are undefined; it returns to
        the context at the end of the block, so that the next metric reuses it instead of
        allocating. With ``reuse_residual``, when no buffer is free, the buffer of a computed
        ``abs_residual`` or ``residual`` is taken over (that quantity is forgotten, and
        computed again if read later): one buffer less, for a metric that holds neither
        across the block.
        """
        if self._free:
            buffer = self._free.pop()
        elif reuse_residual and (self.has("abs_residual") or self.has("residual")):
            buffer = self.__dict__.pop("abs_residual" if self.has("abs_residual") else "residual")
        else:
            buffer = np.empty(self.full_shape)
        return _Lend(buffer, self._free)

    @_cached
    def full_shape(self) -> tuple[int, ...]:
        """The full broadcast shape of ``s`` and ``m``."""
        return _broadcast(self.s.shape, self.m.shape)

    @_cached
    def _ones(self) -> np.ndarray:
        return np.ones(self.k)

    @_cached
    def ss(self) -> np.ndarray:
        """⟨s, s⟩."""
        return _dot(self.s, self.s, self.axis)

    @_cached
    def sm(self) -> np.ndarray:
        """⟨s, m⟩."""
        return _dot(self.s, self.m, self.axis)

    @_cached
    def sum_s(self) -> np.ndarray:
        """Σs."""
        return self.total(self.s)

    @_cached
    def sum_m(self) -> np.ndarray:
        """Σm."""
        return self.total(self.m)

    @_cached
    def mean_abs_s(self) -> np.ndarray:
        """mean \\|s\\|."""
        return self.total(np.abs(self.s)) / self.k

    @_cached
    def mean_abs_m(self) -> np.ndarray:
        """mean \\|m\\|."""
        return self.total(np.abs(self.m)) / self.k

    @property
    def beta(self) -> np.ndarray:
        """β, the value of the metric ``beta``."""
        return self.value("beta")

    def _new_residual(self) -> np.ndarray:
        """``m − β s`` in a new array."""
        residual = np.multiply(self.expand(self.beta), self.s)
        np.subtract(self.m, residual, out=residual)
        return residual

    @_cached
    def residual(self) -> np.ndarray:
        """``e = m − β s``, the part of ``m`` the standard does not explain (full shape)."""
        return self._new_residual()

    @_cached
    def abs_residual(self) -> np.ndarray:
        """\\|e\\| = \\|m − β s\\| (full shape), made in place when ``e`` itself is not computed."""
        if self.has("residual"):
            return np.abs(self.residual)
        residual = self._new_residual()
        return np.abs(residual, out=residual)

    def value(self, name: str) -> np.ndarray:
        """The metric ``name`` of every comparison, computed on first use.

        Raises
        ------
        UsageError
            When ``name`` is not registered, or a metric needs its own value.
        """
        try:
            return self._values[name]
        except KeyError:
            pass
        metric = METRICS_REGISTRY.get(name)
        if metric is None:
            raise _unknown([name])
        if name in self._busy:
            raise UsageError(f"metric {name!r} depends on its own value")
        self._busy.add(name)
        try:
            result = metric.func(self)
        finally:
            self._busy.discard(name)
        self._values[name] = result
        return result


def compare_prepared(
    s: np.ndarray,
    m: np.ndarray,
    *,
    metrics: Sequence[str],
    axis: int = -1,
    ss: np.ndarray | None = None,
    sm: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The metrics of float64 arrays already checked, optionally from sums already computed.

    The kernel of :func:`soart_compare` and :func:`soartc_cli.core.features.soartc_features`.

    Parameters
    ----------
    s, m : ndarray of float64
        Standards and measurements, their ``k`` values along ``axis``, the other axes
        broadcasting (not checked here). Never modified.
    metrics : sequence of str
        Names of :data:`METRICS_REGISTRY`, in the output order; a name given twice gives two
        equal rows, computed once.
    axis : {-1, -2}, optional
        Where the ``k`` values are: -1 for ``(..., k)``, -2 for ``(..., k, n)`` (see
        :class:`Shared`).
    ss, sm : ndarray, optional
        ⟨s, s⟩ and ⟨s, m⟩ over ``axis`` when the caller has them; else computed when a metric
        first needs them.
    out : (len(metrics), ...batch) ndarray, optional
        Receives the result (a view is fine).

    Returns
    -------
    (len(metrics), ...batch) ndarray of float64
        ``out`` when given.

    Raises
    ------
    UsageError
        When a name is not a registered metric (checked before any work).
    """
    unknown = [name for name in metrics if name not in METRICS_REGISTRY]
    if unknown or not metrics:
        raise _unknown(unknown) if unknown else UsageError("metrics must name a metric")
    shared = Shared(s, m, axis=axis, ss=ss, sm=sm)
    if out is None:
        out = np.empty((len(metrics), *shared.batch))
    # In the registry's order, whatever the output order: the metrics that read the residual
    # come before the one that takes its buffer over (shear), so that it is computed once.
    for name in METRICS_REGISTRY:
        if name in metrics:
            shared.value(name)
    for row, name in enumerate(metrics):
        np.copyto(out[row, ...], shared.value(name))
    return out


def _as_float64(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.ndim < 1 or array.shape[-1] < 1:
        raise UsageError(f"{name} must be a (..., k) array with k >= 1, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


# --- the built-in metrics (SPEC §4), in their canonical order ----------------------------------


@register_metric("beta", formula="β = ⟨s,m⟩ / ⟨s,s⟩ (1 when ⟨s,s⟩ ≤ 1e-12)", neutral=1.0)
def beta(shared: Shared) -> np.ndarray:
    """Rotation, RT's sensitivity Y1: the least-squares slope of ``m`` on ``s``.

    Notes
    -----
    .. math:: β = ⟨s, m⟩ / ⟨s, s⟩, \\qquad β = 1 \\text{ when } ⟨s, s⟩ ≤ 10^{-12}

    ``m = c·s`` gives β = c.
    """
    out = np.empty(shared.batch)
    out[...] = 1.0
    ss = shared.ss
    return np.divide(shared.sm, ss, out=out, where=ss > TINY)


@register_metric("delta", formula="Σm / Σs − β (0 when |Σs| ≤ 1e-12)", neutral=0.0)
def delta(shared: Shared) -> np.ndarray:
    """Brightness beyond rotation (the blog's Δ − β form, which avoids collinearity with β).

    Notes
    -----
    .. math:: δ = Σm / Σs − β, \\qquad δ = 0 \\text{ when } |Σs| ≤ 10^{-12}

    ``m = c·s`` gives δ = 0.
    """
    sum_s = shared.sum_s
    usable = np.abs(sum_s) > TINY
    out = np.empty(shared.batch)
    np.divide(shared.sum_m, sum_s, out=out, where=usable)
    np.subtract(out, shared.beta, out=out)
    np.copyto(out, 0.0, where=~usable)
    return out


@register_metric("distance", formula="mean |m − βs|", neutral=0.0)
def distance(shared: Shared) -> np.ndarray:
    """L1 distance left after the rotation.

    Notes
    -----
    .. math:: \\text{distance} = \\frac{1}{k} Σ_i |e_i|, \\qquad e = m − β s

    ``m = c·s`` gives 0.
    """
    return shared.total(shared.abs_residual) / shared.k


@register_metric("noise", formula="√(Σ(m − βs)² / (k − 1))", neutral=0.0)
def noise(shared: Shared) -> np.ndarray:
    """RT's noise Y2 = √V_e; NaN when k = 1 (no degree of freedom left).

    Notes
    -----
    .. math:: \\text{noise} = \\sqrt{Σ_i e_i^2 / (k − 1)}, \\qquad e = m − β s

    Computed from ``e`` itself, never as ``S_T − L²/r``, which cancels catastrophically when
    ``m ≈ β s`` (it equals √(S_e / (k − 1)) since β is the least-squares slope). ``m = c·s``
    gives 0.
    """
    k = shared.k
    if k < 2:
        return np.full(shared.batch, np.nan)
    # |e|·|e| = e·e exactly: when distance has made |e|, noise reads it rather than a new e.
    e = shared.abs_residual if shared.has("abs_residual") else shared.residual
    return np.sqrt(shared.dot(e, e) / (k - 1))


@register_metric(
    "vol", formula="mean |m| / mean |βs| (1 when the denominator ≤ 1e-12)", neutral=1.0
)
def vol(shared: Shared) -> np.ndarray:
    """Volume strain (SOART 2022).

    Notes
    -----
    .. math:: \\text{vol} = \\frac{\\text{mean} |m|}{\\text{mean} |β s|}, \\qquad
        \\text{vol} = 1 \\text{ when the denominator} ≤ 10^{-12}

    ``mean |β s| = |β| · mean |s|``. ``m = c·s`` (c ≠ 0) gives 1.
    """
    denominator = np.abs(shared.beta) * shared.mean_abs_s
    out = np.empty(shared.batch)
    out[...] = 1.0
    return np.divide(shared.mean_abs_m, denominator, out=out, where=denominator > TINY)


@register_metric("shear", formula="mean |m − β·vol·s|", neutral=0.0)
def shear(shared: Shared) -> np.ndarray:
    """Shear strain (SOART 2022): what is left once rotation and volume are taken out.

    Notes
    -----
    .. math:: \\text{shear} = \\frac{1}{k} Σ_i |m_i − β · \\text{vol} · s_i|

    ``m = c·s`` gives 0.
    """
    scale = shared.expand(shared.beta * shared.value("vol"))
    with shared.scratch(reuse_residual=True) as work:
        np.multiply(scale, shared.s, out=work)
        np.subtract(shared.m, work, out=work)
        np.abs(work, out=work)
        return shared.total(work) / shared.k


#: The built-in metric names, in their canonical order (SPEC §4): the registry as the package
#: defines it, before any metric registered at run time.
METRICS: tuple[str, ...] = tuple(METRICS_REGISTRY)
METRIC_PRESETS["all"] = METRICS


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
        Names from :data:`METRICS_REGISTRY`, in the output order (default: the six built-in
        :data:`METRICS`). A string is read as a comma-separated list with presets, like
        ``--metrics``.

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
    With ``⟨a, b⟩ = Σ_i a_i b_i`` over the last axis, for each row, β = ⟨s, m⟩ / ⟨s, s⟩
    (1 when ⟨s, s⟩ ≤ 1e-12) and ``e = m − β s``; each metric's formula is in the docstring of
    its function (:func:`beta`, :func:`delta`, :func:`distance`, :func:`noise`, :func:`vol`,
    :func:`shear`) and, on one line, in its :data:`METRICS_REGISTRY` entry. Only the
    quantities the requested metrics need are computed.

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
    return compare_prepared(s, m, metrics=metrics)
