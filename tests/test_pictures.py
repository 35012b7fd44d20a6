"""Tests for soartc_cli.output.pictures: colours, layout, labels, file names and atomic writing."""

import os
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from soartc_cli.output import pictures
from soartc_cli.output.pictures import (
    COLUMN_GAP,
    MAX_SIDE,
    NAN_RGB,
    VIRIDIS,
    layout,
    map_filename,
    render_map,
    viridis,
    write_map,
)

T6 = ["bend1", "bend2", "bend3", "bend4", "line1", "line2"]
M3 = ["beta", "delta", "distance"]
T11 = [*T6, "rot90", "rot180", "rot270", "flip_lr", "flip_ud"]
M6 = ["beta", "delta", "distance", "noise", "vol", "shear"]
LOW, MID, HIGH = tuple(VIRIDIS[0]), tuple(VIRIDIS[128]), tuple(VIRIDIS[255])


def grey(size=224, value=0.5, channels=1):
    return np.full((channels, size, size), value, dtype=np.float32)


def render(values, *, grid, pixels=None, channels=("luma",), transforms=T6, metrics=M3, title=""):
    pixels = grey() if pixels is None else pixels
    return render_map(
        pixels,
        values,
        grid=grid,
        channels=channels,
        transforms=transforms,
        metrics=metrics,
        title=title,
    )


def lay_for(grid, *, image_shape=(1, 224, 224), channels=("luma",), transforms=T6, metrics=M3):
    return layout(
        image_shape=image_shape,
        grid=grid,
        channels=channels,
        transforms=transforms,
        metrics=metrics,
    )


def region(image, box):
    left, top, right, bottom = box
    return np.asarray(image)[top:bottom, left:right]


def cell_colours(image, lay, k, t, m):
    """(N, 3): the colour of every cell of one map, after checking each cell is one flat colour."""
    arr = np.asarray(image)
    rows, cols = lay.grid
    out = []
    for n in range(rows * cols):
        left, top, right, bottom = lay.cell_box(k, t, m, n)
        cell = arr[top:bottom, left:right].reshape(-1, 3)
        assert (cell == cell[0]).all(), f"cell {n} of map ({k}, {t}, {m}) is not one colour"
        out.append(tuple(cell[0]))
    return out


def has_dark_pixels(pixels, threshold=110):
    return bool((pixels.max(axis=-1) < threshold).any())


# --- viridis ---------------------------------------------------------------------------------


def test_viridis_table_matches_published_endpoints_and_midpoint():
    assert VIRIDIS.shape == (256, 3) and VIRIDIS.dtype == np.uint8
    assert tuple(VIRIDIS[0]) == (0x44, 0x01, 0x54)
    assert tuple(VIRIDIS[128]) == (0x21, 0x91, 0x8C)
    assert tuple(VIRIDIS[255]) == (0xFD, 0xE7, 0x25)
    # Viridis brightens monotonically: the green channel never decreases.
    assert (np.diff(VIRIDIS[:, 1].astype(int)) >= 0).all()
    assert not VIRIDIS.flags.writeable


def test_viridis_function_clips_and_greys_non_finite():
    out = viridis([0.0, 1.0, 0.5, -3.0, 7.0, np.nan, np.inf])
    assert out.shape == (7, 3) and out.dtype == np.uint8
    assert [tuple(c) for c in out] == [LOW, HIGH, MID, LOW, HIGH, NAN_RGB, NAN_RGB]


# --- layout ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("grid", "cell"), [((14, 14), 12), ((28, 28), 6), ((1, 1), 168)])
def test_cell_size_is_an_integer_fitting_the_target_map_side(grid, cell):
    lay = lay_for(grid)
    assert lay.cell == cell
    panel = lay.panels[0][0][0]
    assert panel.cells[2] - panel.cells[0] == grid[1] * cell
    assert panel.cells[3] - panel.cells[1] == grid[0] * cell


def test_rendered_size_is_the_layout_size():
    values = np.random.default_rng(0).random((1, 6, 3, 196))
    image = render(values, grid=(14, 14))
    lay = lay_for((14, 14))
    assert image.mode == "RGB"
    assert image.size == (lay.width, lay.height)


