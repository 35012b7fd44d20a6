"""Inspection with a unit space: Mahalanobis–Taguchi distances of patches (SPEC §10).

Learn what *normal* looks like from the SOARTC features of good images only, then say how far
each patch of a new image is from it: Taguchi's Mahalanobis–Taguchi (MT) method, applied per
patch position as PaDiM does with deep features.

Pure numerics: arrays in, arrays out, no I/O, no printing (model files:
:mod:`soartc_cli.output.modelfile`).

Pipeline (``n`` good images, ``N`` patches each, ``k`` features per patch):

1. :func:`patch_vectors` turns one image's ``(C, T, M, N)`` features into ``(N, k)`` rows.
2. :func:`fit_unit_space` learns the scaling, the unit space (means and precisions), and a
   threshold from out-of-fold scores of the good images, returned as a :class:`UnitSpace`.
3. :func:`patch_distances` gives each patch's MD, :func:`image_scores` each image's score and
   the patch that made it, :func:`evaluate` the AUROC and precision / recall per defect label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from soartc_cli.core.metrics import TINY
from soartc_cli.errors import UsageError

__all__ = [
    "MIN_GOOD_IMAGES",
    "N_FOLDS",
    "UNIT_SPACES",
    "UnitSpace",
    "evaluate",
    "fit_unit_space",
    "image_scores",
    "patch_distances",
    "patch_vectors",
    "scale_features",
]

N_FOLDS = 5
MIN_GOOD_IMAGES = N_FOLDS
UNIT_SPACES = ("position", "shared")
"""``position``: one mean and precision per patch position; ``shared``: one for every patch."""


RIDGE = 1e-9  # P = inv(Σ + RIDGE · (tr Σ / k) · I)
_CHUNK_VALUES = 1 << 21  # values per block when features are scaled or scored (16 MB of float64)


@dataclass(frozen=True, eq=False)
class UnitSpace:
    """A fitted unit space (see :func:`fit_unit_space`).

    Attributes
    ----------
    center, scale : (k,) ndarray of float64
        Per-feature median ``c`` and spread ``q`` of the scaling (``q > 0``).
    means : (G, k) ndarray of float64
        Mean ``μ_g`` of the scaled features ``z``; ``G = N`` (one per patch position) for the
        ``position`` unit space, ``G = 1`` for ``shared``.
    precisions : (G, k, k) ndarray of float64
        Precision matrices ``P_g`` (symmetric positive definite).
    shrinkage : (G,) ndarray of float64
        The Ledoit–Wolf intensities ``δ_g`` used (kept for diagnostics).
    oof_scores : (n,) ndarray of float64
        Out-of-fold image scores of the good images, in the order they were given.
    threshold : float
        ``quantile`` of ``oof_scores`` (numpy linear): an image is anomalous when its score is
        greater than this.
    unit_space : str
        ``"position"`` or ``"shared"``.
    quantile : float
        The quantile of the threshold, in (0, 1].
    meta : dict
        JSON-ready settings the caller wants stored with the model (feature settings, kernels,
        feature and patch names, version); not used by the numerics.
    """

    center: np.ndarray
    scale: np.ndarray
    means: np.ndarray
    precisions: np.ndarray
    shrinkage: np.ndarray
    oof_scores: np.ndarray
    threshold: float
    unit_space: str = "position"
    quantile: float = 0.99
    meta: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """``k``, the length of a patch's feature vector."""
        return int(self.center.shape[0])

    @property
    def n_patches(self) -> int | None:
        """``N`` for a ``position`` unit space; None for ``shared`` (any number of patches)."""
        return int(self.means.shape[0]) if self.unit_space == "position" else None


