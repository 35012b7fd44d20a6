"""The HTML report of ``soartc score … --report FILE.html`` (SPEC §10 "Report").

One self-contained HTML file that a person reads at a glance: the run's settings and counts, the
evaluation table, ROC curves per defect label, the score distributions of normal and defective
images with the threshold, a gallery of the highest-scoring images and of the normal images
closest to the threshold with their pictures, and the failures.

Self-contained: the CSS is inline, the pictures are ``data:image/png;base64`` URIs, the plots are
inline SVG drawn here, and there is no script. A Content-Security-Policy meta tag
(``default-src 'none'; img-src data:; style-src 'unsafe-inline'``) makes the browser refuse any
other fetch, so a mistake shows as a console error rather than a network request.

:func:`render_report` only builds a string (the caller writes it, UTF-8): the same
:class:`ReportData` gives the same string. Every text that comes from the user (paths, labels,
reasons, settings) is escaped, and characters that are not printable — the surrogate escapes of
a non-UTF-8 file name included — are shown as backslash escapes (``\\xff``), so the string always
encodes as UTF-8. Its size is bounded: the gallery shows at most ``top + normal`` pictures, each
downscaled here to ``picture_width`` pixels when wider; ROC curves keep only their corners;
histograms have :data:`HISTOGRAM_BINS` bins; at most ``max_failures`` failures are listed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "HISTOGRAM_BINS",
    "ReportData",
    "ReportRow",
    "render_report",
    "select_gallery",
]

HISTOGRAM_BINS = 40
"""Bins of the score histograms, equal widths from the lowest to the highest score."""

_PALETTE = (  # Tableau 10: distinct for most colour-vision deficiencies, readable on white
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_DASHES = ("", "6 3", "2 3")  # after ten labels, the colours repeat with another dash
_NORMAL_RGB, _DEFECT_RGB = "#4e79a7", "#e15759"
_VERDICT_RGB = {"anomalous": "#be1e1e", "good": "#1e783c"}  # as the score maps' verdict box
_COUNT_ORDER = ("found", "processed", "failed", "anomalous")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class ReportRow:
    """One scored image: its path as shown, label, score and verdict (score > threshold)."""

    path: str
    label: str
    score: float
    anomalous: bool


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; built by the caller from the run.

    Attributes
    ----------
    title : str
        The page's title and heading.
    settings : mapping of str to JSON-ready values
        The run's settings (shown sorted by key; values other than str as compact JSON).
    counts : mapping of str to int
        At least ``found``, ``processed``, ``failed``, ``anomalous`` (shown in that order,
        then any other key, sorted).
    threshold : float
        The threshold of the verdicts (finite).
    rows : sequence of ReportRow
        Every scored image (finite scores); used for the plots and the gallery.
    evaluation : dict or None
        :func:`soartc_cli.core.evaluation.evaluate_images`'s dict, None when there is none.
    failures : sequence of (path, reason)
        The images that failed, in the run's order.
    pictures : mapping of str to bytes
        Path → PNG of that image's picture (the score map). Only the gallery's images are
        needed (:func:`select_gallery` says which); a missing one is shown as "no picture".
    normal_label : str
        Label of the normal images. Default ``"good"``.
    """

    title: str
    settings: Mapping[str, Any]
    counts: Mapping[str, int]
    threshold: float
    rows: Sequence[ReportRow]
    evaluation: Mapping[str, Any] | None = None
    failures: Sequence[tuple[str, str]] = ()
    pictures: Mapping[str, bytes] = field(default_factory=dict)
    normal_label: str = "good"


def select_gallery(
    rows: Sequence[ReportRow],
    *,
    threshold: float,
    normal_label: str = "good",
    top: int = 12,
    normal: int = 12,
) -> tuple[list[ReportRow], list[ReportRow]]:
    """The gallery's two lists: the highest scores, and the normal images nearest the threshold.

    Parameters
    ----------
    rows : sequence of ReportRow
    threshold : float
    normal_label : str
    top, normal : int
        How many of each (≥ 0).

    Returns
    -------
    highest : list of ReportRow
        The ``top`` highest scores, any label (ties: by path).
    nearest : list of ReportRow
        The ``normal`` images labelled ``normal_label`` whose ``|score − threshold|`` is
        smallest (ties: by path); an image may be in both lists.
    """
    if top < 0 or normal < 0:
        raise ValueError(f"top and normal must be ≥ 0, got {top} and {normal}")
    highest = sorted(rows, key=lambda r: (-r.score, r.path))[:top]
    normals = [r for r in rows if r.label == normal_label]
    nearest = sorted(normals, key=lambda r: (abs(r.score - threshold), r.path))[:normal]
    return highest, nearest


