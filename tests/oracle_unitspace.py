"""Plain-loop oracle of the unit space (SPEC §10): one feature, one group, one patch at a time.

Slow and obvious on purpose: Python floats and loops, ``numpy.cov(bias=True)`` for the
covariance, the Ledoit–Wolf intensity written out from its formula in scalar loops,
``numpy.linalg.inv`` one matrix at a time. Never imported by the package.
"""

from __future__ import annotations

import math

import numpy as np


def scaling(features):
    """(center, scale) per feature over all finite values of all patches of all images."""
    n, n_patches, k = features.shape
    center, scale = [], []
    for j in range(k):
        values = [
            float(features[i, p, j])
            for i in range(n)
            for p in range(n_patches)
            if math.isfinite(features[i, p, j])
        ]
        if not values:
            center.append(0.0)
            scale.append(1.0)
            continue
        p25, p50, p75 = (float(np.percentile(values, q)) for q in (25, 50, 75))
        q = p75 - p25
        if q <= 1e-12:
            mean = math.fsum(values) / len(values)
            q = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
            if q <= 1e-12:
                q = 1.0
        center.append(p50)
        scale.append(q)
    return np.array(center), np.array(scale)


def z_value(x, c, q):
    """sign(u) ln(1 + |u|) of u = (x − c)/q; 0 when not finite."""
    if not math.isfinite(x):
        return 0.0
    u = (x - c) / q
    if not math.isfinite(u):
        return 0.0
    z = math.copysign(math.log1p(abs(u)), u)
    return z if math.isfinite(z) else 0.0


def scale_all(features, center, scale):
    out = np.empty(features.shape)
    for index in np.ndindex(*features.shape):
        j = index[-1]
        out[index] = z_value(float(features[index]), center[j], scale[j])
    return out


def ledoit_wolf_intensity(x):
    """Ledoit–Wolf 2004 intensity of centred samples x (m, k), scalar loops over the formula."""
    m, k = len(x), len(x[0])
    if k == 1:
        return 0.0
    s = [[math.fsum(x[i][a] * x[i][b] for i in range(m)) / m for b in range(k)] for a in range(k)]
    trace = math.fsum(s[a][a] for a in range(k))
    mu = trace / k
    delta_hat = math.fsum(s[a][b] ** 2 for a in range(k) for b in range(k))
    fourth = math.fsum(
        x[i][a] ** 2 * x[i][b] ** 2 for i in range(m) for a in range(k) for b in range(k)
    )
    beta = (fourth / m - delta_hat) / (k * m)
    delta = (delta_hat - 2.0 * mu * trace + k * mu * mu) / k
    beta = min(beta, delta)
    return 0.0 if beta == 0 or delta == 0 else beta / delta


def gaussian(samples):
    """(mean, precision, shrinkage, sigma, correlation) of one group of samples (m, k) of z."""
    samples = np.asarray(samples, dtype=float)
    m, k = samples.shape
    mean = np.array([math.fsum(samples[:, j]) / m for j in range(k)])
    sigma = np.array(
        [
            math.sqrt(math.fsum((samples[i, j] - mean[j]) ** 2 for i in range(m)) / m)
            for j in range(k)
        ]
    )
    sigma = np.where(sigma > 1e-12, sigma, 1.0)
    x = [[(samples[i, j] - mean[j]) / sigma[j] for j in range(k)] for i in range(m)]
    corr = np.cov(np.array(x), rowvar=False, bias=True).reshape(k, k)
    delta = ledoit_wolf_intensity(x)
    shrunk = (1.0 - delta) * corr + delta * np.eye(k)
    cov = np.empty((k, k))
    for a in range(k):
        for b in range(k):
            cov[a, b] = sigma[a] * shrunk[a, b] * sigma[b]
    per_feature = math.fsum(cov[a, a] for a in range(k)) / k
    if per_feature <= 1e-12:
        per_feature = 1.0
    precision = np.linalg.inv(cov + 1e-9 * per_feature * np.eye(k))
    return mean, precision, delta, sigma, corr


def fit(features, unit_space="position"):
    """center, scale, means (G, k), precisions (G, k, k), shrinkage (G,), by loops."""
    features = np.asarray(features, dtype=float)
    n, n_patches, k = features.shape
    center, scale = scaling(features)
    z = scale_all(features, center, scale)
    if unit_space == "position":
        groups = [z[:, p, :] for p in range(n_patches)]
    else:
        groups = [z.reshape(n * n_patches, k)]
    results = [gaussian(g) for g in groups]
    means = np.array([r[0] for r in results])
    precisions = np.array([r[1] for r in results])
    shrinkage = np.array([r[2] for r in results])
    return center, scale, means, precisions, shrinkage


def distances(features, center, scale, means, precisions):
    """MD (n, N) by a loop over images, patches and the k × k terms."""
    features = np.asarray(features, dtype=float)
    n, n_patches, k = features.shape
    out = np.empty((n, n_patches))
    for i in range(n):
        for p in range(n_patches):
            g = p if len(means) > 1 else 0
            d = [
                z_value(float(features[i, p, j]), center[j], scale[j]) - means[g][j]
                for j in range(k)
            ]
            total = math.fsum(d[a] * precisions[g][a][b] * d[b] for a in range(k) for b in range(k))
            out[i, p] = max(total / k, 0.0)
    return out


def scores(md):
    """(score, patch_max) per image: the first largest MD."""
    result = []
    for row in md:
        best = 0
        for p in range(1, len(row)):
            if row[p] > row[best]:
                best = p
        result.append((float(row[best]), best))
    return result


def oof_threshold(features, unit_space="position", quantile=0.99):
    """(oof scores, threshold): fold i mod 5 scored by a fit on the other four folds."""
    features = np.asarray(features, dtype=float)
    n = len(features)
    oof = np.empty(n)
    for fold in range(5):
        kept = [i for i in range(n) if i % 5 != fold]
        held = [i for i in range(n) if i % 5 == fold]
        center, scale, means, precisions, _ = fit(features[kept], unit_space)
        md = distances(features[held], center, scale, means, precisions)
        for i, (score, _) in zip(held, scores(md), strict=True):
            oof[i] = score
    return oof, float(np.quantile(oof, quantile))