def test_each_transform_adds_one_row_and_each_metric_one_column():
    base = lay_for((14, 14), transforms=T6[:2], metrics=["a", "b"])
    taller = lay_for((14, 14), transforms=T6[:3], metrics=["a", "b"])
    wider = lay_for((14, 14), transforms=T6[:2], metrics=["a", "b", "c"])
    pitch = base.panels[0][1][0].label[1] - base.panels[0][0][0].label[1]
    map_w = 14 * base.cell
    assert taller.height - base.height == pitch
    assert taller.width == base.width
    # Short metric names: the map, not the label, sets the column width.
    assert wider.width - base.width == map_w + COLUMN_GAP
    assert wider.height == base.height


def test_three_channels_are_three_blocks_side_by_side():
    one = lay_for((14, 14))
    three = lay_for((14, 14), image_shape=(3, 224, 224), channels=("R", "G", "B"))
    assert len(one.channel_headings) == 0 and len(three.channel_headings) == 3
    block = three.panels[1][0][0].cells[0] - three.panels[0][0][0].cells[0]
    assert three.panels[2][0][0].cells[0] - three.panels[1][0][0].cells[0] == block
    assert three.width - one.width == 2 * block
    # Same transform, same row in every block.
    assert {three.panels[k][4][2].cells[1] for k in range(3)} == {three.panels[0][4][2].cells[1]}


def boxes_of(lay):
    yield "image", lay.image
    for k, channel in enumerate(lay.panels):
        for t, row in enumerate(channel):
            for m, panel in enumerate(row):
                for part in ("label", "cells", "bar", "numbers"):
                    yield (k, t, m, part), getattr(panel, part)


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize(
    ("grid", "channels", "transforms", "metrics"),
    [
        ((14, 14), ("luma",), T6, M3),
        ((28, 28), ("R", "G", "B"), T6, M3),
        ((1, 1), ("luma",), ["attention"], ["received", "entropy"]),
        ((14, 14), ("luma",), T11, M6),
    ],
)
def test_boxes_lie_inside_the_picture_and_do_not_overlap(grid, channels, transforms, metrics):
    lay = lay_for(grid, channels=channels, transforms=transforms, metrics=metrics)
    named = list(boxes_of(lay))
    for name, box in named:
        # One pixel of room all round for the frames.
        assert 1 <= box[0] < box[2] <= lay.width - 1, name
        assert 1 <= box[1] < box[3] <= lay.height - 1, name
    for i, (name_a, a) in enumerate(named):
        for name_b, b in named[i + 1 :]:
            assert not overlaps(a, b), (name_a, name_b)
    panel = lay.panels[0][0][0]
    assert panel.label[3] <= panel.cells[1] < panel.cells[3] <= panel.bar[1]
    assert panel.bar[3] <= panel.numbers[1]


def test_eleven_transforms_by_six_metrics_stay_a_sane_size():
    luma = lay_for((14, 14), transforms=T11, metrics=M6)
    assert max(luma.width, luma.height) <= MAX_SIDE
    assert luma.cell < lay_for((14, 14)).cell
    rgb = lay_for((14, 14), image_shape=(3, 224, 224), channels="RGB", transforms=T11, metrics=M6)
    assert rgb.height <= MAX_SIDE
    # The labels set the width here: the cells shrink only as far as that helps.
    assert rgb.cell > 1
    smaller = pictures._layout((3, 224, 224), (14, 14), ("R", "G", "B"), tuple(T11), tuple(M6))
    assert smaller == rgb


def test_cell_box_rejects_a_patch_outside_the_grid():
    lay = lay_for((2, 3), transforms=["a"], metrics=["b"])
    assert lay.cell_box(0, 0, 0, 5)[2] == lay.panels[0][0][0].cells[2]
    with pytest.raises(IndexError, match=r"patch must be in \[0, 6\)"):
        lay.cell_box(0, 0, 0, 6)


