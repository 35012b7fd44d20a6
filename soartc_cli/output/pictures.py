"""Pictures for ``--maps DIR``: the fitted image beside one heat map per transform × metric.

One PNG per image (SPEC §6 "Pictures"). On the left, the fitted image with a faint patch grid;
on the right, a grid of heat maps, one row per transform and one column per metric (with several
channels, one such block per channel, side by side). Each patch is one square cell coloured by its
value on viridis, scaled from the map's own minimum to its own maximum, which are written under the
map's colour bar. Only numpy and Pillow are used, so pictures can be drawn in worker processes.

The geometry is computed by :func:`layout` from the shapes and names alone (never from the values),
so every picture of a run has the same size and tests can find each map's cells without hard-coded
pixel positions.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from soartc_cli.output.targets import AtomicFile

__all__ = [
    "NAN_RGB",
    "VIRIDIS",
    "MapLayout",
    "Panel",
    "layout",
    "map_filename",
    "render_map",
    "viridis",
    "write_map",
]

# Viridis, 256 entries as 8-bit sRGB hex. Source: matplotlib's lib/matplotlib/_cm_listed.py
# (``_viridis_data``), by Stéfan van der Walt and Nathaniel J. Smith (2015), released under CC0
# (public domain); each float there was rounded here to the nearest 1/255.
_VIRIDIS_HEX = (
    "440154 440256 450457 450559 46075a 46085c 460a5d 460b5e 470d60 470e61 471063 471164",
    "471365 481467 481668 481769 48186a 481a6c 481b6d 481c6e 481d6f 481f70 482071 482173",
    "482374 482475 482576 482677 482878 482979 472a7a 472c7a 472d7b 472e7c 472f7d 46307e",
    "46327e 46337f 463480 453581 453781 453882 443983 443a83 443b84 433d84 433e85 423f85",
    "424086 424186 414287 414487 404588 404688 3f4788 3f4889 3e4989 3e4a89 3e4c8a 3d4d8a",
    "3d4e8a 3c4f8a 3c508b 3b518b 3b528b 3a538b 3a548c 39558c 39568c 38588c 38598c 375a8c",
    "375b8d 365c8d 365d8d 355e8d 355f8d 34608d 34618d 33628d 33638d 32648e 32658e 31668e",
    "31678e 31688e 30698e 306a8e 2f6b8e 2f6c8e 2e6d8e 2e6e8e 2e6f8e 2d708e 2d718e 2c718e",
    "2c728e 2c738e 2b748e 2b758e 2a768e 2a778e 2a788e 29798e 297a8e 297b8e 287c8e 287d8e",
    "277e8e 277f8e 27808e 26818e 26828e 26828e 25838e 25848e 25858e 24868e 24878e 23888e",
    "23898e 238a8d 228b8d 228c8d 228d8d 218e8d 218f8d 21908d 21918c 20928c 20928c 20938c",
    "1f948c 1f958b 1f968b 1f978b 1f988b 1f998a 1f9a8a 1e9b8a 1e9c89 1e9d89 1f9e89 1f9f88",
    "1fa088 1fa188 1fa187 1fa287 20a386 20a486 21a585 21a685 22a785 22a884 23a983 24aa83",
    "25ab82 25ac82 26ad81 27ad81 28ae80 29af7f 2ab07f 2cb17e 2db27d 2eb37c 2fb47c 31b57b",
    "32b67a 34b679 35b779 37b878 38b977 3aba76 3bbb75 3dbc74 3fbc73 40bd72 42be71 44bf70",
    "46c06f 48c16e 4ac16d 4cc26c 4ec36b 50c46a 52c569 54c568 56c667 58c765 5ac864 5cc863",
    "5ec962 60ca60 63cb5f 65cb5e 67cc5c 69cd5b 6ccd5a 6ece58 70cf57 73d056 75d054 77d153",
    "7ad151 7cd250 7fd34e 81d34d 84d44b 86d549 89d548 8bd646 8ed645 90d743 93d741 95d840",
    "98d83e 9bd93c 9dd93b a0da39 a2da37 a5db36 a8db34 aadc32 addc30 b0dd2f b2dd2d b5de2b",
    "b8de29 bade28 bddf26 c0df25 c2df23 c5e021 c8e020 cae11f cde11d d0e11c d2e21b d5e21a",
    "d8e219 dae319 dde318 dfe318 e2e418 e5e419 e7e419 eae51a ece51b efe51c f1e51d f4e61e",
    "f6e620 f8e621 fbe723 fde725",
)

VIRIDIS: np.ndarray = np.array(
    [
        [int(code[i : i + 2], 16) for i in (0, 2, 4)]
        for line in _VIRIDIS_HEX
        for code in line.split()
    ],
    dtype=np.uint8,
)
"""(256, 3) uint8 ndarray: viridis from low (entry 0, #440154) to high (entry 255, #fde725)."""
VIRIDIS.setflags(write=False)

NAN_RGB = (150, 150, 150)
"""Colour of a cell whose value is NaN or ±inf: a neutral grey that viridis never takes."""

_BACKGROUND = 255
_FRAME_RGB = (205, 205, 205)
_TITLE_RGB = (15, 15, 15)
_TEXT_RGB = (35, 35, 35)
_MUTED_RGB = (90, 90, 90)
# Entries 0–255 are viridis; entry 256 is the colour of non-finite values.
_PALETTE = np.vstack([VIRIDIS, np.array([NAN_RGB], dtype=np.uint8)])
_NAN_INDEX = 256
_MID_INDEX = 128  # what a constant map shows: round(0.5 * 255)

# Layout constants, in pixels.
MARGIN = 16
IMAGE_SIDE = 256  # the fitted image is shown at most this big; smaller ones get an integer zoom
IMAGE_GAP = 28  # between the image panel and the transform headings
MAP_SIDE = 168  # target side of one heat map; its cells are an integer number of pixels
MAX_SIDE = 2400  # cells shrink (down to 1 px) while the picture is larger than this either way
HEADING_GAP = 10  # between a transform heading and its first map
COLUMN_GAP = 16
ROW_GAP = 16
BLOCK_GAP = 32  # between the blocks of two channels
LABEL_GAP = 3
BAR_GAP = 4
BAR_HEIGHT = 8
NUMBER_GAP = 2
GRID_ALPHA = 0.3  # strength of the patch grid drawn over the image
MIN_GRID_CELL = 4  # no grid over the image when a patch is shown smaller than this

TITLE_SIZE = 15
HEADING_SIZE = 13
LABEL_SIZE = 12
NUMBER_SIZE = 11
# The widest text "%.4g" usually writes; min and max must both fit under a colour bar.

_NUMBER_TEMPLATE = "-0.0008888"

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels, right and bottom exclusive, as Pillow's boxes."""


def viridis(t: npt.ArrayLike) -> np.ndarray:
    """Colour values on viridis.

    Parameters
    ----------
    t : (...) array_like
        Positions on the scale, 0 = low, 1 = high; clipped to [0, 1].

    Returns
    -------
    (..., 3) uint8 ndarray
        ``VIRIDIS[round(255 t)]``; non-finite positions get ``NAN_RGB``.
    """
    return _PALETTE[_palette_indices(np.asarray(t, dtype=np.float64))]


def _palette_indices(t: np.ndarray) -> np.ndarray:
    finite = np.isfinite(t)
    index = np.rint(np.clip(np.where(finite, t, 0.0), 0.0, 1.0) * 255.0).astype(np.intp)
    return np.where(finite, index, _NAN_INDEX)


def _scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Palette indices of each map's values on that map's own min–max scale.

    ``values`` is (..., N); returns indices (..., N) and the finite min and max (...), which are
    +inf and -inf for a map with no finite value. Halves are subtracted so that ``max - min``
    cannot overflow; a map whose finite values are all equal is drawn at mid-scale.
    """
    finite = np.isfinite(values)
    low = np.where(finite, values, np.inf).min(axis=-1)
    high = np.where(finite, values, -np.inf).max(axis=-1)
    half_span = high * 0.5 - low * 0.5
    varies = half_span > 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        t = (values * 0.5 - low[..., None] * 0.5) / np.where(varies, half_span, 1.0)[..., None]
    t = np.where(varies[..., None], t, np.where(finite, 0.5, np.nan))
    return _palette_indices(t), low, high


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow >= 10.1 embeds a scalable font; without FreeType, the old bitmap font still works
    # (one size only), and the layout measures whatever font it gets.
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError, AttributeError):
        return getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()


def _text_width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> int:
    return int(font.getbbox(text)[2]) if text else 0


@functools.cache
def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    # Bottom of the lowest descender below the top of the line, for the default "la" anchor.
    return int(font.getbbox("Ajgy|")[3]) + 1


@dataclass(frozen=True)
class Panel:
    """Where one heat map goes: its label, its cells, its colour bar and the bar's numbers."""

    label: Box
    cells: Box
    bar: Box
    numbers: Box


@dataclass(frozen=True)
class MapLayout:
    """The geometry of one picture, computed from shapes and names only (see :func:`layout`).

    Attributes
    ----------
    width, height : int
        Size of the picture in pixels.
    grid : (int, int)
        Patch rows and columns.
    cell : int
        Side of one patch cell of a heat map, in pixels.
    title, image, caption : Box
        The title line, the fitted image, and the lines of text under the image.
    channel_headings : tuple of Box
        One per channel above its block of maps; empty when there is one channel.
    metric_headings : tuple of tuple of Box
        ``[channel][metric]``: the metric's name above each column.
    transform_headings : tuple of Box
        One per transform, left of its row of maps.
    panels : tuple of tuple of tuple of Panel
        ``[channel][transform][metric]``.
    """

    width: int
    height: int
    grid: tuple[int, int]
    cell: int
    title: Box
    image: Box
    caption: Box
    channel_headings: tuple[Box, ...]
    metric_headings: tuple[tuple[Box, ...], ...]
    transform_headings: tuple[Box, ...]
    panels: tuple[tuple[tuple[Panel, ...], ...], ...]

    def cell_box(self, channel: int, transform: int, metric: int, patch: int) -> Box:
        """The pixels of patch ``patch`` (row-major) in the map of (channel, transform, metric)."""
        rows, cols = self.grid
        if not 0 <= patch < rows * cols:
            raise IndexError(f"patch must be in [0, {rows * cols}): got {patch}")
        left, top = self.panels[channel][transform][metric].cells[:2]
        row, col = divmod(patch, cols)
        c = self.cell
        return (left + col * c, top + row * c, left + (col + 1) * c, top + (row + 1) * c)


def _display_size(height: int, width: int) -> tuple[int, int]:
    side = max(height, width)
    if side <= IMAGE_SIDE:
        zoom = IMAGE_SIDE // side
        return height * zoom, width * zoom
    scale = IMAGE_SIDE / side
    return max(1, round(height * scale)), max(1, round(width * scale))


def _caption_lines(image_shape: tuple[int, int, int], grid: tuple[int, int]) -> list[str]:
    n_channels, height, width = image_shape
    rows, cols = grid
    mode = "R, G, B" if n_channels == 3 else "luma"
    patches = f"{rows} x {cols} " + ("patch" if rows * cols == 1 else "patches")
    if height % rows == 0 and width % cols == 0:
        ph, pw = height // rows, width // cols
        patches += f" of {ph} px" if ph == pw else f" of {ph} x {pw} px"
    return [f"fitted image: {height} x {width} px, {mode}", patches, "each map: its own min to max"]


_NAN_NOTE = "grey: NaN or infinite value"


def _label(transform: str, metric: str) -> str:
    return f"{transform} · {metric}"


def layout(
    *,
    image_shape: Sequence[int],
    grid: tuple[int, int],
    channels: Sequence[str],
    transforms: Sequence[str],
    metrics: Sequence[str],
) -> MapLayout:
    """Place the title, the image, the headings and every heat map of one picture.

    Parameters
    ----------
    image_shape : (3,) sequence of int
        ``(C, H, W)`` of the fitted image, C = 1 (luma) or 3 (R, G, B).
    grid : (int, int)
        Patch rows and columns.
    channels, transforms, metrics : sequence of str
        Names, in the order of the value array's first three axes.

    Returns
    -------
    MapLayout
        Depends only on the arguments (never on values or title), so every picture of a run has
        the same size. Cells are ``MAP_SIDE // max(rows, cols)`` pixels (at least 1), made smaller
        while the picture is larger than ``MAX_SIDE`` on either side and smaller cells still
        make it smaller; labels never shrink, so very many transforms, metrics or channels
        still give a picture larger than ``MAX_SIDE``.
    """
    shape = tuple(int(n) for n in image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with C = 1 or 3: got {shape}")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (rows, cols), both at least 1: got {grid}")
    for name, names in (("channels", channels), ("transforms", transforms), ("metrics", metrics)):
        if len(names) == 0:
            raise ValueError(f"{name} must name at least one entry")
    return _layout(
        shape,
        (int(grid[0]), int(grid[1])),
        tuple(map(str, channels)),
        tuple(map(str, transforms)),
        tuple(map(str, metrics)),
    )


@functools.lru_cache(maxsize=64)
def _layout(
    image_shape: tuple[int, int, int],
    grid: tuple[int, int],
    channels: tuple[str, ...],
    transforms: tuple[str, ...],
    metrics: tuple[str, ...],
) -> MapLayout:
    rows, cols = grid
    title_font, heading_font = _font(TITLE_SIZE), _font(HEADING_SIZE)
    label_font, number_font = _font(LABEL_SIZE), _font(NUMBER_SIZE)
    title_h, heading_h = _line_height(title_font), _line_height(heading_font)
    label_h, number_h = _line_height(label_font), _line_height(number_font)

    image_h, image_w = _display_size(*image_shape[1:])
    captions = [*_caption_lines(image_shape, grid), _NAN_NOTE]
    panel_w = max(image_w, *(_text_width(label_font, line) for line in captions))
    bar_min_w = 2 * _text_width(number_font, _NUMBER_TEMPLATE) + 8
    # A column is as wide as its widest label, heading or pair of numbers, or its map.
    text_w = [
        max(
            bar_min_w,
            _text_width(heading_font, metric),
            *(_text_width(label_font, _label(t, metric)) for t in transforms),
        )
        for metric in metrics
    ]
    heads_w = max(_text_width(heading_font, t) for t in transforms)
    maps_x = MARGIN + panel_w + IMAGE_GAP + heads_w + HEADING_GAP
    n_channels = len(channels)
    channel_h = heading_h + 6 if n_channels > 1 else 0
    grid_top = MARGIN + title_h + 12 + channel_h + heading_h + 8

    def size(cell: int) -> tuple[int, int, list[int], int]:
        map_w, map_h = cols * cell, rows * cell
        col_w = [max(map_w, w) for w in text_w]
        block_w = sum(col_w) + COLUMN_GAP * (len(metrics) - 1)
        row_h = label_h + LABEL_GAP + map_h + BAR_GAP + BAR_HEIGHT + NUMBER_GAP + number_h
        grid_bottom = grid_top + len(transforms) * (row_h + ROW_GAP) - ROW_GAP
        panel_bottom = grid_top + label_h + LABEL_GAP + image_h + 8 + len(captions) * label_h
        width = maps_x + n_channels * (block_w + BLOCK_GAP) - BLOCK_GAP + MARGIN
        height = max(grid_bottom, panel_bottom) + MARGIN
        return width, height, col_w, row_h

    # Shrink the cells while the picture is too large, but only as far as that still helps: when
    # the labels set a column's width, smaller cells only make the maps harder to read.
    cell = max(1, MAP_SIDE // max(rows, cols))
    smallest_w, smallest_h = size(1)[:2]
    limit_w, limit_h = max(MAX_SIDE, smallest_w), max(MAX_SIDE, smallest_h)
    while cell > 1 and (size(cell)[0] > limit_w or size(cell)[1] > limit_h):
        cell -= 1
    width, height, col_w, row_h = size(cell)
    map_w, map_h = cols * cell, rows * cell
    bar_w = max(map_w, bar_min_w)
    block_w = sum(col_w) + COLUMN_GAP * (len(metrics) - 1)
    col_x = [sum(col_w[:j]) + COLUMN_GAP * j for j in range(len(metrics))]

    image_top = grid_top + label_h + LABEL_GAP
    image = (MARGIN, image_top, MARGIN + image_w, image_top + image_h)
    caption_top = image[3] + 8
    caption = (MARGIN, caption_top, MARGIN + panel_w, caption_top + len(captions) * label_h)
    title = (MARGIN, MARGIN, width - MARGIN, MARGIN + title_h)

    heads_x = maps_x - HEADING_GAP - heads_w
    transform_headings = []
    for t in range(len(transforms)):
        top = grid_top + t * (row_h + ROW_GAP) + label_h + LABEL_GAP
        transform_headings.append((heads_x, top, heads_x + heads_w, top + map_h))

    channel_headings, metric_headings, panels = [], [], []
    heading_top = grid_top - 8 - heading_h
    for c in range(n_channels):
        block_x = maps_x + c * (block_w + BLOCK_GAP)
        if n_channels > 1:
            top = heading_top - channel_h
            channel_headings.append((block_x, top, block_x + block_w, top + heading_h))
        metric_headings.append(
            tuple(
                (block_x + x, heading_top, block_x + x + w, heading_top + heading_h)
                for x, w in zip(col_x, col_w, strict=True)
            )
        )
        channel_panels = []
        for t in range(len(transforms)):
            top = grid_top + t * (row_h + ROW_GAP)
            row_panels = []
            for x, w in zip(col_x, col_w, strict=True):
                left = block_x + x
                cells_x = left + (w - map_w) // 2
                cells_y = top + label_h + LABEL_GAP
                bar_x = left + (w - bar_w) // 2
                bar_y = cells_y + map_h + BAR_GAP
                numbers_y = bar_y + BAR_HEIGHT + NUMBER_GAP
                row_panels.append(
                    Panel(
                        label=(left, top, left + w, top + label_h),
                        cells=(cells_x, cells_y, cells_x + map_w, cells_y + map_h),
                        bar=(bar_x, bar_y, bar_x + bar_w, bar_y + BAR_HEIGHT),
                        numbers=(bar_x, numbers_y, bar_x + bar_w, numbers_y + number_h),
                    )
                )
            channel_panels.append(tuple(row_panels))
        panels.append(tuple(channel_panels))

    return MapLayout(
        width=width,
        height=height,
        grid=grid,
        cell=cell,
        title=title,
        image=image,
        caption=caption,
        channel_headings=tuple(channel_headings),
        metric_headings=tuple(metric_headings),
        transform_headings=tuple(transform_headings),
        panels=tuple(panels),
    )


def _image_rgb(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 3) uint8 new array: the fitted image clipped to [0, 1], NaN shown black."""
    _, h, w = pixels.shape
    if height < h or width < w:
        # Subsample first so that a large native-size image costs little to convert.
        step = max(1, min(h // height, w // width) // 2)
        pixels = pixels[:, ::step, ::step]
    p = np.nan_to_num(pixels.astype(np.float32), copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(p, 0.0, 1.0, out=p)
    u8 = (p * 255.0 + 0.5).astype(np.uint8)
    rgb = np.repeat(u8[0][..., None], 3, axis=-1) if u8.shape[0] == 1 else u8.transpose(1, 2, 0)
    if rgb.shape[:2] == (height, width):
        return np.ascontiguousarray(rgb)
    if height % rgb.shape[0] == 0 and width % rgb.shape[1] == 0:
        zoom = height // rgb.shape[0]
        return np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.array(resized)


def _draw_patch_grid(rgb: np.ndarray, grid: tuple[int, int]) -> None:
    """Blend the patch boundaries into ``rgb`` in place, lighter on dark pixels and vice versa."""
    rows, cols = grid
    height, width = rgb.shape[:2]
    if min(height / rows, width / cols) < MIN_GRID_CELL:
        return
    ys = np.rint(np.arange(1, rows) * height / rows).astype(np.intp)
    xs = np.rint(np.arange(1, cols) * width / cols).astype(np.intp)
    for index in ((ys, slice(None)), (slice(None), xs)):
        line = rgb[index].astype(np.float32)
        target = np.where(line.mean(axis=-1, keepdims=True) < 128.0, 255.0, 0.0)
        rgb[index] = (line * (1.0 - GRID_ALPHA) + target * GRID_ALPHA + 0.5).astype(np.uint8)


def _frame(canvas: np.ndarray, box: Box) -> None:
    """A 1-pixel frame just outside ``box``."""
    left, top, right, bottom = box
    canvas[top - 1, left - 1 : right + 1] = _FRAME_RGB
    canvas[bottom, left - 1 : right + 1] = _FRAME_RGB
    canvas[top:bottom, left - 1] = _FRAME_RGB
    canvas[top:bottom, right] = _FRAME_RGB


def _draw_text(
    draw: ImageDraw.ImageDraw,
    box: Box,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, int, int],
    *,
    align: str = "center",
    middle: bool = False,
) -> None:
    left, top, right, bottom = box
    if align == "left":
        x = left
    elif align == "right":
        x = right - _text_width(font, text)
    else:
        x = left + (right - left - _text_width(font, text)) // 2
    y = top + (bottom - top - _line_height(font)) // 2 if middle else top
    draw.text((x, y), text, font=font, fill=fill)


def _fit_text(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int) -> str:
    """``text``, shortened in the middle with an ellipsis until it is at most ``width`` wide."""
    if _text_width(font, text) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= max(1, keep // 16)
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head) :]
        if _text_width(font, short) <= width:
            return short
    return "…"


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def render_map(
    pixels: np.ndarray,
    values: np.ndarray,
    *,
    grid: tuple[int, int],
    channels: Sequence[str],
    transforms: Sequence[str],
    metrics: Sequence[str],
    title: str = "",
) -> Image.Image:
    """Draw the picture of one image: the fitted image beside one heat map per transform × metric.

    Parameters
    ----------
    pixels : (C, H, W) ndarray
        The fitted image, C = 1 (luma, shown grey) or 3 (R, G, B). Values are clipped to [0, 1]
        for display (a float TIFF may go beyond); NaN is shown black.
    values : (K, T, M, N) ndarray
        ``values[k, t, m, n]`` = metric ``m`` of transform ``t`` on patch ``n`` of channel ``k``;
        patches in row-major order (patch ``n`` at row ``n // cols``, column ``n % cols``).
        K need not equal C: attention over R, G, B patches gives one channel of values.
    grid : (int, int)
        Patch rows and columns, ``rows * cols == N``.
    channels, transforms, metrics : sequence of str
        Names of the K channels (shown as block headings when K > 1), T transforms and M metrics.
    title : str
        Written at the top, shortened in the middle when too long (the image's path).

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``, of the size given by :func:`layout` for these shapes and names.

    Notes
    -----
    Each map has its own scale: a value ``v`` is coloured
    ``VIRIDIS[round(255 (v − lo) / (hi − lo))]``, where ``lo`` and ``hi`` are the map's finite
    min and max, written under its colour bar as ``%.4g``. A map whose finite values are all
    equal is drawn in mid-scale viridis (entry 128) and labelled with its single value; NaN and
    ±inf cells are drawn in ``NAN_RGB``.
    """
    pixels = np.asarray(pixels)
    values = np.asarray(values, dtype=np.float64)
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise ValueError(f"pixels must be (C, H, W) with C = 1 or 3: got shape {pixels.shape}")
    rows, cols = (int(n) for n in grid)
    expected = (len(channels), len(transforms), len(metrics), rows * cols)
    if values.shape != expected:
        raise ValueError(
            f"values must be (channels, transforms, metrics, rows * cols) = {expected}: "
            f"got shape {values.shape}"
        )
    lay = layout(
        image_shape=pixels.shape,
        grid=(rows, cols),
        channels=channels,
        transforms=transforms,
        metrics=metrics,
    )
    canvas = _template(
        tuple(pixels.shape),
        (rows, cols),
        tuple(map(str, channels)),
        tuple(map(str, transforms)),
        tuple(map(str, metrics)),
    ).copy()

    left, top, right, bottom = lay.image
    shown = _image_rgb(pixels, bottom - top, right - left)
    _draw_patch_grid(shown, (rows, cols))
    canvas[top:bottom, left:right] = shown

    index, low, high = _scale(values)
    colours = _PALETTE[index.reshape(*values.shape[:3], rows, cols)]
    c = lay.cell
    bar_left, _, bar_right, _ = lay.panels[0][0][0].bar
    gradient = VIRIDIS[np.rint(np.linspace(0.0, 255.0, bar_right - bar_left)).astype(np.intp)]
    texts: list[tuple[Box, str, str]] = []
    for k, channel_panels in enumerate(lay.panels):
        for t, row_panels in enumerate(channel_panels):
            for m, panel in enumerate(row_panels):
                x0, y0, x1, y1 = panel.cells
                # Widen each row of cells once, then copy it down the cell's c pixel rows (a view:
                # splitting an axis of a slice never copies); 10x faster than a 5-d broadcast.
                wide = np.repeat(colours[k, t, m], c, axis=1)
                canvas[y0:y1, x0:x1].reshape(rows, c, cols * c, 3)[...] = wide[:, None]
                bx0, by0, bx1, by1 = panel.bar
                lo, hi = low[k, t, m], high[k, t, m]
                if lo < hi:
                    canvas[by0:by1, bx0:bx1] = gradient
                    texts.append((panel.numbers, _format_number(lo), "left"))
                    texts.append((panel.numbers, _format_number(hi), "right"))
                else:
                    constant = lo == hi
                    canvas[by0:by1, bx0:bx1] = VIRIDIS[_MID_INDEX] if constant else NAN_RGB
                    note = f"all {_format_number(lo)}" if constant else "no finite value"
                    texts.append((panel.numbers, note, "center"))

    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    number_font = _font(NUMBER_SIZE)
    for box, text, align in texts:
        _draw_text(draw, box, text, number_font, _MUTED_RGB, align=align)
    if title:
        title_font = _font(TITLE_SIZE)
        fitted = _fit_text(title_font, title, lay.title[2] - lay.title[0])
        _draw_text(draw, lay.title, fitted, title_font, _TITLE_RGB, align="left")
    if not np.isfinite(values).all():
        label_font = _font(LABEL_SIZE)
        line_h = _line_height(label_font)
        n_lines = len(_caption_lines(tuple(pixels.shape), (rows, cols)))
        box = (lay.caption[0], lay.caption[1] + n_lines * line_h, lay.caption[2], lay.caption[3])
        _draw_text(draw, box, _NAN_NOTE, label_font, _MUTED_RGB, align="left")
    return image


@functools.lru_cache(maxsize=2)  # a run has one layout; with --size 0, shapes may vary
def _template(
    image_shape: tuple[int, int, int],
    grid: tuple[int, int],
    channels: tuple[str, ...],
    transforms: tuple[str, ...],
    metrics: tuple[str, ...],
) -> np.ndarray:
    """(height, width, 3) uint8, read-only: every part of a picture that does not depend on the
    values, the pixels or the title (headings, labels, captions, frames), drawn once per layout."""
    lay = _layout(image_shape, grid, channels, transforms, metrics)
    canvas = np.full((lay.height, lay.width, 3), _BACKGROUND, dtype=np.uint8)
    _frame(canvas, lay.image)
    for channel_panels in lay.panels:
        for row_panels in channel_panels:
            for panel in row_panels:
                _frame(canvas, panel.cells)
                _frame(canvas, panel.bar)
    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    heading_font, label_font = _font(HEADING_SIZE), _font(LABEL_SIZE)
    line_h = _line_height(label_font)
    for i, line in enumerate(_caption_lines(image_shape, grid)):
        box = (lay.caption[0], lay.caption[1] + i * line_h, lay.caption[2], lay.caption[3])
        _draw_text(draw, box, line, label_font, _MUTED_RGB, align="left")
    for box, name in zip(lay.channel_headings, channels, strict=False):
        _draw_text(draw, box, f"channel {name}", heading_font, _TITLE_RGB)
        draw.line([(box[0], box[3] + 2), (box[2] - 1, box[3] + 2)], fill=_FRAME_RGB)
    for channel_boxes in lay.metric_headings:
        for box, name in zip(channel_boxes, metrics, strict=True):
            _draw_text(draw, box, name, heading_font, _TITLE_RGB)
    for box, name in zip(lay.transform_headings, transforms, strict=True):
        _draw_text(draw, box, name, heading_font, _TITLE_RGB, align="right", middle=True)
    for channel_panels in lay.panels:
        for row_panels, transform in zip(channel_panels, transforms, strict=True):
            for panel, metric in zip(row_panels, metrics, strict=True):
                _draw_text(draw, panel.label, _label(transform, metric), label_font, _TEXT_RGB)
    template = np.asarray(image).copy()
    template.setflags(write=False)
    return template


def map_filename(path: str) -> str:
    """The picture's file name for an image's ``path``: ``/`` → ``__``, extension → ``.png``.

    ``"cats/a.jpg"`` → ``"cats__a.png"``; ``"a"`` → ``"a.png"``. The result is always one plain
    file name inside the pictures directory:

    - empty and ``.`` components are dropped (``"./a.jpg"``, ``"/abs/a.jpg"`` → ``"a.png"``,
      ``"abs__a.png"``);
    - ``\\`` (from the ``\\xNN`` escapes of undecodable bytes) becomes ``_``, so the name is one
      component on Windows too;
    - leading dots become ``_`` (``"../a.jpg"`` → ``"____a.png"``), so the name is never hidden,
      never ``.`` or ``..``;
    - NUL and other control characters become ``_``;
    - a name longer than 255 UTF-8 bytes (most file systems' limit) is cut and ends with 16 hex
      digits of the path's SHA-1, so that long paths keep distinct names.

    Only the last extension goes (``"a.tar.gz"`` → ``"a.tar.png"``). Different paths can still
    meet (``"a.jpg"`` and ``"a.png"``, ``"x/y.png"`` and ``"x__y.png"``); the caller decides what
    to do when two images of one run share a name.
    """
    cleaned = "".join("_" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in path)
    parts = [p for p in cleaned.replace("\\", "_").split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"path must name a file: got {path!r}")
    last = parts[-1]
    dot = last.rfind(".")
    if 0 < dot < len(last) - 1:
        parts[-1] = last[:dot]
    stem = "__".join(parts)
    stripped = stem.lstrip(".")
    stem = "_" * (len(stem) - len(stripped)) + stripped
    name = stem + ".png"
    if len(name.encode("utf-8")) > 255:
        digest = hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        budget = 255 - len(digest) - len("-.png")
        cut = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = f"{cut}-{digest}.png"
    return name


def name_collisions(paths: Iterable[str]) -> list[tuple[str, str, str]]:
    """Pairs of paths whose pictures share a name: ``(earlier, later, name)``, in input order.

    ``a.jpg`` and ``a.png`` both draw ``a.png``; the later picture replaces the earlier one.
    """
    seen: dict[str, str] = {}
    clashes = []
    for path in paths:
        name = map_filename(path)
        if name in seen:
            clashes.append((seen[name], path, name))
        seen[name] = path
    return clashes


def write_map(image: Image.Image, directory: str | os.PathLike[str], path: str) -> pathlib.Path:
    """Save ``image`` as ``directory / map_filename(path)``, complete or not at all.

    The directory (and its parents) is created when missing. The PNG is written to a hidden
    temporary file in the same directory, then renamed over the final name with ``os.replace``;
    any exception (including KeyboardInterrupt) removes the temporary file.

    Returns
    -------
    pathlib.Path
        The path of the written picture.
    """
    folder = pathlib.Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / map_filename(path)
    with AtomicFile(target, binary=True) as handle:
        # Level 1: flat heat-map colours compress well even so, and it is several times faster.
        image.save(handle.file, format="PNG", compress_level=1)
    return target


# -- score maps (SPEC §10, `soartc score --maps`) -------------------------------------------

SCORE_ALPHA = 0.5  # weight of the MD colour over the fitted image in the overlay
SCORE_GAP = 28  # between the overlay and the MD grid
OUTLINE_RGB = (255, 40, 40)  # the outline of the highest patch
OUTLINE_WIDTH = 2
VERDICT_RGB = {"anomalous": (190, 30, 30), "good": (30, 120, 60)}
_VERDICT_TEXT_RGB = (255, 255, 255)
_SCORE_CAPTION_TEMPLATE = "outlined: the highest patch, r000c000 (MD -0.0008888)"
_SCORE_SCALE_NOTE = "one scale for every image: MD 0 to 2 x threshold; higher: top colour"


@dataclass(frozen=True)
class ScoreMapLayout:
    """The geometry of one score map, from the image shape and the patch grid only.

    Attributes
    ----------
    width, height : int
        Size of the picture in pixels.
    grid : (int, int)
        Patch rows and columns.
    cell : int
        Side of one cell of the MD grid, in pixels.
    title : Box
        The first line: the image's path.
    verdict : Box
        The coloured badge with the verdict, at the start of the second line.
    summary : Box
        The rest of the second line: score and threshold.
    image_label, cells_label : Box
        Headings above the overlay and the MD grid.
    image : Box
        The fitted image with the MD overlay.
    cells : Box
        The MD grid, one square cell per patch.
    bar, numbers : Box
        The colour bar under both panels (0 to 2 × threshold, left to right) and its numbers.
    caption : Box
        Lines of text under the numbers.
    """

    width: int
    height: int
    grid: tuple[int, int]
    cell: int
    title: Box
    verdict: Box
    summary: Box
    image_label: Box
    cells_label: Box
    image: Box
    cells: Box
    bar: Box
    numbers: Box
    caption: Box

    def cell_box(self, patch: int) -> Box:
        """The pixels of patch ``patch`` (row-major) in the MD grid."""
        row, col = self._row_col(patch)
        left, top = self.cells[:2]
        c = self.cell
        return (left + col * c, top + row * c, left + (col + 1) * c, top + (row + 1) * c)

    def image_cell_box(self, patch: int) -> Box:
        """The pixels of patch ``patch`` (row-major) in the overlay on the fitted image."""
        row, col = self._row_col(patch)
        ys, xs = _edges(self.image, self.grid)
        left, top = self.image[:2]
        return (left + xs[col], top + ys[row], left + xs[col + 1], top + ys[row + 1])

    def _row_col(self, patch: int) -> tuple[int, int]:
        rows, cols = self.grid
        if not 0 <= patch < rows * cols:
            raise IndexError(f"patch must be in [0, {rows * cols}): got {patch}")
        return divmod(patch, cols)


def _edges(box: Box, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Patch boundaries inside ``box``: (rows + 1,) and (cols + 1,) pixel offsets."""
    height, width = box[3] - box[1], box[2] - box[0]
    rows, cols = grid
    ys = np.rint(np.arange(rows + 1) * height / rows).astype(np.intp)
    xs = np.rint(np.arange(cols + 1) * width / cols).astype(np.intp)
    return ys, xs


def score_map_layout(*, image_shape: Sequence[int], grid: tuple[int, int]) -> ScoreMapLayout:
    """Place the parts of a score map (see :func:`render_score_map`).

    Parameters
    ----------
    image_shape : (3,) sequence of int
        ``(C, H, W)`` of the fitted image, C = 1 or 3.
    grid : (int, int)
        Patch rows and columns.

    Returns
    -------
    ScoreMapLayout
        Depends only on the arguments, so every score map of a run has the same size. The MD
        grid is as large as the shown image (cells of ``IMAGE_SIDE // max(rows, cols)`` pixels,
        at least 1).
    """
    shape = tuple(int(n) for n in image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 1:
        raise ValueError(f"image_shape must be (C, H, W) with C = 1 or 3: got {shape}")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (rows, cols), both at least 1: got {grid}")
    return _score_layout(shape, (int(grid[0]), int(grid[1])))


@functools.lru_cache(maxsize=8)
def _score_layout(image_shape: tuple[int, int, int], grid: tuple[int, int]) -> ScoreMapLayout:
    rows, cols = grid
    title_font, heading_font = _font(TITLE_SIZE), _font(HEADING_SIZE)
    label_font, number_font = _font(LABEL_SIZE), _font(NUMBER_SIZE)
    title_h, heading_h = _line_height(title_font), _line_height(heading_font)
    label_h, number_h = _line_height(label_font), _line_height(number_font)

    image_h, image_w = _display_size(*image_shape[1:])
    cell = max(1, IMAGE_SIDE // max(rows, cols))
    cells_w, cells_h = cols * cell, rows * cell
    captions = (_SCORE_SCALE_NOTE, _SCORE_CAPTION_TEMPLATE, _NAN_NOTE)
    panels_w = image_w + SCORE_GAP + cells_w
    text_w = max(
        _text_width(label_font, line) for line in (*captions, *_caption_lines(image_shape, grid))
    )
    width = MARGIN + max(panels_w, text_w, 2 * IMAGE_SIDE) + MARGIN

    title = (MARGIN, MARGIN, width - MARGIN, MARGIN + title_h)
    line2 = title[3] + 6
    badge_w = max(_text_width(heading_font, v) for v in VERDICT_RGB) + 12
    verdict = (MARGIN, line2, MARGIN + badge_w, line2 + heading_h + 4)
    summary = (verdict[2] + 10, line2 + 2, width - MARGIN, line2 + 2 + heading_h)
    labels_top = verdict[3] + 12
    left = MARGIN + (width - 2 * MARGIN - panels_w) // 2
    panels_top = labels_top + label_h + LABEL_GAP
    panels_h = max(image_h, cells_h)
    image = (left, panels_top, left + image_w, panels_top + image_h)
    cells_left = image[2] + SCORE_GAP
    cells = (cells_left, panels_top, cells_left + cells_w, panels_top + cells_h)
    image_label = (image[0], labels_top, image[2], labels_top + label_h)
    cells_label = (cells[0], labels_top, cells[2], labels_top + label_h)
    bar_top = panels_top + panels_h + 10
    bar = (left, bar_top, left + panels_w, bar_top + 2 * BAR_HEIGHT)
    numbers = (left, bar[3] + NUMBER_GAP, left + panels_w, bar[3] + NUMBER_GAP + number_h)
    caption_top = numbers[3] + 10
    caption = (MARGIN, caption_top, width - MARGIN, caption_top + len(captions) * label_h)
    height = caption[3] + MARGIN
    return ScoreMapLayout(
        width=width,
        height=height,
        grid=grid,
        cell=cell,
        title=title,
        verdict=verdict,
        summary=summary,
        image_label=image_label,
        cells_label=cells_label,
        image=image,
        cells=cells,
        bar=bar,
        numbers=numbers,
        caption=caption,
    )


def _outline(canvas: np.ndarray, box: Box) -> None:
    """An ``OUTLINE_WIDTH`` frame just inside ``box`` (skipped when the box is too small)."""
    left, top, right, bottom = box
    w = OUTLINE_WIDTH
    if min(right - left, bottom - top) < 2 * w + 2:
        return
    canvas[top : top + w, left:right] = OUTLINE_RGB
    canvas[bottom - w : bottom, left:right] = OUTLINE_RGB
    canvas[top:bottom, left : left + w] = OUTLINE_RGB
    canvas[top:bottom, right - w : right] = OUTLINE_RGB


def render_score_map(
    pixels: np.ndarray,
    md: np.ndarray,
    *,
    grid: tuple[int, int],
    threshold: float,
    score: float,
    title: str = "",
) -> Image.Image:
    """Draw the score map of one image: the patch MD over the fitted image and as a grid.

    Parameters
    ----------
    pixels : (C, H, W) ndarray
        The fitted image, C = 1 (luma, shown grey) or 3 (R, G, B), values clipped to [0, 1].
    md : (N,) ndarray
        Patch distances (row-major), ``N = rows · cols``; NaN allowed (drawn grey).
    grid : (int, int)
        Patch rows and columns.
    threshold : float
        The model's threshold (positive, finite): it fixes the colour scale.
    score : float
        The image score; the verdict is ``anomalous`` when ``score > threshold``, else ``good``.
    title : str
        The first line (the image's path), shortened in the middle when too long.

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``, of the size given by :func:`score_map_layout`.

    Notes
    -----
    One fixed scale for every image of a run, so that pictures compare: an MD ``v`` is
    coloured ``VIRIDIS[round(255 · clip(v / (2 · threshold), 0, 1))]`` (above ``2 × threshold``:
    the top colour; NaN: ``NAN_RGB``). The overlay mixes that colour into the shown image with
    weight ``SCORE_ALPHA``: ``round((1 − α) · pixel + α · colour)``. The patch with the largest
    MD (the first on ties) is outlined in ``OUTLINE_RGB`` in both panels. The colour bar under
    them is labelled 0, the threshold (at its middle, with a tick) and ``2 × threshold``.
    """
    pixels = np.asarray(pixels)
    md = np.asarray(md, dtype=np.float64)
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise ValueError(f"pixels must be (C, H, W) with C = 1 or 3: got shape {pixels.shape}")
    rows, cols = (int(n) for n in grid)
    if md.shape != (rows * cols,):
        raise ValueError(f"md must be (rows * cols,) = ({rows * cols},): got shape {md.shape}")
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive finite number: got {threshold}")
    lay = score_map_layout(image_shape=pixels.shape, grid=(rows, cols))
    canvas = np.full((lay.height, lay.width, 3), _BACKGROUND, dtype=np.uint8)

    colours = viridis(md / (2.0 * threshold)).reshape(rows, cols, 3)

    # The overlay: each shown pixel takes the colour of the patch it lies in.
    left, top, right, bottom = lay.image
    shown = _image_rgb(pixels, bottom - top, right - left).astype(np.float32)
    ys, xs = _edges(lay.image, (rows, cols))
    row_of = np.searchsorted(ys, np.arange(bottom - top), side="right") - 1
    col_of = np.searchsorted(xs, np.arange(right - left), side="right") - 1
    over = colours[row_of][:, col_of].astype(np.float32)
    blended = (shown * (1.0 - SCORE_ALPHA) + over * SCORE_ALPHA + 0.5).astype(np.uint8)
    _draw_patch_grid(blended, (rows, cols))
    canvas[top:bottom, left:right] = blended
    _frame(canvas, lay.image)

    # The grid of cells.
    x0, y0, x1, y1 = lay.cells
    c = lay.cell
    canvas[y0:y1, x0:x1].reshape(rows, c, cols * c, 3)[...] = np.repeat(colours, c, axis=1)[:, None]
    _frame(canvas, lay.cells)

    finite = np.isfinite(md)
    highest = int(np.argmax(np.where(finite, md, -np.inf))) if finite.any() else None
    if highest is not None:
        _outline(canvas, lay.cell_box(highest))
        _outline(canvas, lay.image_cell_box(highest))

    bx0, by0, bx1, by1 = lay.bar
    canvas[by0:by1, bx0:bx1] = VIRIDIS[np.rint(np.linspace(0.0, 255.0, bx1 - bx0)).astype(np.intp)]
    _frame(canvas, lay.bar)
    middle = (bx0 + bx1) // 2
    canvas[by0 - 3 : by1 + 3, middle - 1 : middle + 1] = _TITLE_RGB

    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    title_font, heading_font = _font(TITLE_SIZE), _font(HEADING_SIZE)
    label_font, number_font = _font(LABEL_SIZE), _font(NUMBER_SIZE)
    if title:
        fitted = _fit_text(title_font, title, lay.title[2] - lay.title[0])
        _draw_text(draw, lay.title, fitted, title_font, _TITLE_RGB, align="left")
    verdict = "anomalous" if score > threshold else "good"
    draw.rectangle(
        [lay.verdict[0], lay.verdict[1], lay.verdict[2] - 1, lay.verdict[3] - 1],
        fill=VERDICT_RGB[verdict],
    )
    _draw_text(draw, lay.verdict, verdict, heading_font, _VERDICT_TEXT_RGB, middle=True)
    relation = ">" if verdict == "anomalous" else "<="
    summary = f"score {_format_number(score)} {relation} threshold {_format_number(threshold)}"
    _draw_text(draw, lay.summary, summary, heading_font, _TITLE_RGB, align="left")
    _draw_text(draw, lay.image_label, "fitted image + patch MD", label_font, _TEXT_RGB)
    _draw_text(draw, lay.cells_label, "patch MD", label_font, _TEXT_RGB)
    _draw_text(draw, lay.numbers, "0", number_font, _MUTED_RGB, align="left")
    _draw_text(draw, lay.numbers, f"threshold {_format_number(threshold)}", number_font, _TITLE_RGB)
    _draw_text(
        draw, lay.numbers, _format_number(2.0 * threshold), number_font, _MUTED_RGB, align="right"
    )
    lines = [_SCORE_SCALE_NOTE]
    if highest is not None:
        from soartc_cli.core.patches import patch_names

        name = patch_names(rows, cols)[highest]
        lines.append(f"outlined: the highest patch, {name} (MD {_format_number(md[highest])})")
    if not finite.all():
        lines.append(_NAN_NOTE)
    line_h = _line_height(label_font)
    for i, line in enumerate(lines):
        box = (lay.caption[0], lay.caption[1] + i * line_h, lay.caption[2], lay.caption[3])
        _draw_text(draw, box, line, label_font, _MUTED_RGB, align="left")
    return image


__all__ += ["ScoreMapLayout", "render_score_map", "score_map_layout"]
