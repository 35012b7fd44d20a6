"""soartc_cli.output.report: the HTML report's contents, escaping, bounds, determinism, and a
real browser (headless Chromium) that renders it without a console error."""

from __future__ import annotations

import base64
import dataclasses
import io
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from soartc_cli.core.evaluation import PixelEvaluation, auroc, evaluate_images
from soartc_cli.output.report import (
    HISTOGRAM_BINS,
    ReportData,
    ReportRow,
    _nice_ticks,
    _roc_corners,
    render_report,
    select_gallery,
)

SECTIONS = ("summary", "evaluation", "roc", "scores", "gallery-top", "gallery-normal", "failures")


# -- a parsed page --------------------------------------------------------------------------


class Page(HTMLParser):
    """Every element (tag, attributes, enclosing section id), the text of each section, and the
    rows of each table (by class) as lists of cell texts."""

    VOID = frozenset({"meta", "img", "br", "hr", "input", "link", "source", "wbr"})

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.elements: list[tuple[str, dict, str | None]] = []
        self.sections: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.cell: list[str] | None = None
        self.feed(text)
        self.close()

    def _inner(self, tag):
        return next((a for t, a in reversed(self.stack) if t == tag), None)

    def section(self):
        attrs = self._inner("section")
        return None if attrs is None else attrs.get("id")

    def _start(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a, self.section()))
        if tag == "section":
            self.sections[a.get("id")] = ""
        if tag == "tr":
            table = self._inner("table") or {}
            self.tables.setdefault(table.get("class"), []).append([])
        if tag in ("td", "th"):
            self.cell = []
        return a

    def handle_starttag(self, tag, attrs):
        a = self._start(tag, attrs)
        if tag not in self.VOID:
            self.stack.append((tag, a))

    def handle_startendtag(self, tag, attrs):
        self._start(tag, attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            table = self._inner("table") or {}
            self.tables[table.get("class")][-1].append("".join(self.cell).strip())
            self.cell = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        for tag, attrs in self.stack:
            if tag == "section":
                self.sections[attrs.get("id")] += data
        if self.cell is not None:
            self.cell.append(data)

    def in_section(self, section, tag):
        return [a for t, a, s in self.elements if t == tag and s == section]


# -- data -----------------------------------------------------------------------------------


def png(width=40, height=30, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def rows_of(n_good=20, defects=(("scratch", 6), ("dent", 5)), seed=0, threshold=2.0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_good):
        s = float(np.round(rng.normal(1.5, 0.4), 2))
        rows.append(ReportRow(f"test/good/{i:03d}.png", "good", s, s > threshold))
    for label, n in defects:
        for i in range(n):
            s = float(np.round(rng.normal(2.6, 0.8), 2))
            rows.append(ReportRow(f"test/{label}/{i:03d}.png", label, s, s > threshold))
    return rows


def data_of(rows, *, threshold=2.0, pictures=None, failures=(), pixels=None, **kwargs):
    scores = np.array([r.score for r in rows])
    labels = [r.label for r in rows]
    flagged = np.array([r.anomalous for r in rows], dtype=bool)
    comps = {"soartc": scores * 0.5, "stats": -scores} if rows else None
    evaluation = (
        evaluate_images(scores, labels, flagged, components=comps, pixels=pixels) if rows else None
    )
    fields = {
        "title": "run of <tests>",
        "settings": {"components": ["soartc", "stats"], "stride": 8, "model": "m.npz"},
        "counts": {
            "found": len(rows) + len(failures),
            "processed": len(rows),
            "failed": len(failures),
            "anomalous": int(flagged.sum()),
        },
        "threshold": threshold,
        "rows": rows,
        "evaluation": evaluation,
        "failures": list(failures),
        "pictures": {r.path: png() for r in rows} if pictures is None else pictures,
    }
    fields.update(kwargs)
    return ReportData(**fields)


def _pixels():
    acc = PixelEvaluation()
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True
    acc.add(np.arange(64.0).reshape(8, 8) % 7, mask)
    acc.add(np.ones((8, 8)), np.zeros((8, 8), bool))
    return acc


# -- contents -------------------------------------------------------------------------------


def test_every_section_and_the_evaluation_numbers():
    rows = rows_of()
    data = data_of(rows, pixels=_pixels(), failures=[("test/bad.png", "not an image")])
    text = render_report(data)
    page = Page(text)
    assert list(page.sections) == list(SECTIONS)
    table = page.tables["evaluation"]
    assert table[0] == [
        "label",
        "images",
        "AUROC",
        "precision",
        "recall",
        "AUROC soartc alone",
        "AUROC stats alone",
    ]
    ev = data.evaluation
    want = [
        [
            label,
            str(g["n"]),
            *("–" if g[k] is None else "%.3f" % g[k] for k in ("auroc", "precision", "recall")),
            *("%.3f" % g["components"][c] for c in ("soartc", "stats")),
        ]
        for label, g in [*ev["labels"].items(), ("all defects", ev["all"])]
    ]
    assert table[1:] == want
    assert [r[0] for r in table[1:]] == ["dent", "scratch", "all defects"]
    pixel = page.tables["pixel"]
    assert pixel[0][:2] == ["pixel AUROC", "AUPRO@0.3"]
    assert pixel[1][:2] == ["%.3f" % ev["pixel"]["auroc"], "%.3f" % ev["pixel"]["aupro"]]
    assert "20 images labelled 'good'" in page.sections["evaluation"]
    # Counts and settings.
    assert "found" in page.sections["summary"] and "threshold" in page.sections["summary"]
    settings = dict(page.tables["settings"])
    assert settings == {"components": '["soartc", "stats"]', "model": "m.npz", "stride": "8"}
    # ROC: one curve per defect label and one over all, each legend with its AUROC.
    assert len(page.in_section("roc", "polyline")) == 3
    scores = np.array([r.score for r in rows])
    normal = scores[:20]
    for label, sl in (("dent", slice(26, 31)), ("scratch", slice(20, 26))):
        assert f"{label}  AUROC {auroc(scores[sl], normal):.3f}" in page.sections["roc"]
    assert f"all defects  AUROC {ev['all']['auroc']:.3f}" in page.sections["roc"]
    # Histogram: the threshold line and one bar per non-empty bin of each series.
    assert "threshold 2" in page.sections["scores"]
    edges = np.linspace(min(scores.min(), 2.0), max(scores.max(), 2.0), HISTOGRAM_BINS + 1)
    bars = sum(np.count_nonzero(np.histogram(s, edges)[0]) for s in (normal, scores[20:]))
    assert len(page.in_section("scores", "rect")) == 1 + bars + 2  # frame, bars, legend
    assert page.tables["failures"] == [["path", "reason"], ["test/bad.png", "not an image"]]


def test_gallery_highest_and_nearest_normal():
    rows = rows_of(n_good=30)
    page = Page(render_report(data_of(rows)))
    top = page.in_section("gallery-top", "figure")
    near = page.in_section("gallery-normal", "figure")
    assert len(top) == 12 and len(near) == 12
    highest, nearest = select_gallery(rows, threshold=2.0)
    paths = re.findall(r'<div class="path">([^<]*)</div>', render_report(data_of(rows)))
    assert paths == [r.path for r in [*highest, *nearest]]
    assert [r.score for r in highest] == sorted((r.score for r in rows), reverse=True)[:12]
    distances = sorted(abs(r.score - 2.0) for r in rows if r.label == "good")
    assert [abs(r.score - 2.0) for r in nearest] == distances[:12]
    small = Page(render_report(data_of(rows), top=3, normal=2))
    assert len(small.in_section("gallery-top", "figure")) == 3
    assert len(small.in_section("gallery-normal", "figure")) == 2
    assert len(small.in_section("gallery-top", "img")) == 3


def test_select_gallery_ties_by_path_and_validation():
    rows = [
        ReportRow("b", "good", 1.0, False),
        ReportRow("a", "good", 1.0, False),
        ReportRow("c", "good", 3.0, True),
        ReportRow("d", "x", 2.0, False),
    ]
    highest, nearest = select_gallery(rows, threshold=2.0, top=3, normal=3)
    assert [r.path for r in highest] == ["c", "d", "a"]
    assert [r.path for r in nearest] == ["a", "b", "c"]  # |1 − 2| = |3 − 2|: by path
    with pytest.raises(ValueError, match="top and normal must be ≥ 0"):
        select_gallery(rows, threshold=2.0, top=-1)


def test_pictures_inline_and_downscaled():
    rows = rows_of(n_good=3, defects=(("x", 1),))
    wide = png(1000, 500, (10, 200, 30))
    pictures = {r.path: png() for r in rows} | {rows[-1].path: wide}
    page = Page(render_report(data_of(rows, pictures=pictures)))
    images = page.in_section("gallery-top", "img")
    assert len(images) == 4
    for attrs in images:
        head, _, payload = attrs["src"].partition(",")
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
            assert im.format == "PNG" and im.size == (int(attrs["width"]), int(attrs["height"]))
            assert im.size in {(40, 30), (640, 320)}
    first = images[0]  # the highest score: the wide picture, halved by 1000 → 640
    assert (first["width"], first["height"]) == ("640", "320")
    small = [a for a in images if a["width"] == "40"]
    assert base64.b64decode(small[0]["src"].partition(",")[2]) == png()  # embedded as given


def test_no_network_reference_no_script():
    rows = rows_of()
    text = render_report(data_of(rows, pixels=_pixels(), failures=[("a.png", "bad")]))
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "url(" not in text and "@import" not in text
    page = Page(text)
    for tag, attrs, _ in page.elements:
        assert "href" not in attrs, tag
        if "src" in attrs:
            assert attrs["src"].startswith("data:image/png;base64,"), tag
        assert not any(name.startswith("on") for name in attrs), tag
    csp = [a for t, a, _ in page.elements if t == "meta" and "http-equiv" in a]
    assert csp == [
        {
            "http-equiv": "Content-Security-Policy",
            "content": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        }
    ]


def test_user_text_is_escaped():
    evil = "<script>alert(1)</script>.png"
    rows = [
        ReportRow("test/good/a.png", "good", 1.0, False),
        ReportRow(evil, 'a&b"c', 3.0, True),
        ReportRow("bad\udcff\nname.png", "good", 1.9, False),
    ]
    data = data_of(
        rows,
        failures=[(evil, "reason <b>&amp;</b>"), ("x\udc80.png", "not UTF-8")],
        settings={"<k>": "v & <w>", "list": ["<a>"]},
        title="<i>title</i>",
    )
    text = render_report(data)
    assert "<script>" not in text and "alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in text
    assert "<i>title</i>" not in text and "<b>&amp;</b>" not in text
    text.encode("utf-8")  # no lone surrogate left
    page = Page(text)
    assert not {"script", "i"} & {t for t, _, _ in page.elements}
    # The parsed text gives back the user's text (non-printables as escapes).
    assert evil in page.sections["gallery-top"]
    assert "bad\\xff\\nname.png" in page.sections["gallery-normal"]
    assert page.tables["failures"][1:] == [
        [evil, "reason <b>&amp;</b>"],
        ["x\\x80.png", "not UTF-8"],
    ]
    assert ["<k>", "v & <w>"] in page.tables["settings"]
    assert ["list", '["<a>"]'] in page.tables["settings"]
    assert 'a&b"c' in [row[0] for row in page.tables["evaluation"]]
    assert any(a.get("data-label") == 'a&b"c' for t, a, _ in page.elements if t == "tr")
    assert "a&amp;b&quot;c" in text
    title = re.search(r"<title>(.*?)</title>", text).group(1)
    assert title == "&lt;i&gt;title&lt;/i&gt;"


def test_empty_cases():
    empty = ReportData(
        title="t",
        settings={},
        counts={"found": 0, "processed": 0, "failed": 0, "anomalous": 0},
        threshold=1.0,
        rows=[],
    )
    page = Page(render_report(empty))
    assert list(page.sections) == list(SECTIONS)
    assert "No evaluation" in page.sections["evaluation"]
    assert "No ROC curve" in page.sections["roc"]
    assert "No image was scored" in page.sections["scores"]
    assert "No image." in page.sections["gallery-top"]
    assert "No image." in page.sections["gallery-normal"]
    assert "No failure." in page.sections["failures"]
    assert not page.in_section("roc", "svg") and not page.in_section("scores", "svg")

    # No defect image: no ROC, one histogram series; no pictures: placeholders.
    only_good = data_of(rows_of(n_good=5, defects=()), pictures={})
    page = Page(render_report(only_good))
    assert "No ROC curve" in page.sections["roc"]
    assert page.tables["evaluation"][1:] == [["all defects", "0", "–", "–", "–", "–", "–"]]
    assert "normal (good, n=5)" in page.sections["scores"]
    assert "defective" not in page.sections["scores"]
    assert "no picture" in page.sections["gallery-top"]
    assert not page.in_section("gallery-top", "img")

    # No normal image: no evaluation, no ROC, one series of all images; nearest gallery empty.
    unlabelled = [ReportRow(f"{i}.png", "", float(i), i > 2) for i in range(5)]
    page = Page(render_report(data_of(unlabelled, evaluation=None)))
    assert "No evaluation" in page.sections["evaluation"]
    assert "No ROC curve" in page.sections["roc"]
    assert "all images (n=5)" in page.sections["scores"]
    assert "(no label)" in page.sections["gallery-top"]
    assert "No image." in page.sections["gallery-normal"]

    # All scores equal (the histogram still has a width).
    flat = [ReportRow(f"{i}.png", "good", 1.0, False) for i in range(3)]
    assert "threshold 1" in Page(render_report(data_of(flat, threshold=1.0))).sections["scores"]


def test_failures_are_bounded():
    failures = [(f"f{i}.png", "bad") for i in range(250)]
    page = Page(render_report(data_of(rows_of(), failures=failures)))
    assert len(page.tables["failures"]) == 1 + 200
    assert "… and 50 more" in page.sections["failures"]
    assert "Failures (250)" in page.sections["failures"]
    page = Page(render_report(data_of(rows_of(), failures=failures), max_failures=0))
    assert page.tables["failures"] == [["path", "reason"]]


def test_deterministic():
    rows = rows_of()
    wide = {r.path: png(900, 300, (i % 255, 40, 90)) for i, r in enumerate(rows)}
    a = data_of(rows, pixels=_pixels(), pictures=wide, failures=[("z", "r")])
    settings = dict(reversed(list(a.settings.items())))  # the same settings, another order
    b = data_of(
        list(rows), pixels=_pixels(), pictures=dict(wide), failures=[("z", "r")], settings=settings
    )
    assert render_report(a) == render_report(a) == render_report(b)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"threshold": float("inf")}, "threshold must be finite"),
        ({"rows": [ReportRow("a.png", "good", float("nan"), False)]}, r"rows\[0\] .* not finite"),
        ({"pictures": {"test/good/000.png": b"GIF89a..."}}, "is not a PNG"),
    ],
)
def test_validation(change, match):
    data = dataclasses.replace(data_of(rows_of(n_good=3, defects=())), **change)
    with pytest.raises(ValueError, match=match):
        render_report(data)


