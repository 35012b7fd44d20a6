"""Evaluation of an inspection run against its labels and ground-truth masks (SPEC §10).

Pure numerics: arrays in, numbers and JSON-ready dicts out; no files, no printing.

- :func:`resample_bilinear` samples a grid of values at other points (bilinear between the grid's
  centres, edge values held outside); :func:`cell_centres` and :func:`upsample_heat` use it to
  bring a cell heat map onto the pixels (and a patch-grid heat onto the cell centres).
- :func:`evaluate_images`: image AUROC, precision and recall of the verdicts per defect label and
  over all, and the image AUROC of each component alone.
- :class:`PixelEvaluation`: pixel AUROC and AUPRO over ground-truth masks, one image at a time.

Masks are not read here: the caller fits each mask like its image (§2.5, to the same S × S) and
binarises it (``> 0.5``), so :meth:`PixelEvaluation.add` takes a boolean ``(S, S)`` mask; a good
image's mask is all ``False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from soartc_cli.errors import UsageError

__all__ = [
    "AUPRO_FPR_LIMIT",
    "PixelEvaluation",
    "auroc",
    "cell_centres",
    "evaluate_images",
    "resample_bilinear",
    "upsample_heat",
]

AUPRO_FPR_LIMIT = 0.3
"""The false-positive rate up to which the PRO curve is integrated (Bergmann et al. 2021)."""

_CHUNK = 1 << 20  # values per step in the pixel metrics: bounds their temporary arrays


# -- resampling -----------------------------------------------------------------------------


def _axis(coords: npt.ArrayLike, name: str, size: int | None = None) -> np.ndarray:
    a = np.asarray(coords, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise UsageError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if size is not None and a.size != size:
        raise UsageError(f"{name} must have {size} values (one per grid line), got {a.size}")
    if not np.isfinite(a).all():
        raise UsageError(f"{name} must be finite")
    return a


def _weights(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper neighbours among ``src`` of each ``dst`` and the upper one's weight."""
    if src.size == 1:
        zero = np.zeros(dst.size, dtype=np.intp)
        return zero, zero, np.zeros(dst.size)
    lower = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, src.size - 2)
    upper = lower + 1
    weight = np.clip((dst - src[lower]) / (src[upper] - src[lower]), 0.0, 1.0)
    return lower, upper, weight


