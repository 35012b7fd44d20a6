"""The SOART comparison (SPEC §4): by hand, against the oracle, and the checks the spec lists."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from soartc_cli.core import metrics
from soartc_cli.core.metrics import (
    METRIC_PRESETS,
    METRICS,
    METRICS_REGISTRY,
    Shared,
    compare_prepared,
    parse_metrics,
    register_metric,
    soart_compare,
    unregister_metric,
)
from soartc_cli.errors import UsageError
from tests.oracle import ORACLE_METRICS, SPEC_METRICS, compare_one

# Relative tolerance against the oracle: both are float64 evaluations of the same formulas, so
# they differ by rounding only (a few ulps times the conditioning), far inside SPEC's 1e-6.
RTOL = 1e-9
ATOL = 1e-12


def test_metric_names_and_presets():
    assert METRICS[: len(SPEC_METRICS)] == SPEC_METRICS
    assert METRIC_PRESETS == {
        "soart3": ("beta", "delta", "distance"),
        "soart2022": ("beta", "vol", "shear"),
        "rt": ("beta", "noise"),
        "all": METRICS,
    }


def test_by_hand_k4():
    # s and m of the hand-worked SOARTC patch of test_features (a 4×4 patch, 3×3 kernels):
    s = np.array([6.0, 6.0, 5.0, 4.0])
    m = np.array([3.0, 5.0, 0.0, 4.0])
    # ⟨s,s⟩ = 36+36+25+16 = 113, ⟨s,m⟩ = 18+30+0+16 = 64, β = 64/113
    # delta = Σm/Σs − β = 12/21 − 64/113 = (452 − 448)/791 = 4/791
    # e = m − βs = (−45, 181, −320, 196)/113  → distance = 742/(4·113) = 371/226
    # Σe² = 1554/113 (also Σm² − ⟨s,m⟩²/⟨s,s⟩ = 50 − 4096/113)  → noise = √(1554/(3·113))
    # vol = mean|m| / mean|βs| = 3 / ((64/113)·21/4) = 113/112
    # β·vol = 4/7: m − (4/7)s = (−3, 11, −20, 12)/7  → shear = 46/28 = 23/14
    expected = [64 / 113, 4 / 791, 371 / 226, math.sqrt(1554 / 339), 113 / 112, 23 / 14]
    assert_allclose(soart_compare(s, m, metrics=SPEC_METRICS), expected, rtol=1e-14)


def test_output_shape_metric_axis_first_and_broadcasting():
    rng = np.random.default_rng(3)
    s = rng.random((5, 7))
    m = rng.random((4, 5, 7))
    out = soart_compare(s, m, metrics=("noise", "beta"))
    assert out.shape == (2, 4, 5)
    assert out.dtype == np.float64
    for t in range(4):
        for n in range(5):
            assert out[0, t, n] == pytest.approx(compare_one(s[n], m[t, n], "noise"), rel=RTOL)
            assert out[1, t, n] == pytest.approx(compare_one(s[n], m[t, n], "beta"), rel=RTOL)
    # one row of k values gives a (M,) result
    assert soart_compare(s[0], m[0, 0], metrics=["beta"]).shape == (1,)


@pytest.mark.parametrize("k", [2, 3, 16, 144, 256])
def test_against_the_oracle_random(k):
    rng = np.random.default_rng(k)
    s = rng.normal(size=(40, k)) + rng.normal(size=(40, 1))
    m = 0.7 * s + rng.normal(scale=0.3, size=(40, k))
    m[::7] = -2.0 * s[::7]  # some exactly proportional rows
    m[3] = 0.0
    s[5] = 0.0  # an all-zero standard: β = 1, vol's denominator is 0
    out = soart_compare(s, m)
    expected = [[compare_one(s[n], m[n], name) for n in range(40)] for name in METRICS]
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_float32_inputs_are_computed_in_float64():
    rng = np.random.default_rng(0)
    s = rng.random((10, 64)).astype(np.float32)
    m = (s * 1.5 + rng.normal(scale=1e-4, size=s.shape)).astype(np.float32)
    out = soart_compare(s, m)
    expected = [[compare_one(s[n], m[n], name) for n in range(10)] for name in METRICS]
    assert out.dtype == np.float64
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_noise_does_not_cancel_when_m_is_almost_proportional():
    # PERF_NOTES' trap: S_T − L²/r cancels when the transform is nearly the identity
    # (S_e/S_T ≈ 1e-10 here); the two-pass Σ(m − βs)² keeps full relative precision.
    rng = np.random.default_rng(1)
    s = rng.random((20, 144)) + 1.0
    m = 3.0 * s + 3e-5 * rng.normal(size=s.shape)
    out = soart_compare(s, m, metrics=["noise"])[0]
    expected = [compare_one(s[n], m[n], "noise") for n in range(20)]
    assert_allclose(out, expected, rtol=1e-9)
    # and the true value is ~3e-5, nowhere near 0 or the float noise of Σm²
    assert np.all((out > 2e-5) & (out < 4e-5))


def test_inputs_are_not_modified():
    rng = np.random.default_rng(2)
    s = rng.random((3, 9))
    m = rng.random((3, 9))
    s0, m0 = s.copy(), m.copy()
    soart_compare(s, m)
    assert_array_equal(s, s0)
    assert_array_equal(m, m0)
    s.flags.writeable = False
    m.flags.writeable = False
    assert soart_compare(s, m).shape == (len(METRICS), 3)


def test_only_requested_metrics_in_the_order_given():
    rng = np.random.default_rng(4)
    s, m = rng.random((6, 25)), rng.random((6, 25))
    everything = soart_compare(s, m)
    for order in [("shear",), ("distance", "beta"), ("vol", "noise", "delta"), METRICS[::-1]]:
        out = soart_compare(s, m, metrics=order)
        assert_array_equal(out, everything[[METRICS.index(name) for name in order]])
    # a string is read like --metrics
    assert_array_equal(soart_compare(s, m, metrics="rt"), everything[[0, 3]])


# --- SPEC §4's checks -------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    c=st.floats(-50, 50).filter(lambda c: abs(c) > 1e-3),
    values=st.lists(st.floats(-10, 10), min_size=2, max_size=40),
)
def test_m_equal_c_times_s(c, values):
    s = np.array(values)
    assume(float(s @ s) > 1e-6)
    m = c * s
    beta, delta, distance, noise, vol, shear = soart_compare(s, m, metrics=SPEC_METRICS)
    scale = 1e-12 * (1 + abs(c)) * (1 + np.abs(s).max())
    assert beta == pytest.approx(c, rel=1e-12)
    assert abs(distance) <= scale
    assert abs(noise) <= scale
    assert abs(shear) <= scale
    assert vol == pytest.approx(1.0, rel=1e-12)
    if abs(s.sum()) > 1e-6:
        # Σm/Σs − β = c − c (up to rounding relative to Σ|s|/|Σs|)
        assert abs(delta) <= 1e-12 * (1 + abs(c)) * (1 + np.abs(s).sum() / abs(s.sum()))
    if abs(s.sum()) <= 1e-12:
        assert delta == 0.0


def test_all_zero_standard_and_measurement_give_neutral_values():
    zeros = np.zeros((3, 16))
    assert_array_equal(
        soart_compare(zeros, zeros, metrics=SPEC_METRICS),
        [[1] * 3, [0] * 3, [0] * 3, [0] * 3, [1] * 3, [0] * 3],
    )
    # SPEC §4's neutral values are the registry's, and every registered metric gives its own
    assert {name: METRICS_REGISTRY[name].neutral for name in SPEC_METRICS} == {
        "beta": 1.0, "delta": 0.0, "distance": 0.0, "noise": 0.0, "vol": 1.0, "shear": 0.0
    }  # fmt: skip
    names = list(METRICS_REGISTRY)
    assert_array_equal(
        soart_compare(zeros, zeros, metrics=names),
        np.repeat([[METRICS_REGISTRY[name].neutral] for name in names], 3, axis=1),
    )


@pytest.mark.parametrize("c", [-2.0, 0.5, 4.0, -0.25, 1.0])
def test_m_equal_c_times_s_exactly_for_powers_of_two(c):
    # Scaling by a power of two is exact in floating point, so every sum over m is exactly c
    # times the same sum over s: β = c, vol = 1 and the rest 0 hold bit for bit, not to a
    # tolerance (an all-zero or non-summing row included).
    rng = np.random.default_rng(5)
    s = rng.normal(size=(20, 37))
    s[3] -= s[3].mean()  # Σs ≈ 0: delta falls back to its neutral 0 either way
    out = soart_compare(s, c * s, metrics=SPEC_METRICS)
    expected = np.array([c, 0.0, 0.0, 0.0, 1.0, 0.0])[:, None]
    assert_array_equal(out, np.broadcast_to(expected, out.shape))


def test_thresholds_of_1e_12():
    m = np.array([1.0, 2.0, 3.0, 4.0])
    # ⟨s,s⟩ = 1e-14 ≤ 1e-12: β = 1, so e = m − s; but Σs = 1e-7 and mean|βs| = 2.5e-8 are
    # above 1e-12, so delta and vol are the plain ratios.
    s = np.array([1e-7, 0.0, 0.0, 0.0])
    beta, delta, distance, _, vol, _ = soart_compare(s, m, metrics=SPEC_METRICS)
    assert beta == 1.0
    assert delta == pytest.approx(10 / 1e-7 - 1, rel=1e-12)
    assert distance == pytest.approx((1 - 1e-7 + 2 + 3 + 4) / 4, rel=1e-12)
    assert vol == pytest.approx(2.5 / 2.5e-8, rel=1e-12)
    # Σs = 1e-13 and mean|βs| = 2.5e-14 are below: delta falls back to 0 and vol to 1.
    s = np.array([1e-13, 0.0, 0.0, 0.0])
    beta, delta, _, _, vol, shear = soart_compare(s, m, metrics=SPEC_METRICS)
    assert (beta, delta, vol) == (1.0, 0.0, 1.0)
    assert shear == pytest.approx((1 - 1e-13 + 2 + 3 + 4) / 4, rel=1e-12)


# β's, delta's and vol's fall-backs at exactly 1e-12 and just above it (SPEC §4: "≤ 1e-12").
X_AT = 1e-6  # x² rounds to exactly 1e-12 (checked below)
X_ABOVE = 1.00000005e-06  # x² ≈ 1.0000001e-12: above 1e-12, far below 1e-11


def test_beta_falls_back_to_one_at_exactly_1e_12_and_not_above():
    assert X_AT * X_AT == 1e-12 and 1e-12 < X_ABOVE * X_ABOVE < 1.000001e-12
    m = np.array([2e-6, 1.0, 1.0, 1.0])  # ⟨s, m⟩ ≈ 2e-12: β = ⟨s, m⟩/⟨s, s⟩ ≈ 2 above
    at = soart_compare(np.array([X_AT, 0.0, 0.0, 0.0]), m, metrics=["beta"])[0]
    assert at == 1.0
    above = soart_compare(np.array([X_ABOVE, 0.0, 0.0, 0.0]), m, metrics=["beta"])[0]
    assert above == pytest.approx((X_ABOVE * 2e-6) / (X_ABOVE * X_ABOVE), rel=1e-15)
    assert above == pytest.approx(compare_one([X_ABOVE, 0, 0, 0], m, "beta"), rel=1e-15)
    assert 1.99 < above < 2.0
    # the same through the (..., k, n) layout of features, where ⟨s, s⟩ may come precomputed
    s2 = np.array([[X_AT, X_ABOVE], [0.0, 0.0]])
    m2 = np.array([[2e-6, 2e-6], [1.0, 1.0]])
    assert_array_equal(compare_prepared(s2, m2, metrics=["beta"], axis=-2)[0], [1.0, above])
    assert_array_equal(
        compare_prepared(s2, m2, metrics=["beta"], axis=-2, ss=np.array([1e-12, X_ABOVE**2]))[0],
        [1.0, above],
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_delta_falls_back_to_zero_at_exactly_1e_12_and_not_above(sign):
    m = np.array([1.0, 2.0, 3.0, 4.0])
    # ⟨s, s⟩ = 1e-24: β = 1; Σs = ±1e-12 exactly
    at = soart_compare(np.array([sign * 1e-12, 0.0, 0.0, 0.0]), m, metrics=["delta", "beta"])
    assert_array_equal(at, [0.0, 1.0])
    s = np.array([sign * 1.0000001e-12, 0.0, 0.0, 0.0])
    delta = soart_compare(s, m, metrics=["delta"])[0]
    assert delta == pytest.approx(10 / (sign * 1.0000001e-12) - 1, rel=1e-15)
    assert delta == pytest.approx(compare_one(s, m, "delta"), rel=1e-15)


def test_vol_falls_back_to_one_at_exactly_1e_12_and_not_above():
    m = np.array([1.0, 2.0, 3.0, 4.0])  # mean |m| = 2.5
    # ⟨s, s⟩ tiny: β = 1; mean |β s| = 4e-12 / 4 = 1e-12 exactly (a division by 4 is exact)
    assert 4e-12 / 4 == 1e-12
    s = np.array([4e-12, 0.0, 0.0, 0.0])
    assert_array_equal(soart_compare(s, m, metrics=["vol", "beta"]), [1.0, 1.0])
    assert soart_compare(s, m, metrics=["shear"])[0] == pytest.approx((10 - 4e-12) / 4, rel=1e-15)
    s = np.array([4.0000004e-12, 0.0, 0.0, 0.0])  # mean |β s| = 1.0000001e-12
    vol = soart_compare(s, m, metrics=["vol"])[0]
    assert vol == pytest.approx(2.5 / 1.0000001e-12, rel=1e-15)
    assert vol == pytest.approx(compare_one(s, m, "vol"), rel=1e-15)
    # the denominator is |β|·mean|s|: a negative β counts by its size
    s = np.array([-4.0000004e-12, 0.0, 0.0, 0.0])
    assert soart_compare(s, m, metrics=["vol"])[0] == pytest.approx(vol, rel=1e-15)


def test_delta_zero_when_the_standard_sums_to_zero():
    s = np.array([1.0, -1.0, 2.0, -2.0])
    m = np.array([3.0, 1.0, 0.0, 1.0])
    assert soart_compare(s, m, metrics=["delta"])[0] == 0.0


def test_vol_one_when_beta_is_zero():
    s = np.array([1.0, 0.0, 0.0, 1.0])
    m = np.array([0.0, 1.0, 1.0, 0.0])  # orthogonal: β = 0, mean|βs| = 0
    beta, vol, shear = soart_compare(s, m, metrics=["beta", "vol", "shear"])
    assert (beta, vol) == (0.0, 1.0)
    assert shear == 0.5  # mean|m − 0·s|


def test_noise_with_a_single_value_is_nan():
    # k = 1 leaves no degree of freedom for V_e = S_e/(k − 1): undefined, written as NaN.
    out = soart_compare(np.array([[2.0]]), np.array([[3.0]]), metrics=SPEC_METRICS)
    assert_allclose(out[[0, 1, 2, 4, 5], 0], [1.5, 0.0, 0.0, 1.0, 0.0], atol=1e-15)
    assert np.isnan(out[3, 0])


def test_a_metric_named_twice_gives_equal_rows():
    rng = np.random.default_rng(6)
    s, m = rng.random((9, 16)), rng.random((3, 9, 16))
    names = ["noise", "beta", "noise", "shear", "distance", "beta", "shear", "distance"]
    out = soart_compare(s, m, metrics=names)
    once = soart_compare(s, m, metrics=["noise", "beta", "shear", "distance"])
    for row, name in enumerate(names):
        assert_array_equal(out[row], once[["noise", "beta", "shear", "distance"].index(name)])
    assert np.all(out[0] > 0) and np.all(out[3] > 0)  # not neutral values by accident


def test_the_registry():
    assert list(METRICS_REGISTRY)[: len(METRICS)] == list(METRICS)
    assert METRIC_PRESETS["all"] == METRICS
    for name in METRICS:
        metric = METRICS_REGISTRY[name]
        assert metric.name == name
        assert metric.func is getattr(metrics, name)
        # one line for `soartc transforms`, the formula in full in the docstring
        assert metric.formula and "\n" not in metric.formula
        assert "Notes" in metric.func.__doc__ and ".. math::" in metric.func.__doc__
    assert "β = ⟨s,m⟩ / ⟨s,s⟩ (1 when ⟨s,s⟩ ≤ 1e-12)" == METRICS_REGISTRY["beta"].formula


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("Cos", "lower-case letters"),
        ("2cos", "lower-case letters"),
        ("co-s", "lower-case letters"),
        ("", "lower-case letters"),
        ("rt", "is a preset"),
        ("all", "is a preset"),
        ("beta", "already registered"),
    ],
)
def test_register_metric_errors(name, match):
    with pytest.raises(UsageError, match=match):
        register_metric(name, formula="x", neutral=0.0)
    assert list(METRICS_REGISTRY) == list(METRICS)


def test_register_and_unregister_errors():
    with pytest.raises(UsageError, match="one non-empty line"):
        register_metric("two_lines", formula="a\nb", neutral=0.0)
    with pytest.raises(UsageError, match="one non-empty line"):
        register_metric("blank", formula=" ", neutral=0.0)
    with pytest.raises(UsageError, match="must be a number"):
        register_metric("no_neutral", formula="x", neutral="0")
    with pytest.raises(UsageError, match="must be a function"):
        register_metric("number", formula="1", neutral=1.0)(1.0)
    with pytest.raises(UsageError, match="built in"):
        unregister_metric("beta")
    with pytest.raises(UsageError, match="not registered"):
        unregister_metric("cos")
    assert list(METRICS_REGISTRY) == list(METRICS)


def test_unknown_names_raise_in_every_path():
    # (the issue: an internal path once left np.empty garbage, [16.], for an unknown name)
    with pytest.raises(UsageError, match="unknown metrics 'corr'"):
        soart_compare([1, 2, 3], [2, 1, 4], metrics=["corr"])
    s, m = np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0, 4.0])
    with pytest.raises(UsageError, match="unknown metrics 'corr'"):
        compare_prepared(s, m, metrics=("beta", "corr"))
    with pytest.raises(UsageError, match="unknown metrics 'corr'"):
        compare_prepared(s[:, None], m[:, None], metrics=("corr",), axis=-2)
    with pytest.raises(UsageError, match="unknown metrics 'corr'"):
        Shared(s, m).value("corr")
    with pytest.raises(UsageError, match="name a metric"):
        compare_prepared(s, m, metrics=())
    with pytest.raises(UsageError, match="axis must be -1 or -2"):
        compare_prepared(s, m, metrics=("beta",), axis=0)


def test_shared_quantities_are_computed_once_and_the_residual_buffer_is_reused(monkeypatch):
    rng = np.random.default_rng(8)
    s, m = rng.normal(size=(5, 12)), rng.normal(size=(2, 5, 12))
    shared = Shared(s, m)
    assert (shared.k, shared.batch, shared.full_shape) == (12, (2, 5), (2, 5, 12))
    assert shared.ss is shared.ss and shared.value("beta") is shared.beta
    assert_array_equal(shared.residual, m - shared.beta[..., None] * s)
    assert_array_equal(shared.abs_residual, np.abs(shared.residual))
    with shared.scratch(reuse_residual=True) as work:
        assert work.shape == (2, 5, 12)
    assert not shared.has("abs_residual")  # its buffer was lent: it is computed again
    assert_array_equal(shared.abs_residual, np.abs(m - shared.beta[..., None] * s))

    # a metric registered after shear reads |e| again after shear took its buffer over
    def mean_abs_e(shared):
        """mean |e|."""
        return shared.total(shared.abs_residual) / shared.k

    register_metric("mean_abs_e", formula="mean |m − βs|", neutral=0.0)(mean_abs_e)
    try:
        out = soart_compare(s, m, metrics=["mean_abs_e", "shear", "distance", "noise"])
    finally:
        unregister_metric("mean_abs_e")
    assert_array_equal(out[0], out[2])
    assert_array_equal(out[1:], soart_compare(s, m, metrics=["shear", "distance", "noise"]))


def test_a_metric_that_needs_itself_is_an_error():
    def loop(shared):
        """Needs its own value."""
        return shared.value("loop")

    register_metric("loop", formula="loop", neutral=0.0)(loop)
    try:
        with pytest.raises(UsageError, match="depends on its own value"):
            soart_compare([1.0, 2.0], [2.0, 1.0], metrics=["loop"])
    finally:
        unregister_metric("loop")


def test_the_oracle_finds_metrics_by_name():
    assert list(ORACLE_METRICS) == list(METRICS)
    with pytest.raises(KeyError):
        compare_one([1.0], [2.0], "corr")


def test_parse_metrics():
    assert parse_metrics("soart3") == ("beta", "delta", "distance")
    assert parse_metrics("soart2022") == ("beta", "vol", "shear")
    assert parse_metrics("rt") == ("beta", "noise")
    assert parse_metrics("all") == METRICS
    assert parse_metrics(" noise , beta ") == ("noise", "beta")
    assert parse_metrics("rt,soart3") == ("beta", "noise", "delta", "distance")
    assert parse_metrics("shear,shear,all") == ("shear", *(n for n in METRICS if n != "shear"))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("betta", r"unknown metrics 'betta'; valid names: beta, delta, .*presets: soart3"),
        ("beta,Noise,sn_db", "unknown metrics 'Noise', 'sn_db'"),
        ("", "metrics is empty"),
        ("beta,,noise", "empty name"),
    ],
)
def test_parse_metrics_errors(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_metrics(spec)


def test_soart_compare_errors():
    s = np.ones((2, 4))
    with pytest.raises(UsageError, match="unknown metrics 'snr'"):
        soart_compare(s, s, metrics=["beta", "snr"])
    with pytest.raises(UsageError, match="at least one metric"):
        soart_compare(s, s, metrics=[])
    with pytest.raises(UsageError, match="same last axis k"):
        soart_compare(s, np.ones((2, 5)))
    with pytest.raises(UsageError, match="do not broadcast"):
        soart_compare(s, np.ones((3, 4)))
    with pytest.raises(UsageError, match="real numbers"):
        soart_compare(s.astype(complex), s)
    with pytest.raises(UsageError, match="k >= 1"):
        soart_compare(np.ones((2, 0)), np.ones((2, 0)))
