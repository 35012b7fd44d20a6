"""Fit and score of inspection model format 2: the numerics of SPEC §10, from feature arrays.

Learn what *normal* looks like from the cell features of good images only, then give every cell
of a new image a calibrated heat. Each **component** (``soartc``, ``stats``, ``glcm``, ``deep``)
gives a raw heat ``h_c`` per unit (a cell, or a §2 patch for ``glcm``) from one of two scorers:

- ``gaussian`` (``soartc``): a Ledoit–Wolf Gaussian per cell position or shared by all cells,
  ``h = (z − μ)ᵀ P (z − μ) / k`` — the machinery of :mod:`soartc_cli.core.unitspace`, reused;
- ``bank`` (``stats``, ``glcm``, ``deep``): the distance to the nearest of a memory bank of good
  cells chosen by the greedy k-centre coreset, ``h = min_b ‖y − b‖² / k``.

Out-of-fold heat maps of the good images calibrate each component
(``(ln(h + 1e-6) − m_c) / s_c``); the calibrated terms add up to the heat ``H`` of a cell; an
image's score is its largest ``H``, and the threshold a quantile of the good images'
out-of-fold scores.

Pure numerics: arrays in, arrays and frozen dataclasses out; no I/O, no printing, no global
random state (the seed is a parameter). Model files are :mod:`soartc_cli.output.modelfile`.

Memory (see :func:`memory_need`): the features are held once, as the caller gives them (float64
or float32); every fit of the six (five folds and the final one) works on row-index arrays into
them, and everything that scales, standardises or scores does it one block at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# The format-1 Gaussian and scaling are right as they are: imported, not copied. The integrator
# retires format 1 by moving these into this module.
from soartc_cli.core.unitspace import (
    _CHUNK_VALUES,
    _check_quantile,
    _distances,
    _fit,
    _scale_into,
    _scaling,
)
from soartc_cli.errors import UsageError

__all__ = [
    "BANK_FRACTION",
    "BANK_MAX",
    "EPSILON",
    "KD_TREE_MAX_SPREAD",
    "MIN_GOOD_IMAGES",
    "MODULE_BYTES",
    "N_FOLDS",
    "POOL_MAX",
    "SCORERS",
    "SCORER_KINDS",
    "STD_FLOOR",
    "UNIT_SPACES",
    "BankFit",
    "ComponentData",
    "FittedComponent",
    "GaussianFit",
    "Model",
    "ScoreResult",
    "bank_size",
    "fit_model",
    "folds",
    "k_center_greedy",
    "memory_need",
    "nearest_sq_distances",
    "pool_indices",
    "score_cells",
]

N_FOLDS = 5
MIN_GOOD_IMAGES = N_FOLDS
UNIT_SPACES = ("position", "shared")
"""``position``: a Gaussian and a calibration per cell position; ``shared``: one for all cells."""
SCORER_KINDS = ("gaussian", "bank")
SCORERS: dict[str, str] = {"soartc": "gaussian", "stats": "bank", "glcm": "bank", "deep": "bank"}
"""The scorer of each component of SPEC §10, by the name users type in ``--components``."""
EPSILON = 1e-6  # ln(h + EPSILON)
STD_FLOOR = 1e-6  # s_c ≥ STD_FLOOR
BANK_MAX = 4000  # m = min(BANK_MAX, max(1, round(BANK_FRACTION · N)))
BANK_FRACTION = 0.1
POOL_MAX = 30000  # the coreset is chosen from min(POOL_MAX, N) cells
TINY = 1e-12  # a spread at most this is no spread
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
KD_TREE_MAX_SPREAD = 6.0  # a bank spread in more directions is searched by products
_NN_BLOCK = 128  # query rows per block of the nearest-neighbour search (128 × 4000 float32: 2 MB)
_U32 = 2.0**-24  # unit roundoff of float32


# -- inputs and results ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ComponentData:
    """The good images' features of one component, as :func:`fit_model` takes them.

    Attributes
    ----------
    features : (n, N_c, k_c) array_like
        ``features[i, u]`` = the ``k_c`` values of unit ``u`` (a cell, or a patch) of good image
        ``i``, in the order of the sorted file list (the folds depend on it). Any real dtype;
        never copied as a whole, never modified.
    scorer : {"gaussian", "bank"}
        :data:`SCORERS` gives each component's.
    to_cells : callable, optional
        Maps heat ``(..., N_c)`` onto the cell grid ``(..., N_cells)`` (``glcm``: bilinear
        between patch centres). None: the identity (``N_c = N_cells``).
    """

    features: npt.ArrayLike
    scorer: str
    to_cells: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class GaussianFit:
    """The Gaussian scorer of a component (SPEC §10 steps 1–2).

    Attributes
    ----------
    center, scale : (k,) ndarray of float64
        Median ``c`` and spread ``q > 0`` of each feature (the scaling).
    means : (G, k) ndarray of float64
        ``μ`` of ``z``; ``G = N_c`` (``position``) or 1 (``shared``).
    precisions : (G, k, k) ndarray of float64
        ``P``, symmetric positive definite.
    shrinkage : (G,) ndarray of float64
        The Ledoit–Wolf intensities used (diagnostics).
    """

    center: np.ndarray
    scale: np.ndarray
    means: np.ndarray
    precisions: np.ndarray
    shrinkage: np.ndarray


@dataclass(frozen=True, eq=False)
class BankFit:
    """The memory-bank scorer of a component (SPEC §10 steps 1 and 3).

    Attributes
    ----------
    center, scale : (k,) ndarray of float64
        The scaling, as :class:`GaussianFit`'s.
    mean, std : (k,) ndarray of float64
        Mean and population std (``> 0``) of ``z`` over all good cells: ``y = (z − mean)/std``.
    bank : (m, k) ndarray of float32
        The bank vectors ``b`` (in ``y`` units), in the order the coreset chose them.
    """

    center: np.ndarray
    scale: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    bank: np.ndarray
    _cache: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __getstate__(self) -> dict:
        # Sent to worker processes without the search structures: each rebuilds its own.
        return {**self.__dict__, "_cache": {}}

    @property
    def search(self) -> str:
        """How the nearest bank vector is found: ``"kdtree"`` or ``"product"`` (see
        :func:`nearest_sq_distances`); both give the same exact distances."""
        if "search" not in self._cache:
            self._cache["search"] = _search_method(self._bank64())
        return self._cache["search"]

    def _bank64(self) -> np.ndarray:
        if "bank64" not in self._cache:
            self._cache["bank64"] = self.bank.astype(np.float64)
        return self._cache["bank64"]

    def _tree(self):
        if "tree" not in self._cache:
            from scipy.spatial import cKDTree

            self._cache["tree"] = cKDTree(self._bank64(), balanced_tree=True, compact_nodes=True)
        return self._cache["tree"]

    def _product(self) -> tuple[np.ndarray, float]:
        # The float32 matrix [−2bᵀ; ‖b‖²] of the product search, and max ‖b‖.
        if "product" not in self._cache:
            bank64 = self._bank64()
            norms = np.einsum("mk,mk->m", bank64, bank64)
            augmented = np.empty((self.bank.shape[1] + 1, self.bank.shape[0]), np.float32)
            augmented[:-1] = -2.0 * self.bank.T
            augmented[-1] = norms
            self._cache["product"] = (augmented, float(np.sqrt(norms.max())))
        return self._cache["product"]


@dataclass(frozen=True, eq=False)
class FittedComponent:
    """One component of a :class:`Model`.

    Attributes
    ----------
    scorer : {"gaussian", "bank"}
    n_units : int
        ``N_c``, units per image (cells; §2 patches for ``glcm``).
    fit : GaussianFit or BankFit
        Fitted on all n good images.
    calib_mean, calib_std : (G,) ndarray of float64
        ``m_c`` and ``s_c ≥ 1e-6`` of ``ln(h_c + 1e-6)`` over the out-of-fold maps (after
        ``to_cells``): ``G = N_cells`` (``position``) or 1 (``shared``).
    """

    scorer: str
    n_units: int
    fit: GaussianFit | BankFit
    calib_mean: np.ndarray
    calib_std: np.ndarray

    @property
    def n_features(self) -> int:
        """``k_c``."""
        return int(self.fit.center.shape[0])


@dataclass(frozen=True, eq=False)
class Model:
    """A fitted format-2 model (see :func:`fit_model`).

    Attributes
    ----------
    components : dict of str to FittedComponent
        In the order given to :func:`fit_model` (the order of the heat's sum).
    unit_space : {"position", "shared"}
    seed : int
    quantile : float
        In (0, 1].
    n_cells : int
        ``N_cells``, cells per image.
    n_images : int
        ``n``, the good images fitted.
    oof_scores : (n,) ndarray of float64
        Out-of-fold image scores of the good images, in their order.
    oof_heat_min : float
        The lowest out-of-fold heat of any cell (the bottom of the pictures' scale).
    threshold : float
        ``quantile`` of ``oof_scores`` (numpy linear): anomalous when score > threshold.
    meta : dict
        The caller's JSON-ready settings (feature options, kernels, stride, version…); not used
        by the numerics.
    """

    components: dict[str, FittedComponent]
    unit_space: str
    seed: int
    quantile: float
    n_cells: int
    n_images: int
    oof_scores: np.ndarray
    oof_heat_min: float
    threshold: float
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ScoreResult:
    """What :func:`score_cells` returns; ``(b, …)`` shapes when scored as a batch.

    Attributes
    ----------
    heat : (N_cells,) or (b, N_cells) ndarray of float64
        ``H`` of every cell.
    terms : dict of str to ndarray
        Each component's calibrated term ``(ln(h_c + 1e-6) − m_c)/s_c`` alone, shaped as
        ``heat`` (``--component-maps``, per-component AUROC); they add up to ``heat``.
    score : float or (b,) ndarray of float64
        ``max`` of ``heat`` over cells.
    cell_max : int or (b,) ndarray of intp
        The cell of that maximum (row-major, the first one on ties).
    """

    heat: np.ndarray
    terms: dict[str, np.ndarray]
    score: float | np.ndarray
    cell_max: int | np.ndarray


# -- step 3 building blocks: bank size, pool, coreset, nearest neighbour ---------------------


def bank_size(n_vectors: int) -> int:
    """``m``, the bank size for ``n_vectors`` good cells.

    Notes
    -----
    ``m = min(4000, max(1, round(0.1 · N)))`` with Python's ``round`` (half to even) of the
    float ``0.1·N``. SPEC §10 writes ``min(4000, round(0.1·N))``; the floor of 1 only matters for
    ``N ≤ 5`` (a fold of 4 images of one cell), where ``round`` gives an empty bank.
    """
    return min(BANK_MAX, max(1, round(BANK_FRACTION * n_vectors)))


def pool_indices(n_vectors: int, *, seed: int) -> np.ndarray:
    """The pool the coreset is chosen from: ``(min(30000, N),)`` int64 indices of good cells.

    Notes
    -----
    ``numpy.random.default_rng(seed + 1).choice(N, size=min(30000, N), replace=False)``, one call.
    Cell index ``t = i·N_c + u`` for unit ``u`` of the ``i``-th fitted image (image-major,
    cell-minor, the fitted images in the order given: for a fold, the other four folds' images
    in increasing order).
    """
    rng = np.random.default_rng(seed + 1)
    return rng.choice(n_vectors, size=min(POOL_MAX, n_vectors), replace=False).astype(np.int64)


def k_center_greedy(vectors: npt.ArrayLike, m: int, *, seed: int) -> np.ndarray:
    """The greedy k-centre coreset: indices of ``m`` of ``vectors``, in the order chosen.

    Parameters
    ----------
    vectors : (P, k) array_like
        The pool (cast to float64).
    m : int
        ``1 ≤ m ≤ P``.
    seed : int
        The first index is ``numpy.random.default_rng(seed).integers(P)``.

    Returns
    -------
    (m,) ndarray of int64

    Notes
    -----
    With ``S`` the chosen set, repeatedly add ``argmax_{i ∉ S} min_{s ∈ S} ‖v_i − v_s‖²`` (the
    lowest index on ties), the 2-approximation of the k-centre problem [1]_ that PatchCore uses
    for its memory bank [2]_. A vector already chosen is never chosen again (with fewer than m
    distinct vectors, the rest are duplicates at distance 0). ``‖v_i − v_s‖²`` is summed over the
    features in order, ``Σ_j (v_ij − v_sj)²``, exactly as a plain loop does.

    References
    ----------
    .. [1] O. Sener and S. Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
       Approach", ICLR 2018.
    .. [2] K. Roth, L. Pemula, J. Zepeda, B. Schölkopf, T. Brox and P. Gehler, "Towards Total
       Recall in Industrial Anomaly Detection", CVPR 2022.
    """
    pool = np.asarray(vectors, dtype=np.float64)
    if pool.ndim != 2 or 0 in pool.shape:
        raise UsageError(f"vectors must be a non-empty (P, k) array, got shape {pool.shape}")
    size, k = pool.shape
    if not 1 <= m <= size:
        raise UsageError(f"m must be in 1 … {size}, got {m}")
    columns = np.ascontiguousarray(pool.T)  # one feature per row: each update is k passes
    nearest = np.full(size, np.inf)
    distance, term = np.empty(size), np.empty(size)
    chosen = np.empty(m, dtype=np.int64)
    index = int(np.random.default_rng(seed).integers(size))
    for t in range(m):
        chosen[t] = index
        centre = pool[index]
        np.subtract(columns[0], centre[0], out=distance)
        np.multiply(distance, distance, out=distance)
        for j in range(1, k):
            np.subtract(columns[j], centre[j], out=term)
            np.multiply(term, term, out=term)
            distance += term
        np.minimum(nearest, distance, out=nearest)
        nearest[index] = -1.0  # chosen: below every distance
        index = int(np.argmax(nearest))
    return chosen


def _search_method(bank: np.ndarray) -> str:
    """``kdtree`` when the bank's participation ratio ``(Σλ)² / Σλ²`` (λ the eigenvalues of its
    covariance: about the number of directions it spreads in) is at most 6, else ``product``."""
    centred = bank - bank.mean(axis=0)
    eigenvalues = np.linalg.eigvalsh(centred.T @ centred / max(1, bank.shape[0]))
    total, squares = float(eigenvalues.sum()), float((eigenvalues**2).sum())
    ratio = total * total / squares if squares > 0 else 0.0
    return "kdtree" if ratio <= KD_TREE_MAX_SPREAD else "product"


def _search_tree(y: np.ndarray, part: BankFit) -> np.ndarray:
    """Exact ``min_b ‖y − b‖²`` by the k-d tree: its neighbour, measured in float64."""
    _, nearest = part._tree().query(y, k=1)
    diff = y - part._bank64()[nearest]
    return np.einsum("qk,qk->q", diff, diff)


def _search_product(y: np.ndarray, part: BankFit) -> np.ndarray:
    """Exact ``min_b ‖y − b‖²`` (q,) of float64 rows ``y`` (q, k) by float32 products, one
    block at a time, with the rounding guard of :func:`nearest_sq_distances`."""
    augmented, radius = part._product()
    bank64 = part._bank64()
    q, k = y.shape
    m = bank64.shape[0]
    out = np.empty(q)
    rows = np.empty((min(_NN_BLOCK, q), k + 1), np.float32)
    rows[:, k] = 1.0
    table = np.empty((rows.shape[0], m), np.float32)
    # |D̃ − D| ≤ γ (‖y‖ + max‖b‖)²: float32 rounding of y, of ‖b‖² and of a length-(k+1) dot
    # product, (k + 3)·u, doubled for safety.
    gamma = 2.0 * (k + 3) * _U32
    for first in range(0, q, _NN_BLOCK):
        block = y[first : first + _NN_BLOCK]
        b = block.shape[0]
        mine, d = rows[:b], table[:b]
        mine[:, :k] = block
        np.matmul(mine, augmented, out=d)  # D̃ = ‖b‖² − 2 y·b, float32
        best = d.argmin(axis=1)
        at = np.arange(b)
        diff = block - bank64[best]
        exact = np.einsum("bk,bk->b", diff, diff)
        norm2 = np.einsum("bk,bk->b", block, block)
        bound = gamma * (np.sqrt(norm2) + radius) ** 2 + 1e-300
        if m > 1:
            d[at, best] = np.inf
            second = d.min(axis=1).astype(np.float64)
            # Every other b has ‖y − b‖² ≥ ‖y‖² + D̃ − bound ≥ ‖y‖² + second − bound.
            doubtful = np.flatnonzero(~(norm2 + second - bound > exact))
            if doubtful.size:
                limit = (exact - norm2 + bound)[doubtful]
                r, c = np.nonzero(d[doubtful] <= limit[:, None])
                if r.size:
                    gap = block[doubtful[r]] - bank64[c]
                    np.minimum.at(exact, doubtful[r], np.einsum("pk,pk->p", gap, gap))
        out[first : first + b] = exact
    return out


def _search_bank(y: np.ndarray, part: BankFit, method: str | None = None) -> np.ndarray:
    if (method or part.search) == "kdtree":
        return _search_tree(y, part)
    return _search_product(y, part)


def nearest_sq_distances(
    y: npt.ArrayLike, bank: npt.ArrayLike | BankFit, *, method: str | None = None
) -> np.ndarray:
    """Exact squared Euclidean distance from each row of ``y`` to its nearest bank vector.

    Parameters
    ----------
    y : (q, k) array_like
        Query vectors (cast to float64).
    bank : (m, k) array_like or BankFit
        Bank vectors (cast to float32, as a model stores them), or a fitted bank.
    method : {None, "kdtree", "product"}, optional
        The search; None: the bank's own choice (``BankFit.search``). Both give the distance of
        the nearest vector by the direct formula; only their speed differs.

    Returns
    -------
    (q,) ndarray of float64
        ``min_b Σ_j (y_j − b_j)² ≥ 0``, summed in float64; 0 for a bank vector itself.

    Notes
    -----
    Which search is faster depends on how many directions the bank spreads in, measured by the
    participation ratio ``(Σλ)² / Σλ²`` of its covariance's eigenvalues (k for isotropic data;
    about 3 for the ``stats`` of real photos, luma or rgb). At most 6: ``kdtree``, else
    ``product``; the choice depends on the bank only, so a model always searches the same way.

    ``kdtree`` (``scipy.spatial.cKDTree``, exact search, float64): the neighbour it returns is
    measured again by the direct formula.

    ``product``: in blocks of 128 queries, one float32 product gives ``D̃ = ‖b‖² − 2 y·b``
    against the whole bank (``‖y − b‖² = ‖y‖² + D``). Its rounding is bounded,
    ``|D̃ − D| ≤ E = 2 (k + 3) u (‖y‖ + max ‖b‖)²`` with ``u = 2⁻²⁴`` (float32 rounding of
    ``y``, of ``‖b‖²`` and of the ``k + 1`` products and sums, doubled). The candidate
    ``a = argmin D̃`` is measured exactly in float64; it is the nearest when the second smallest
    ``D̃₂`` satisfies ``‖y‖² + D̃₂ − E > ‖y − b_a‖²``; otherwise every ``b`` with
    ``‖y‖² + D̃ − E ≤ ‖y − b_a‖²`` is measured exactly too and the least kept. Never the product
    form's value, so ``h ≥ 0`` and ``h = 0`` on a bank vector.
    """
    part = bank if isinstance(bank, BankFit) else None
    if part is None:
        vectors = np.asarray(bank)
        if vectors.ndim != 2 or 0 in vectors.shape or vectors.dtype.kind not in "biuf":
            raise UsageError(f"bank must be a non-empty real (m, k) array, got {vectors.shape}")
        k = vectors.shape[1]
        zeros = np.zeros(k)
        part = BankFit(zeros, zeros + 1, zeros, zeros + 1, vectors.astype(np.float32))
    if method not in (None, "kdtree", "product"):
        raise UsageError(f"method must be kdtree or product, got {method!r}")
    queries = np.asarray(y, dtype=np.float64)
    if queries.ndim != 2 or queries.shape[1] != part.bank.shape[1]:
        raise UsageError(f"y must be a (q, {part.bank.shape[1]}) array, got shape {queries.shape}")
    return _search_bank(queries, part, method)


# -- fitting one component ------------------------------------------------------------------


def _blocks(rows: np.ndarray, per_row: int):
    step = max(1, _CHUNK_VALUES // max(1, per_row))
    for first in range(0, len(rows), step):
        yield first, rows[first : first + step]


def _z_block(features: np.ndarray, rows: np.ndarray, center, scale) -> np.ndarray:
    block = features[rows].astype(np.float64, copy=False)  # fancy indexing made it ours
    return _scale_into(block, center, scale)


def _z_moments(features: np.ndarray, rows: np.ndarray, center, scale):
    """Mean and population std of ``z`` per feature over all cells of the images ``rows``:
    one block of images at a time, merged exactly as Chan et al. (1979) do."""
    _, n_units, k = features.shape
    count, mean, m2 = 0, np.zeros(k), np.zeros(k)
    for _, part in _blocks(rows, n_units * k):
        z = _z_block(features, part, center, scale).reshape(-1, k)
        size = z.shape[0]
        block_mean = z.mean(axis=0)
        z -= block_mean
        block_m2 = np.einsum("ck,ck->k", z, z)
        total = count + size
        delta = block_mean - mean
        mean = mean + delta * (size / total)
        m2 = m2 + block_m2 + delta**2 * (count * size / total)
        count = total
    std = np.sqrt(m2 / count)
    std[~(std > TINY)] = 1.0
    return mean, std


def _y_of_cells(features: np.ndarray, rows: np.ndarray, cells: np.ndarray, part: tuple):
    """``y`` (len(cells), k) float64 of flat cell indices ``t = i·N_c + u`` over ``rows``."""
    center, scale, mean, std = part
    n_units = features.shape[1]
    values = features[rows[cells // n_units], cells % n_units].astype(np.float64)
    _scale_into(values, center, scale)
    values -= mean
    values /= std
    return values


def _fit_bank(features: np.ndarray, rows: np.ndarray, seed: int) -> BankFit:
    center, scale = _scaling(features, rows)
    mean, std = _z_moments(features, rows, center, scale)
    n_vectors = len(rows) * features.shape[1]
    m = bank_size(n_vectors)
    standard = (center, scale, mean, std)
    if m >= n_vectors:  # unreachable with m ≤ round(N/10) < N, kept as SPEC writes it
        bank = _y_of_cells(features, rows, np.arange(n_vectors), standard)
    else:
        pool = pool_indices(n_vectors, seed=seed)
        vectors = _y_of_cells(features, rows, pool, standard)
        bank = vectors[k_center_greedy(vectors, m, seed=seed)]
    return BankFit(center, scale, mean, std, bank.astype(np.float32))


def _fit_gaussian(features: np.ndarray, rows: np.ndarray, unit_space: str) -> GaussianFit:
    return GaussianFit(*_fit(features, rows, unit_space))


def _fit_part(features, rows, scorer, unit_space, seed):
    if scorer == "gaussian":
        return _fit_gaussian(features, rows, unit_space)
    return _fit_bank(features, rows, seed)


def _raw_heat(part: GaussianFit | BankFit, features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``h`` (len(rows), N_c) float64 of the images ``rows`` of ``features`` (n, N_c, k)."""
    _, n_units, k = features.shape
    if isinstance(part, GaussianFit):
        return _distances(features, rows, part.center, part.scale, part.means, part.precisions)
    out = np.empty((len(rows), n_units))
    for first, images in _blocks(rows, n_units * k):
        y = _z_block(features, images, part.center, part.scale).reshape(-1, k)
        y -= part.mean
        y /= part.std
        out[first : first + len(images)] = _search_bank(y, part).reshape(len(images), n_units)
    out /= k
    return out