def patch_vectors(values: npt.ArrayLike) -> np.ndarray:
    """One image's features as one row per patch.

    Parameters
    ----------
    values : (C, T, M, N) array_like
        Channel, transform, metric, patch, as returned by
        :func:`~soartc_cli.core.features.soartc_features`.

    Returns
    -------
    (N, k) ndarray of float64
        ``k = C·T·M``; column ``(c·T + t)·M + m`` holds channel ``c``, transform ``t``,
        metric ``m`` (channel → transform → metric order, as the CSV columns).
    """
    values = np.asarray(values)
    if values.ndim != 4 or values.dtype.kind not in "biuf":
        raise UsageError(
            f"values must be a real (C, T, M, N) array, got {values.dtype} {values.shape}"
        )
    c, t, m, n = values.shape
    return values.astype(np.float64, copy=False).reshape(c * t * m, n).T.copy()


# -- validation -----------------------------------------------------------------------------


def _check_features(features: npt.ArrayLike, *, ndims: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{name} must be a real array, got dtype {array.dtype}")
    if array.ndim not in ndims:
        want = " or ".join({2: "(N, k)", 3: "(n, N, k)"}[d] for d in ndims)
        raise UsageError(f"{name} must be a {want} array, got shape {array.shape}")
    if 0 in array.shape[-2:]:
        raise UsageError(f"{name} must have at least one patch and one feature: {array.shape}")
    return array


def _check_quantile(quantile: float) -> float:
    try:
        q = float(quantile)
    except (TypeError, ValueError):
        raise UsageError(f"quantile must be a number in (0, 1], got {quantile!r}") from None
    if not (math.isfinite(q) and 0.0 < q <= 1.0):
        raise UsageError(f"quantile must be a number in (0, 1], got {quantile!r}")
    return q


# -- scaling (§10.1) ------------------------------------------------------------------------


def _scaling(features: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and spread of each feature over all patches of the images ``rows``."""
    k = features.shape[2]
    center = np.zeros(k)
    scale = np.ones(k)
    for j in range(k):  # a loop over features, not patches: one column (n·N values) at a time
        column = features[rows, :, j].astype(np.float64).ravel()
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            continue
        p25, p50, p75 = np.percentile(finite, [25.0, 50.0, 75.0])
        q = p75 - p25
        if not q > TINY:
            q = float(finite.std())
            if not q > TINY:
                q = 1.0
        center[j], scale[j] = p50, q
    return center, scale


def _scale_into(block: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``z`` of a float64 ``block`` in place (``block`` is overwritten and returned)."""
    with np.errstate(invalid="ignore", over="ignore"):
        block -= center
        block /= scale
        sign = np.sign(block)
        np.abs(block, out=block)
        np.log1p(block, out=block)
        block *= sign
    block[~np.isfinite(block)] = 0.0
    return block


def scale_features(
    features: npt.ArrayLike, *, center: npt.ArrayLike, scale: npt.ArrayLike
) -> np.ndarray:
    """The scaled features ``z`` of SPEC §10.1.

    Parameters
    ----------
    features : (..., k) array_like
        Raw feature vectors (any real dtype; never modified).
    center, scale : (k,) array_like
        Median ``c`` and spread ``q`` of each feature (from a :class:`UnitSpace`).

    Returns
    -------
    (..., k) ndarray of float64
        A new array.

    Notes
    -----
    ``u = (x − c) / q``, ``z = sign(u) · ln(1 + |u|)``; a non-finite ``z`` (NaN or infinite
    ``x``) becomes 0.
    """
    x = np.array(features, dtype=np.float64)
    return _scale_into(x, np.asarray(center, np.float64), np.asarray(scale, np.float64))


def _z(features: np.ndarray, rows: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``z`` of the images ``rows``, (len(rows), N, k) float64, built one block at a time so that
    no temporary larger than a block exists besides the result."""
    _, n_patches, k = features.shape
    out = np.empty((len(rows), n_patches, k))
    step = max(1, _CHUNK_VALUES // (n_patches * k))
    for first in range(0, len(rows), step):
        block = out[first : first + step]
        block[...] = features[rows[first : first + step]]
        _scale_into(block, center, scale)
    return out


# -- covariance (§10.3) ---------------------------------------------------------------------


def _ledoit_wolf(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Ledoit–Wolf intensity of each group of centred samples ``x`` (G, m, k) → (G,), given
    their empirical covariances ``s = xᵀx / m`` (G, k, k).

    ``sklearn.covariance.ledoit_wolf_shrinkage(x[g], assume_centered=True)`` written out for all
    groups at once; the k × k blocks of ``<X², X²>`` sum to ``Σ_i ‖x_i‖⁴``.
    """
    groups, m, k = x.shape
    if k == 1:  # sklearn: with one feature, every shrinkage gives the same result
        return np.zeros(groups)
    row_sq = np.einsum("gmk,gmk->gm", x, x)
    beta_ = np.einsum("gm,gm->g", row_sq, row_sq)
    delta_ = np.einsum("gkl,gkl->g", s, s)
    trace = np.einsum("gkk->g", s)
    mu = trace / k
    beta = (beta_ / m - delta_) / (k * m)
    delta = (delta_ - 2.0 * mu * trace + k * mu**2) / k
    beta = np.minimum(beta, delta)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((beta == 0) | (delta == 0), 0.0, beta / np.where(delta == 0, 1.0, delta))


def _gaussian(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means (G, k), precisions (G, k, k) and shrinkage (G,) of groups ``z`` (G, m, k).

    ``z`` is a view into an array the caller owns: it is centred and standardised in place.
    """
    _, m, k = z.shape
    means = z.mean(axis=1)
    z -= means[:, None, :]
    sigma = np.sqrt(np.einsum("gmk,gmk->gk", z, z) / m)
    sigma[~(sigma > TINY)] = 1.0  # constant features (up to rounding) keep their zero column
    z /= sigma[:, None, :]
    corr = np.matmul(z.transpose(0, 2, 1), z) / m
    delta = _ledoit_wolf(z, corr)
    eye = np.eye(k)
    shrunk = (1.0 - delta)[:, None, None] * corr + delta[:, None, None] * eye
    cov = sigma[:, :, None] * shrunk * sigma[:, None, :]
    trace = np.einsum("gkk->g", cov)
    # A position where no feature varies (a black corner in every good image) has Σ = 0: its
    # ridge is taken with tr Σ / k = 1, so that it stays invertible (P = 1e9·I).
    per_feature = np.where(trace / k > TINY, trace / k, 1.0)
    precisions = np.linalg.inv(cov + (RIDGE * per_feature)[:, None, None] * eye)
    precisions = 0.5 * (precisions + precisions.transpose(0, 2, 1))
    return means, precisions, delta


def _fit(
    features: np.ndarray, rows: np.ndarray, unit_space: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    center, scale = _scaling(features, rows)
    if unit_space != "position":
        z = _z(features, rows, center, scale)
        n, n_patches, k = z.shape
        means, precisions, delta = _gaussian(z.reshape(1, n * n_patches, k))
        return center, scale, means, precisions, delta
    # Positions are independent: their z is made a few positions at a time (a block of about
    # _CHUNK_VALUES values), so fitting holds the features and one block, never a second copy.
    _, n_patches, k = features.shape
    means, precisions, delta = (
        np.empty((n_patches, k)),
        np.empty((n_patches, k, k)),
        np.empty(n_patches),
    )
    step = max(1, _CHUNK_VALUES // (len(rows) * k))
    for first in range(0, n_patches, step):
        block = features[rows, first : first + step].astype(np.float64)  # (n, c, k), a copy
        _scale_into(block, center, scale)
        part = slice(first, first + block.shape[1])
        means[part], precisions[part], delta[part] = _gaussian(block.transpose(1, 0, 2))
    return center, scale, means, precisions, delta


def _distances(
    features: np.ndarray,
    rows: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    means: np.ndarray,
    precisions: np.ndarray,
) -> np.ndarray:
    """MD (len(rows), N) of the images ``rows`` of ``features`` (n, N, k), block by block."""
    _, n_patches, k = features.shape
    out = np.empty((len(rows), n_patches))
    step = max(1, _CHUNK_VALUES // (n_patches * k))
    for first in range(0, len(rows), step):
        block = features[rows[first : first + step]].astype(np.float64)
        d = _scale_into(block, center, scale)
        d -= means  # (G, k) broadcasts over (b, N, k): G = N or 1
        # (N, b, k) @ (G, k, k): one matmul per position, all positions at once.
        pd = np.matmul(d.transpose(1, 0, 2), precisions)
        md = np.einsum("pbk,pbk->bp", pd, d.transpose(1, 0, 2)) / k
        out[first : first + step] = np.maximum(md, 0.0)
    return out


# -- public API -----------------------------------------------------------------------------


def fit_unit_space(
    features: npt.ArrayLike,
    *,
    unit_space: str = "position",
    quantile: float = 0.99,
    meta: Mapping[str, Any] | None = None,
) -> UnitSpace:
    """Learn a unit space from the features of good images (SPEC §10).

    Parameters
    ----------
    features : (n, N, k) array_like
        ``features[i]`` = :func:`patch_vectors` of good image ``i``; the order matters for the
        folds of the threshold (the sorted file list). Never modified; NaN and ±inf allowed (they
        are left out of the scaling statistics and scaled to 0).
    unit_space : {"position", "shared"}, optional
        One mean and precision per patch position (default), or one for every patch.
    quantile : float, optional
        Quantile of the out-of-fold scores taken as the threshold, in (0, 1]. Default 0.99.
    meta : mapping, optional
        JSON-ready settings stored with the model (copied into ``UnitSpace.meta``).

    Returns
    -------
    UnitSpace

    Raises
    ------
    UsageError
        Fewer than 5 good images, a wrong shape or dtype, an unknown ``unit_space``, a
        ``quantile`` outside (0, 1], or a ``meta`` that is not JSON-ready.

    Notes
    -----
    **Scaling**, per feature over all ``n·N`` patches, finite values only: median ``c`` and
    ``q = p75 − p25`` (numpy linear percentiles); if ``q ≤ 1e-12`` the population std of the
    finite values; if that is ≤ 1e-12, 1. A feature with no finite value gets ``c = 0, q = 1``.
    ``u = (x − c)/q``, ``z = sign(u)·ln(1 + |u|)``, non-finite ``z`` → 0.

    **Unit space**: for each group ``g`` (a patch position over the n images, or all ``n·N``
    patches for ``shared``) of ``m`` samples: ``μ = mean z``; population std ``σ`` (``σ ≤ 1e-12``
    counts as 0 and becomes 1: ``z`` is O(1) by construction, so that is the rounding noise of a
    constant feature); ``x = (z − μ)/σ``; ``S = xᵀx / m`` (the correlation matrix). The
    Ledoit–Wolf intensity is that of ``sklearn.covariance.ledoit_wolf_shrinkage(x)``::

        μ_S = tr S / k,   δ̂ = ‖S‖²_F,   b̂ = (Σ_i ‖x_i‖⁴ / m − δ̂) / (k m)
        d = (δ̂ − 2 μ_S tr S + k μ_S²) / k = ‖S − μ_S I‖²_F / k
        δ = 0 if min(b̂, d) = 0 else min(b̂, d) / d            (0 when k = 1)

    ``C = (1 − δ) S + δ I``, ``Σ = diag(σ) C diag(σ)``, ``P = (Σ + 1e-9 (tr Σ / k) I)⁻¹``.
    Shrinking toward ``I`` equals sklearn's target ``μ_S I`` whenever no feature is constant
    (then ``diag S = 1``, ``μ_S = 1``). A constant feature has a zero row and column in ``S``, so
    ``μ_S = (k − k₀)/k < 1``; sklearn would shrink toward ``μ_S I`` while ``C`` here gets ``δ``
    on that feature's diagonal (and 1 − δ + δ = 1 on the others'): the varying features keep
    unit variance, and the constant one a variance ``δ`` (tiny when δ is small), so that a
    change of a feature that never changed in good images weighs heavily. A group where no
    feature varies has ``Σ = 0``; its ridge takes ``tr Σ / k = 1`` (``P = 1e9 I``).

    **Threshold**: image ``i`` is in fold ``i mod 5``. Each fold is scored by a model fitted on
    the other four, *everything refitted* (scaling, means, precisions): "a unit space fitted on
    the other four" read as the whole fit, so the threshold reflects images the model has not
    seen at all. ``threshold = np.quantile(oof, quantile)`` (linear). The returned model itself
    is fitted on all n images.

    Memory: besides ``features`` (kept as given when float64), one fit holds ``z`` of its
    training images (the size of the features in float64) and O(N k²) for the covariances;
    scaling, centring and standardising work in place or one column or one block of images
    (16 MB) at a time. The peak is about ``2×`` the float64 features, whatever the folds
    (10,000 × 196 × 18: 282 MB of features, a peak resident size of 612 MB, 28 s on a 2-core
    machine, most of it the percentiles of the six fits).

    References
    ----------
    .. [1] G. Taguchi and R. Jugulum, *The Mahalanobis–Taguchi Strategy: A Pattern Technology
       System*, Wiley, 2002.
    .. [2] O. Ledoit and M. Wolf, "A well-conditioned estimator for large-dimensional covariance
       matrices", *Journal of Multivariate Analysis* 88(2), 365–411, 2004.
    .. [3] T. Defard, A. Setkaliev, A. Loesch and R. Audigier, "PaDiM: a Patch Distribution
       Modeling Framework for Anomaly Detection and Localization", ICPR Workshops, 2021.
    """
    features = _check_features(features, ndims=(3,), name="features")
    if unit_space not in UNIT_SPACES:
        raise UsageError(f"unit_space must be one of {', '.join(UNIT_SPACES)}: got {unit_space!r}")
    q = _check_quantile(quantile)
    n = features.shape[0]
    if n < MIN_GOOD_IMAGES:
        raise UsageError(f"fit needs at least {MIN_GOOD_IMAGES} good images, got {n}")
    meta_dict = dict(meta or {})
    try:
        json.dumps(meta_dict, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"meta must be JSON-ready: {exc}") from None

    order = np.arange(n)
    oof = np.empty(n)
    for fold in range(N_FOLDS):
        held = order[order % N_FOLDS == fold]
        kept = order[order % N_FOLDS != fold]
        center, scale, means, precisions, _ = _fit(features, kept, unit_space)
        md = _distances(features, held, center, scale, means, precisions)
        oof[held] = md.max(axis=1)
    center, scale, means, precisions, delta = _fit(features, order, unit_space)
    return UnitSpace(
        center=center,
        scale=scale,
        means=means,
        precisions=precisions,
        shrinkage=delta,
        oof_scores=oof,
        threshold=float(np.quantile(oof, q)),
        unit_space=unit_space,
        quantile=q,
        meta=meta_dict,
    )


def patch_distances(model: UnitSpace, features: npt.ArrayLike) -> np.ndarray:
    """Taguchi's MD of every patch of one image or of several.

    Parameters
    ----------
    model : UnitSpace
    features : (N, k) or (n, N, k) array_like
        :func:`patch_vectors` of one image, or of n images stacked. Never modified.

    Returns
    -------
    (N,) or (n, N) ndarray of float64
        ``MD ≥ 0`` per patch.

    Raises
    ------
    UsageError
        When ``k`` differs from the model's, or ``N`` from a ``position`` model's.

    Notes
    -----
    ``MD = (z − μ_p)ᵀ P_p (z − μ_p) / k`` with ``z`` from the model's scaling
    (:func:`scale_features`) and ``p`` the patch position (the one group of a ``shared``
    model). ``P`` is symmetrised, so MD ≥ 0 up to rounding; a rounding below 0 is set to 0.
    Good training patches average about 1 (an MD of 1 is a typical distance).
    """
    x = _check_features(features, ndims=(2, 3), name="features")
    single = x.ndim == 2
    if single:
        x = x[None]
    n, n_patches, k = x.shape
    if k != model.n_features:
        raise UsageError(
            f"features have {k} values per patch, the model expects {model.n_features}"
        )
    if model.n_patches is not None and n_patches != model.n_patches:
        raise UsageError(f"features have {n_patches} patches, the model expects {model.n_patches}")
    md = _distances(x, np.arange(n), model.center, model.scale, model.means, model.precisions)
    return md[0] if single else md


def image_scores(md: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Image score and the patch that made it.

    Parameters
    ----------
    md : (N,) or (n, N) array_like
        Patch distances from :func:`patch_distances`.

    Returns
    -------
    scores : () or (n,) ndarray of float64
        ``max_p MD_p`` of each image.
    patch_max : () or (n,) ndarray of intp
        Index of that patch (row-major), the first one on ties.
    """
    md = np.asarray(md, dtype=np.float64)
    if md.ndim not in (1, 2) or md.shape[-1] == 0:
        raise UsageError(f"md must be an (N,) or (n, N) array with N > 0, got shape {md.shape}")
    if np.isnan(md).any():
        raise UsageError("md holds NaN")
    index = md.argmax(axis=-1)
    return np.take_along_axis(md, np.expand_dims(index, -1), axis=-1)[..., 0], index


# -- evaluation -----------------------------------------------------------------------------


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    from scipy.stats import rankdata

    if positive.size == 0 or negative.size == 0:
        return None
    ranks = rankdata(np.concatenate([positive, negative]))  # average ranks on ties
    u = ranks[: positive.size].sum() - positive.size * (positive.size + 1) / 2.0
    return float(u / (positive.size * negative.size))


def _group(
    scores: np.ndarray, flagged: np.ndarray, positive: np.ndarray, normal: np.ndarray
) -> dict:
    tp = int(np.count_nonzero(flagged & positive))
    fp = int(np.count_nonzero(flagged & normal))
    n_pos = int(np.count_nonzero(positive))
    return {
        "n": n_pos,
        "auroc": _auroc(scores[positive], scores[normal]),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / n_pos if n_pos else None,
    }


def evaluate(
    scores: npt.ArrayLike,
    labels: Sequence[str],
    anomalous: npt.ArrayLike,
    *,
    normal_label: str = "good",
) -> dict | None:
    """Image AUROC and precision / recall of the verdicts, per defect label (SPEC §10).

    Parameters
    ----------
    scores : (n,) array_like
        Image scores (no NaN).
    labels : sequence of str
        The n images' labels.
    anomalous : (n,) array_like of bool
        The verdicts (score > threshold).
    normal_label : str, optional
        Label of the normal images. Default ``"good"``.

    Returns
    -------
    dict or None
        None when no image has the normal label. Otherwise (JSON-ready)::

            {"normal_label": str, "n_normal": int, "normal_flagged": int,
             "labels": {label: {"n", "auroc", "precision", "recall"}, ...},  # sorted labels
             "all": {"n", "auroc", "precision", "recall"}}

        each group compared with the normal images; a value that is undefined is None.

    Notes
    -----
    ``AUROC = U / (n_pos n_neg)`` with the Mann–Whitney ``U = R_pos − n_pos (n_pos + 1)/2``,
    ``R_pos`` the sum of the positives' ranks among positives and normal images (average ranks,
    so a tie counts one half): the probability that a random defective image scores higher than
    a random normal one. ``precision = TP / (TP + FP)`` (FP: normal images flagged; None when
    nothing is flagged), ``recall = TP / n_pos`` (None when ``n_pos = 0``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.asarray(anomalous).astype(bool)
    labels = [str(label) for label in labels]
    if scores.ndim != 1 or flagged.shape != scores.shape or len(labels) != scores.size:
        raise UsageError(
            f"scores, labels and anomalous must have one value per image: got {scores.shape}, "
            f"{len(labels)} and {flagged.shape}"
        )
    if np.isnan(scores).any():
        raise UsageError("scores hold NaN")
    names = np.array(labels, dtype=object)
    normal = names == normal_label
    if not normal.any():
        return None
    result: dict[str, Any] = {
        "normal_label": normal_label,
        "n_normal": int(np.count_nonzero(normal)),
        "normal_flagged": int(np.count_nonzero(flagged & normal)),
        "labels": {},
    }
    for label in sorted(set(labels) - {normal_label}):
        result["labels"][label] = _group(scores, flagged, names == label, normal)
    result["all"] = _group(scores, flagged, ~normal, normal)
    return result