def test_layout_validates_its_arguments():
    with pytest.raises(ValueError, match="image_shape must be"):
        lay_for((14, 14), image_shape=(2, 224, 224))
    with pytest.raises(ValueError, match="grid must be"):
        lay_for((0, 14))
    with pytest.raises(ValueError, match="metrics must name at least one"):
        lay_for((14, 14), metrics=[])


def test_render_map_validates_shapes():
    with pytest.raises(ValueError, match=r"values must be .* = \(1, 6, 3, 196\)"):
        render(np.zeros((1, 6, 3, 195)), grid=(14, 14))
    with pytest.raises(ValueError, match="pixels must be"):
        render(np.zeros((1, 6, 3, 196)), grid=(14, 14), pixels=np.zeros((224, 224)))


# --- colours in the cells --------------------------------------------------------------------


def test_values_increasing_left_to_right_run_from_low_to_high():
    rows, cols = 3, 5
    ramp = np.tile(np.arange(cols, dtype=float), rows)  # patch n has value n % cols
    values = np.stack([ramp, -ramp])[None, :, None, :]  # transform 1 is the reverse
    image = render(values, grid=(rows, cols), transforms=["up", "down"], metrics=["m"])
    lay = lay_for((rows, cols), transforms=["up", "down"], metrics=["m"])
    expected = [tuple(viridis(c / (cols - 1))) for c in range(cols)] * rows
    assert cell_colours(image, lay, 0, 0, 0) == expected
    assert (
        cell_colours(image, lay, 0, 1, 0)
        == [tuple(viridis(1 - c / (cols - 1))) for c in range(cols)] * rows
    )
    assert expected[0] == LOW and expected[cols - 1] == HIGH and expected[2] == MID


def test_a_single_hot_patch_lights_only_its_own_cell():
    values = np.zeros((1, 6, 3, 196))
    hot = 3 * 14 + 10  # row 3, column 10
    values[0, 4, 2, hot] = 5.0
    image = render(values, grid=(14, 14))
    lay = lay_for((14, 14))
    colours = cell_colours(image, lay, 0, 4, 2)
    assert colours[hot] == HIGH
    assert colours.count(LOW) == 195
    # Every other map is constant zero: mid-scale everywhere.
    assert set(cell_colours(image, lay, 0, 0, 0)) == {MID}


def test_each_channel_block_shows_its_own_channel():
    values = np.zeros((3, 1, 1, 4))
    for k in range(3):
        values[k, 0, 0, k] = 1.0  # channel k is hot at patch k
    image = render(
        values,
        grid=(2, 2),
        pixels=grey(channels=3),
        channels=("R", "G", "B"),
        transforms=["t"],
        metrics=["m"],
    )
    lay = lay_for(
        (2, 2), image_shape=(3, 224, 224), channels="RGB", transforms=["t"], metrics=["m"]
    )
    for k in range(3):
        colours = cell_colours(image, lay, k, 0, 0)
        assert colours[k] == HIGH and colours.count(LOW) == 3


def test_constant_map_is_mid_viridis_with_its_value_written():
    values = np.full((1, 1, 2, 4), 2.5)
    values[0, 0, 1] = [0.0, 1.0, 2.0, 3.0]
    image = render(values, grid=(2, 2), transforms=["t"], metrics=["flat", "ramp"])
    lay = lay_for((2, 2), transforms=["t"], metrics=["flat", "ramp"])
    assert set(cell_colours(image, lay, 0, 0, 0)) == {MID}
    flat_bar = region(image, lay.panels[0][0][0].bar).reshape(-1, 3)
    assert set(map(tuple, flat_bar)) == {MID}
    ramp_bar = region(image, lay.panels[0][0][1].bar)
    assert tuple(ramp_bar[0, 0]) == LOW and tuple(ramp_bar[0, -1]) == HIGH
    assert has_dark_pixels(region(image, lay.panels[0][0][0].numbers))