def _on_cells(name: str, to_cells, heat: np.ndarray, n_cells: int | None) -> np.ndarray:
    if to_cells is None:
        return heat
    try:
        mapped = np.array(to_cells(heat), dtype=np.float64)  # a copy: it is modified in place
    except UsageError:
        raise
    except Exception as exc:  # a caller's callable: its failure is named, not a traceback
        raise UsageError(f"to_cells of component {name} failed: {exc}") from None
    want = heat.shape[:-1]
    if mapped.shape[:-1] != want or mapped.ndim != heat.ndim or mapped.shape[-1] == 0:
        raise UsageError(
            f"to_cells of component {name} must map shape {heat.shape} to "
            f"({', '.join(map(str, want))}, N_cells), got {mapped.shape}"
        )
    if n_cells is not None and mapped.shape[-1] != n_cells:
        raise UsageError(
            f"to_cells of component {name} gives {mapped.shape[-1]} cells, expected {n_cells}"
        )
    if not (np.isfinite(mapped).all() and (mapped >= 0).all()):
        raise UsageError(f"to_cells of component {name} must give finite values ≥ 0")
    return mapped


# -- validation -----------------------------------------------------------------------------


def _check_array(name: str, features: npt.ArrayLike) -> np.ndarray:
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"features of {name} must be a real array, got dtype {array.dtype}")
    return array


