"""The attention core: softmax, the seed demo (against the article), attention over patches."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import softmax as scipy_softmax

from soartc_cli.core import attention
from soartc_cli.errors import UsageError
from soartc_cli.settings import optionfiles

# The seed article's printed results (seed 42, its code = --softmax global), digit for digit.
ARTICLE_W_Q = [[2, 0, 2], [2, 0, 0], [2, 1, 2], [2, 2, 2]]
ARTICLE_W_K = [[0, 2, 1], [0, 1, 1], [1, 1, 0], [0, 1, 1]]
ARTICLE_W_V = [[0, 0, 0], [2, 2, 2], [1, 2, 1], [1, 2, 1]]
ARTICLE_SCORES = [[11, 10, 11, 5], [12, 8, 10, 6], [6, 4, 4, 4], [7, 6, 7, 3]]
ARTICLE_PROBS = [
    ["0.1804795", "0.10131829", "0.1804795", "0.00564921"],
    ["0.32149034", "0.03193065", "0.10131829", "0.01006301"],
    ["0.01006301", "0.00317138", "0.00317138", "0.00317138"],
    ["0.01792535", "0.01006301", "0.01792535", "0.00178036"],
]
ARTICLE_ATTENTION = [
    ["0.8510426", "1.1384896", "0.8510426"],
    ["0.62998188", "0.99346588", "0.62998188"],
    ["0.02909126", "0.04549701", "0.02909126"],
    ["0.08574544", "0.11551416", "0.08574544"],
]


def _rounded_like(value: float, printed: str) -> bool:
    """True when ``value`` rounds to ``printed`` at the number of decimals printed."""
    decimals = len(printed.split(".")[1])
    return f"{value:.{decimals}f}" == printed


def test_seed_demo_global_reproduces_the_article():
    result = attention.seed_demo(seed=42, softmax="global")
    assert_array_equal(result.X, attention.SEED_WORDS)
    assert_array_equal(result.W_Q, ARTICLE_W_Q)
    assert_array_equal(result.W_K, ARTICLE_W_K)
    assert_array_equal(result.W_V, ARTICLE_W_V)
    assert_array_equal(result.scores, ARTICLE_SCORES)
    for got, printed in zip(result.probs.ravel(), np.ravel(ARTICLE_PROBS), strict=True):
        assert _rounded_like(got, printed), (got, printed)
    for got, printed in zip(result.attention.ravel(), np.ravel(ARTICLE_ATTENTION), strict=True):
        assert _rounded_like(got, printed), (got, printed)


def test_seed_demo_q_k_v_are_the_projections_of_x():
    # The article prints Q, K and V from another run (its Q row 2 is W_Q's row 2 alone); its
    # printed scores are Q Kᵀ of the real projections, which this checks.
    result = attention.seed_demo(seed=42, softmax="global")
    assert_array_equal(result.Q, [[4, 1, 4], [4, 2, 2], [4, 0, 2], [2, 1, 2]])
    assert_array_equal(result.K, [[1, 3, 1], [0, 2, 2], [0, 3, 2], [1, 1, 0]])
    assert_array_equal(result.V, [[1, 2, 1], [3, 4, 3], [2, 2, 2], [1, 2, 1]])
    assert_array_equal(result.Q @ result.K.T, ARTICLE_SCORES)


def _independent_demo(words, *, seed, high, dim, axis):
    """The article's code, written out again with the legacy global-state API."""
    np.random.seed(seed)
    k = words.shape[1]
    w_q = np.random.randint(high, size=(k, dim))
    w_k = np.random.randint(high, size=(k, dim))
    w_v = np.random.randint(high, size=(k, dim))
    q, key, v = words @ w_q, words @ w_k, words @ w_v
    probs = scipy_softmax((q @ key.T) / key.shape[1] ** 0.5, axis=axis)
    return w_q, w_k, w_v, probs, probs @ v


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    high=st.integers(1, 9),
    dim=st.integers(1, 8),
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    axis=st.sampled_from([-1, None]),
    data=st.data(),
)
def test_seed_demo_matches_an_independent_computation(seed, high, dim, rows, cols, axis, data):
    words = np.array(
        data.draw(st.lists(st.lists(st.integers(-3, 3), min_size=cols, max_size=cols),
                           min_size=rows, max_size=rows))
    )  # fmt: skip
    mode = "row" if axis == -1 else "global"
    result = attention.seed_demo(words, seed=seed, high=high, dim=dim, softmax=mode)
    w_q, w_k, w_v, probs, att = _independent_demo(words, seed=seed, high=high, dim=dim, axis=axis)
    assert_array_equal(result.W_Q, w_q)
    assert_array_equal(result.W_K, w_k)
    assert_array_equal(result.W_V, w_v)
    assert_allclose(result.probs, probs, rtol=1e-12, atol=1e-300)
    assert_allclose(result.attention, att, rtol=1e-12, atol=1e-12)
    if mode == "row":
        assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-12)
    else:
        assert math.isclose(result.probs.sum(), 1.0, rel_tol=1e-12)


