"""Decoding an image file and fitting it to the patch grid (SPEC §2.3–2.5).

This is the only module that opens images. The pipeline is::

    decode(source)            Pillow image: first frame, EXIF orientation applied, size checked
    → to_array(image)         (C, H, W) float32: luma, or R, G, B, in [0, 1] (F images: as stored)
    → invert (optional)       v → 1 − v
    → fit(array)              (C, S, S) float32: centred square resized by Pillow's bilinear filter

and :func:`load_image` runs it for one file. Every way a file can be unusable becomes an
:class:`~soartc_cli.errors.InputError` with a short reason; bad parameters raise
:class:`~soartc_cli.errors.UsageError`.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

from soartc_cli.errors import InputError, UsageError

__all__ = [
    "CHANNELS",
    "DEFAULT_MAX_PIXELS",
    "LUMA_WEIGHTS",
    "LoadedImage",
    "check_geometry",
    "decode",
    "fit",
    "load_image",
    "to_array",
]

#: Values of the ``channels`` parameter: one luma channel, or R, G and B.
CHANNELS: tuple[str, ...] = ("luma", "rgb")
#: Default for ``max_pixels`` (SPEC §2.3).
DEFAULT_MAX_PIXELS = 100_000_000
#: ITU-R BT.601 luma weights of R, G and B (SPEC §2.4).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

# The weights with the 1/255 scale folded in: luma is three multiply-adds on the 8-bit levels.
_LUMA_PER_LEVEL = (np.asarray(LUMA_WEIGHTS, dtype=np.float64) / 255.0).astype(np.float32)
_GREY_8BIT = frozenset({"1", "L", "LA"})
_GREY_HIGH = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_RGB_FIRST = frozenset({"RGB", "RGBA", "RGBX"})
_PALETTE = frozenset({"P", "PA"})
#: Modes whose luma Pillow's convert("F") computes directly (the others go through RGB).
_DIRECT_TO_F = frozenset({"1", "L", "RGB", "RGBA", "RGBX"})
_EXIF_ORIENTATION = 0x0112
# EXIF orientation → the transpose that shows the image upright (as PIL.ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's decoders raise on bad data, besides OSError (see _reason).
_DECODE_ERRORS = (
    OSError,
    EOFError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    struct.error,
    zlib.error,
    MemoryError,
    Image.DecompressionBombError,
)

Source = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """One decoded, fitted image.

    Attributes
    ----------
    pixels : (C, S, S) ndarray of float32
        The fitted image (``(C, H, W)`` with whole patches when ``size=0``); ``C`` is 1 (luma) or
        3 (R, G, B).
    width, height : int
        The original size in pixels, after EXIF orientation.
    """

    pixels: np.ndarray
    width: int
    height: int


def check_geometry(size: int, *, patch: int) -> None:
    """Validate the fit size and the patch size.

    Parameters
    ----------
    size : int
        Side ``S`` of the fitted square, or 0 for the native size.
    patch : int
        Side ``P`` of a patch; must divide ``size``.

    Raises
    ------
    UsageError
        ``patch < 1``, ``size < 0``, or ``size`` not a multiple of ``patch``.
    """
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise UsageError(f"patch must be a positive whole number, got {patch!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise UsageError(f"size must be 0 (native size) or a positive whole number, got {size!r}")
    if size % patch:
        raise UsageError(f"patch must divide size: {size} is not a multiple of {patch}")


def _check_channels(channels: str) -> None:
    if channels not in CHANNELS:
        raise UsageError(f"channels must be 'luma' or 'rgb', got {channels!r}")


def _check_max_pixels(max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise UsageError(f"max_pixels must be a positive whole number, got {max_pixels!r}")


# Pillow's own decompression-bomb limit is one module global (Image.MAX_IMAGE_PIXELS) with no
# per-call override. We check the pixel count ourselves (max_pixels), so Pillow's check is lifted
# only while one of our decodes runs, and put back when the last of them ends. Users of Pillow
# outside these calls keep their limit; a thread decoding with Pillow at the same moment as ours
# would see no limit during that window.
_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


@contextlib.contextmanager
def _pillow_limit_lifted() -> Iterator[None]:
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


def _is_empty(source: Source) -> bool:
    try:
        if isinstance(source, (str, bytes, os.PathLike)):
            return os.stat(source).st_size == 0
        position = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(position)
        return end == 0
    except (OSError, ValueError, AttributeError):
        return False


def _is_link(source: Source) -> bool:
    return isinstance(source, (str, bytes, os.PathLike)) and os.path.islink(source)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _reason(exc: BaseException, source: Source) -> str:
    """A short, human reason for a failure to decode ``source``."""
    if isinstance(exc, FileNotFoundError):
        return "broken symbolic link" if _is_link(source) else "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, UnidentifiedImageError):
        return "empty file" if _is_empty(source) else "not an image (unrecognised file format)"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels ({_short(exc)})"
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return "truncated image (the file ends too early)"
    if isinstance(exc, OSError) and exc.errno is not None:
        # An error of the operating system (ELOOP, EIO, …), not of the image data.
        return f"cannot read file: {exc.strerror or _short(exc)}"
    return f"corrupt image data ({_short(exc)})"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8) of ``image``; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is not a broken image
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE else 1


def decode(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the first frame of an image file, upright.

    Parameters
    ----------
    source : str, path-like or binary file object
        The file to read. A file object must be seekable; Pillow reads it from the start, and it
        is left open.
    max_pixels : int, default 100,000,000
        Refuse images with more pixels than this, judged from the file header before any pixel
        is decoded.

    Returns
    -------
    PIL.Image.Image
        The first frame, fully loaded (the file is closed when ``source`` is a path), with the
        EXIF orientation applied (SPEC §2.3). Its mode is the file's (``L``, ``RGB``, ``I;16``…).

    Raises
    ------
    InputError
        The file cannot be used: not found, broken symbolic link, permission denied, a directory,
        empty, not an image, truncated, corrupt, or more than ``max_pixels`` pixels.
    UsageError
        ``max_pixels`` is not a positive whole number.

    Notes
    -----
    Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is lifted only while
    this function runs, since ``max_pixels`` replaces it; ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
    is left False, so truncated files fail. An EXIF block that cannot be parsed is ignored (the
    image is used as stored) rather than refusing a readable image.
    """
    _check_max_pixels(max_pixels)
    try:
        with _pillow_limit_lifted(), Image.open(source) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise InputError(
                    f"image is {width}×{height} = {width * height} pixels, "
                    f"more than --max-pixels {max_pixels}"
                )
            opened.load()
            transpose = _ORIENTATION_TRANSPOSE.get(_orientation(opened))
            image = opened if transpose is None else opened.transpose(transpose)
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        raise InputError(_reason(exc, source)) from exc
    # Leaving the with-block closed the file; the loaded pixels stay in memory.
    if image.width < 1 or image.height < 1:
        raise InputError("image has no pixels")
    return image