def test_roc_corners():
    pos, neg = np.array([3.0, 2.0, 2.0]), np.array([2.0, 1.0, 0.0, 0.0])
    corners = _roc_corners(pos, neg)
    # Thresholds 3, 2, 1, 0: (0, ⅓) (¼, 1) (½, 1) (1, 1); (½, 1) lies on the top edge: dropped.
    assert corners == [(0.0, 0.0), (0.0, 1 / 3), (0.25, 1.0), (1.0, 1.0)]
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = np.round(rng.normal(1, 1, rng.integers(1, 30)), 1)
        n = np.round(rng.normal(0, 1, rng.integers(1, 30)), 1)
        xs, ys = np.array(_roc_corners(p, n)).T
        assert (np.diff(xs) >= 0).all() and (np.diff(ys) >= 0).all()
        area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2))
        assert area == pytest.approx(auroc(p, n), abs=1e-12)  # the corners keep the area


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 1), (0, 7), (-3.2, 41.7), (0.0012, 0.0013), (1e6, 1e6 + 3), (-1, -0.5)]
)
def test_nice_ticks(lo, hi):
    ticks = _nice_ticks(lo, hi, 7)
    assert 2 <= len(ticks) <= 7
    assert all(lo - 1e-9 * abs(hi - lo) <= t <= hi + 1e-9 * abs(hi - lo) for t in ticks)
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0)