def test_row_softmax_rows_sum_to_one_for_the_seed_words():
    result = attention.seed_demo(seed=42)
    assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-12)
    assert result.softmax == "row"


@given(st.lists(st.floats(-700, 700), min_size=1, max_size=20))
def test_softmax_matches_scipy_and_never_overflows(values):
    x = np.array(values)
    assert_allclose(attention.softmax(x), scipy_softmax(x), rtol=1e-12, atol=1e-300)
    assert_allclose(attention.softmax(x, axis=None), scipy_softmax(x), rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(attention.softmax(x * 1e300)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "--dim must be at least 1"),
        ({"high": 0}, "--high must be at least 1"),
        ({"seed": -1}, "--seed must be between 0"),
        ({"seed": 2**32}, "--seed must be between 0"),
        ({"softmax": "nope"}, "--softmax must be one of row, global"),
    ],
)
def test_seed_demo_rejects_bad_values(kwargs, message):
    with pytest.raises(UsageError, match=message):
        attention.seed_demo(**kwargs)


def test_parse_words():
    assert_array_equal(optionfiles.parse_words("1,0,1,0;0,1,0,1"), [[1, 0, 1, 0], [0, 1, 0, 1]])
    assert optionfiles.parse_words("1,2;3,4").dtype == np.int64
    floats = optionfiles.parse_words(" 0.5, 1 ; -2e-1, 3 ")
    assert floats.dtype == np.float64
    assert_array_equal(floats, [[0.5, 1.0], [-0.2, 3.0]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2;3", "same length"),
        ("1,a;3,4", "numbers only"),
        ("", "rows separated"),
        ("1,2;;3,4", "rows separated"),
        ("1,nan", "finite"),
        ("1,2,", "numbers only"),
    ],
)
def test_parse_words_rejects_bad_text(text, message):
    with pytest.raises(UsageError, match=message):
        optionfiles.parse_words(text)


# --- attention over image patches ------------------------------------------------------------


def _plain_patch_attention(x, w_q, w_k, *, norm):
    """SPEC §5 written out with loops: the oracle for ``patch_attention``."""
    x = np.array(x, dtype=np.float64)
    n, k = x.shape
    if norm == "layer":
        for i in range(n):
            mu = sum(x[i]) / k
            var = sum((v - mu) ** 2 for v in x[i]) / k
            x[i] = [(v - mu) / math.sqrt(var + 1e-5) for v in x[i]]
    q, key = x @ w_q, x @ w_k
    d = w_q.shape[1]
    probs = np.zeros((n, n))
    for i in range(n):
        s = [float(q[i] @ key[j]) / math.sqrt(d) for j in range(n)]
        top = max(s)
        e = [math.exp(v - top) for v in s]
        probs[i] = [v / sum(e) for v in e]
    received = [sum(probs[i, j] for i in range(n)) / n for j in range(n)]
    entropy = [-sum(p * math.log(p) for p in probs[j] if p > 0) for j in range(n)]
    return np.array(received), np.array(entropy)


@pytest.mark.parametrize("norm", ["layer", "none"])
@pytest.mark.parametrize("mode", ["random", "identity", "file"])
def test_patch_attention_matches_the_plain_implementation(norm, mode):
    rng = np.random.default_rng(7)
    n, k = 12, 9
    x = rng.random((n, k))
    if mode == "random":
        w = attention.random_weights(k, dim=5, seed=3)
    elif mode == "identity":
        w = attention.identity_weights(k)
    else:
        arrays = {name: rng.standard_normal((k, 4)) for name in ("W_Q", "W_K", "W_V")}
        w = attention.check_weights(arrays, k=k)
    received, entropy = attention.patch_attention(x, weights=w, norm=norm)
    want_received, want_entropy = _plain_patch_attention(x, w.W_Q, w.W_K, norm=norm)
    assert_allclose(received, want_received, rtol=1e-10)
    assert_allclose(entropy, want_entropy, rtol=1e-10, atol=1e-12)
    assert math.isclose(received.sum(), 1.0, rel_tol=1e-12)
    assert np.all(entropy >= -1e-12)
    assert np.all(entropy <= math.log(n) + 1e-12)


