"""The SOART comparison (SPEC §4): by hand, against the oracle, and the checks the spec lists."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from soartc_cli.errors import UsageError
from soartc_cli.rt import METRIC_PRESETS, METRICS, parse_metrics, soart_compare
from tests.oracle import compare_one

# Relative tolerance against the oracle: both are float64 evaluations of the same formulas, so
# they differ by rounding only (a few ulps times the conditioning), far inside SPEC's 1e-6.
RTOL = 1e-9
ATOL = 1e-12


def test_metric_names_and_presets():
    assert METRICS == ("beta", "delta", "distance", "noise", "vol", "shear")
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
    assert_allclose(soart_compare(s, m), expected, rtol=1e-14)


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
    assert soart_compare(s, m).shape == (6, 3)


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
    beta, delta, distance, noise, vol, shear = soart_compare(s, m)
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
        soart_compare(zeros, zeros), [[1] * 3, [0] * 3, [0] * 3, [0] * 3, [1] * 3, [0] * 3]
    )


def test_thresholds_of_1e_12():
    m = np.array([1.0, 2.0, 3.0, 4.0])
    # ⟨s,s⟩ = 1e-14 ≤ 1e-12: β = 1, so e = m − s; but Σs = 1e-7 and mean|βs| = 2.5e-8 are
    # above 1e-12, so delta and vol are the plain ratios.
    s = np.array([1e-7, 0.0, 0.0, 0.0])
    beta, delta, distance, _, vol, _ = soart_compare(s, m)
    assert beta == 1.0
    assert delta == pytest.approx(10 / 1e-7 - 1, rel=1e-12)
    assert distance == pytest.approx((1 - 1e-7 + 2 + 3 + 4) / 4, rel=1e-12)
    assert vol == pytest.approx(2.5 / 2.5e-8, rel=1e-12)
    # Σs = 1e-13 and mean|βs| = 2.5e-14 are below: delta falls back to 0 and vol to 1.
    s = np.array([1e-13, 0.0, 0.0, 0.0])
    beta, delta, _, _, vol, shear = soart_compare(s, m)
    assert (beta, delta, vol) == (1.0, 0.0, 1.0)
    assert shear == pytest.approx((1 - 1e-13 + 2 + 3 + 4) / 4, rel=1e-12)


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
    out = soart_compare(np.array([[2.0]]), np.array([[3.0]]))
    assert_allclose(out[[0, 1, 2, 4, 5], 0], [1.5, 0.0, 0.0, 1.0, 0.0], atol=1e-15)
    assert np.isnan(out[3, 0])


def test_parse_metrics():
    assert parse_metrics("soart3") == ("beta", "delta", "distance")
    assert parse_metrics("soart2022") == ("beta", "vol", "shear")
    assert parse_metrics("rt") == ("beta", "noise")
    assert parse_metrics("all") == METRICS
    assert parse_metrics(" noise , beta ") == ("noise", "beta")
    assert parse_metrics("rt,soart3") == ("beta", "noise", "delta", "distance")
    assert parse_metrics("shear,shear,all") == ("shear", *METRICS[:-1])


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