def _check_components(components: Mapping[str, ComponentData]) -> list[tuple]:
    if not isinstance(components, Mapping) or not components:
        raise UsageError("fit needs at least one component")
    checked = []
    n = None
    for name, data in components.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise UsageError(f"component name must be lower-case letters and digits: {name!r}")
        if not isinstance(data, ComponentData):
            raise UsageError(f"component {name} must be a ComponentData, got {type(data).__name__}")
        if data.scorer not in SCORER_KINDS:
            raise UsageError(
                f"scorer of {name} must be one of {', '.join(SCORER_KINDS)}: got {data.scorer!r}"
            )
        if data.to_cells is not None and not callable(data.to_cells):
            raise UsageError(f"to_cells of {name} must be callable or None")
        array = _check_array(name, data.features)
        size = array.shape[0] if array.ndim else 0
        if size < MIN_GOOD_IMAGES:
            raise UsageError(f"fit needs at least {MIN_GOOD_IMAGES} good images, got {size}")
        if array.ndim != 3 or 0 in array.shape:
            raise UsageError(
                f"features of {name} must be an (n, N_c, k_c) array with N_c, k_c ≥ 1, "
                f"got shape {array.shape}"
            )
        if n is not None and size != n:
            raise UsageError(f"every component needs the same images: {name} has {size}, not {n}")
        n = size
        checked.append((name, array, data.scorer, data.to_cells))
    return checked