def test_non_finite_values_are_grey_and_left_out_of_the_scale():
    values = np.array([[[[np.nan, 0.0, 1.0, np.inf], [np.nan] * 4, [-np.inf, 3.0, 3.0, np.nan]]]])
    metrics = ["mixed", "none", "flat"]
    with np.errstate(all="raise"):
        image = render(values, grid=(2, 2), transforms=["t"], metrics=metrics)
    lay = lay_for((2, 2), transforms=["t"], metrics=metrics)
    assert cell_colours(image, lay, 0, 0, 0) == [NAN_RGB, LOW, HIGH, NAN_RGB]
    assert cell_colours(image, lay, 0, 0, 1) == [NAN_RGB] * 4
    assert cell_colours(image, lay, 0, 0, 2) == [NAN_RGB, MID, MID, NAN_RGB]
    # The caption explains the grey only when there is some.
    note = (
        lay.caption[0],
        lay.caption[3] - (lay.caption[3] - lay.caption[1]) // 4,
        *lay.caption[2:],
    )
    clean = render(np.zeros((1, 1, 3, 4)), grid=(2, 2), transforms=["t"], metrics=metrics)
    assert has_dark_pixels(region(image, note)) and not has_dark_pixels(region(clean, note))


# --- the image panel -------------------------------------------------------------------------


def test_image_is_grey_clipped_and_carries_a_faint_patch_grid():
    pixels = grey(value=0.0)
    pixels[0, :112] = 2.0  # top half beyond 1: white; bottom half black
    pixels[0, 200, 200] = np.nan
    image = render(np.zeros((1, 6, 3, 196)), grid=(14, 14), pixels=pixels)
    lay = lay_for((14, 14))
    shown = region(image, lay.image)
    assert shown.shape == (224, 224, 3)  # a 224 image is shown at its own size
    assert tuple(shown[8, 8]) == (255, 255, 255)
    assert tuple(shown[120, 8]) == (0, 0, 0)
    assert tuple(shown[200, 200]) == (0, 0, 0)
    # Patch boundaries (every 16 px) are blended towards the contrasting colour, not opaque.
    assert 0 < shown[120, 16, 0] < 128
    assert 128 < shown[8, 16, 0] < 255
    assert tuple(shown[120, 15]) == (0, 0, 0) and tuple(shown[120, 17]) == (0, 0, 0)


def test_rgb_image_keeps_its_colours_and_small_images_are_zoomed():
    pixels = np.zeros((3, 32, 32), dtype=np.float32)
    pixels[0] = 1.0
    image = render(
        np.zeros((1, 1, 1, 16)), grid=(4, 4), pixels=pixels, transforms=["t"], metrics=["m"]
    )
    lay = lay_for((4, 4), image_shape=(3, 32, 32), transforms=["t"], metrics=["m"])
    shown = region(image, lay.image)
    assert shown.shape == (256, 256, 3)  # 32 px zoomed 8 times
    assert tuple(shown[5, 5]) == (255, 0, 0)


def test_large_native_images_are_shrunk_to_the_panel():
    pixels = np.random.default_rng(1).random((1, 1024, 768), dtype=np.float32)
    image = render(
        np.random.default_rng(2).random((1, 1, 2, 64 * 48)),
        grid=(64, 48),
        pixels=pixels,
        transforms=["attention"],
        metrics=["received", "entropy"],
    )
    lay = lay_for(
        (64, 48),
        image_shape=(1, 1024, 768),
        transforms=["attention"],
        metrics=["received", "entropy"],
    )
    assert (lay.image[2] - lay.image[0], lay.image[3] - lay.image[1]) == (192, 256)
    assert image.size == (lay.width, lay.height) and max(image.size) < 1000


# --- text ------------------------------------------------------------------------------------


def test_labels_headings_and_numbers_are_drawn():
    values = np.random.default_rng(0).random((1, 6, 3, 196))
    image = render(values, grid=(14, 14))
    lay = lay_for((14, 14))
    panel = lay.panels[0][2][1]
    for box in (panel.label, panel.numbers, lay.metric_headings[0][1], lay.transform_headings[2]):
        assert has_dark_pixels(region(image, box)), box
    assert has_dark_pixels(region(image, lay.caption))