# -- text -----------------------------------------------------------------------------------


def _shown(text: str) -> str:
    """Printable text: a file name's surrogate escapes as ``\\xNN``, control characters (a
    newline in a path) and other unprintable ones as Python escapes."""
    out = []
    for ch in str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of a byte that is not UTF-8
            out.append("\\x%02x" % (code - 0xDC00))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\u%04x" % code)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _e(text: object) -> str:
    """Escaped for HTML text and attribute values (quotes included)."""
    return html.escape(_shown(str(text)), quote=True)


def _label(label: str) -> str:
    return '<span class="muted">(no label)</span>' if label == "" else _e(label)


def _short(text: str, keep: int = 36) -> str:
    """Middle-shortened text for SVG legends, which do not wrap."""
    text = _shown(text)
    if len(text) <= keep:
        return text
    head = (keep - 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - 1 - head) :]


def _score(value: float) -> str:
    return f"{value:.4g}"


def _metric(value: float | None) -> str:
    return "–" if value is None else "%.3f" % value


def _setting(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# -- SVG plots ------------------------------------------------------------------------------


def _nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi] with at most ``most``."""
    span = hi - lo
    raw = span / max(1, most - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if span / (m * power) <= most - 1)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _tick_text(value: float) -> str:
    return f"{value:.6g}"


class _Plot:
    """Axes of a plot: data coordinates → SVG pixels, the frame, ticks and labels."""

    def __init__(self, *, box, x_range, y_range):
        self.left, self.top, self.right, self.bottom = box
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, v: float) -> float:
        return self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    def axes(self, *, x_ticks, y_ticks, x_label: str, y_label: str) -> list[str]:
        out = [
            f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
            f'height="{self.bottom - self.top}" fill="#fff" stroke="#888"/>'
        ]
        for t in x_ticks:
            px = "%.1f" % self.x(t)
            out.append(
                f'<line x1="{px}" y1="{self.top}" x2="{px}" y2="{self.bottom}" class="grid"/>'
                f'<text x="{px}" y="{self.bottom + 16}" text-anchor="middle">'
                f"{_tick_text(t)}</text>"
            )
        for t in y_ticks:
            py = "%.1f" % self.y(t)
            out.append(
                f'<line x1="{self.left}" y1="{py}" x2="{self.right}" y2="{py}" class="grid"/>'
                f'<text x="{self.left - 6}" y="{py}" text-anchor="end" '
                f'dominant-baseline="middle">{_tick_text(t)}</text>'
            )
        mid_x = (self.left + self.right) / 2
        mid_y = (self.top + self.bottom) / 2
        out.append(
            f'<text x="{mid_x:.1f}" y="{self.bottom + 36}" text-anchor="middle" '
            f'class="axis">{_e(x_label)}</text>'
            f'<text x="{self.left - 44}" y="{mid_y:.1f}" text-anchor="middle" class="axis" '
            f'transform="rotate(-90 {self.left - 44} {mid_y:.1f})">{_e(y_label)}</text>'
        )
        return out


def _roc_corners(positive: np.ndarray, negative: np.ndarray) -> list[tuple[float, float]]:
    """(FPR, TPR) of the ROC curve at every distinct score (≥ t is positive), from (0, 0) to
    (1, 1), keeping only the corners: a point on a straight line between its neighbours is
    dropped (exactly, on the integer counts)."""
    values = np.unique(np.concatenate([positive, negative]))[::-1]
    pos_sorted, neg_sorted = np.sort(positive), np.sort(negative)
    tp = positive.size - np.searchsorted(pos_sorted, values, side="left")
    fp = negative.size - np.searchsorted(neg_sorted, values, side="left")
    tp = np.r_[0, tp].astype(np.int64)
    fp = np.r_[0, fp].astype(np.int64)
    keep = np.ones(tp.size, dtype=bool)
    if tp.size > 2:
        d_fp, d_tp = np.diff(fp), np.diff(tp)
        straight = d_fp[:-1] * d_tp[1:] == d_tp[:-1] * d_fp[1:]
        keep[1:-1] = ~straight
    return [(f / negative.size, t / positive.size) for f, t in zip(fp[keep], tp[keep], strict=True)]


def _legend(entries: Sequence[tuple[str, str, str]], *, x: int, y: int) -> list[str]:
    """Rows of (colour, dash, text) at (x, y), 20 px apart."""
    out = []
    for i, (colour, dash, text) in enumerate(entries):
        cy = y + 20 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{x}" y1="{cy}" x2="{x + 28}" y2="{cy}" stroke="{colour}" '
            f'stroke-width="3"{dash_attr}/>'
            f'<text x="{x + 36}" y="{cy}" dominant-baseline="middle">{_e(text)}</text>'
        )
    return out


def _roc_svg(rows: Sequence[ReportRow], normal_label: str) -> str | None:
    from soartc_cli.core.evaluation import auroc

    scores = np.array([r.score for r in rows], dtype=np.float64)
    labels = np.array([r.label for r in rows], dtype=object)
    normal = labels == normal_label
    defect_labels = sorted(set(labels[~normal].tolist()))
    if not normal.any() or not defect_labels:
        return None
    curves = []  # (name, colour, dash, width, positives)
    for i, label in enumerate(defect_labels):
        colour, dash = _PALETTE[i % len(_PALETTE)], _DASHES[(i // len(_PALETTE)) % len(_DASHES)]
        curves.append((label or "(no label)", colour, dash, 2, scores[labels == label]))
    if len(defect_labels) > 1:
        curves.append(("all defects", "#222", "", 3, scores[~normal]))
    negative = scores[normal]

    size = 300
    plot = _Plot(box=(60, 12, 60 + size, 12 + size), x_range=(-0.02, 1.02), y_range=(-0.02, 1.02))
    width, legend_y = 60 + size + 20, 12 + size + 62
    height = legend_y + 20 * len(curves)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    out = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="ROC curves">'
    ]
    out += plot.axes(
        x_ticks=ticks, y_ticks=ticks, x_label="false-positive rate", y_label="true-positive rate"
    )
    out.append(
        f'<line x1="{plot.x(0):.1f}" y1="{plot.y(0):.1f}" x2="{plot.x(1):.1f}" '
        f'y2="{plot.y(1):.1f}" stroke="#999" stroke-dasharray="4 4"/>'
    )
    entries = []
    for name, colour, dash, width, positive in curves:
        points = " ".join(
            "%.1f,%.1f" % (plot.x(f), plot.y(t)) for f, t in _roc_corners(positive, negative)
        )
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}" '
            f'stroke-linejoin="round"{dash_attr}/>'
        )
        entries.append(
            (
                colour,
                dash,
                f"{_short(name, 26)}  AUROC {_metric(auroc(positive, negative))}"
                f" (n={positive.size})",
            )
        )
    out += _legend(entries, x=20, y=legend_y)
    out.append("</svg>")
    return "".join(out)


def _histogram_svg(rows: Sequence[ReportRow], threshold: float, normal_label: str) -> str:
    scores = np.array([r.score for r in rows], dtype=np.float64)
    normal = np.array([r.label == normal_label for r in rows], dtype=bool)
    if normal.any():
        series = [
            (
                f"normal ({_short(normal_label, 24)}, n={int(normal.sum())})",
                _NORMAL_RGB,
                scores[normal],
            ),
            (f"defective (n={int((~normal).sum())})", _DEFECT_RGB, scores[~normal]),
        ]
        series = [s for s in series if s[2].size]
    else:
        series = [(f"all images (n={scores.size})", "#777", scores)]
    lo = min(float(scores.min()), threshold)
    hi = max(float(scores.max()), threshold)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    edges = np.linspace(lo, hi, HISTOGRAM_BINS + 1)
    counts = [np.histogram(values, bins=edges)[0] for _, _, values in series]
    top = max(1, max(int(c.max()) for c in counts))
    y_ticks = [t for t in _nice_ticks(0, top, 6) if t == int(t)]

    width, height = 680, 380
    plot = _Plot(
        box=(60, 16, width - 20, height - 64), x_range=(lo - pad, hi + pad), y_range=(0, top * 1.08)
    )
    out = [
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="score histograms">'
    ]
    out += plot.axes(
        x_ticks=_nice_ticks(lo - pad, hi + pad, 9),
        y_ticks=y_ticks,
        x_label="image score",
        y_label="images",
    )
    for (_, colour, _), count in zip(series, counts, strict=True):
        for k in np.flatnonzero(count):
            x0, x1 = plot.x(edges[k]), plot.x(edges[k + 1])
            y = plot.y(int(count[k]))
            out.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                f'height="{plot.bottom - y:.1f}" fill="{colour}" fill-opacity="0.55"/>'
            )
    tx = plot.x(threshold)
    out.append(
        f'<line x1="{tx:.1f}" y1="{plot.top}" x2="{tx:.1f}" y2="{plot.bottom}" stroke="#111" '
        f'stroke-width="2" stroke-dasharray="6 3"/>'
        f'<text x="{tx + 5:.1f}" y="{plot.top + 14}" class="axis">threshold '
        f"{_score(threshold)}</text>"
    )
    legend_y = height - 14
    x = 60
    for name, colour, _ in series:
        out.append(
            f'<rect x="{x}" y="{legend_y - 6}" width="12" height="12" fill="{colour}" '
            f'fill-opacity="0.55"/><text x="{x + 18}" y="{legend_y}" '
            f'dominant-baseline="middle">{_e(name)}</text>'
        )
        x += 24 + 8 * len(name)
    out.append("</svg>")
    return "".join(out)


# -- pictures -------------------------------------------------------------------------------


def _picture(png: bytes, path: str, width: int) -> tuple[str, int, int]:
    """(base64 PNG, width, height), downscaled to ``width`` pixels when wider."""
    from PIL import Image

    if not isinstance(png, bytes | bytearray) or not bytes(png[:8]) == _PNG_SIGNATURE:
        raise ValueError(f"the picture of {_shown(path)!r} is not a PNG")
    with Image.open(io.BytesIO(png)) as image:
        if image.format != "PNG":
            raise ValueError(f"the picture of {_shown(path)!r} is not a PNG")
        w, h = image.size
        if w > width:
            h = max(1, round(h * width / w))
            w = width
            small = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            small = small.resize((w, h), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            small.save(buffer, format="PNG", optimize=False, compress_level=9)
            png = buffer.getvalue()
    return base64.b64encode(bytes(png)).decode("ascii"), w, h


def _card(row: ReportRow, pictures: Mapping[str, bytes], width: int, threshold: float) -> str:
    verdict = "anomalous" if row.anomalous else "good"
    png = pictures.get(row.path)
    if png is None:
        image = '<div class="nopicture">no picture</div>'
    else:
        data, w, h = _picture(png, row.path, width)
        image = (
            f'<img src="data:image/png;base64,{data}" width="{w}" height="{h}" '
            f'alt="picture of {_e(row.path)}">'
        )
    relation = ">" if row.score > threshold else "≤"
    return (
        f'<figure class="card">{image}<figcaption>'
        f'<div class="path">{_e(row.path)}</div>'
        f"<div>label <b>{_label(row.label)}</b> · score <b>{_score(row.score)}</b> "
        f"{relation} {_score(threshold)} · "
        f'<span class="verdict {verdict}">{verdict}</span></div>'
        f"</figcaption></figure>"
    )


# -- sections -------------------------------------------------------------------------------


def _summary(data: ReportData) -> str:
    keys = [k for k in _COUNT_ORDER if k in data.counts]
    keys += sorted(k for k in data.counts if k not in _COUNT_ORDER)
    cards = [
        f'<div class="count"><div class="value">{_e(data.counts[k])}</div>'
        f'<div class="name">{_e(k)}</div></div>'
        for k in keys
    ]
    cards.append(
        f'<div class="count"><div class="value">{_score(data.threshold)}</div>'
        f'<div class="name">threshold</div></div>'
    )
    settings = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_setting(data.settings[k]))}</td></tr>"
        for k in sorted(data.settings, key=str)
    )
    counts = f'<div><h3>Counts</h3><div class="counts">{"".join(cards)}</div></div>'
    table = f'<table class="settings">{settings}</table>' if settings else "<p>none</p>"
    return (
        f'<section id="summary"><h2>Run</h2><div class="run">{counts}'
        f"<div><h3>Settings</h3>{table}</div></div></section>"
    )


def _evaluation(evaluation: Mapping[str, Any] | None, normal_label: str) -> str:
    if evaluation is None:
        return (
            '<section id="evaluation"><h2>Evaluation</h2><p class="muted">No evaluation: no '
            f"image is labelled {_e(repr(normal_label))}.</p></section>"
        )
    components = list(evaluation.get("components", []))
    head = "".join(
        f"<th>{h}</th>" for h in ("label", "images", "AUROC", "precision", "recall")
    ) + "".join(f"<th>AUROC {_e(c)} alone</th>" for c in components)
    groups = [(label, g, "") for label, g in sorted(evaluation.get("labels", {}).items())]
    groups.append(("all defects", evaluation.get("all", {}), ' class="all"'))
    body = []
    for label, g, cls in groups:
        shown = _label(label) if cls == "" else "all defects"
        cells = [
            shown,
            _e(g.get("n", "")),
            *(_metric(g.get(k)) for k in ("auroc", "precision", "recall")),
        ]
        cells += [_metric(g.get("components", {}).get(c)) for c in components]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        body.append(f'<tr{cls} data-label="{_e(label)}">{tds}</tr>')
    caption = (
        f"{_e(evaluation.get('n_normal', 0))} images labelled "
        f"{_e(repr(evaluation.get('normal_label', normal_label)))}, "
        f"{_e(evaluation.get('normal_flagged', 0))} of them flagged anomalous"
    )
    out = [
        '<section id="evaluation"><h2>Evaluation</h2>',
        f'<table class="evaluation"><caption>{caption}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>",
    ]
    pixel = evaluation.get("pixel")
    if pixel:
        limit = pixel.get("fpr_limit", 0.3)
        names = (
            "pixel AUROC",
            f"AUPRO@{_tick_text(limit)}",
            "images",
            "defect regions",
            "defect pixels",
        )
        values = (
            _metric(pixel.get("auroc")),
            _metric(pixel.get("aupro")),
            _e(pixel.get("n_images", "")),
            _e(pixel.get("n_regions", "")),
            _e(pixel.get("n_defect_pixels", "")),
        )
        out.append(
            '<table class="pixel"><caption>pixel metrics over the ground-truth masks'
            "</caption><thead><tr>"
            + "".join(f"<th>{n}</th>" for n in names)
            + "</tr></thead><tbody><tr>"
            + "".join(f"<td>{v}</td>" for v in values)
            + "</tr></tbody></table>"
        )
    out.append("</section>")
    return "".join(out)


def _gallery(
    ident: str, title: str, note: str, rows: Sequence[ReportRow], data: ReportData, width: int
) -> str:
    if rows:
        cards = "".join(_card(r, data.pictures, width, data.threshold) for r in rows)
        body = f'<div class="gallery">{cards}</div>'
    else:
        body = '<p class="muted">No image.</p>'
    return f'<section id="{ident}"><h2>{title}</h2><p class="note">{note}</p>{body}</section>'


def _failures(failures: Sequence[tuple[str, str]], most: int) -> str:
    if not failures:
        return '<section id="failures"><h2>Failures</h2><p class="muted">No failure.</p></section>'
    rows = "".join(f"<tr><td>{_e(p)}</td><td>{_e(r)}</td></tr>" for p, r in failures[:most])
    more = ""
    if len(failures) > most:
        more = f'<p class="muted">… and {len(failures) - most} more (the run record lists all).</p>'
    return (
        f'<section id="failures"><h2>Failures ({len(failures)})</h2><table class="failures">'
        f"<thead><tr><th>path</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
        f"{more}</section>"
    )


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI","DejaVu Sans",sans-serif;margin:0;
color:#222;background:#f4f5f7;line-height:1.4}
main{max-width:1140px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:26px;margin:8px 0 2px}h2{font-size:20px;margin:28px 0 8px;border-bottom:2px solid
#dde;padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.sub,.muted,.note{color:#666}.note{margin:0 0 10px;font-size:14px}
.counts{display:flex;flex-wrap:wrap;gap:10px}
.count{background:#fff;border:1px solid #dde;border-radius:8px;padding:8px 18px;min-width:90px}
.count .value{font-size:24px;font-weight:600}.count .name{color:#666;font-size:13px}
table{border-collapse:collapse;background:#fff;font-size:14px;margin:6px 0}
th,td{border:1px solid #dde;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#eef0f4}td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;color:#666;font-size:13px;padding-top:4px}
table.settings td,table.failures td{text-align:left;word-break:break-all;font-family:
ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}table.settings{max-width:100%}
tr.all td{font-weight:600;background:#f7f8fa}
svg.plot{background:#fff;border:1px solid #dde;border-radius:8px;max-width:100%;height:auto}
svg text{font-size:12px;fill:#333}svg text.axis{font-size:13px;fill:#111}
svg .grid{stroke:#eee}
.plots{display:grid;grid-template-columns:minmax(0,380px) minmax(0,1fr);gap:0 24px}
.run{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1.4fr);gap:0 24px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}
.card{margin:0;background:#fff;border:1px solid #dde;border-radius:8px;padding:8px}
.card img{width:100%;height:auto;display:block;image-rendering:auto}
.card figcaption{font-size:13px;margin-top:6px}
.card .path{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;
word-break:break-all;color:#333}
.nopicture{height:120px;display:flex;align-items:center;justify-content:center;color:#999;
background:#f0f0f0}
.verdict{color:#fff;border-radius:4px;padding:0 6px;font-weight:600}
.verdict.anomalous{background:#be1e1e}.verdict.good{background:#1e783c}
"""


