"""Plain-loop oracle of model format 2 (SPEC §10 steps 1–5): one cell, one bank vector, one fold
at a time.

Slow and obvious on purpose: Python floats, ``math.fsum``, loops over cells and bank vectors, the
greedy coreset recomputing every distance from scratch. The Gaussian and the scaling are the
format-1 oracle's (``tests/oracle_unitspace.py``). Never imported by the package.
"""

from __future__ import annotations

import math

import numpy as np

from tests import oracle_unitspace as gauss

EPSILON = 1e-6


def sq_distance(a, b):
    """Σ_j (a_j − b_j)², summed in feature order."""
    total = 0.0
    for x, y in zip(a, b, strict=True):
        d = float(x) - float(y)
        total += d * d
    return total


def bank_size(n_vectors):
    return min(4000, max(1, round(0.1 * n_vectors)))


def standardise(z):
    """(mean, std) per feature of z (n, N, k) over every cell; std ≤ 1e-12 → 1."""
    n, n_units, k = z.shape
    mean, std = [], []
    for j in range(k):
        values = [float(z[i, u, j]) for i in range(n) for u in range(n_units)]
        mu = math.fsum(values) / len(values)
        sd = math.sqrt(math.fsum((v - mu) ** 2 for v in values) / len(values))
        mean.append(mu)
        std.append(sd if sd > 1e-12 else 1.0)
    return np.array(mean), np.array(std)


def greedy(vectors, m, seed):
    """k-centre greedy from scratch: each step scans every unchosen vector and its distance to
    every chosen one; strict > keeps the lowest index on ties."""
    size = len(vectors)
    chosen = [int(np.random.default_rng(seed).integers(size))]
    while len(chosen) < m:
        best, best_distance = -1, -1.0
        for i in range(size):
            if i in chosen:
                continue
            d = min(sq_distance(vectors[i], vectors[s]) for s in chosen)
            if d > best_distance:
                best, best_distance = i, d
        chosen.append(best)
    return chosen


def fit_bank(features, seed):
    """dict(center, scale, mean, std, bank (float32), pool, chosen) of one bank component."""
    features = np.asarray(features, dtype=float)
    n, n_units, k = features.shape
    center, scale = gauss.scaling(features)
    z = gauss.scale_all(features, center, scale)
    mean, std = standardise(z)
    y = [
        [(float(z[i, u, j]) - mean[j]) / std[j] for j in range(k)]
        for i in range(n)
        for u in range(n_units)
    ]  # index t = i·N_c + u
    total = n * n_units
    m = bank_size(total)
    if m >= total:
        pool, chosen = list(range(total)), list(range(total))
        vectors = y
    else:
        pool = list(np.random.default_rng(seed + 1).choice(total, min(30000, total), replace=False))
        vectors = [y[t] for t in pool]
        chosen = greedy(vectors, m, seed)
    bank = np.array([vectors[c] for c in chosen], dtype=np.float32)
    return {
        "center": center,
        "scale": scale,
        "mean": mean,
        "std": std,
        "bank": bank,
        "pool": pool,
        "chosen": chosen,
    }


def bank_heat(part, features):
    """h (n, N_c): min over the bank of ‖y − b‖² / k, by loops."""
    features = np.asarray(features, dtype=float)
    n, n_units, k = features.shape
    out = np.empty((n, n_units))
    for i in range(n):
        for u in range(n_units):
            y = [
                (
                    gauss.z_value(float(features[i, u, j]), part["center"][j], part["scale"][j])
                    - part["mean"][j]
                )
                / part["std"][j]
                for j in range(k)
            ]
            out[i, u] = (
                min(math.fsum((y[j] - float(b[j])) ** 2 for j in range(k)) for b in part["bank"])
                / k
            )
    return out


def fit_part(features, scorer, unit_space, seed):
    if scorer == "gaussian":
        return dict(
            zip(
                ("center", "scale", "means", "precisions", "shrinkage"),
                gauss.fit(features, unit_space),
                strict=True,
            )
        )
    return fit_bank(features, seed)