def _cell_count(checked: list[tuple]) -> int:
    """``N_cells``, before any work: the ``N_c`` of the identity components, else what each
    ``to_cells`` makes of one image of zeros; every component must agree."""
    n_cells: int | None = None
    for name, features, _, to_cells in checked:
        units = features.shape[1]
        count = units if to_cells is None else _on_cells(name, to_cells, np.zeros((1, units)), None)
        count = count if isinstance(count, int) else count.shape[1]
        if n_cells is not None and count != n_cells:
            raise UsageError(
                f"component {name} has {count} cells per image, not the {n_cells} of "
                f"{checked[0][0]}" + ("" if to_cells else ": give it a to_cells mapping")
            )
        n_cells = count
    assert n_cells is not None
    return n_cells


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"seed must be an integer ≥ 0, got {seed!r}")
    return int(seed)


def folds(n: int) -> np.ndarray:
    """Fold of each good image: ``i mod 5`` (``(n,)`` int64)."""
    return np.arange(n, dtype=np.int64) % N_FOLDS


def _out_of_fold(checked: list[tuple], *, unit_space: str, seed: int, n_cells: int) -> dict:
    """Step 4: the out-of-fold maps ``h_c`` (n, N_cells) float64 of every component: fold
    ``f`` scored by steps 1–3 refitted on the other folds' rows."""
    n = checked[0][1].shape[0]
    fold, everyone = folds(n), np.arange(n)
    maps = {name: np.empty((n, n_cells)) for name, *_ in checked}
    for f in range(N_FOLDS):
        held, kept = everyone[fold == f], everyone[fold != f]
        for name, features, scorer, to_cells in checked:
            part = _fit_part(features, kept, scorer, unit_space, seed)
            maps[name][held] = _on_cells(name, to_cells, _raw_heat(part, features, held), n_cells)
    return maps