def resample_bilinear(
    values: npt.ArrayLike,
    *,
    src_y: npt.ArrayLike,
    src_x: npt.ArrayLike,
    dst_y: npt.ArrayLike,
    dst_x: npt.ArrayLike,
) -> np.ndarray:
    """Sample a grid of values at the points ``dst_y × dst_x`` by bilinear interpolation.

    Parameters
    ----------
    values : (m, n) array_like
        Finite values; ``values[i, j]`` sits at ``(src_y[i], src_x[j])``.
    src_y : (m,) array_like
        Row coordinates of the grid's centres, strictly increasing.
    src_x : (n,) array_like
        Column coordinates of the grid's centres, strictly increasing.
    dst_y : (p,) array_like
        Row coordinates to sample at (any order, finite).
    dst_x : (q,) array_like
        Column coordinates to sample at.

    Returns
    -------
    (p, q) ndarray of float64
        ``out[a, b]`` is the value at ``(dst_y[a], dst_x[b])``.

    Notes
    -----
    Between the centres ``y_i ≤ y ≤ y_{i+1}`` and ``x_j ≤ x ≤ x_{j+1}``, with
    ``u = (y − y_i)/(y_{i+1} − y_i)`` and ``w = (x − x_j)/(x_{j+1} − x_j)``::

        out = (1−u)(1−w) v[i, j] + (1−u) w v[i, j+1] + u (1−w) v[i+1, j] + u w v[i+1, j+1]

    Outside the centres ``u`` and ``w`` are clipped to [0, 1]: the edge values are held. A grid of
    one row (or column) is constant along that axis. Computed separably (rows, then columns),
    which equals the formula above up to rounding.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or 0 in v.shape:
        raise UsageError(f"values must be a non-empty 2-D array, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise UsageError("values must be finite")
    sy, sx = _axis(src_y, "src_y", v.shape[0]), _axis(src_x, "src_x", v.shape[1])
    for name, a in (("src_y", sy), ("src_x", sx)):
        if (np.diff(a) <= 0).any():
            raise UsageError(f"{name} must be strictly increasing")
    dy, dx = _axis(dst_y, "dst_y"), _axis(dst_x, "dst_x")
    y0, y1, u = _weights(sy, dy)
    x0, x1, w = _weights(sx, dx)
    rows = v[y0] * (1.0 - u)[:, None] + v[y1] * u[:, None]  # (p, n)
    return rows[:, x0] * (1.0 - w) + rows[:, x1] * w


def cell_centres(count: int, *, patch: int, stride: int) -> np.ndarray:
    """Centres of ``count`` cells along one axis: ``T·i + (P − 1)/2`` (SPEC §10 "Cells").

    Returns
    -------
    (count,) ndarray of float64
    """
    if count < 1 or patch < 1 or stride < 1:
        raise UsageError(
            f"count, patch and stride must be positive, got {count}, {patch} and {stride}"
        )
    return stride * np.arange(count, dtype=np.float64) + (patch - 1) / 2.0


def upsample_heat(
    heat: npt.ArrayLike, *, patch: int, stride: int, shape: tuple[int, int]
) -> np.ndarray:
    """The cell heat map brought to pixels: bilinear between cell centres, edges held.

    Parameters
    ----------
    heat : (n_r, n_c) array_like
        Heat of each cell (finite), cell (i, j) centred at ``(T·i + (P−1)/2, T·j + (P−1)/2)``.
    patch, stride : int
        P and T of the cells.
    shape : (int, int)
        (H, W) of the fitted image; pixel centres are at rows 0…H−1, columns 0…W−1.

    Returns
    -------
    (H, W) ndarray of float64
    """
    h = np.asarray(heat, dtype=np.float64)
    if h.ndim != 2:
        raise UsageError(f"heat must be an (n_r, n_c) array, got shape {h.shape}")
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise UsageError(f"shape must be positive, got {shape}")
    return resample_bilinear(
        h,
        src_y=cell_centres(h.shape[0], patch=patch, stride=stride),
        src_x=cell_centres(h.shape[1], patch=patch, stride=stride),
        dst_y=np.arange(height, dtype=np.float64),
        dst_x=np.arange(width, dtype=np.float64),
    )


# -- image metrics --------------------------------------------------------------------------


def auroc(positive: npt.ArrayLike, negative: npt.ArrayLike) -> float | None:
    """Mann–Whitney AUROC: P(positive > negative) + ½ P(positive = negative).

    Parameters
    ----------
    positive, negative : (a,) and (b,) array_like
        Scores (no NaN).

    Returns
    -------
    float or None
        None when either group is empty.

    Notes
    -----
    ``AUROC = U / (a b)`` with ``U = R_pos − a (a + 1)/2``, ``R_pos`` the sum of the positives'
    average ranks among all ``a + b`` scores (so a tie counts one half).
    """
    from scipy.stats import rankdata

    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks on ties
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _scores(values: npt.ArrayLike, name: str, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise UsageError(f"{name} must have one value per image ({n}), got shape {a.shape}")
    if np.isnan(a).any():
        raise UsageError(f"{name} hold NaN")
    return a


def _group(
    scores: np.ndarray,
    flagged: np.ndarray,
    positive: np.ndarray,
    normal: np.ndarray,
    components: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    tp = int(np.count_nonzero(flagged & positive))
    fp = int(np.count_nonzero(flagged & normal))
    n_pos = int(np.count_nonzero(positive))
    return {
        "n": n_pos,
        "auroc": auroc(scores[positive], scores[normal]),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / n_pos if n_pos else None,
        "components": {c: auroc(s[positive], s[normal]) for c, s in components.items()},
    }


def evaluate_images(
    scores: npt.ArrayLike,
    labels: Sequence[str],
    anomalous: npt.ArrayLike,
    *,
    normal_label: str = "good",
    components: Mapping[str, npt.ArrayLike] | None = None,
    pixels: PixelEvaluation | None = None,
) -> dict | None:
    """Image AUROC, precision and recall per defect label and over all (SPEC §10 "Evaluation").

    Parameters
    ----------
    scores : (n,) array_like
        Image scores (max over cells of the heat H; no NaN).
    labels : sequence of str
        The n images' labels.
    anomalous : (n,) array_like of bool
        The verdicts (score > threshold).
    normal_label : str, optional
        Label of the normal images. Default ``"good"``.
    components : mapping of str to (n,) array_like, optional
        Each component's own image score (max over cells of its calibrated term
        ``(ln(h_c + 1e-6) − m_c)/s_c``), in the order the table shows them.
    pixels : PixelEvaluation, optional
        The pixel metrics accumulated over the same images (when masks exist).

    Returns
    -------
    dict or None
        None when no image has the normal label. Otherwise (JSON-ready; a value that is
        undefined is None)::

            {"normal_label": str,
             "n_normal": int,                   # images with the normal label
             "normal_flagged": int,             # of them flagged anomalous
             "components": [str, ...],          # the components' names, in the given order
             "labels": {label: GROUP, ...},     # each defect label, sorted
             "all": GROUP,                      # every image that is not normal
             "pixel": PIXEL or None}            # None without masks (or no image added)

            GROUP = {"n": int, "auroc": float, "precision": float, "recall": float,
                     "components": {component: auroc, ...}}
            PIXEL = PixelEvaluation.result()

        Each group is compared with the normal images.

    Notes
    -----
    AUROC as :func:`auroc` (a tie counts one half): the probability that a random defective
    image scores higher than a random normal one. ``precision = TP / (TP + FP)`` (FP: normal
    images flagged; None when nothing is flagged), ``recall = TP / n`` (None when n = 0).
    """
    labels = [str(label) for label in labels]
    n = len(labels)
    scores = _scores(scores, "scores", n)
    flagged = np.asarray(anomalous)
    if flagged.shape != (n,):
        raise UsageError(
            f"anomalous must have one value per image ({n}), got shape {flagged.shape}"
        )
    flagged = flagged.astype(bool, copy=False)
    parts = {
        str(c): _scores(s, f"the scores of component {c!r}", n)
        for c, s in (components or {}).items()
    }
    names = np.array(labels, dtype=object)
    normal = names == normal_label
    if not normal.any():
        return None
    result: dict[str, Any] = {
        "normal_label": normal_label,
        "n_normal": int(np.count_nonzero(normal)),
        "normal_flagged": int(np.count_nonzero(flagged & normal)),
        "components": list(parts),
        "labels": {},
    }
    for label in sorted(set(labels) - {normal_label}):
        result["labels"][label] = _group(scores, flagged, names == label, normal, parts)
    result["all"] = _group(scores, flagged, ~normal, normal, parts)
    result["pixel"] = pixels.result() if pixels is not None and pixels.n_images else None
    return result


# -- pixel metrics --------------------------------------------------------------------------


class PixelEvaluation:
    """Pixel AUROC and AUPRO over ground-truth masks, accumulated one image at a time.

    ``add(heat, mask)`` for each test image (good images with an all-False mask), then
    :meth:`pixel_auroc`, :meth:`aupro` or :meth:`result`. Adding more images afterwards is
    allowed.

    Notes
    -----
    *Memory.* The masks are not kept: each image's defect regions are labelled at ``add``
    (8-connectivity), and what stays is the heat of every normal pixel (float32: 4 bytes) and
    of every defect pixel with its region's number (float32 + int32: 8 bytes), plus 8 bytes
    per region. For MVTec AD's 1,725 test images at 256 × 256 that is about 0.46 GB. The
    first metric computed after an ``add`` joins the stored pieces into one array (for that
    moment twice the normal heats) and sorts the normal heats in place; :meth:`aupro` needs
    besides about 20 bytes per defect pixel while it runs; other temporaries are bounded by
    working in chunks of 2**20 values.

    *Precision.* Heats are rounded to float32 when added; both metrics are exact for those
    values (ties, thresholds and counts are taken on them), up to the float64 rounding of
    the sums.
    """

    def __init__(self) -> None:
        self._normal: list[np.ndarray] = []  # float32 heats of normal pixels
        self._defect: list[np.ndarray] = []  # float32 heats of defect pixels
        self._region: list[np.ndarray] = []  # int32 region number of each defect pixel
        self._sizes: list[np.ndarray] = []  # int64 pixels per region
        self._normal_sorted = False
        self.n_images = 0
        self.n_defect_images = 0
        self.n_regions = 0
        self.n_normal_pixels = 0
        self.n_defect_pixels = 0

    @property
    def n_pixels(self) -> int:
        """Pixels added, over all images."""
        return self.n_normal_pixels + self.n_defect_pixels

    def add(self, heat: npt.ArrayLike, mask: npt.ArrayLike) -> None:
        """Add one image: its heat upsampled to pixels and its binarised ground-truth mask.

        Parameters
        ----------
        heat : (H, W) array_like
            Finite heat per pixel (e.g. from :func:`upsample_heat`); stored as float32.
        mask : (H, W) ndarray of bool
            True on defect pixels (the fitted mask ``> 0.5``); all False for a good image.
        """
        from scipy import ndimage

        h = np.asarray(heat)
        m = np.asarray(mask)
        if h.ndim != 2 or 0 in h.shape:
            raise UsageError(f"heat must be a non-empty (H, W) array, got shape {h.shape}")
        if m.shape != h.shape:
            raise UsageError(f"mask must have the heat's shape {h.shape}, got {m.shape}")
        if m.dtype != np.bool_:
            raise UsageError(f"mask must be boolean (the fitted mask > 0.5), got {m.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            h32 = h.astype(np.float32, copy=False)
        if not np.isfinite(h32).all():
            raise UsageError("heat must be finite (and within float32's range)")
        regions, count = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
        if self.n_regions + count >= 2**31:
            raise UsageError("more than 2**31 defect regions")
        self._normal.append(h32[~m])
        self._normal_sorted = False
        if count:
            numbers = regions[m]  # 1…count, row-major
            self._defect.append(h32[m])
            self._region.append((numbers - 1 + self.n_regions).astype(np.int32))
            self._sizes.append(np.bincount(numbers, minlength=count + 1)[1:].astype(np.int64))
            self.n_defect_images += 1
        self.n_images += 1
        self.n_regions += count
        self.n_defect_pixels += int(np.count_nonzero(m))
        self.n_normal_pixels += m.size - int(np.count_nonzero(m))

    # The pieces are joined lazily, once per batch of adds.
    def _negatives(self) -> np.ndarray:
        if len(self._normal) != 1 or not self._normal_sorted:
            joined = np.concatenate(self._normal) if self._normal else np.zeros(0, np.float32)
            self._normal = [joined]
            joined.sort()
            self._normal_sorted = True
        return self._normal[0]

    def _positives(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self._defect) != 1:
            if not self._defect:
                return np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, np.int64)
            self._defect = [np.concatenate(self._defect)]
            self._region = [np.concatenate(self._region)]
            self._sizes = [np.concatenate(self._sizes)]
        return self._defect[0], self._region[0], self._sizes[0]

    def pixel_auroc(self) -> float | None:
        """AUROC of the pixel heats: defect pixels against normal pixels, every image.

        Returns
        -------
        float or None
            None without defect pixels or without normal pixels.

        Notes
        -----
        ``AUROC = Σ_v (#{normal < v} + ½ #{normal = v}) / (n_defect n_normal)`` over the defect
        pixels' heats v — the Mann–Whitney statistic, counted exactly in integers.
        """
        neg = self._negatives()
        pos = self._positives()[0]
        if pos.size == 0 or neg.size == 0:
            return None
        twice_u = 0
        for start in range(0, pos.size, _CHUNK):
            block = pos[start : start + _CHUNK]
            twice_u += int(np.searchsorted(neg, block, side="left").sum(dtype=np.int64))
            twice_u += int(np.searchsorted(neg, block, side="right").sum(dtype=np.int64))
        return twice_u / (2 * pos.size * neg.size)

    def aupro(self, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
        """Normalised area under the PRO curve up to a false-positive rate (Bergmann et al.).

        Parameters
        ----------
        fpr_limit : float, optional
            Upper end of the integration, in (0, 1]. Default 0.3.

        Returns
        -------
        float or None
            In [0, 1]; None without defect regions or without normal pixels.

        Notes
        -----
        A pixel is predicted defective at threshold t when its heat ≥ t. For every t::

            FPR(t) = #{normal pixels ≥ t} / #{normal pixels}
            PRO(t) = (1/R) Σ_r #{pixels of r ≥ t} / |r|

        over the R connected defect regions (8-connectivity) of all images; normal pixels are
        the pixels outside every mask (good images included). The curve runs from (0, 0) through
        the point of every distinct heat value, highest first (exact: no sampling of
        thresholds), to (1, 1), and is integrated by the trapezoid rule from FPR 0 to
        ``fpr_limit``, the PRO at ``fpr_limit`` interpolated linearly on the segment that
        crosses it; the area is divided by ``fpr_limit``. Equal to the MVTec AD evaluation
        code's ``compute_pro`` + ``trapezoid(x_max=0.3)``.

        Only the normal heats change the FPR, so the area is a sum over the distinct normal
        heats t: the segment from ``(FPR(>t), PRO(>t))`` to ``(FPR(≥t), PRO(≥t))`` (the
        points at the defect heats between two normal ones lie on a vertical line).

        References
        ----------
        Bergmann, P., Batzner, K., Fauser, M., Sattlegger, D., Steger, C. (2021). The MVTec
        anomaly detection dataset: a comprehensive real-world dataset for unsupervised anomaly
        detection. International Journal of Computer Vision 129, 1038–1059.
        """
        limit = float(fpr_limit)
        if not (0.0 < limit <= 1.0):
            raise UsageError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        neg = self._negatives()
        pos, region, sizes = self._positives()
        if neg.size == 0 or pos.size == 0:
            return None
        n_neg = neg.size
        # PRO(≥ t) = tail[searchsorted(pos_sorted, t, "left")], PRO(> t) likewise with "right".
        order = np.argsort(pos, kind="stable")
        pos_sorted = pos[order]
        weights = (1.0 / sizes)[region[order]] / sizes.size
        del order
        tail = np.zeros(pos.size + 1)
        tail[:-1] = np.cumsum(weights[::-1])[::-1]
        del weights

        area = 0.0
        end = n_neg  # neg[:end] is still to do, taken from the top in chunks of whole ties
        while end > 0:
            start = int(np.searchsorted(neg, neg[max(0, end - _CHUNK)], side="left"))
            block = neg[start:end]
            first = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
            values = block[first]
            n_lt = start + first  # normal heats below each distinct value
            n_le = np.r_[n_lt[1:], end]
            x0 = (n_neg - n_le) / n_neg  # FPR(> t)
            x1 = (n_neg - n_lt) / n_neg  # FPR(≥ t)
            y0 = tail[np.searchsorted(pos_sorted, values, side="right")]  # PRO(> t)
            y1 = tail[np.searchsorted(pos_sorted, values, side="left")]  # PRO(≥ t)
            width = (n_le - n_lt) / n_neg
            inside = x1 <= limit  # whole segments (these are the block's upper values)
            area += float(np.sum(0.5 * (y0[inside] + y1[inside]) * width[inside]))
            crossing = np.flatnonzero((x0 < limit) & (x1 > limit))
            if crossing.size:
                k = crossing[0]
                y_end = y0[k] + (y1[k] - y0[k]) * (limit - x0[k]) / (x1[k] - x0[k])
                area += 0.5 * (y0[k] + y_end) * (limit - x0[k])
            if not inside.all():
                break
            end = start
        return float(area / limit)

    def result(self, *, fpr_limit: float = AUPRO_FPR_LIMIT) -> dict[str, Any]:
        """The pixel metrics as the evaluation dict's ``"pixel"`` entry (JSON-ready)::

        {"n_images", "n_defect_images", "n_pixels", "n_defect_pixels", "n_regions": int,
         "auroc": float or None, "aupro": float or None, "fpr_limit": float}
        """
        return {
            "n_images": self.n_images,
            "n_defect_images": self.n_defect_images,
            "n_pixels": self.n_pixels,
            "n_defect_pixels": self.n_defect_pixels,
            "n_regions": self.n_regions,
            "auroc": self.pixel_auroc(),
            "aupro": self.aupro(fpr_limit),
            "fpr_limit": float(fpr_limit),
        }