# -- a real browser -------------------------------------------------------------------------

_CONSOLE = re.compile(r":CONSOLE[:(\]]|Uncaught")
_SIZE = (1200, 2000)


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_screenshot(
    executable: str, page: pathlib.Path, tmp: pathlib.Path, *, size=_SIZE
) -> tuple[pathlib.Path, list[str]]:
    """Render a local page headless: (its screenshot, the console lines it logged).

    Console messages, uncaught exceptions and Content-Security-Policy violations (any fetch
    the page tries) are printed by ``--enable-logging=stderr`` as ``…:INFO:CONSOLE:…`` lines.
    The browser gets a new profile, no background networking, and a host resolver that
    resolves no name, so it never reaches the network.
    """
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
    shot = tmp / f"{page.stem}.png"
    command = [
        executable,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=180)
    tail = "\n".join(done.stderr.splitlines()[-20:])
    assert done.returncode == 0, f"chromium exited {done.returncode}:\n{tail}"
    assert shot.is_file(), f"chromium wrote no screenshot:\n{tail}"
    return shot, [line for line in done.stderr.splitlines() if _CONSOLE.search(line)]


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found:
        return found
    if os.environ.get("SOARTC_SKIP_BROWSER"):
        pytest.skip("SOARTC_SKIP_BROWSER is set: the browser test is skipped")
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(
            "chromium is missing though root with apt-get: `make test` installs it "
            "(apt-get install -y chromium), or set SOARTC_SKIP_BROWSER=1"
        )
    pytest.skip("chromium not found (needs root to install): apt-get install -y chromium")


