"""Plain-loop oracles of soartc_cli.core.evaluation: Python floats, lists and loops, never
imported by the package. Slow and obvious on purpose."""

from __future__ import annotations

import bisect
import itertools


def bilinear(values, src_y, src_x, dst_y, dst_x):
    """Each output point from its four neighbouring centres, written out."""

    def neighbours(src, t):
        if len(src) == 1:
            return 0, 0, 0.0
        t = min(max(t, src[0]), src[-1])  # edge values held
        for i in range(len(src) - 1):
            if src[i] <= t <= src[i + 1]:
                return i, i + 1, (t - src[i]) / (src[i + 1] - src[i])
        raise AssertionError("unreachable")

    out = []
    for y in dst_y:
        row = []
        i0, i1, u = neighbours(list(src_y), float(y))
        for x in dst_x:
            j0, j1, w = neighbours(list(src_x), float(x))
            row.append(
                (1 - u) * (1 - w) * float(values[i0][j0])
                + (1 - u) * w * float(values[i0][j1])
                + u * (1 - w) * float(values[i1][j0])
                + u * w * float(values[i1][j1])
            )
        out.append(row)
    return out


def regions(mask, *, connectivity=8):
    """Connected regions of True pixels by flood fill: a list of lists of (row, col)."""
    h, w = len(mask), len(mask[0])
    seen = [[False] * w for _ in range(h)]
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    found = []
    for r in range(h):
        for c in range(w):
            if not mask[r][c] or seen[r][c]:
                continue
            seen[r][c] = True
            stack, region = [(r, c)], []
            while stack:
                a, b = stack.pop()
                region.append((a, b))
                for da, db in steps:
                    y, x = a + da, b + db
                    if 0 <= y < h and 0 <= x < w and mask[y][x] and not seen[y][x]:
                        seen[y][x] = True
                        stack.append((y, x))
            found.append(region)
    return found


def split(heats, masks, *, connectivity=8):
    """(normal heats, [heats of each region]) over all images."""
    normal, per_region = [], []
    for heat, mask in zip(heats, masks, strict=True):
        for r in range(len(mask)):
            for c in range(len(mask[0])):
                if not mask[r][c]:
                    normal.append(float(heat[r][c]))
        for region in regions(mask, connectivity=connectivity):
            per_region.append([float(heat[a][b]) for a, b in region])
    return normal, per_region


def pair_auroc(positive, negative):
    """Every (positive, negative) pair: 1 when the positive is higher, ½ on a tie."""
    if not positive or not negative:
        return None
    total = 0.0
    for p in positive:
        for q in negative:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(positive) * len(negative))


def pro_curve(normal, per_region):
    """The (FPR, PRO) points: (0, 0), one per distinct heat (highest first), (1, 1)."""
    xs, ys = [0.0], [0.0]
    for t in sorted({*normal, *(v for region in per_region for v in region)}, reverse=True):
        xs.append(sum(1 for v in normal if v >= t) / len(normal))
        ys.append(
            sum(sum(1 for v in region if v >= t) / len(region) for region in per_region)
            / len(per_region)
        )
    return [*xs, 1.0], [*ys, 1.0]


def trapezoid(xs, ys, x_max):
    """MVTec AD's evaluation code's ``trapezoid(x, y, x_max)``: cut at x_max, interpolated."""
    correction = 0.0
    if x_max not in xs:
        ins = bisect.bisect(xs, x_max)
        y_interp = ys[ins - 1] + (ys[ins] - ys[ins - 1]) * (x_max - xs[ins - 1]) / (
            xs[ins] - xs[ins - 1]
        )
        correction = 0.5 * (y_interp + ys[ins - 1]) * (x_max - xs[ins - 1])
    kept = [(x, y) for x, y in zip(xs, ys, strict=True) if x <= x_max]
    area = sum(0.5 * (y0 + y1) * (x1 - x0) for (x0, y0), (x1, y1) in itertools.pairwise(kept))
    return area + correction


def aupro(heats, masks, fpr_limit=0.3, *, connectivity=8):
    normal, per_region = split(heats, masks, connectivity=connectivity)
    if not normal or not per_region:
        return None
    xs, ys = pro_curve(normal, per_region)
    return trapezoid(xs, ys, fpr_limit) / fpr_limit


def pixel_auroc(heats, masks):
    normal, per_region = split(heats, masks)
    return pair_auroc([v for region in per_region for v in region], normal)
