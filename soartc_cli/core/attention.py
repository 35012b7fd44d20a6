"""Scaled dot-product attention: the seed article's demo and attention over image patches.

Pure functions on arrays: no I/O, no printing, no global random state.

References
----------
Vaswani, A. et al. (2017). Attention is all you need. NeurIPS 30.
QEU (2024). QEUR23_VTFDEV1: SOARTC metrics — an introduction (the seed article, ../shared/seed/).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from soartc_cli.core.names import check_choice
from soartc_cli.core.patches import patch_view
from soartc_cli.errors import InputError, UsageError

#: The seed article's four "words", one embedding of width 4 per row.
SEED_WORDS = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=np.int64)

#: Names of the demo's matrices, in the order the article prints them.
DEMO_MATRICES = ("X", "W_Q", "W_K", "W_V", "Q", "K", "V", "scores", "probs", "attention")

SOFTMAX_MODES = ("row", "global")
NORMS = ("layer", "none")
WEIGHT_MODES = ("random", "identity")
#: Names of the per-patch attention metrics, in column order.
ATTENTION_METRICS = ("received", "entropy")
LAYER_NORM_EPS = 1e-5
#: Largest seed numpy's legacy RandomState accepts.
MAX_SEED = 2**32 - 1
#: Names of the arrays a ``--weights`` file must hold.
WEIGHT_NAMES = ("W_Q", "W_K", "W_V")
#: Largest ``d`` (columns of each weight matrix) accepted from a file; ViT projections use 64 per
#: head and at most a few thousand in all.
MAX_WEIGHTS_DIM = 4096
#: Bound on ``2·k²·d·max|W_Q|·max|W_K|``, the largest size a difference of two scores can reach
#: (see :func:`check_weights`), leaving float64 (1.8·10³⁰⁸) eight orders of magnitude of room.
MAX_SCORE_BOUND = 1e300
#: Most patches one image may have for attention: time grows as N², so this bounds each image to
#: a few seconds (a 2048×2048 image at ``--patch 16``; at ``--size 224``, N is 196).
MAX_ATTENTION_PATCHES = 1 << 14
#: Entries of the ``(rows, N)`` score block computed at a time: memory stays some tens of MB
#: whatever N is, and images with ``N² ≤`` this are computed in one block, as before.
ATTENTION_BLOCK = 1 << 21


def softmax(x: np.ndarray, *, axis: int | None = -1) -> np.ndarray:
    """Softmax along ``axis``; ``axis=None`` takes one softmax over every entry.

    Parameters
    ----------
    x : ndarray
        Scores, any shape.
    axis : int or None
        The axis whose entries sum to 1, or None for the whole array (what ``scipy.special.softmax``
        does without ``axis``, and what the seed article's code does).

    Returns
    -------
    ndarray
        float64, the shape of ``x``.

    Notes
    -----
    ``softmax(x)_i = exp(x_i − max x) / Σ_j exp(x_j − max x)``; subtracting the maximum leaves the
    result unchanged and keeps ``exp`` from overflowing.
    """
    x = np.asarray(x, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def scaled_dot_product(
    q: np.ndarray, k: np.ndarray, *, softmax_axis: int | None = -1
) -> tuple[np.ndarray, np.ndarray]:
    """Attention scores and probabilities of queries ``q`` against keys ``k``.

    Parameters
    ----------
    q : (n, d) ndarray
    k : (n, d) ndarray
    softmax_axis : int or None
        -1 for the standard row softmax, None for the seed article's global softmax.

    Returns
    -------
    scores : (n, n) ndarray
        ``q kᵀ``, in the dtype numpy gives (integers stay integers).
    probs : (n, n) float64 ndarray
        ``softmax(scores / √d)``.
    """
    scores = q @ k.T
    probs = softmax(scores / np.sqrt(k.shape[1]), axis=softmax_axis)
    return scores, probs


@dataclass(frozen=True)
class DemoResult:
    """The ten matrices of the seed demo, in the article's order (see ``DEMO_MATRICES``)."""

    X: np.ndarray
    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray
    Q: np.ndarray
    K: np.ndarray
    V: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    attention: np.ndarray
    softmax: str

    def matrices(self) -> dict[str, np.ndarray]:
        """The matrices by name, in print order."""
        return {name: getattr(self, name) for name in DEMO_MATRICES}


def seed_demo(
    words: np.ndarray = SEED_WORDS,
    *,
    seed: int = 42,
    high: int = 3,
    dim: int = 3,
    softmax: str = "row",
) -> DemoResult:
    """The seed article's attention calculation, reproducible to every printed digit.

    Parameters
    ----------
    words : (n, k) ndarray
        The input ``X``, one word embedding per row.
    seed : int
        Seed of ``numpy.random.RandomState`` (the article's legacy ``numpy.random.seed``).
    high : int
        Weights are integers drawn from ``[0, high)``.
    dim : int
        ``d``, the width of the projections.
    softmax : {"row", "global"}
        "row": the standard attention (each row of ``probs`` sums to 1); "global": one softmax over
        the whole matrix, as the article's code does.

    Returns
    -------
    DemoResult

    Notes
    -----
    ``W_Q, W_K, W_V = randint(high, size=(k, d))`` three times, in that order;
    ``Q = X W_Q``, ``K = X W_K``, ``V = X W_V``, ``scores = Q Kᵀ``,
    ``probs = softmax(scores / √d)``, ``attention = probs V``.
    """
    check_choice(softmax, name="--softmax", choices=SOFTMAX_MODES)
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}, not {seed}")
    if high < 1:
        raise UsageError(
            f"--high must be at least 1 (weights are drawn from [0, high)), not {high}"
        )
    if dim < 1:
        raise UsageError(f"--dim must be at least 1, not {dim}")
    x = np.asarray(words)
    if x.ndim != 2 or x.size == 0:
        raise UsageError("--words must be a non-empty matrix")
    rng = np.random.RandomState(seed)
    k = x.shape[1]
    w_q = rng.randint(high, size=(k, dim))
    w_k = rng.randint(high, size=(k, dim))
    w_v = rng.randint(high, size=(k, dim))
    q, key, v = x @ w_q, x @ w_k, x @ w_v
    scores, probs = scaled_dot_product(q, key, softmax_axis=-1 if softmax == "row" else None)
    return DemoResult(
        X=x, W_Q=w_q, W_K=w_k, W_V=w_v, Q=q, K=key, V=v,
        scores=scores, probs=probs, attention=probs @ v, softmax=softmax,
    )  # fmt: skip