def test_report_renders_in_a_browser(browser, tmp_path):
    """One test, so that a machine without Chromium prints one skip line."""
    # First the detector itself: a page that throws, and one whose fetch the CSP blocks.
    throws = tmp_path / "throws.html"
    throws.write_text("<!DOCTYPE html><p>x<script>throw new Error('boom-17')</script>")
    _, errors = browser_screenshot(browser, throws, tmp_path, size=(200, 100))
    assert any("Uncaught" in line and "boom-17" in line for line in errors), errors
    blocked = tmp_path / "blocked.html"
    text = render_report(data_of(rows_of(n_good=3, defects=())))
    blocked.write_text(text.replace("</main>", '<img src="missing.png"></main>'), "utf-8")
    _, errors = browser_screenshot(browser, blocked, tmp_path, size=(200, 100))
    assert any("Content Security Policy" in line for line in errors), errors

    # Then the demo report: no console line, the window's size, not blank.
    from tests.report_demo import build

    page = tmp_path / "report.html"
    page.write_text(render_report(build()), encoding="utf-8")
    shot, errors = browser_screenshot(browser, page, tmp_path)
    assert errors == []
    with Image.open(shot) as image:
        assert image.size == _SIZE
        rgb = np.asarray(image.convert("RGB"))
    packed = (
        (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    )
    colours = int(np.count_nonzero(np.bincount(packed.ravel(), minlength=1 << 24)))
    assert colours > 2000, colours  # text, plots and the pictures' photos
    white = np.all(rgb >= 250, axis=-1).mean()
    assert white < 0.7, white
    # Not all one background either: the page's grey and the white cards.
    background = np.all(rgb == rgb[5, 5], axis=-1).mean()
    assert background < 0.8, background