def heat(part, scorer, features):
    if scorer == "gaussian":
        return gauss.distances(
            features, part["center"], part["scale"], part["means"], part["precisions"]
        )
    return bank_heat(part, features)


def on_cells(to_cells, h):
    return np.asarray(h, dtype=float) if to_cells is None else np.asarray(to_cells(h), float)


def fit_model(components, unit_space="position", seed=0, quantile=0.99):
    """components: {name: (features, scorer, to_cells)} → dict of every fitted quantity."""
    names = list(components)
    n = len(components[names[0]][0])
    oof = {}
    for name in names:
        features, scorer, to_cells = components[name]
        features = np.asarray(features, dtype=float)
        maps = [None] * n
        for fold in range(5):
            kept = [i for i in range(n) if i % 5 != fold]
            held = [i for i in range(n) if i % 5 == fold]
            part = fit_part(features[kept], scorer, unit_space, seed)
            h = on_cells(to_cells, heat(part, scorer, features[held]))
            for row, i in enumerate(held):
                maps[i] = h[row]
        oof[name] = np.array(maps)
    calibration = {}
    for name in names:
        logs = [[math.log(v + EPSILON) for v in row] for row in oof[name]]
        n_cells = len(logs[0])
        if unit_space == "position":
            groups = [[logs[i][p] for i in range(n)] for p in range(n_cells)]
        else:
            groups = [[v for row in logs for v in row]]
        means, stds = [], []
        for values in groups:
            mu = math.fsum(values) / len(values)
            sd = math.sqrt(math.fsum((v - mu) ** 2 for v in values) / len(values))
            means.append(mu)
            stds.append(max(sd, 1e-6))
        calibration[name] = (np.array(means), np.array(stds))
    oof_heat = fuse(oof, calibration, names)
    oof_scores = np.array([max(row) for row in oof_heat])
    parts = {
        name: fit_part(
            np.asarray(components[name][0], float), components[name][1], unit_space, seed
        )
        for name in names
    }
    return {
        "names": names,
        "scorers": {name: components[name][1] for name in names},
        "to_cells": {name: components[name][2] for name in names},
        "parts": parts,
        "oof": oof,
        "calibration": calibration,
        "oof_heat": oof_heat,
        "oof_scores": oof_scores,
        "threshold": float(np.quantile(oof_scores, quantile)),
    }


def terms(maps, calibration, names):
    """{name: (n, N_cells)} calibrated terms of raw cell maps, cell by cell."""
    out = {}
    for name in names:
        means, stds = calibration[name]
        rows = []
        for row in maps[name]:
            rows.append(
                [
                    (math.log(v + EPSILON) - means[p if len(means) > 1 else 0])
                    / stds[p if len(stds) > 1 else 0]
                    for p, v in enumerate(row)
                ]
            )
        out[name] = np.array(rows)
    return out


def fuse(maps, calibration, names):
    """H (n, N_cells) = Σ_c terms, in component order."""
    parts = terms(maps, calibration, names)
    n, n_cells = parts[names[0]].shape
    out = np.empty((n, n_cells))
    for i in range(n):
        for p in range(n_cells):
            total = parts[names[0]][i, p]
            for name in names[1:]:
                total += parts[name][i, p]
            out[i, p] = total
    return out


def score(model, features):
    """(heat (b, N_cells), terms, score (b,), cell_max (b,)) of batches (b, N_c, k_c)."""
    names = model["names"]
    maps = {
        name: on_cells(
            model["to_cells"][name],
            heat(model["parts"][name], model["scorers"][name], np.asarray(features[name], float)),
        )
        for name in names
    }
    per = terms(maps, model["calibration"], names)
    h = fuse(maps, model["calibration"], names)
    best = []
    for row in h:
        b = 0
        for p in range(1, len(row)):
            if row[p] > row[b]:
                b = p
        best.append(b)
    return h, per, np.array([row[b] for row, b in zip(h, best, strict=True)]), np.array(best)
