"""In-process measurements for ``bench_pipeline.py``, each run in a fresh interpreter.

Usage: ``python _bench_child.py MODE ROOT`` with the image paths (relative to ROOT), one a
line, on standard input; prints one JSON object on standard output.

Modes
-----
``decode``
    ``soartc_cli.imaging.load.load_image`` in a loop over the files: decode + fit only.
``stages``
    The per-image split of the pipeline, every stage timed on every image: decode (Pillow
    open + load), fit (``load_image`` minus decode), transforms + metrics
    (``features.soartc_features`` with default settings), formatting (the CSV format's encoder
    of ``soartc_cli.output.formats``, wide layout of ``soartc_cli.output.layouts``), plus
    finer detail of
    ``load_image`` (``decode``, ``to_array``, ``fit``).

The process is set up as the ``soartc`` program sets itself up (one BLAS thread, glibc malloc
thresholds raised) before numpy is imported, so that it compares with ``soartc compute``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _prepare() -> None:
    """Set the process up like the ``soartc`` entry point, before numpy is imported."""
    try:
        from soartc_cli.pipeline.startup import prepare_process
    except ImportError:  # the start-up module moved: do what PERF_NOTES asks by hand
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
        return
    prepare_process()


def _warm_up(paths: list[str], load_image) -> None:
    """Import lazily-loaded modules and touch the first files before timing."""
    for path in paths[: min(10, len(paths))]:
        load_image(path)


def measure_decode(paths: list[str]) -> dict:
    """Decode + fit only, timed over the whole loop.

    Parameters
    ----------
    paths : list of str
        Image files.

    Returns
    -------
    dict
        ``images``, ``seconds`` and ``images_per_s``.
    """
    from soartc_cli.imaging.load import load_image

    _warm_up(paths, load_image)
    started = time.perf_counter()
    for path in paths:
        load_image(path)
    seconds = time.perf_counter() - started
    return {"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds}


def measure_stages(root: str, relative: list[str]) -> dict:
    """Time every stage of the pipeline on every image, in this process.

    Parameters
    ----------
    root : str
        Folder the paths are relative to (paths and labels as ``soartc compute ROOT`` names them).
    relative : list of str
        Image paths relative to ``root``.

    Returns
    -------
    dict
        ``images``; ``ms``: milliseconds per image of each stage (``decode``, ``fit``,
        ``features``, ``format``) and of the detail steps (``load_image``, ``load.decode``,
        ``load.to_array``, ``load.fit``), averaged over the images; ``row_chars``: mean
        length of one formatted row.
    """
    from PIL import Image

    from soartc_cli.core.features import soartc_features
    from soartc_cli.core.metrics import METRIC_PRESETS
    from soartc_cli.core.patches import patch_grid, patch_names
    from soartc_cli.core.transforms import TRANSFORM_PRESETS
    from soartc_cli.imaging import load
    from soartc_cli.output.formats import choose_format
    from soartc_cli.output.layouts import Columns, ImageValues

    paths = [os.path.join(root, r) for r in relative]
    transforms = TRANSFORM_PRESETS["soartc"]
    metrics = METRIC_PRESETS["soart3"]
    fmt = choose_format("out.csv")
    columns = Columns(None, tuple(transforms), tuple(metrics))
    _warm_up(paths, load.load_image)
    clock = time.perf_counter
    totals = dict.fromkeys(
        ("decode", "load_image", "features", "format", "d_decode", "d_to_array", "d_fit"), 0.0
    )
    chars = 0
    names_cache: dict[tuple[int, int], list[str]] = {}
    for path, rel in zip(paths, relative, strict=True):
        t0 = clock()
        with Image.open(path) as image:
            image.load()
        t1 = clock()
        loaded = load.load_image(path)
        t2 = clock()
        values = soartc_features(loaded.pixels)
        t3 = clock()
        grid = patch_grid(loaded.pixels.shape[-2:], patch=16)
        names = names_cache.get(grid) or names_cache.setdefault(grid, patch_names(*grid))
        parts = rel.split("/")
        t4 = clock()
        label = parts[0] if len(parts) > 1 else ""
        image = ImageValues(rel, label, loaded.width, loaded.height, grid, values)
        text = fmt.format.encode(fmt, columns, image, names)
        t5 = clock()
        # Detail: the steps of load_image one by one (public functions of imageio).
        decoded = load.decode(path)
        t6 = clock()
        array = load.to_array(decoded)
        t7 = clock()
        load.fit(array)
        t8 = clock()
        totals["decode"] += t1 - t0
        totals["load_image"] += t2 - t1
        totals["features"] += t3 - t2
        totals["format"] += t5 - t4
        totals["d_decode"] += t6 - t5
        totals["d_to_array"] += t7 - t6
        totals["d_fit"] += t8 - t7
        chars += len(text)
    count = len(paths)
    ms = {k: 1000.0 * v / count for k, v in totals.items()}
    ms["fit"] = ms["load_image"] - ms["decode"]
    return {"images": count, "ms": ms, "row_chars": chars / count}


def main() -> int:
    """Run one measurement named on the command line; print its JSON result."""
    mode, root = sys.argv[1], sys.argv[2]
    relative = [line for line in sys.stdin.read().splitlines() if line]
    _prepare()
    if mode == "decode":
        result = measure_decode([os.path.join(root, r) for r in relative])
    elif mode == "stages":
        result = measure_stages(root, relative)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
