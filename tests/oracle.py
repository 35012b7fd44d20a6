"""Plain, obviously-correct loop implementations: the oracle the fast numeric core must match.

Everything here loops over patches and writes SPEC §3/§4 formulas out directly, one patch at a
time, with ``scipy.signal.correlate2d`` and Python floats. Slow on purpose; never imported by the
package.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import correlate2d

ROTATION_FUNCTIONS = {
    "rot90": lambda x: np.rot90(x, 1),
    "rot180": lambda x: np.rot90(x, 2),
    "rot270": lambda x: np.rot90(x, 3),
    "flip_lr": np.fliplr,
    "flip_ud": np.flipud,
}


def compare_one(s, m, metric):
    """One SOART metric of one (s, m) pair, straight from SPEC §4 with Python floats."""
    s = [float(v) for v in np.ravel(s)]
    m = [float(v) for v in np.ravel(m)]
    k = len(s)
    ss = math.fsum(a * a for a in s)
    sm = math.fsum(a * b for a, b in zip(s, m, strict=True))
    beta = sm / ss if ss > 1e-12 else 1.0
    e = [b - beta * a for a, b in zip(s, m, strict=True)]
    if metric == "beta":
        return beta
    if metric == "delta":
        total_s = math.fsum(s)
        return math.fsum(m) / total_s - beta if abs(total_s) > 1e-12 else 0.0
    if metric == "distance":
        return math.fsum(abs(v) for v in e) / k
    if metric == "noise":
        return math.sqrt(math.fsum(v * v for v in e) / (k - 1)) if k > 1 else math.nan
    vol_den = math.fsum(abs(beta * a) for a in s) / k
    vol = math.fsum(abs(b) for b in m) / k / vol_den if vol_den > 1e-12 else 1.0
    if metric == "vol":
        return vol
    if metric == "shear":
        return math.fsum(abs(b - beta * vol * a) for a, b in zip(s, m, strict=True)) / k
    raise ValueError(metric)


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