def render_report(
    data: ReportData,
    *,
    top: int = 12,
    normal: int = 12,
    picture_width: int = 640,
    max_failures: int = 200,
) -> str:
    """The HTML report of a scored run (SPEC §10 "Report").

    Parameters
    ----------
    data : ReportData
    top : int, optional
        Gallery: how many of the highest-scoring images. Default 12.
    normal : int, optional
        Gallery: how many normal images nearest the threshold. Default 12.
    picture_width : int, optional
        Pictures wider than this are downscaled here (Lanczos, re-encoded as PNG). Default 640.
    max_failures : int, optional
        At most this many failures are listed (and a line says how many more). Default 200.

    Returns
    -------
    str
        One self-contained HTML document (write it as UTF-8). The same arguments give the
        same string.

    Raises
    ------
    ValueError
        A score or the threshold is not finite, a picture is not a PNG, or a parameter is out
        of range.
    """
    if not math.isfinite(float(data.threshold)):
        raise ValueError(f"threshold must be finite, got {data.threshold}")
    for i, row in enumerate(data.rows):
        if not math.isfinite(float(row.score)):
            raise ValueError(f"rows[{i}] ({_shown(row.path)!r}) has a score that is not finite")
    if picture_width < 16 or max_failures < 0:
        raise ValueError(
            f"picture_width must be ≥ 16 and max_failures ≥ 0, got {picture_width} and "
            f"{max_failures}"
        )
    threshold = float(data.threshold)
    highest, nearest = select_gallery(
        data.rows, threshold=threshold, normal_label=data.normal_label, top=top, normal=normal
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.title)}</title><style>{_STYLE}</style></head>",
        f'<body><main><header><h1>{_e(data.title)}</h1><p class="sub">soartc inspection '
        f"report: {len(data.rows)} images scored, threshold {_score(threshold)}</p></header>",
        _summary(data),
        _evaluation(data.evaluation, data.normal_label),
    ]
    roc = _roc_svg(data.rows, data.normal_label) if data.rows else None
    parts.append('<div class="plots"><section id="roc"><h2>ROC curves</h2>')
    if roc is None:
        parts.append(
            '<p class="muted">No ROC curve: it needs images labelled '
            f"{_e(repr(data.normal_label))} and images with another label.</p>"
        )
    else:
        parts.append(
            '<p class="note">Each defect label against the normal images; dashed: chance.</p>' + roc
        )
    parts.append("</section>")
    parts.append('<section id="scores"><h2>Score distributions</h2>')
    if data.rows:
        parts.append(
            '<p class="note">Image scores in equal bins; the dashed line is the threshold '
            "(anomalous above it).</p>" + _histogram_svg(data.rows, threshold, data.normal_label)
        )
    else:
        parts.append('<p class="muted">No image was scored.</p>')
    parts.append("</section></div>")
    parts.append(
        _gallery(
            "gallery-top",
            "Highest scores",
            f"The {len(highest)} highest-scoring images, any label.",
            highest,
            data,
            picture_width,
        )
    )
    parts.append(
        _gallery(
            "gallery-normal",
            "Normal images nearest the threshold",
            f"The {len(nearest)} images labelled {_e(repr(data.normal_label))} whose score is "
            "closest to the threshold: the false alarms and the near misses.",
            nearest,
            data,
            picture_width,
        )
    )
    parts.append(_failures(data.failures, max_failures))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