def layer_norm(x: np.ndarray, *, eps: float = LAYER_NORM_EPS) -> np.ndarray:
    """Standardise each row like a LayerNorm without affine parameters.

    Parameters
    ----------
    x : (n, k) ndarray

    Returns
    -------
    (n, k) float64 ndarray
        ``(x − mean(x)) / √(var(x) + eps)`` per row, population variance.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps)


@dataclass(frozen=True)
class Weights:
    """Projection matrices ``W_Q, W_K, W_V``, each ``(k, d)`` float64."""

    W_Q: np.ndarray
    W_K: np.ndarray
    W_V: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(k, d)``."""
        return self.W_Q.shape


def random_weights(k: int, *, dim: int = 64, seed: int = 42) -> Weights:
    """``W_Q, W_K, W_V``, in that order: ``default_rng(seed).standard_normal((k, dim)) / √k``."""
    if dim < 1:
        raise UsageError(f"--dim must be at least 1, not {dim}")
    if seed < 0:
        raise UsageError(f"--seed must not be negative, not {seed}")
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(k)
    w = [rng.standard_normal((k, dim)) * scale for _ in range(3)]
    return Weights(*w)


def identity_weights(k: int) -> Weights:
    """``W_Q = W_K = W_V = I_k``: attention as plain patch self-similarity (d = k)."""
    eye = np.eye(k)
    return Weights(eye, eye, eye)


