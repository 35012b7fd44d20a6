"""A synthetic but realistic report: the sample photos with made-up scores, heats and masks.

Used by tests/test_report.py and to draw docs/report_screenshot.png::

    python -m tests.report_demo docs/report_screenshot.png

Nothing here is a measurement: the labels, scores, heats, masks and failures are drawn from a
seeded generator so that the report shows every section with plausible numbers.
"""

from __future__ import annotations

import io
import pathlib
import sys

import numpy as np
from PIL import Image

from soartc_cli.core.evaluation import PixelEvaluation, evaluate_images, upsample_heat
from soartc_cli.output.pictures import render_score_map
from soartc_cli.output.report import ReportData, ReportRow, render_report, select_gallery

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "sample_images"
SIZE, PATCH, STRIDE = 224, 32, 16
GRID = (SIZE - PATCH) // STRIDE + 1  # 13 cells a side
THRESHOLD = 3.1
# label: (images, mean score, spread)
GROUPS = {
    "good": (40, 2.0, 0.45),
    "scratch": (12, 3.9, 1.0),
    "stain": (9, 3.1, 0.7),
    "missing_part": (6, 5.6, 1.1),
}


def _photos() -> list[np.ndarray]:
    """The sample photos as (1, SIZE, SIZE) luma in [0, 1], centre-cropped to a square."""
    out = []
    for path in sorted(p for p in SAMPLES.rglob("*") if p.suffix in {".png", ".jpg"}):
        with Image.open(path) as image:
            grey = image.convert("L")
            side = min(grey.size)
            left, top = (grey.size[0] - side) // 2, (grey.size[1] - side) // 2
            square = grey.crop((left, top, left + side, top + side)).resize((SIZE, SIZE))
            out.append(np.asarray(square, dtype=np.float32)[None] / 255.0)
    return out


def _blob(rng: np.random.Generator, score: float, defect: bool):
    """A heat grid whose maximum is ``score`` and, for a defect, the pixel mask of its spot."""
    heat = rng.normal(0.8, 0.35, (GRID, GRID))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    centre = rng.uniform(2, GRID - 3, 2)
    ii, jj = np.mgrid[0:GRID, 0:GRID]
    spot = np.exp(-((ii - centre[0]) ** 2 + (jj - centre[1]) ** 2) / rng.uniform(1.0, 3.0))
    heat = heat + spot * (score - heat.max() + 0.5)
    heat += score - heat.max()
    if defect:
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        cy, cx = (STRIDE * centre + (PATCH - 1) / 2).tolist()
        radius = rng.uniform(10, 26)
        mask = (yy - cy) ** 2 + ((xx - cx) / rng.uniform(0.5, 1.6)) ** 2 < radius**2
    return heat, mask


def build(*, pictures: bool = True) -> ReportData:
    """The demo's ReportData (deterministic)."""
    rng = np.random.default_rng(2024)
    photos = _photos()
    rows, heats, masks, parts = [], [], [], {"soartc": [], "stats": []}
    pixel = PixelEvaluation()
    k = 0
    for label, (count, mean, spread) in GROUPS.items():
        for i in range(count):
            score = float(max(0.4, rng.normal(mean, spread)))
            path = f"test/{label}/{i:03d}.png"
            heat, mask = _blob(rng, score, label != "good")
            rows.append(ReportRow(path=path, label=label, score=score, anomalous=score > THRESHOLD))
            heats.append((heat, photos[k % len(photos)]))
            masks.append(mask)
            parts["soartc"].append(score + rng.normal(0, 0.9))
            parts["stats"].append(score + rng.normal(0, 0.6))
            pixel.add(upsample_heat(heat, patch=PATCH, stride=STRIDE, shape=(SIZE, SIZE)), mask)
            k += 1
    scores = np.array([r.score for r in rows])
    labels = [r.label for r in rows]
    evaluation = evaluate_images(scores, labels, scores > THRESHOLD, components=parts, pixels=pixel)
    failures = [
        ("test/good/041.png", "cannot identify image file (not an image)"),
        ("test/scratch/<b>&amp;\udcff.png", "truncated file: 1,204 of 48,311 bytes"),
    ]
    drawn = {}
    if pictures:
        highest, nearest = select_gallery(rows, threshold=THRESHOLD)
        index = {r.path: n for n, r in enumerate(rows)}
        for row in [*highest, *nearest]:
            heat, photo = heats[index[row.path]]
            image = render_score_map(
                photo,
                heat.ravel(),
                grid=(GRID, GRID),
                threshold=THRESHOLD,
                score=row.score,
                title=row.path,
            )
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            drawn[row.path] = buffer.getvalue()
    n_anomalous = int(np.count_nonzero(scores > THRESHOLD))
    return ReportData(
        title="soartc score: bottle (synthetic demo, made-up scores)",
        settings={
            "model": "models/bottle.npz",
            "components": ["soartc", "stats"],
            "unit_space": "position",
            "size": SIZE,
            "patch": PATCH,
            "stride": STRIDE,
            "quantile": 0.99,
            "seed": 0,
            "masks": "MVTec AD layout (ground_truth/<defect>/x_mask.png)",
            "data": "sample_images/ photos with made-up scores, heats and masks",
        },
        counts={
            "found": len(rows) + len(failures),
            "processed": len(rows),
            "failed": len(failures),
            "anomalous": n_anomalous,
        },
        threshold=THRESHOLD,
        rows=rows,
        evaluation=evaluation,
        failures=failures,
        pictures=drawn,
    )


def main(argv: list[str]) -> int:
    """Write the demo report and its screenshot: ``python -m tests.report_demo OUT.png``."""
    import tempfile

    from tests.test_report import browser_screenshot, chromium

    out = pathlib.Path(argv[0] if argv else "docs/report_screenshot.png")
    executable = chromium()
    if executable is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        page = pathlib.Path(tmp) / "report.html"
        page.write_text(render_report(build()), encoding="utf-8")
        shot, errors = browser_screenshot(executable, page, pathlib.Path(tmp))
        if errors:
            print("\n".join(errors), file=sys.stderr)
            return 1
        out.write_bytes(shot.read_bytes())
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