def test_random_weights_follow_the_spec_draw():
    k, d = 16, 8
    w = attention.random_weights(k, dim=d, seed=42)
    rng = np.random.default_rng(42)
    want = [rng.standard_normal((k, d)) / math.sqrt(k) for _ in range(3)]
    assert_allclose(w.W_Q, want[0], rtol=1e-15)
    assert_allclose(w.W_K, want[1], rtol=1e-15)
    assert_allclose(w.W_V, want[2], rtol=1e-15)


def test_layer_norm_standardises_rows():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    y = attention.layer_norm(x)
    assert_allclose(y[0], (x[0] - 2.5) / math.sqrt(1.25 + 1e-5))
    assert_array_equal(y[1], 0.0)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"W_Q": np.ones((4, 2)), "W_K": np.ones((4, 2))}, "lacks W_V"),
        ({"W_Q": np.ones((5, 2)), "W_K": np.ones((4, 2)), "W_V": np.ones((4, 2))}, r"\(4, d\)"),
        ({"W_Q": np.ones((4, 2)), "W_K": np.ones((4, 3)), "W_V": np.ones((4, 2))}, r"\(4, d\)"),
        ({"W_Q": np.ones(4), "W_K": np.ones((4, 2)), "W_V": np.ones((4, 2))}, r"\(4, d\)"),
        (
            {"W_Q": np.full((4, 2), np.nan), "W_K": np.ones((4, 2)), "W_V": np.ones((4, 2))},
            "finite",
        ),
    ],
)
def test_check_weights_rejects_wrong_shapes(arrays, message):
    with pytest.raises(UsageError, match=message):
        attention.check_weights(arrays, k=4)


def test_patch_rows_by_hand_and_from_the_patcher():
    image = np.arange(2 * 4 * 6.0).reshape(2, 4, 6)  # 2 channels, 2 × 3 patches of 2 × 2
    rows = attention.patch_rows(image, patch=2)
    assert rows.shape == (6, 8)
    # patch (1, 2): rows 2–3, columns 4–5 of channel 0, then of channel 1
    assert_array_equal(rows[5], [16, 17, 22, 23, 40, 41, 46, 47])
    for n in range(6):
        i, j = divmod(n, 3)
        want = image[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(-1)
        assert_array_equal(rows[n], want)
    assert_array_equal(attention.patch_rows(image[0], patch=2), rows[:, :4])


def test_patch_rows_errors():
    with pytest.raises(
        UsageError, match="patch must divide the image width: 6 is not a multiple of 4"
    ):
        attention.patch_rows(np.zeros((1, 8, 6)), patch=4)
    with pytest.raises(UsageError, match=r"image must be \(H, W\) or \(C, H, W\)"):
        attention.patch_rows(np.zeros((1, 1, 4, 4)), patch=2)


def test_blocked_attention_equals_the_whole_matrix():
    rng = np.random.default_rng(11)
    x = rng.random((1500, 9))
    weights = attention.random_weights(9, dim=5, seed=2)
    for norm in attention.NORMS:
        whole = attention.patch_attention(x, weights=weights, norm=norm)
        blocked = attention._blocked_attention(x, weights=weights, norm=norm)
        for got, expected in zip(blocked, whole, strict=True):
            assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert attention.ATTENTION_BLOCK // 1500 < 1500  # more than one block was used


def test_image_attention_takes_the_blocked_path_for_many_patches():
    # 48×48 pixels at patch 1: N = 2304 > √(2²¹), so the rows go in blocks of 910.
    image = np.random.default_rng(4).random((48, 48), dtype=np.float32)
    weights = attention.random_weights(1, dim=3, seed=1)
    got = attention.image_attention(image, patch=1, weights=weights)
    received, entropy = attention.patch_attention(image.reshape(-1, 1), weights=weights)
    assert_allclose(got[0, 0, 0], received, rtol=1e-12, atol=1e-15)
    assert_allclose(got[0, 0, 1], entropy, rtol=1e-12)
    assert got[0, 0, 0].sum() == pytest.approx(1.0, rel=1e-12)


def test_image_attention_refuses_too_many_patches_before_any_work(monkeypatch):
    from soartc_cli.errors import InputError

    side = 129  # 129² = 16641 patches of 1×1, more than 2¹⁴
    image = np.zeros((side, side), dtype=np.float32)
    weights = attention.Weights(np.ones((1, 1)), np.ones((1, 1)), np.ones((1, 1)))
    with pytest.raises(InputError, match=r"^16641 patches of 1×1: .* more than 16384 patches"):
        attention.image_attention(image, patch=1, weights=weights)
    monkeypatch.setattr(attention, "MAX_ATTENTION_PATCHES", 100)
    assert attention.image_attention(image[:10, :10], patch=1, weights=weights).shape[-1] == 100
    with pytest.raises(InputError, match="110 patches"):
        attention.image_attention(image[:11, :10], patch=1, weights=weights)