def test_different_label_texts_draw_different_pixels():
    values = np.zeros((1, 1, 1, 4))
    one = render(values, grid=(2, 2), transforms=["bend1"], metrics=["beta"])
    other = render(values, grid=(2, 2), transforms=["bend1"], metrics=["shear"])
    lay = lay_for((2, 2), transforms=["bend1"], metrics=["beta"])
    assert lay == lay_for((2, 2), transforms=["bend1"], metrics=["shear"])
    box = lay.panels[0][0][0].label
    assert not np.array_equal(region(one, box), region(other, box))


def test_numbers_follow_the_values():
    lay = lay_for((2, 2), transforms=["t"], metrics=["m"])
    box = lay.panels[0][0][0].numbers
    a = render(np.array([[[[0.0, 1.0, 2.0, 3.0]]]]), grid=(2, 2), transforms=["t"], metrics=["m"])
    b = render(np.array([[[[0.0, 1.0, 2.0, 9.5]]]]), grid=(2, 2), transforms=["t"], metrics=["m"])
    assert not np.array_equal(region(a, box), region(b, box))
    # The minimum, written on the left, is the same in both.
    left_half = (box[0], box[1], (box[0] + box[2]) // 2, box[3])
    assert np.array_equal(region(a, left_half), region(b, left_half))


def test_title_is_written_and_long_titles_are_shortened_to_fit():
    values = np.zeros((1, 1, 1, 4))
    kwargs = {"grid": (2, 2), "transforms": ["t"], "metrics": ["m"]}
    lay = lay_for((2, 2), transforms=["t"], metrics=["m"])
    untitled = render(values, **kwargs)
    titled = render(values, title="cats/a.jpg", **kwargs)
    assert not has_dark_pixels(region(untitled, lay.title))
    assert has_dark_pixels(region(titled, lay.title))
    long = render(values, title="very/long/path/" * 40 + "end.jpg", **kwargs)
    title_band = np.asarray(long)[lay.title[1] : lay.title[3]]
    dark_columns = np.flatnonzero(title_band.max(axis=-1).min(axis=0) < 110)
    assert dark_columns.max() < lay.title[2]
    assert dark_columns.max() > lay.title[2] - 60  # it uses the width it has


@pytest.mark.parametrize(
    ("grid", "channels", "transforms", "metrics", "pixel_channels"),
    [
        ((14, 14), ("luma",), T6, M3, 1),
        ((28, 28), ("luma",), T6, M3, 1),
        ((1, 1), ("luma",), T6, M3, 1),
        ((14, 14), ("luma",), T11, M6, 1),
        ((14, 14), ("R", "G", "B"), T11, M6, 3),
        ((14, 14), ("luma",), ["attention"], ["received", "entropy"], 3),
    ],
)
def test_every_supported_shape_renders(grid, channels, transforms, metrics, pixel_channels):
    rows, cols = grid
    values = np.random.default_rng(3).normal(
        size=(len(channels), len(transforms), len(metrics), rows * cols)
    )
    image = render(
        values,
        grid=grid,
        pixels=grey(channels=pixel_channels),
        channels=channels,
        transforms=transforms,
        metrics=metrics,
        title="x/y.png",
    )
    lay = lay_for(
        grid,
        image_shape=(pixel_channels, 224, 224),
        channels=channels,
        transforms=transforms,
        metrics=metrics,
    )
    assert image.size == (lay.width, lay.height)
    last = lay.panels[-1][-1][-1]
    assert has_dark_pixels(region(image, last.label))
    assert set(
        cell_colours(image, lay, len(channels) - 1, len(transforms) - 1, len(metrics) - 1)
    ) <= set(map(tuple, VIRIDIS))


def test_rendering_does_not_modify_its_inputs():
    pixels = np.random.default_rng(0).random((1, 224, 224), dtype=np.float32) * 2 - 0.5
    values = np.random.default_rng(1).random((1, 6, 3, 196))
    values[0, 0, 0, 0] = np.nan
    before = pixels.copy(), values.copy()
    render(values, grid=(14, 14), pixels=pixels)
    assert np.array_equal(pixels, before[0])
    assert np.array_equal(values, before[1], equal_nan=True)


# --- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("cats/a.jpg", "cats__a.png"),
        ("a.jpg", "a.png"),
        ("a", "a.png"),
        ("dogs/puppies/b.JPEG", "dogs__puppies__b.png"),
        ("a.b.c.tif", "a.b.c.png"),
        ("./a.jpg", "a.png"),
        ("/abs/x/a.jpg", "abs__x__a.png"),
        ("x//y.png", "x__y.png"),
        ("../pics/a.jpg", "____pics__a.png"),
        (".hidden", "_hidden.png"),
        ("..", "__.png"),
        ("a\x00b\n.jpg", "a_b_.png"),
        ("caf\\xe9.jpg", "caf_xe9.png"),
        ("été/写真.webp", "été__写真.png"),
    ],
)
def test_map_filename(path, name):
    assert map_filename(path) == name