# -- public API -----------------------------------------------------------------------------


def fit_model(
    components: Mapping[str, ComponentData],
    *,
    unit_space: str = "position",
    seed: int = 0,
    quantile: float = 0.99,
    meta: Mapping[str, Any] | None = None,
) -> Model:
    """Fit a format-2 model on the features of good images (SPEC §10, steps 1–5).

    Parameters
    ----------
    components : mapping of str to ComponentData
        Each component's good-image features ``(n, N_c, k_c)``, scorer and ``to_cells``; the
        same n images in the same (sorted) order for all. Never modified or copied whole.
    unit_space : {"position", "shared"}, optional
        Gaussians and calibration per cell position (default, aligned parts) or shared.
    seed : int, optional
        Fixes the pool and the coreset's first vector. Default 0.
    quantile : float, optional
        Of the out-of-fold image scores, in (0, 1]: the threshold. Default 0.99.
    meta : mapping, optional
        The caller's JSON-ready settings, stored in the model as they are.

    Returns
    -------
    Model

    Raises
    ------
    UsageError
        Fewer than 5 good images (0 included), no component, a wrong shape, dtype, scorer,
        ``unit_space``, ``seed`` or ``quantile``, a ``to_cells`` that does not give one
        ``(…, N_cells)`` map of finite values ≥ 0 (the same ``N_cells`` for every component),
        or a ``meta`` that is not JSON.

    Notes
    -----
    Every step in float64 (the bank is stored in float32).

    1. **Scaling**, per component and feature over all units of the fitted images (finite values
       only): median ``c``, ``q = p75 − p25`` (numpy linear), else the population std, else 1;
       ``u = (x − c)/q``, ``z = sign(u) ln(1 + |u|)``, non-finite ``z`` → 0.
    2. **Gaussian** (per position, or shared): ``μ``, ``σ`` (≤ 1e-12 → 1), ``C`` the correlation
       matrix of ``z/σ`` shrunk toward ``I`` by the Ledoit–Wolf intensity [1]_,
       ``Σ = diag(σ) C diag(σ)``, ``P = (Σ + 1e-9 (tr Σ / k) I)⁻¹`` symmetrised;
       ``h = (z − μ)ᵀ P (z − μ) / k ≥ 0`` (:mod:`soartc_cli.core.unitspace` documents the
       intensity).
    3. **Bank**: ``y = (z − mean)/std`` over all ``N = n·N_c`` good units (std ≤ 1e-12 → 1);
       ``m =`` :func:`bank_size` ``(N)``; the pool :func:`pool_indices` and the coreset
       :func:`k_center_greedy` (both from ``seed``) give the bank; ``h = min_b ‖y − b‖² / k``
       (:func:`nearest_sq_distances`, exact).
    4. **Calibration**: image ``i`` is in fold ``i mod 5``; steps 1–3 are refitted on the other
       four folds (row-index arrays into the same features) and fold ``f`` is scored; ``to_cells``
       maps each out-of-fold ``h_c`` onto the cells. ``m_c``, ``s_c`` = mean and population std
       of ``ln(h_c + 1e-6)`` over the n out-of-fold maps, per cell (``position``) or over all
       cells (``shared``), ``s_c ≥ 1e-6``.
    5. **Heat** ``H = Σ_c (ln(h_c + 1e-6) − m_c)/s_c`` (components in the given order); image
       score ``max H``; ``threshold = np.quantile(oof_scores, quantile)`` of the out-of-fold
       scores (the max of the out-of-fold ``H``). The model's scorers are fitted on all n images.

    Memory: :func:`memory_need` (features, the out-of-fold maps, one fit's working set).

    References
    ----------
    .. [1] O. Ledoit and M. Wolf, "A well-conditioned estimator for large-dimensional covariance
       matrices", *Journal of Multivariate Analysis* 88(2), 365–411, 2004.
    .. [2] K. Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
    .. [3] O. Sener and S. Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
       Approach", ICLR 2018.
    """
    checked = _check_components(components)
    if unit_space not in UNIT_SPACES:
        raise UsageError(f"unit_space must be one of {', '.join(UNIT_SPACES)}: got {unit_space!r}")
    seed = _check_seed(seed)
    q = _check_quantile(quantile)
    meta_dict = dict(meta or {})
    try:
        json.dumps(meta_dict, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"meta must be JSON-ready: {exc}") from None
    n_cells = _cell_count(checked)
    n = checked[0][1].shape[0]
    everyone = np.arange(n)
    logs = _out_of_fold(checked, unit_space=unit_space, seed=seed, n_cells=n_cells)

    # Step 4 (end) and 5: calibrate in place, ln(h + ε) → the calibrated term, summed into H.
    oof_heat = np.zeros((n, n_cells))
    calibration = {}
    for name, _, _, _ in checked:
        term = logs.pop(name)
        term += EPSILON
        np.log(term, out=term)
        if unit_space == "position":
            centre, spread = term.mean(axis=0), term.std(axis=0)
        else:
            centre, spread = np.array([term.mean()]), np.array([term.std()])
        spread = np.maximum(spread, STD_FLOOR)
        calibration[name] = (centre, spread)
        term -= centre
        term /= spread
        oof_heat += term
        del term
    oof_scores = oof_heat.max(axis=1)
    oof_heat_min = float(oof_heat.min())
    del oof_heat

    fitted = {}
    for name, features, scorer, _ in checked:
        part = _fit_part(features, everyone, scorer, unit_space, seed)
        centre, spread = calibration[name]
        fitted[name] = FittedComponent(scorer, int(features.shape[1]), part, centre, spread)
    return Model(
        components=fitted,
        unit_space=unit_space,
        seed=seed,
        quantile=q,
        n_cells=int(n_cells),
        n_images=int(n),
        oof_scores=oof_scores,
        oof_heat_min=oof_heat_min,
        threshold=float(np.quantile(oof_scores, q)),
        meta=meta_dict,
    )


