"""Time the numeric core (transforms + metrics of one image) against the plain loop oracle.

Run from the repository root::

    .venv/bin/python benchmarks/bench_core.py [--size 224] [--patch 16] [--repeat 300] [IMAGE]

Prints, per setting, the median and best time per image of ``soartc_features`` and of the
oracle of ``tests/oracle.py``, their ratio, and the largest difference between the two. One BLAS
thread and the calm malloc settings of the CLI are set before numpy loads (PERF_NOTES). Timings
are interleaved so that a busy machine slows every contender alike; no assertion is made here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from soartc_cli.pipeline.startup import prepare_process  # noqa: E402  (before numpy is imported)

prepare_process()

import numpy as np  # noqa: E402

from soartc_cli.core.features import soartc_features  # noqa: E402
from soartc_cli.core.metrics import METRIC_PRESETS, METRICS  # noqa: E402
from soartc_cli.core.transforms import KERNELS, TRANSFORM_PRESETS  # noqa: E402
from tests.oracle import features_oracle  # noqa: E402

SETTINGS = {
    "default (soartc x soart3)": {},
    "all x all": {"transforms": TRANSFORM_PRESETS["all"], "metrics": METRICS},
    "soart x soart3": {"transforms": TRANSFORM_PRESETS["soart"]},
    "soartc x rt": {"metrics": METRIC_PRESETS["rt"]},
}


def photo_like(size: int, *, seed: int = 0) -> np.ndarray:
    """A deterministic float32 image with smooth shading, edges, texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.35 + 0.25 * np.sin(3 * x + 2 * y) * np.cos(4 * y)
    image += 0.3 * ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05)  # a bright disc
    image -= 0.2 * ((x > 0.1) & (x < 0.3) & (y > 0.6))  # a dark bar
    image += 0.05 * np.sin(40 * x) * np.sin(37 * y)  # fine texture
    image += rng.normal(0, 0.02, image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def load(path: str, size: int) -> np.ndarray:
    """A centred square of a photo, resized to size × size, as float32 luma in [0, 1]."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L")
        side = min(img.size)
        box = ((img.width - side) / 2, (img.height - side) / 2)
        box = (*box, box[0] + side, box[1] + side)
        fitted = img.convert("F").resize((size, size), Image.BILINEAR, box=box)
    return np.asarray(fitted, dtype=np.float32) / 255


def interleaved(functions: dict[str, object], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved round-robin."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm-up
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a photo (default: a synthetic photo-like image)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=300, help="timed calls of the fast path")
    parser.add_argument("--oracle-repeat", type=int, default=3, help="timed calls of the oracle")
    args = parser.parse_args()

    image = load(args.image, args.size) if args.image else photo_like(args.size)
    source = args.image or "synthetic photo-like image"
    print(f"{source}, {args.size}x{args.size}, patch {args.patch}, one BLAS thread")
    rgb = np.stack([image, image[::-1], image[:, ::-1]])
    cases = {**{name: (image, setting) for name, setting in SETTINGS.items()}}
    cases["default, C=3"] = (rgb, {})

    fast = {
        name: (lambda img=img, kw=kw: soartc_features(img, patch=args.patch, **kw))
        for name, (img, kw) in cases.items()
    }
    fast_times = interleaved(fast, args.repeat)
    header = f"{'setting':<28}{'median ms':>10}{'best ms':>9}{'oracle ms':>11}{'ratio':>8}"
    print(header + f"{'max |diff|':>12}")
    for name, (img, kw) in cases.items():
        setting = {
            "transforms": kw.get("transforms", TRANSFORM_PRESETS["soartc"]),
            "metrics": kw.get("metrics", METRIC_PRESETS["soart3"]),
        }

        def oracle(img=img, setting=setting):
            return features_oracle(img, patch=args.patch, datum="datum", kernels=KERNELS, **setting)

        oracle_time = min(interleaved({"oracle": oracle}, args.oracle_repeat)["oracle"])
        diff = np.nanmax(np.abs(fast[name]() - oracle()))
        median = statistics.median(fast_times[name])
        best = min(fast_times[name])
        print(
            f"{name:<28}{median * 1e3:>10.3f}{best * 1e3:>9.3f}{oracle_time * 1e3:>11.1f}"
            f"{oracle_time / median:>8.0f}{diff:>12.2e}"
        )


if __name__ == "__main__":
    main()