@pytest.mark.parametrize("path", ["", "/", ".", "./"])
def test_map_filename_needs_a_name(path):
    with pytest.raises(ValueError, match="path must name a file"):
        map_filename(path)


def test_map_filename_keeps_long_names_under_the_file_system_limit_and_distinct():
    a = map_filename("deep/" * 80 + "a.jpg")
    b = map_filename("deep/" * 80 + "b.jpg")
    wide = map_filename("写" * 200 + ".jpg")
    for name in (a, b, wide):
        assert len(name.encode("utf-8")) <= 255 and name.endswith(".png")
    assert a != b
    assert a.startswith("deep__deep__")


@given(st.text(max_size=400))
def test_map_filename_is_always_one_safe_component(path):
    try:
        name = map_filename(path)
    except ValueError:
        assert set(path.replace("\x00", "")) <= {"/", "."}  # no name to keep
        assert path.strip("/") in ("", ".") or all(p in ("", ".") for p in path.split("/"))
        return
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name.endswith(".png") and len(name.encode("utf-8")) <= 255


# --- writing ---------------------------------------------------------------------------------


def small_image():
    return render(np.arange(4.0).reshape(1, 1, 1, 4), grid=(2, 2), transforms=["t"], metrics=["m"])


def test_write_map_creates_the_directory_and_a_readable_png(tmp_path):
    image = small_image()
    out = write_map(image, tmp_path / "maps" / "nested", "cats/a.jpg")
    assert out == tmp_path / "maps" / "nested" / "cats__a.png"
    assert os.listdir(out.parent) == ["cats__a.png"]
    with Image.open(out) as back:
        assert back.format == "PNG" and back.mode == "RGB"
        assert np.array_equal(np.asarray(back), np.asarray(image))


def test_write_map_replaces_an_older_picture(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old")
    out = write_map(small_image(), str(tmp_path), "a.jpg")
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_write_map_failing_mid_write_leaves_nothing_behind(tmp_path, monkeypatch, error):
    (tmp_path / "keep.png").write_bytes(b"previous picture")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\npartial")
        raise error

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(type(error)):
        write_map(small_image(), tmp_path, "keep.jpg")
    with pytest.raises(type(error)):
        write_map(small_image(), tmp_path, "new.jpg")
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]
    assert (tmp_path / "keep.png").read_bytes() == b"previous picture"


def test_write_map_never_leaves_its_directory(tmp_path):
    target = tmp_path / "maps"
    for path in ["../../escape.jpg", "/etc/passwd", "..", "a/../../b.jpg"]:
        out = write_map(small_image(), target, path)
        assert out.parent == target
        assert pathlib.Path(os.path.realpath(out)).parent == pathlib.Path(os.path.realpath(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps"]


def test_name_collisions_are_listed_in_input_order():
    from soartc_cli.output.pictures import name_collisions

    paths = ["a.jpg", "b/c.png", "a.png", "b__c.tif", "d.png"]
    assert name_collisions(paths) == [
        ("a.jpg", "a.png", "a.png"),
        ("b/c.png", "b__c.tif", "b__c.png"),
    ]
    assert name_collisions(["x.png", "y.png"]) == []
