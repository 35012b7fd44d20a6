"""Fit time, peak memory and score time of model format 2 on synthetic features (SPEC §10).

Run from the repository root::

    .venv/bin/python benchmarks/bench_scoring.py [--sizes 1000 5000] [--score-images 200]

Each size runs in a fresh interpreter set up like the ``soartc`` program (one BLAS thread, glibc
malloc thresholds raised; PERF_NOTES) that builds the features of the defaults — ``soartc``
729 cells × 18 values in float64, ``stats`` 729 × 6 in float32 — fits a model and scores
images. The child reports its peak resident size (``ru_maxrss``), its resident size before the
features existed, and :func:`soartc_cli.core.scoring.memory_need`. The parent prints a table and a
straight-line extrapolation to 10,000 good images from the two largest sizes. The features are
synthetic (see :func:`features`): ``stats`` spread in two main directions as photos' cells do
(the bank search depends on it), and, timed apart, isotropic (the k-d tree's worst case).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CELLS, K_SOARTC, K_STATS = 729, 18, 6


def features(n: int, *, seed: int, isotropic: bool = False):
    """Synthetic (n, 729, 18) float64 and (n, 729, 6) float32 features, built in blocks.

    ``soartc``: Gaussian, correlated within a cell, a fixed offset per cell and feature.
    ``stats``: like the six statistics of photos' cells, two main directions (brightness: mean,
    min, max; texture: std, gradient, Laplacian, heavy-tailed) and a little noise; or, with
    ``isotropic``, independent Gaussians (the worst case of the k-d tree search).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    soartc = np.empty((n, CELLS, K_SOARTC))
    stats = np.empty((n, CELLS, K_STATS), np.float32)
    offset_a = rng.standard_normal((CELLS, K_SOARTC))
    offset_b = rng.standard_normal((CELLS, 2))
    mix = 0.4 * rng.standard_normal((K_SOARTC, K_SOARTC)) + np.eye(K_SOARTC)
    loading = np.array([[1.0, 0.1, 0.2, 0.9, 1.1, 0.1], [0.1, 1.0, 1.2, -0.6, 0.7, 1.4]])
    for first in range(0, n, 500):
        b = min(500, n - first)
        soartc[first : first + b] = rng.standard_normal((b, CELLS, K_SOARTC)) @ mix + offset_a
        if isotropic:
            stats[first : first + b] = rng.standard_normal((b, CELLS, K_STATS))
            continue
        latent = 0.5 * rng.standard_normal((b, CELLS, 2)) + offset_b
        latent[..., 1] = np.exp(latent[..., 1])
        stats[first : first + b] = latent @ loading + 0.05 * rng.standard_normal(
            (b, CELLS, K_STATS)
        )
    return soartc, stats


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(n: int, score_images: int) -> dict:
    from soartc_cli.pipeline.startup import prepare_process

    prepare_process()
    import resource

    import numpy as np

    from soartc_cli.core import scoring

    before = rss_kib()
    soartc, stats = features(n, seed=0)
    need = scoring.memory_need(
        n,
        components={
            "soartc": (CELLS, K_SOARTC, soartc.dtype),
            "stats": (CELLS, K_STATS, stats.dtype),
        },
    )
    parts = {
        "soartc": scoring.ComponentData(soartc, "gaussian"),
        "stats": scoring.ComponentData(stats, "bank"),
    }
    start = time.perf_counter()
    model = scoring.fit_model(parts)
    fit_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    test_soartc, test_stats = features(score_images, seed=1)
    test_stats[:, 100] += 5.0
    batch = 50
    scoring.score_cells(model, {"soartc": test_soartc[:2], "stats": test_stats[:2]})  # warm up
    start = time.perf_counter()
    for first in range(0, score_images, batch):
        part = slice(first, first + batch)
        scoring.score_cells(model, {"soartc": test_soartc[part], "stats": test_stats[part]})
    batched_ms = (time.perf_counter() - start) / score_images * 1e3
    singles = min(score_images, 100)
    start = time.perf_counter()
    for i in range(singles):
        scoring.score_cells(model, {"soartc": test_soartc[i], "stats": test_stats[i]})
    single_ms = (time.perf_counter() - start) / singles * 1e3
    # the worst case of the k-d tree: a bank of isotropic values
    _, isotropic = features(200, seed=2, isotropic=True)
    flat = scoring._fit_bank(isotropic, np.arange(200), 0)
    _, probe = features(score_images, seed=3, isotropic=True)
    start = time.perf_counter()
    for first in range(0, score_images, batch):
        scoring._raw_heat(flat, probe, np.arange(first, min(first + batch, score_images)))
    isotropic_ms = (time.perf_counter() - start) / score_images * 1e3
    component_ms = {}
    for name, values in (("soartc", test_soartc), ("stats", test_stats)):
        part = model.components[name].fit
        start = time.perf_counter()
        for first in range(0, score_images, batch):
            scoring._raw_heat(part, values, np.arange(first, min(first + batch, score_images)))
        component_ms[name] = (time.perf_counter() - start) / score_images * 1e3
    return {
        "n": n,
        "fit_s": fit_s,
        "peak_mib": peak / 1024,
        "baseline_mib": before / 1024,
        "features_mib": (soartc.nbytes + stats.nbytes) / 2**20,
        "memory_need_mib": need / 2**20,
        "bank": list(model.components["stats"].fit.bank.shape),
        "threshold": model.threshold,
        "score_ms_batched": batched_ms,
        "score_ms_single": single_ms,
        "score_ms_component": component_ms,
        "search": model.components["stats"].fit.search,
        "isotropic_stats_ms": isotropic_ms,
        "isotropic_search": flat.search,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--score-images", type=int, default=200)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.score_images)))
        return
    rows = []
    for n in args.sizes:
        command = [sys.executable, __file__, "--child", str(n)]
        command += ["--score-images", str(args.score_images)]
        result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(result.stdout))
        row = rows[-1]
        print(
            f"n={n:>6}: fit {row['fit_s']:7.1f} s, peak RSS {row['peak_mib']:7.0f} MiB "
            f"(interpreter {row['baseline_mib']:.0f}, features {row['features_mib']:.0f}, "
            f"memory_need {row['memory_need_mib']:.0f}); score {row['score_ms_batched']:.2f} "
            f"ms/image batched, {row['score_ms_single']:.2f} one at a time "
            f"(soartc {row['score_ms_component']['soartc']:.2f}, "
            f"stats {row['score_ms_component']['stats']:.2f} by {row['search']}; isotropic "
            f"stats {row['isotropic_stats_ms']:.2f} by {row['isotropic_search']}); "
            f"bank {row['bank']}",
            flush=True,
        )
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        per = {key: (b[key] - a[key]) / (b["n"] - a["n"]) for key in ("fit_s", "peak_mib")}
        at = {key: b[key] + per[key] * (10000 - b["n"]) for key in per}
        from soartc_cli.core import scoring

        need = scoring.memory_need(
            10000,
            components={"soartc": (CELLS, K_SOARTC, "f8"), "stats": (CELLS, K_STATS, "f4")},
        )
        print(
            f"n= 10000 (straight line through the last two): fit ≈ {at['fit_s']:.0f} s, "
            f"peak RSS ≈ {at['peak_mib']:.0f} MiB; memory_need {need / 2**20:.0f} MiB "
            f"(24 GiB = {24 * 1024} MiB)"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