def check_weights(arrays: Mapping[str, np.ndarray], *, k: int) -> Weights:
    """Validate user weights (for example the arrays of an ``.npz`` file) for inputs of width ``k``.

    Parameters
    ----------
    arrays : mapping of str to ndarray
        Must hold ``W_Q``, ``W_K`` and ``W_V``; other keys are ignored.
    k : int
        Width of the inputs (``P²``, or ``3·P²`` with RGB).

    Returns
    -------
    Weights
        The three matrices as float64 copies.

    Raises
    ------
    UsageError
        A matrix is missing, not a ``(k, d)`` matrix of real numbers with the same ``d ≥ 1`` for
        all three, holds NaN or ±inf, or ``W_Q`` and ``W_K`` are so large that the scores
        ``Q Kᵀ`` could overflow (see Notes). Messages start ``--weights: ``.

    Notes
    -----
    Inputs are rows ``x`` with ``‖x‖₂ ≤ √k``: pixels in [0, 1] (``--norm none``), or a LayerNorm
    row, whose squares sum to ``k·var/(var + ε) < k``. With ``w_Q = max|W_Q|`` and
    ``w_K = max|W_K|``, each column of ``W_Q`` has norm at most ``√k·w_Q``, so
    ``|Q_ij| ≤ k·w_Q``, ``‖Q_i‖ ≤ k·√d·w_Q`` and ``|score| = |Q_i·K_j| ≤ k²·d·w_Q·w_K``. The
    softmax subtracts the row maximum, so the largest number formed is a difference of two
    scores, at most ``2·k²·d·w_Q·w_K``; it must not exceed :data:`MAX_SCORE_BOUND` (10³⁰⁰).
    Real projections are far below it (a ViT-B layer: about 10⁸). ``W_V`` enters neither metric
    and needs only be finite. The bound is computed in logarithms, so it cannot overflow itself.
    """
    missing = [name for name in WEIGHT_NAMES if name not in arrays]
    if missing:
        raise UsageError(f"--weights: file lacks {', '.join(missing)} (needs W_Q, W_K, W_V)")
    w = {name: np.asarray(arrays[name]) for name in WEIGHT_NAMES}
    shapes = {name: a.shape for name, a in w.items()}
    d = w["W_Q"].shape[-1] if w["W_Q"].ndim == 2 else None
    for name, a in w.items():
        if a.ndim != 2 or a.shape[0] != k or a.shape[1] != d or d == 0:
            shown = ", ".join(f"{n} {s}" for n, s in shapes.items())
            raise UsageError(
                f"--weights: each of W_Q, W_K, W_V must have shape (k, d) = ({k}, d) "
                f"for these patches; got {shown}"
            )
        if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
            raise UsageError(f"--weights: {name} must hold finite numbers")
    converted = {n: w[n].astype(np.float64) for n in WEIGHT_NAMES}
    _check_score_bound(converted["W_Q"], converted["W_K"], k=k)
    return Weights(*(converted[n] for n in WEIGHT_NAMES))


def _check_score_bound(w_q: np.ndarray, w_k: np.ndarray, *, k: int) -> None:
    """Refuse ``W_Q``, ``W_K`` whose scores could overflow (the bound of :func:`check_weights`)."""
    largest_q = float(np.max(np.abs(w_q)))
    largest_k = float(np.max(np.abs(w_k)))
    if largest_q == 0.0 or largest_k == 0.0:
        return
    d = w_q.shape[1]
    log_bound = (
        math.log10(2.0) + 2 * math.log10(k) + math.log10(d)
        + math.log10(largest_q) + math.log10(largest_k)
    )  # fmt: skip
    if log_bound > math.log10(MAX_SCORE_BOUND):
        raise UsageError(
            f"--weights: W_Q and W_K are too large (max |W_Q| = {largest_q:.3g}, max |W_K| = "
            f"{largest_k:.3g}): scores Q·Kᵀ could overflow; need 2·k²·d·max|W_Q|·max|W_K| ≤ "
            f"{MAX_SCORE_BOUND:.0e} (k = {k}, d = {d}); scale the weights down"
        )


