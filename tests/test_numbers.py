"""numfmt.format_row against Python's own ``%`` formatting, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from soartc_cli.output.numbers import format_row


def _percent(values: np.ndarray, precision: int) -> bytes:
    flat = np.asarray(values, dtype=np.float64).ravel().tolist()
    return b"".join((f",%.{precision}g" % x).encode("ascii") for x in flat)


def _edge_values() -> np.ndarray:
    """Values where %g changes notation, rounds up a digit, ties, or leaves the exact powers."""
    base = [0.0, np.nan, np.inf, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]
    base += [2.0**-11, 0.5, 1.5, 2.5, 123456.75, 0.125, 1 / 3, 2 / 3, np.pi, 1e-17, 3.3e-16]
    for p in range(1, 9):
        for e in range(-26, 26):
            ten = 10.0**e
            base += [ten, ten * (1 - 0.5 * 10.0**-p), ten * (1 + 0.5 * 10.0**-p)]
    values = np.array(base)
    with np.errstate(over="ignore"):
        near = [np.nextafter(values, np.inf), np.nextafter(values, -np.inf)]
    values = np.concatenate([values, *near])
    return np.concatenate([values, -values])


@pytest.mark.parametrize("precision", range(1, 10))
def test_edge_values_match_percent(precision):
    values = _edge_values()
    assert format_row(values, precision) == _percent(values, precision)


@pytest.mark.parametrize("precision", [1, 3, 6, 7])
def test_random_doubles_of_every_exponent_match_percent(precision):
    rng = np.random.default_rng(precision)
    bits = rng.integers(0, 2**64, 50_000, dtype=np.uint64, endpoint=False)
    values = bits.view(np.float64)  # every exponent, subnormals, NaN and infinities included
    assert format_row(values, precision) == _percent(values, precision)


@pytest.mark.parametrize("precision", [2, 7])
def test_decimal_like_values_match_percent(precision):
    """Short decimals (k / 10^j) sit next to the rounding boundaries of %g."""
    rng = np.random.default_rng(7)
    values = rng.integers(-(10**9), 10**9, 50_000) / 10.0 ** rng.integers(0, 14, 50_000)
    assert format_row(values, precision) == _percent(values, precision)


@settings(max_examples=300, deadline=None)
@given(
    values=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=9), elements=st.floats()),
    precision=st.integers(1, 9),
)
def test_any_array_matches_percent(values, precision):
    assert format_row(values, precision) == _percent(values, precision)


def test_values_next_to_a_tie_are_rounded_as_percent_does():
    """0.052586985 is just above ...85 in binary, but 0.052586985 · 10^8 rounds to exactly
    5258698.5 in floating point, where a plain rint would pick the even 5258698."""
    values = np.array([0.052586985, 5606.3945, 1.3136725e-05, 229.74365])
    scaled = values * 10.0 ** (6 - np.floor(np.log10(values)))
    assert list(np.rint(scaled)) == [5258698, 5606394, 1313672, 2297436]  # the naive digits
    assert format_row(values, 7) == b",0.05258699,5606.395,1.313673e-05,229.7437"
    assert format_row(values, 7) == _percent(values, 7)


def test_wide_precision_uses_percent_directly():
    values = np.array([np.pi, -1e-300, 123456789.123456789])
    assert format_row(values, 12) == _percent(values, 12)
    assert format_row(values, 17) == _percent(values, 17)


def test_empty_row_is_empty():
    assert format_row(np.array([]), 7) == b""
