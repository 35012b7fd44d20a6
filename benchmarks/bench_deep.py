"""Time the numpy EfficientNet-Lite0 of ``soartc_cli.core.deep`` against PyTorch on one CPU thread.

Run from the repository root (PyTorch is optional; ``pip install torch==2.13.0`` takes the CPU
build on this machine's disk, plain ``torch`` would pull a CUDA build of several GB)::

    .venv/bin/python benchmarks/bench_deep.py [--size 224] [--repeat 30] [--json FILE]

Contenders, each on the same 224² photo, batch 1:

- ``numpy features``: what SPEC §10 computes per image, the stem and blocks 0–7
  (:func:`soartc_cli.core.deep.feature_maps`);
- ``torch features (bn)``: the same in PyTorch's functional API with batch norm applied, as the
  weights' own PyTorch port runs it (tests/oracle_deep.py);
- ``torch features (folded)``: PyTorch convolutions with the batch norms folded into them, as
  soartc's network does — PyTorch's best case;
- ``numpy cells``: :func:`soartc_cli.core.deep.deep_cells` (features + 3×3 mean + sampling, P = 16,
  T = 8);
- ``numpy / torch logits``: the whole network with its head and classifier.

One BLAS thread, ``torch.set_num_threads(1)`` and the CLI's malloc settings are set before numpy
is imported (PERF_NOTES). Calls are interleaved round-robin so that a busy machine slows every
contender alike; the ratios (median over rounds of the per-round ratio) are the figures to quote
on this shared machine, not the absolute times. No assertion is made here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from soartc_cli.pipeline.startup import prepare_process  # noqa: E402  (before numpy is imported)

prepare_process()

import numpy as np  # noqa: E402

from soartc_cli import deep  # noqa: E402
from soartc_cli.settings.deepweights import load_network, load_weights  # noqa: E402


def photo(size: int) -> np.ndarray:
    """scikit-image's chelsea through the §2 loader (rgb), or a seeded random image."""
    try:
        import skimage.data
        from PIL import Image

        from soartc_cli.imaging.load import load_image
    except ImportError:
        return np.random.default_rng(0).random((3, size, size), dtype=np.float32)
    image = Image.fromarray(skimage.data.chelsea())
    return load_image(image, size=size, patch=16, channels="rgb").pixels


def torch_contenders(pixels: np.ndarray) -> dict[str, object]:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("torch not installed: numpy only (pip install torch==2.13.0 for the comparison)")
        return {}
    from tests.oracle_deep import forward_torch

    torch.set_num_threads(1)
    sd = torch.load(load_weights().path, weights_only=True, map_location="cpu")
    x = torch.from_numpy(deep.prepare(pixels))[None]
    folded = _folded_torch(sd)

    def features_bn():
        with torch.no_grad():
            return forward_torch(sd, x, last=7)

    def features_folded():
        with torch.no_grad():
            return _forward_folded(folded, x, F, last=7)

    def logits_bn():
        with torch.no_grad():
            return forward_torch(sd, x, head=True)

    return {
        "torch features (bn)": features_bn,
        "torch features (folded)": features_folded,
        "torch logits (bn)": logits_bn,
    }


def _folded_torch(sd):
    """Per convolution: (weight with batch norm folded in, bias), as torch tensors."""
    import torch

    def fold(conv, bn):
        scale = sd[f"{bn}.weight"] / torch.sqrt(sd[f"{bn}.running_var"] + deep.BN_EPS)
        weight = (sd[f"{conv}.weight"] * scale[:, None, None, None]).contiguous()
        return weight, sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale

    out = {"stem": fold("_conv_stem", "_bn0")}
    for i, b in enumerate(deep.block_specs()):
        p = f"_blocks.{i}"
        if b.hidden != b.inputs:
            out[f"{i}.expand"] = fold(f"{p}._expand_conv", f"{p}._bn0")
        out[f"{i}.dw"] = fold(f"{p}._depthwise_conv", f"{p}._bn1")
        out[f"{i}.project"] = fold(f"{p}._project_conv", f"{p}._bn2")
    return out


def _forward_folded(w, x, F, *, last):
    def same(v, k, s):
        pads = []
        for n in (v.shape[-1], v.shape[-2]):
            o = -(-n // s)
            total = max((o - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(v, pads)

    x = F.relu6(F.conv2d(same(x, 3, 2), *w["stem"], stride=2))
    outputs = []
    for i, b in enumerate(deep.block_specs()[: last + 1]):
        h = F.relu6(F.conv2d(x, *w[f"{i}.expand"])) if f"{i}.expand" in w else x
        h = F.relu6(F.conv2d(same(h, b.kernel, b.stride), *w[f"{i}.dw"], stride=b.stride,
                             groups=b.hidden))  # fmt: skip
        h = F.conv2d(h, *w[f"{i}.project"])
        x = h + x if b.skip else h
        outputs.append(x)
    return outputs


def interleaved(functions: dict[str, object], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calls interleaved round-robin (after one warm-up)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=30, help="interleaved rounds (≥ 20)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    start = time.perf_counter()
    net = load_network()
    load_s = time.perf_counter() - start
    pixels = photo(args.size)
    functions: dict[str, object] = {
        "numpy features": lambda: deep.feature_maps(net, pixels),
        "numpy cells": lambda: deep.deep_cells(pixels, patch=16, stride=8, net=net),
        "numpy logits": lambda: deep.logits(net, pixels),
    }
    functions.update(torch_contenders(pixels))
    print(f"{args.size}² rgb, batch 1, one thread, {args.repeat} interleaved rounds")
    print(f"weights read, checked and folded in {load_s * 1e3:.0f} ms")
    times = interleaved(functions, args.repeat)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'contender':<26}{'median ms':>10}{'best ms':>9}")
    for name, t in times.items():
        print(f"{name:<26}{medians[name] * 1e3:>10.2f}{min(t) * 1e3:>9.2f}")
    ratios = {}
    for ours, theirs in (
        ("numpy features", "torch features (bn)"),
        ("numpy features", "torch features (folded)"),
        ("numpy logits", "torch logits (bn)"),
    ):
        if theirs in times:
            per_round = [a / b for a, b in zip(times[ours], times[theirs], strict=True)]
            ratios[f"{ours} / {theirs}"] = statistics.median(per_round)
            print(f"{ours} / {theirs}: {ratios[f'{ours} / {theirs}']:.2f}")
    if args.json:
        figures = {"size": args.size, "repeat": args.repeat, "load_ms": load_s * 1e3}
        figures["median_ms"] = {k: v * 1e3 for k, v in medians.items()}
        figures["ratios"] = ratios
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