def patch_attention(
    x: np.ndarray, *, weights: Weights, norm: str = "layer"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch attention metrics of one image's patches.

    Parameters
    ----------
    x : (n, k) ndarray
        One row per patch (its pixel values; with RGB, its R, G and B values concatenated).
    weights : Weights
        ``(k, d)`` projections.
    norm : {"layer", "none"}
        "layer" standardises each row first (see ``layer_norm``).

    Returns
    -------
    received : (n,) float64 ndarray
        ``mean_i probs[i, j]``: how much attention patch ``j`` receives; sums to 1.
    entropy : (n,) float64 ndarray
        ``−Σ_j' probs[j, j'] ln probs[j, j']`` of patch ``j``'s own query row; in ``[0, ln n]``.

    Notes
    -----
    ``probs = softmax_row(Q Kᵀ / √d)`` with ``Q = X W_Q`` and ``K = X W_K``. ``W_V`` does not enter
    either metric. Terms with ``probs = 0`` add 0 to the entropy (the limit of ``p ln p``).
    """
    check_choice(norm, name="--norm", choices=NORMS)
    x = np.asarray(x, dtype=np.float64)
    if norm == "layer":
        x = layer_norm(x)
    _, probs = scaled_dot_product(x @ weights.W_Q, x @ weights.W_K)
    received = probs.mean(axis=0)
    plogp = probs * np.log(np.where(probs > 0, probs, 1.0))
    entropy = -plogp.sum(axis=1)
    return received, entropy


def patch_rows(image: np.ndarray, *, patch: int) -> np.ndarray:
    """The patches of an image as rows: ``(C, H, W)`` → ``(N, C·P²)``.

    Patches are row-major; a row holds the patch's first channel (row by row), then the next
    channel, so with RGB a patch's R, G and B values are concatenated. The patches are cut by
    :func:`~soartc_cli.core.patches.patch_view` (one copy, made by the final reshape).

    Raises
    ------
    UsageError
        ``image`` is not ``(H, W)`` or ``(C, H, W)``, or ``patch`` does not divide its sides.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[np.newaxis]
    if image.ndim != 3:
        raise UsageError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    blocks = patch_view(image, patch=patch).transpose(1, 2, 0, 3, 4)  # (rows, cols, C, P, P)
    rows, cols, channels = blocks.shape[:3]
    return blocks.reshape(rows * cols, channels * patch * patch)


def image_attention(
    image: np.ndarray, *, patch: int, weights: Weights, norm: str = "layer"
) -> np.ndarray:
    """Per-patch ``received`` and ``entropy`` of one fitted image (SPEC §5).

    Parameters
    ----------
    image : (C, H, W) or (H, W) ndarray
        Fitted pixels; H and W multiples of ``patch``.
    patch : int
    weights : Weights
        ``(C·P², d)`` projections.
    norm : {"layer", "none"}

    Returns
    -------
    (1, 1, 2, N) float64 ndarray
        Channel (one: the channels are concatenated), transform ``attention``, metric
        (``received``, ``entropy``), patch — the layout of the SOARTC features.

    Raises
    ------
    UsageError
        The weights do not have ``C·P²`` rows.
    InputError
        The image has more than :data:`MAX_ATTENTION_PATCHES` patches (refused before any
        work); or a result is not finite: the image holds NaN or ±inf pixels, or the scores
        overflowed although the pixels were finite (possible only with weights that bypassed
        :func:`check_weights`, or pixels outside [0, 1], such as a float image used as is).

    Notes
    -----
    Up to ``N² = 2²¹`` this is :func:`patch_attention`. Beyond, the same sums are taken over
    blocks of query rows (:func:`_blocked_attention`), so memory stays bounded: a row's softmax
    and entropy need only its own scores, and ``received`` adds the blocks' column sums.
    """
    shape = np.shape(image)
    count = (shape[-2] // patch) * (shape[-1] // patch)
    if count > MAX_ATTENTION_PATCHES:
        raise InputError(
            f"{count} patches of {patch}×{patch}: attention compares every pair, more than "
            f"{MAX_ATTENTION_PATCHES} patches would take too long; use a smaller --size or a "
            "larger --patch"
        )
    x = patch_rows(image, patch=patch)
    if weights.shape[0] != x.shape[1]:
        raise UsageError(
            f"--weights: W_Q, W_K, W_V need {x.shape[1]} rows for {patch}×{patch} patches "
            f"of {x.shape[1] // (patch * patch)} channel(s), not {weights.shape[0]}"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is judged on the result
        if count * count <= ATTENTION_BLOCK:
            received, entropy = patch_attention(x, weights=weights, norm=norm)
        else:
            received, entropy = _blocked_attention(x, weights=weights, norm=norm)
    result = np.stack([received, entropy])[np.newaxis, np.newaxis]
    if not np.isfinite(result).all():
        # Never write NaN rows silently: say whether the pixels or the arithmetic are to blame.
        if not np.isfinite(x).all():
            raise InputError("image holds NaN or infinite pixel values")
        raise InputError(
            "attention gave non-finite results of finite inputs (the scores Q·Kᵀ overflowed: "
            "weights too large for these pixel values)"
        )
    return result


def _blocked_attention(
    x: np.ndarray, *, weights: Weights, norm: str = "layer"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`patch_attention` computed over blocks of query rows, in bounded memory.

    Each block of ``r = max(1, 2²¹ // N)`` rows forms its ``(r, N)`` scores, their row softmax
    and entropies; ``received`` is the sum of the blocks' column sums divided by ``N``. Equal to
    :func:`patch_attention` up to the order of floating-point additions.
    """
    check_choice(norm, name="--norm", choices=NORMS)
    x = np.asarray(x, dtype=np.float64)
    if norm == "layer":
        x = layer_norm(x)
    q, k = x @ weights.W_Q, x @ weights.W_K
    n = x.shape[0]
    scale = np.sqrt(k.shape[1])
    rows = max(1, ATTENTION_BLOCK // n)
    column_sums = np.zeros(n)
    entropy = np.empty(n)
    for start in range(0, n, rows):
        probs = softmax(q[start : start + rows] @ k.T / scale, axis=-1)
        column_sums += probs.sum(axis=0)
        plogp = probs * np.log(np.where(probs > 0, probs, 1.0))
        entropy[start : start + rows] = -plogp.sum(axis=1)
    return column_sums / n, entropy
