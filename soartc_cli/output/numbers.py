"""Many floats as ``%.{p}g`` text at once: the numbers of a wide CSV row, byte for byte as ``%``.

Python's ``%`` formats about one value per 0.1 µs; a default wide row holds 3528 of them, which
made the CSV text cost as much as a third of the metrics. :func:`format_row` does the same work
with a few dozen numpy operations over the whole row: it rounds every value to ``p`` significant
digits, looks the digits up as ASCII, and assembles each value's text in a 16-byte slot from
64-bit words, so that no Python object is made per value.

It is exact, not an approximation of ``%``: a value whose rounding cannot be decided with
certainty in floating point (a tie or near-tie at the last digit, an exponent outside ±22 of the
scale) is formatted by ``%`` itself, and the tests compare the two on every kind of double.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["format_row"]

#: Largest precision of the vectorised path: a fixed-notation body then fits one 64-bit word.
MAX_PRECISION = 7


def _digits4() -> np.ndarray:
    """0000 … 9999: bytes 0-3 the ASCII digits (byte 0 = thousands), byte 4 the trailing zeros."""
    n = np.arange(10000)
    places = [n // 1000, n // 100 % 10, n // 10 % 10, n % 10]
    words = sum((d + 0x30).astype(np.uint64) << np.uint64(8 * i) for i, d in enumerate(places))
    zeros = sum((n % 10**k == 0).astype(np.uint64) for k in (1, 2, 3, 4))
    return (words | (zeros << np.uint64(32))).astype(np.uint64)


def _prefixes() -> tuple[np.ndarray, np.ndarray]:
    """What comes before the digits, by ``5 * negative + zeros``: "," or ",-", then for a fixed
    number below 1 (``zeros`` = 1 … 4 = -e) "0." and ``zeros - 1`` zeros; and its length."""
    texts = [
        ("," + sign + ("" if lead == 0 else "0." + "0" * (lead - 1))).encode("ascii")
        for sign in ("", "-")
        for lead in range(5)
    ]
    words = np.array([int.from_bytes(t, "little") for t in texts], dtype=np.uint64)
    return words, np.array([len(t) for t in texts], dtype=np.uint64)


_DIGITS4 = _digits4()
_PREFIX, _PREFIX_LEN = _prefixes()
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)
_SPECIAL = {
    name: np.uint64(int.from_bytes(name.encode("ascii"), "little")) for name in ("nan", "inf", "0")
}
#: Exact powers of ten as numerator and denominator of the scale 10^k, k = -22 … 22.
_SCALE_UP = np.array([1.0] * 22 + [10.0**k for k in range(23)])
_SCALE_DOWN = np.array([10.0**-k for k in range(-22, 0)] + [1.0] * 23)


def format_row(values: np.ndarray, precision: int = 7) -> bytes:
    """``b"".join(b",%.{precision}g" % v for v in values)``, computed for all values at once.

    Parameters
    ----------
    values : ndarray of float64
        Any shape; read in C order.
    precision : int
        Significant digits, 1 or more. Above :data:`MAX_PRECISION` (or on a big-endian machine)
        the row is formatted by ``%`` directly.

    Returns
    -------
    bytes
        Every value preceded by a comma, exactly as ``%`` writes it (``nan``, ``inf``,
        ``-inf``, ``-0`` included).
    """
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if precision > MAX_PRECISION or precision < 1 or sys.byteorder != "little":
        return f",%.{precision}g".encode("ascii") * flat.size % tuple(flat.tolist())
    with np.errstate(all="ignore"):
        return _format(flat, precision)


def _format(v: np.ndarray, p: int) -> bytes:
    u64 = np.uint64
    a = np.abs(v)
    usual = np.isfinite(v) & (a != 0)
    safe = np.where(usual, a, 1.0)

    # Decimal exponent e and the p significant digits d = a · 10^(p-1-e), rounded once.
    low = 10.0 ** (p - 1)
    e = np.floor(np.log10(safe)).astype(np.int64)
    for attempt in range(3):  # log10 may be one off next to a power of ten
        k = np.minimum(np.maximum(p - 1 - e, -22), 22) + 22
        d = safe * _SCALE_UP[k] / _SCALE_DOWN[k]
        shift = (d >= 10.0 * low).astype(np.int64) - (d < low)
        if attempt == 2 or not shift.any():
            break
        e += shift
    # d carries one rounding (relative error 2^-53, below 10·low·2^-53 in absolute terms): a
    # fraction that close to .5 cannot be rounded with certainty here; nor can d out of range
    # (an exponent beyond the exact powers), so % formats those values.
    decided = (np.abs(d - np.floor(d) - 0.5) > 32.0 * low * 2.0**-53) & (np.abs(p - 1 - e) <= 22)
    decided &= (d >= low) & (d < 10.0 * low)
    fallback = usual & ~decided
    digits = np.rint(np.where(usual & decided, d, low))
    carry = digits >= 10.0 * low
    digits[carry] = low
    e += carry

    # The digits as ASCII, left-aligned to seven: byte i of `full` is digit i.
    seven = digits * 10.0 ** (MAX_PRECISION - p)  # an integer below 10^7: exact
    high = np.floor(seven / 10000.0)  # exact too: the fraction is at most 0.9999
    rest = (seven - high * 10000.0).astype(np.int64)
    high = high.astype(np.int64)
    upper, lower = _DIGITS4[high], _DIGITS4[rest]
    full = ((upper >> u64(8)) & u64(0xFFFFFF)) | ((lower & u64(0xFFFFFFFF)) << u64(24))
    zeros = np.where(rest == 0, u64(4) + (upper >> u64(32)), lower >> u64(32))
    kept = (u64(MAX_PRECISION) - zeros).astype(np.int64)

    # One layout for the three notations: prefix, digits with a "." after `point` of them when
    # more follow, suffix. Fixed 0 <= e < p: all integer digits, point after e + 1. Fixed
    # -4 <= e < 0: prefix "0." and zeros, no point. Scientific: point after 1, suffix e±XX[X].
    sci = (e < -4) | (e >= p)
    small = (e < 0) & ~sci
    point = np.where(sci, 1, np.where(small, 8, e + 1))
    count = np.where(sci | small, kept, np.maximum(kept, point))
    number = full & _MASKS[count]
    dotted = count > point
    point_bits = point.astype(u64) << u64(3)
    body = np.where(
        dotted,
        (number & _MASKS[np.minimum(point, 8)])
        | (u64(0x2E) << point_bits)
        | ((number >> point_bits) << (point_bits + u64(8))),
        number,
    )
    body_len = (count + dotted).astype(u64)

    negative = np.signbit(v) & ~np.isnan(v)  # % writes NaN without a sign
    which = 5 * negative + np.where(small, -e, 0)
    if not usual.all():  # zeros, infinities, NaN
        special = np.where(
            np.isnan(v), _SPECIAL["nan"], np.where(a == 0, _SPECIAL["0"], _SPECIAL["inf"])
        )
        body = np.where(usual, body, special)
        body_len = np.where(usual, body_len, np.where(a == 0, u64(1), u64(3)))
        which = np.where(usual, which, 5 * negative)
    head_bits = u64(8) * _PREFIX_LEN[which]

    # Two 64-bit words per value: prefix | body | suffix, at most 15 bytes.
    slots = np.empty((v.size, 2), dtype=u64)
    lo = _PREFIX[which] | (body << head_bits)
    hi = body >> (u64(64) - head_bits)
    if sci.any():
        size = np.abs(e)
        three = _DIGITS4[size % 1000] & u64(0xFFFFFFFF)
        exponent = np.where(size >= 100, three >> u64(8), three >> u64(16))
        suffix = np.where(
            sci & usual,
            u64(0x65) | (np.where(e < 0, u64(0x2D00), u64(0x2B00))) | (exponent << u64(16)),
            0,
        )
        at = head_bits + u64(8) * body_len
        lo |= suffix << at
        hi |= (suffix >> (u64(64) - at)) | (suffix << (at - u64(64)))
    slots[:, 0] = lo
    slots[:, 1] = hi

    if fallback.any():
        chars = slots.view(np.uint8).reshape(v.size, 16)
        for i in np.flatnonzero(fallback):
            piece = (f",%.{p}g" % v[i]).encode("ascii")
            chars[i] = 0
            chars[i, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)
    # Every text byte is printable ASCII and every unused byte of a slot is zero.
    raw = slots.view(np.uint8).ravel()
    return raw[raw != 0].tobytes()
