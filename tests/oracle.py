"""Plain, obviously-correct loop implementations: the oracle the fast numeric core must match.

Everything here loops over patches and writes SPEC §3/§4 formulas out directly, one patch at a
time, with ``scipy.signal.correlate2d`` and Python floats. Slow on purpose; never imported by the
package.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import correlate2d

#: SPEC §4's six metrics, in the order hand-worked expectations are written in (the package may
#: define more after them: see the README's recipe, Adding a metric).
SPEC_METRICS = ("beta", "delta", "distance", "noise", "vol", "shear")

ROTATION_FUNCTIONS = {
    "rot90": lambda x: np.rot90(x, 1),
    "rot180": lambda x: np.rot90(x, 2),
    "rot270": lambda x: np.rot90(x, 3),
    "flip_lr": np.fliplr,
    "flip_ud": np.flipud,
}


# Each metric of SPEC §4 as a function of (s, m), two lists of Python floats of length k. A test
# adds the branch of a metric it registers with ``monkeypatch.setitem(ORACLE_METRICS, name, f)``.


def beta(s, m):
    """β = ⟨s, m⟩ / ⟨s, s⟩; 1 when ⟨s, s⟩ ≤ 1e-12."""
    ss = math.fsum(a * a for a in s)
    sm = math.fsum(a * b for a, b in zip(s, m, strict=True))
    return sm / ss if ss > 1e-12 else 1.0


def residual(s, m):
    """e = m − β s."""
    b = beta(s, m)
    return [y - b * x for x, y in zip(s, m, strict=True)]


def delta(s, m):
    """Σm / Σs − β; 0 when |Σs| ≤ 1e-12."""
    total_s = math.fsum(s)
    return math.fsum(m) / total_s - beta(s, m) if abs(total_s) > 1e-12 else 0.0


def distance(s, m):
    """mean |e|."""
    return math.fsum(abs(v) for v in residual(s, m)) / len(s)


def noise(s, m):
    """√(Σ e² / (k − 1)); NaN when k = 1."""
    k = len(s)
    return math.sqrt(math.fsum(v * v for v in residual(s, m)) / (k - 1)) if k > 1 else math.nan


def vol(s, m):
    """mean |m| / mean |β s|; 1 when the denominator ≤ 1e-12."""
    k = len(s)
    b = beta(s, m)
    denominator = math.fsum(abs(b * a) for a in s) / k
    return math.fsum(abs(y) for y in m) / k / denominator if denominator > 1e-12 else 1.0


def shear(s, m):
    """mean |m − β·vol·s|."""
    scale = beta(s, m) * vol(s, m)
    return math.fsum(abs(y - scale * x) for x, y in zip(s, m, strict=True)) / len(s)


#: The oracle of every metric, by name.
ORACLE_METRICS = {
    "beta": beta,
    "delta": delta,
    "distance": distance,
    "noise": noise,
    "vol": vol,
    "shear": shear,
}


def compare_one(s, m, metric):
    """One SOART metric of one (s, m) pair, straight from SPEC §4 with Python floats."""
    s = [float(v) for v in np.ravel(s)]
    m = [float(v) for v in np.ravel(m)]
    return ORACLE_METRICS[metric](s, m)


def features_oracle(image, *, patch, transforms, datum, metrics, kernels):
    """(C, T, M, N) features by a loop over channels, patches, transforms and metrics."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    channels, height, width = image.shape
    rows, cols = height // patch, width // patch
    out = np.empty((channels, len(transforms), len(metrics), rows * cols))
    for c in range(channels):
        for i in range(rows):
            for j in range(cols):
                x = image[c, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
                for t, name in enumerate(transforms):
                    if name in kernels:
                        s = correlate2d(x, np.asarray(kernels[datum], float), mode="valid")
                        m = correlate2d(x, np.asarray(kernels[name], float), mode="valid")
                    else:
                        s = x
                        m = ROTATION_FUNCTIONS[name](x)
                    for q, metric in enumerate(metrics):
                        out[c, t, q, i * cols + j] = compare_one(s, m, metric)
    return out