def score_cells(
    model: Model,
    features: Mapping[str, npt.ArrayLike],
    *,
    to_cells: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> ScoreResult:
    """Heat of every cell of one image, or of a batch, and the image score (SPEC §10 step 5).

    Parameters
    ----------
    model : Model
    features : mapping of str to array_like
        Every component of the model (and no other): ``(N_c, k_c)`` for one image or
        ``(b, N_c, k_c)`` for b images (all components alike). Any real dtype; never modified.
    to_cells : mapping of str to callable, optional
        As :class:`ComponentData`'s, for components whose ``N_c`` is not ``N_cells`` (a model
        file does not hold callables).

    Returns
    -------
    ScoreResult

    Raises
    ------
    UsageError
        A missing or unknown component, a shape that is not the model's, or a missing or wrong
        ``to_cells``.

    Notes
    -----
    ``H = Σ_c (ln(h_c + 1e-6) − m_c)/s_c`` with ``h_c`` of the model's scorers, ``m_c, s_c`` of
    the cell position (``position``) or the component (``shared``). Scoring works in blocks of
    images (16 MB of float64 values) and of 128 cells against the bank.
    """
    if not isinstance(features, Mapping):
        raise UsageError("features must be a mapping of component name to array")
    missing = [name for name in model.components if name not in features]
    extra = [str(name) for name in features if name not in model.components]
    if missing or extra:
        raise UsageError(
            "features must hold the model's components "
            f"{', '.join(model.components)}: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    mappings = dict(to_cells or {})
    single: bool | None = None
    heat = None
    terms: dict[str, np.ndarray] = {}
    for name, component in model.components.items():
        array = _check_array(name, features[name])
        want = (component.n_units, component.n_features)
        if array.ndim not in (2, 3) or array.shape[-2:] != want:
            raise UsageError(
                f"features of {name} must be {want} or (b, *{want}), got shape {array.shape}"
            )
        if single is None:
            single = array.ndim == 2
        elif single != (array.ndim == 2):
            raise UsageError("features must be all one image (N_c, k_c) or all a batch")
        batch = array[None] if array.ndim == 2 else array
        mapping = mappings.get(name)
        if mapping is None and component.n_units != model.n_cells:
            raise UsageError(
                f"component {name} has {component.n_units} units per image, not "
                f"{model.n_cells} cells: give its to_cells mapping"
            )
        raw = _raw_heat(component.fit, batch, np.arange(batch.shape[0]))
        term = _on_cells(name, mapping, raw, model.n_cells)  # a new array, ours
        term += EPSILON
        np.log(term, out=term)
        term -= component.calib_mean
        term /= component.calib_std
        terms[name] = term
        heat = term.copy() if heat is None else heat + term
    assert heat is not None
    cell_max = heat.argmax(axis=1)
    score = heat[np.arange(heat.shape[0]), cell_max]
    if single:
        return ScoreResult(
            heat[0], {k: v[0] for k, v in terms.items()}, float(score[0]), int(cell_max[0])
        )
    return ScoreResult(heat, terms, score, cell_max)


# -- memory ---------------------------------------------------------------------------------

_BLOCK_BYTES = _CHUNK_VALUES * 8  # one block of float64 values
MODULE_BYTES = 48 << 20
"""What the modules a fit loads add to the resident size (``scipy.spatial``: 33 MiB)."""


def memory_need(
    n_images: int,
    *,
    components: Mapping[str, tuple],
    n_cells: int | None = None,
    unit_space: str = "position",
) -> int:
    """Bytes that :func:`fit_model` needs at its peak, the features included.

    Parameters
    ----------
    n_images : int
        n, the good images.
    components : mapping of str to tuple
        ``(N_c, k_c, dtype)`` of each component's features as the caller will hold them, or
        ``(N_c, k_c, dtype, scorer)``; without a scorer, :data:`SCORERS` gives it by name.
    n_cells : int, optional
        ``N_cells``; default: the ``N_c`` shared by the components.
    unit_space : {"position", "shared"}, optional

    Returns
    -------
    int
        An upper bound of the bytes that the fit adds to the resident size of a process that
        has imported ``soartc_cli`` (about 30 MiB, not counted): numpy's allocations at their
        peak and the modules it loads (:data:`MODULE_BYTES`).

    Notes
    -----
    ``features + 8·n·N_cells·(C + 1) + max_c(working set of c) + 49 MiB``:

    - the features, ``n · N_c · k_c · itemsize`` each, held by the caller;
    - the out-of-fold maps (one ``(n, N_cells)`` float64 per component) and ``H``;
    - the scaling of one feature column, ``n · N_c · (itemsize + 33)`` (the column, its float64
      copy, its finite values, their sorted copy, a mask);
    - blocks of about 2²¹ float64 values (16 MB, less when the features are smaller) while
      scaling, standardising and scoring: 4 at once (a block, its copy, a sign, a product);
    - a ``shared`` Gaussian: its ``z``, ``n · N_c · k_c · 8``, twice (the correlation's product);
    - a position Gaussian: ``N_c (k_c² + 2k_c + 1) · 8`` per fit, two fits alive;
    - a bank: the pool's ``y``, ``30000 · k · 8``, three times and the coreset's buffers, or the
      search table ``128 × 4000`` float32 and blocks; two banks alive;
    - 48 MiB for the modules loaded (``scipy.spatial``) and 1 MiB of small arrays.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise UsageError(f"n_images must be an integer ≥ 0, got {n_images!r}")
    if unit_space not in UNIT_SPACES:
        raise UsageError(f"unit_space must be one of {', '.join(UNIT_SPACES)}: got {unit_space!r}")
    if not isinstance(components, Mapping) or not components:
        raise UsageError("memory_need needs at least one component")
    n = int(n_images)
    shapes = []
    for name, spec in components.items():
        if not isinstance(spec, tuple) or len(spec) not in (3, 4):
            raise UsageError(f"component {name}: give (N_c, k_c, dtype) or with a scorer")
        n_units, k, dtype = spec[:3]
        scorer = spec[3] if len(spec) == 4 else SCORERS.get(name)
        if scorer not in SCORER_KINDS:
            raise UsageError(f"component {name}: unknown scorer {scorer!r}")
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError as exc:
            raise UsageError(f"component {name}: not a dtype: {exc}") from None
        for label, value in (("N_c", n_units), ("k_c", k)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"component {name}: {label} must be an integer ≥ 1")
        shapes.append((int(n_units), int(k), itemsize, scorer))
    if n_cells is None:
        units = {s[0] for s in shapes}
        if len(units) != 1:
            raise UsageError("components have different N_c: give n_cells")
        n_cells = units.pop()
    features = sum(n * u * k * size for u, k, size, _ in shapes)
    maps = 8 * n * n_cells * (len(shapes) + 1)
    working = 0
    for u, k, size, scorer in shapes:
        # blocks hold whole images (scoring) or whole positions (position fits), ≤ 16 MB
        block = min(max(_BLOCK_BYTES, u * k * 8, n * k * 8), n * u * k * 8)
        scaling = n * u * (size + 33)
        if scorer == "gaussian":
            need = max(scaling, 4 * block)
            if unit_space == "shared":
                need = max(need, 2 * n * u * k * 8 + 3 * block)
            else:
                need += 2 * u * (k * k + 2 * k + 1) * 8
        else:
            pool = min(POOL_MAX, n * u)
            search = _NN_BLOCK * (BANK_MAX * 4 + (k + 1) * 4) + 2 * BANK_MAX * (k + 1) * 8
            need = max(scaling, 3 * block + search, 3 * pool * k * 8 + 4 * pool * 8)
            need += 2 * BANK_MAX * k * 12  # two banks alive, float32 and float64
        working = max(working, need)
    return int(features + maps + working + MODULE_BYTES + (1 << 20))