def _luma(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 R, G, B → ``(1, H, W)`` float32 ``(0.299 R + 0.587 G + 0.114 B) / 255``."""
    weight_r, weight_g, weight_b = _LUMA_PER_LEVEL
    # Planar multiply-adds on Pillow's separate bands: faster than a (H·W, 3) @ (3,) product
    # (no BLAS for uint8, and a stride-3 read), and only one float temporary however big.
    out = np.multiply(red, weight_r, dtype=np.float32)[np.newaxis]
    term = np.multiply(green, weight_g, dtype=np.float32)
    out[0] += term
    np.multiply(blue, weight_b, out=term)
    out[0] += term
    return out


def to_array(image: Image.Image, *, channels: str = "luma") -> np.ndarray:
    """Convert a Pillow image to float32 channels (SPEC §2.4).

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode Pillow decodes. It is not modified.
    channels : {"luma", "rgb"}, default "luma"
        One luma channel, or the three channels R, G, B.

    Returns
    -------
    (C, H, W) ndarray of float32
        A new array, ``C`` = 1 for luma and 3 for rgb, ``H, W`` = ``image.height, image.width``.

    Raises
    ------
    InputError
        A mode Pillow cannot convert to RGB, or a float image with NaN or infinite values.
    UsageError
        ``channels`` is not ``"luma"`` or ``"rgb"``.

    Notes
    -----
    - 8-bit colour modes (``RGB``, ``RGBA``, ``P``, ``PA``, ``CMYK``, ``YCbCr``, …): palette and
      other colour modes are converted to RGB by Pillow and alpha is dropped (not composited over
      a background); then, from the 8-bit levels,

      .. math:: Y = 0.299\\,R/255 + 0.587\\,G/255 + 0.114\\,B/255

      computed in floating point (not Pillow's rounded integer ``convert("L")``), or R/255,
      G/255, B/255 for ``channels="rgb"``.
    - ``1``, ``L``, ``LA``: the grey level / 255 (alpha dropped); ``1`` gives 0 or 1.
    - ``I;16*``, ``I``: value / 65535, clipped to [0, 1].
    - ``F``: the values as stored; NaN or infinity is an input error, as no metric could use it.
    - Grey images with ``channels="rgb"``: the grey value in all three channels, which is what
      Pillow's conversion to RGB gives for 8-bit grey, applied likewise to 16-bit and float grey.
    """
    _check_channels(channels)
    mode = image.mode
    if mode not in _GREY_8BIT and mode not in _GREY_HIGH and mode != "F":
        planes = _rgb_planes(image)
        if channels == "luma":
            return _luma(*planes)
        out = np.empty((3, image.height, image.width), dtype=np.float32)
        for channel, plane in enumerate(planes):
            np.divide(plane, np.float32(255), out=out[channel])
        return out
    grey = np.asarray(image)
    if grey.ndim == 3:  # LA: the grey channel, alpha dropped
        grey = grey[:, :, 0]
    out = np.empty((1, *grey.shape), dtype=np.float32)
    if mode == "1":
        np.copyto(out[0], grey)
    elif mode == "L" or mode == "LA":
        np.divide(grey, np.float32(255), out=out[0])
    elif mode == "F":
        np.copyto(out[0], grey)
        if not np.isfinite(out).all():
            raise InputError("image contains NaN or infinite values")
    else:
        np.divide(grey, np.float32(65535), out=out[0], casting="same_kind")
        np.clip(out, 0.0, 1.0, out=out)
    if channels == "rgb":
        return np.repeat(out, 3, axis=0)
    return out


def _rgb_planes(image: Image.Image) -> list[np.ndarray]:
    """Pillow's R, G, B of ``image`` as three ``(H, W)`` uint8 arrays (alpha dropped)."""
    mode = image.mode
    if mode not in _RGB_FIRST:
        # A palette with transparency goes through RGBA: the same R, G, B as a conversion to
        # RGB, without Pillow's warning about transparency "expressed in bytes".
        target = "RGBA" if mode in _PALETTE else "RGB"
        try:
            image = image.convert(target)
        except ValueError as exc:
            raise InputError(f"unsupported image mode {mode}") from exc
    return [np.asarray(band) for band in image.split()[:3]]


def fit(array: np.ndarray, *, size: int = 224, patch: int = 16) -> np.ndarray:
    """Fit an image to the patch grid (SPEC §2.5).

    Parameters
    ----------
    array : (C, H, W) ndarray
        The image channels (float32 is used as is; other dtypes are cast).
    size : int, default 224
        Side ``S`` of the output square; 0 keeps the native size.
    patch : int, default 16
        Side ``P`` of a patch; must divide ``size``.

    Returns
    -------
    (C, S, S) ndarray of float32
        A new array. With ``size=0``: ``(C, H', W')``, the centred crop to whole patches.

    Raises
    ------
    UsageError
        Bad ``size`` or ``patch`` (see :func:`check_geometry`).
    InputError
        With ``size=0``, an image smaller than one patch.
    ValueError
        ``array`` is not three-dimensional.

    Notes
    -----
    With ``m = min(w, h)``, the centred square is the box

    .. math:: ((w - m)/2,\\ (h - m)/2,\\ (w + m)/2,\\ (h + m)/2)

    in float pixel coordinates, resized per channel by
    ``Image.fromarray(channel).resize((S, S), Image.BILINEAR, box=box)`` on a mode ``F`` image.
    Pillow reads only the box (and the filter's reach around it), so no image larger than S×S is
    ever built, whatever the aspect ratio.

    With ``size=0`` the image keeps its size and is cropped to ``H' = P·⌊h/P⌋`` rows and
    ``W' = P·⌊w/P⌋`` columns starting at row ``(h − H')//2`` and column ``(w − W')//2``.
    """
    check_geometry(size, patch=patch)
    if array.ndim != 3:
        raise ValueError(f"array must be (C, H, W), got shape {array.shape}")
    count, height, width = array.shape
    if size == 0:
        if height < patch or width < patch:
            raise InputError(f"image is {width}×{height}, smaller than one {patch}×{patch} patch")
        rows, cols = height - height % patch, width - width % patch
        top, left = (height - rows) // 2, (width - cols) // 2
        return np.array(array[:, top : top + rows, left : left + cols], dtype=np.float32)
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    out = np.empty((count, size, size), dtype=np.float32)
    for channel in range(count):
        plane = np.ascontiguousarray(array[channel], dtype=np.float32)
        resized = Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR, box=box)
        out[channel] = np.asarray(resized)
    return out


def load_image(
    source: Source,
    *,
    size: int = 224,
    patch: int = 16,
    channels: str = "luma",
    invert: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LoadedImage:
    """Load one image file and fit it to the patch grid (SPEC §2.3–2.5).

    Parameters
    ----------
    source : str, path-like or binary file object
        The file to read.
    size : int, default 224
        Side ``S`` of the fitted square; 0 keeps the native size, cropped to whole patches.
    patch : int, default 16
        Side ``P`` of a patch; must divide ``size``.
    channels : {"luma", "rgb"}, default "luma"
        One luma channel, or R, G and B.
    invert : bool, default False
        Replace each value ``v`` by ``1 − v`` (after the luma conversion, before fitting).
    max_pixels : int, default 100,000,000
        Refuse larger images, judged from the header before decoding.

    Returns
    -------
    LoadedImage
        ``pixels`` as a ``(C, S, S)`` float32 array, and the original width and height after EXIF
        orientation.

    Raises
    ------
    UsageError
        A bad parameter; checked before the file is opened.
    InputError
        The file cannot be used; the message is a short reason.

    See Also
    --------
    decode, to_array, fit : the steps, in this order.
    """
    check_geometry(size, patch=patch)
    _check_channels(channels)
    _check_max_pixels(max_pixels)
    image = decode(source, max_pixels=max_pixels)
    width, height = image.size
    levels = _luma_levels(image) if channels == "luma" else _rgb_levels(image)
    if levels is not None:
        pixels = np.concatenate(
            [_fit_levels(band, size=size, patch=patch, invert=invert) for band in levels]
        )
        return LoadedImage(pixels=pixels, width=width, height=height)
    array = to_array(image, channels=channels)
    del image
    if invert:
        np.subtract(np.float32(1), array, out=array)
    return LoadedImage(pixels=fit(array, size=size, patch=patch), width=width, height=height)


def _rgb_levels(image: Image.Image) -> list[Image.Image] | None:
    """R, G, B of an 8-bit image as three Pillow mode ``F`` images (0–255), or None.

    Grey images give their grey band three times; 16/32-bit and float images give None.
    """
    mode = image.mode
    if mode in _GREY_HIGH or mode == "F":
        return None
    try:
        if mode in _GREY_8BIT:
            grey = image.getchannel(0) if mode == "LA" else image
            return [grey.convert("F")] * 3
        if mode not in _RGB_FIRST:
            image = image.convert("RGBA" if mode in _PALETTE else "RGB")
        return [band.convert("F") for band in image.split()[:3]]
    except ValueError:
        return None  # to_array gives the reason


def _luma_levels(image: Image.Image) -> list[Image.Image] | None:
    """Luma of an 8-bit image as a (one) Pillow mode ``F`` image on the 0–255 scale, or None.

    The cheapest exact path: Pillow's ``convert("F")`` computes ``0.299 R + 0.587 G + 0.114 B``
    in floating point in one pass (within 6e-8 of the float64 value; a float32 sum of the
    planes is within 1.2e-7), with no split into planes and no numpy temporaries. None for
    16/32-bit and float images, which :func:`to_array` handles.
    """
    mode = image.mode
    try:
        if mode in _DIRECT_TO_F:
            return [image.convert("F")]
        if mode == "LA":
            return [image.getchannel(0).convert("F")]
        if mode in _GREY_HIGH or mode == "F":
            return None
        return [image.convert("RGBA" if mode in _PALETTE else "RGB").convert("F")]
    except ValueError:
        return None  # to_array gives the reason


def _fit_levels(luma: Image.Image, *, size: int, patch: int, invert: bool) -> np.ndarray:
    """Fit a 0–255 luma image (SPEC §2.5), then scale to [0, 1] (or ``1 − v`` for invert).

    Without ``invert`` the scaling by 1/255 is done after the resize, on S×S values instead of
    the whole image: the box filter is linear, so the two orders agree to float32 rounding.
    ``invert`` is applied before fitting, as SPEC §2.4 orders it.
    """
    if invert:
        luma = luma.point(lambda v: v * (-1 / 255) + 1)
    width, height = luma.size
    if size == 0:
        if height < patch or width < patch:
            raise InputError(f"image is {width}×{height}, smaller than one {patch}×{patch} patch")
        rows, cols = height - height % patch, width - width % patch
        top, left = (height - rows) // 2, (width - cols) // 2
        fitted = luma.crop((left, top, left + cols, top + rows))
    else:
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
        fitted = luma.resize((size, size), Image.Resampling.BILINEAR, box=box)
    out = np.array(fitted, dtype=np.float32)[np.newaxis]
    if not invert:
        out *= np.float32(1 / 255)
    return out


def native_grid(
    source: Source, *, patch: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """The patch grid of ``source`` at its native size (``--size 0``), read from its header only.

    The EXIF orientation is applied to the size (a portrait photo stored sideways has its sides
    swapped); no pixel is decoded. InputError when the file cannot be read or is smaller than one
    patch.
    """
    _check_max_pixels(max_pixels)
    try:
        with _pillow_limit_lifted(), Image.open(source) as opened:
            width, height = opened.size
            if _orientation(opened) in (5, 6, 7, 8):
                width, height = height, width
    except _DECODE_ERRORS as exc:
        raise InputError(_reason(exc, source)) from exc
    if width * height > max_pixels or width < patch or height < patch:
        raise InputError(f"image is {width}×{height}: no patch grid")
    return height // patch, width // patch
