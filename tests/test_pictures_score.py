"""Score maps of `soartc score --maps` (SPEC §10): content checked pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from soartc_cli.output import pictures
from soartc_cli.output.pictures import NAN_RGB, OUTLINE_RGB, SCORE_ALPHA, VERDICT_RGB, VIRIDIS

GRID = (4, 4)
GREY = np.full((1, 64, 64), 0.5)
TOP, BOTTOM = tuple(VIRIDIS[255]), tuple(VIRIDIS[0])


def render(md, *, threshold=2.0, score=None, pixels=GREY, title="test/scratch/a.png"):
    md = np.asarray(md, dtype=float)
    score = np.nanmax(md) if score is None else score
    image = pictures.render_score_map(
        pixels, md, grid=GRID, threshold=threshold, score=score, title=title
    )
    return np.asarray(image), pictures.score_map_layout(image_shape=pixels.shape, grid=GRID)


def centre(canvas, box):
    left, top, right, bottom = box
    return tuple(int(v) for v in canvas[(top + bottom) // 2, (left + right) // 2])


def blend(pixel, colour):
    """What the overlay shows: round((1 − α) · pixel + α · colour) per channel."""
    return tuple(
        int(p * (1 - SCORE_ALPHA) + c * SCORE_ALPHA + 0.5)
        for p, c in zip(pixel, colour, strict=True)
    )


def md_values():
    md = np.linspace(0.0, 3.0, 16)
    md[5] = 10.0  # above 2 x threshold (4): drawn at the top colour, the highest patch
    return md


def test_size_comes_from_the_layout_and_not_from_the_values():
    canvas, lay = render(md_values())
    assert canvas.shape == (lay.height, lay.width, 3)
    other, _ = render(np.zeros(16), threshold=50.0, score=0.0, title="x" * 300)
    assert other.shape == canvas.shape
    assert lay.cell == pictures.IMAGE_SIDE // 4
    assert lay.cells[2] - lay.cells[0] == 4 * lay.cell


def test_above_twice_the_threshold_is_the_top_colour_in_both_panels():
    canvas, lay = render(md_values())
    assert centre(canvas, lay.cell_box(5)) == TOP
    grey = 128  # 0.5 shown as round(0.5 · 255)
    assert centre(canvas, lay.image_cell_box(5)) == blend((grey,) * 3, TOP)


def test_md_zero_is_the_bottom_colour_and_nan_is_grey():
    md = md_values()
    md[9] = np.nan
    canvas, lay = render(md)
    assert centre(canvas, lay.cell_box(0)) == BOTTOM
    assert centre(canvas, lay.image_cell_box(0)) == blend((128,) * 3, BOTTOM)
    assert centre(canvas, lay.cell_box(9)) == NAN_RGB
    assert centre(canvas, lay.image_cell_box(9)) == blend((128,) * 3, NAN_RGB)


def test_every_cell_is_on_the_fixed_scale_0_to_twice_the_threshold():
    md = md_values()
    canvas, lay = render(md, threshold=2.0)
    expected = pictures.viridis(md / 4.0)
    for patch in range(16):
        assert centre(canvas, lay.cell_box(patch)) == tuple(expected[patch])
    # The threshold itself is the middle of the scale.
    canvas, lay = render(np.full(16, 2.0), threshold=2.0)
    assert centre(canvas, lay.cell_box(3)) == tuple(VIRIDIS[128])


def test_two_images_with_different_md_ranges_share_the_scale():
    # Same MD 3.0 at patch 7 in both; the other patches span 0-3.5 in one and 2.9-40 in the
    # other: a min-max scale would colour patch 7 differently, the fixed one does not.
    low = np.linspace(0.0, 3.5, 16)
    high = np.linspace(2.9, 40.0, 16)
    low[7] = high[7] = 3.0
    a, lay = render(low, threshold=2.0)
    b, _ = render(high, threshold=2.0)
    assert centre(a, lay.cell_box(7)) == centre(b, lay.cell_box(7)) == tuple(pictures.viridis(0.75))
    assert centre(a, lay.image_cell_box(7)) == centre(b, lay.image_cell_box(7))
    # A different threshold is a different scale.
    c, _ = render(low, threshold=3.0)
    assert centre(c, lay.cell_box(7)) == tuple(pictures.viridis(0.5)) != centre(a, lay.cell_box(7))


def test_the_highest_patch_is_outlined_first_on_ties():
    md = np.zeros(16)
    md[[6, 11]] = 3.0
    canvas, lay = render(md)
    for box in (lay.cell_box(6), lay.image_cell_box(6)):
        left, top, right, bottom = box
        assert tuple(canvas[top, (left + right) // 2]) == OUTLINE_RGB
        assert tuple(canvas[bottom - 1, (left + right) // 2]) == OUTLINE_RGB
        assert tuple(canvas[(top + bottom) // 2, left]) == OUTLINE_RGB
        assert tuple(canvas[(top + bottom) // 2, right - 1]) == OUTLINE_RGB
    left, top, right, _ = lay.cell_box(11)
    assert tuple(canvas[top, (left + right) // 2]) != OUTLINE_RGB
    assert (
        not (canvas == np.array(OUTLINE_RGB, dtype=np.uint8))
        .all(axis=-1)[lay.cells[1] : lay.cells[3], lay.cells[0] : lay.cells[2]][lay.cell * 2 :, :]
        .any()
    )  # nothing outlined below row 1 of the grid


def test_verdict_badge_and_title_line():
    md = md_values()
    bad, lay = render(md, threshold=2.0, score=10.0)
    good, _ = render(md, threshold=2.0, score=1.5)
    equal, _ = render(md, threshold=2.0, score=2.0)  # score > threshold is anomalous; = is good
    left, top, right, bottom = lay.verdict
    assert tuple(bad[top + 1, left + 1]) == VERDICT_RGB["anomalous"]
    assert tuple(good[top + 1, left + 1]) == VERDICT_RGB["good"]
    assert tuple(equal[top + 1, left + 1]) == VERDICT_RGB["good"]
    assert not np.array_equal(bad[top:bottom, left:right], good[top:bottom, left:right])
    summary = np.s_[lay.summary[1] : lay.summary[3], lay.summary[0] : lay.summary[2]]
    assert not np.array_equal(bad[summary], good[summary])  # "10 > threshold 2" vs "1.5 <= ..."
    # The panels are identical: the verdict changes the text only.
    panels = np.s_[lay.image[1] : lay.image[3], lay.image[0] : lay.cells[2]]
    assert np.array_equal(bad[panels], good[panels])
    # The title is written in dark ink; no title, no ink.
    title = np.s_[lay.title[1] : lay.title[3], lay.title[0] : lay.title[2]]
    assert (bad[title] < 100).any()
    untitled, _ = render(md, title="")
    assert (untitled[title] == 255).all()


def test_colour_bar_runs_from_bottom_to_top_with_a_threshold_tick_and_numbers():
    canvas, lay = render(md_values())
    left, top, right, bottom = lay.bar
    y = (top + bottom) // 2
    assert tuple(canvas[y, left]) == BOTTOM
    assert tuple(canvas[y, right - 1]) == TOP
    middle = (left + right) // 2
    assert tuple(canvas[top - 2, middle]) == pictures._TITLE_RGB  # the tick sticks out of the bar
    nl, nt, nr, nb = lay.numbers
    ink = (canvas[nt:nb, nl:nr] < 200).any(axis=(0, 2))
    third = (nr - nl) // 3
    assert ink[:third].any() and ink[third : 2 * third].any() and ink[2 * third :].any()


def test_rgb_image_and_non_square_grid():
    rng = np.random.default_rng(0)
    pixels = rng.random((3, 32, 48))
    md = np.arange(6, dtype=float)
    image = pictures.render_score_map(pixels, md, grid=(2, 3), threshold=1.0, score=5.0, title="a")
    lay = pictures.score_map_layout(image_shape=pixels.shape, grid=(2, 3))
    canvas = np.asarray(image)
    assert canvas.shape == (lay.height, lay.width, 3)
    assert centre(canvas, lay.cell_box(5)) == TOP
    assert centre(canvas, lay.cell_box(0)) == BOTTOM
    # Patch 4 (row 1, column 1) in the overlay covers the shown image's middle third.
    left, top, right, bottom = lay.image_cell_box(4)
    assert (right - left, bottom - top) == (
        (lay.image[2] - lay.image[0]) // 3,
        (lay.image[3] - lay.image[1]) // 2,
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"md": np.zeros(15)}, r"md must be \(rows \* cols,\) = \(16,\)"),
        ({"threshold": 0.0}, "threshold must be a positive finite number"),
        ({"threshold": float("nan")}, "threshold must be a positive finite number"),
        ({"pixels": np.zeros((2, 8, 8))}, r"pixels must be \(C, H, W\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"pixels": GREY, "md": np.zeros(16), "threshold": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pictures.render_score_map(
            args["pixels"], args["md"], grid=GRID, threshold=args["threshold"], score=0.0
        )
    with pytest.raises(IndexError):
        pictures.score_map_layout(image_shape=(1, 8, 8), grid=GRID).cell_box(16)


def test_written_as_a_png_with_write_map(tmp_path):
    image = pictures.render_score_map(GREY, md_values(), grid=GRID, threshold=2.0, score=10.0)
    path = pictures.write_map(image, tmp_path / "maps", "test/scratch/a.jpg")
    assert path.name == "test__scratch__a.png"
    with Image.open(path) as saved:
        assert np.array_equal(np.asarray(saved), np.asarray(image))
