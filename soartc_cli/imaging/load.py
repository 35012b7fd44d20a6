"""Decoding an image and fitting it to the patch grid (SPEC §2.3–2.5).

This is the only module that opens images. The pipeline is::

    decode(source)            Pillow image: first frame, EXIF orientation applied, size checked
    → to_array(image)         (C, H, W) float32: luma, or R, G, B, in [0, 1] (F images: as stored)
    → invert (optional)       v → 1 − v
    → fit(array)              (C, S, S) float32: centred square resized by Pillow's bilinear filter

and :func:`load_image` runs it for one file, Pillow image or array. Two private functions own
the rules every path shares: :func:`_crop_box` (which part of the image becomes the fitted
square, SPEC §2.5) and :func:`_as_rgb` (how colour modes become R, G, B, SPEC §2.4).
:func:`load_image` takes a faster route for 8-bit images (Pillow's own float conversion, and
the scale to [0, 1] after the resize), equal to the plain steps to float32 rounding.

Every way a file can be unusable becomes an :class:`~soartc_cli.errors.InputError` with a short
reason; bad parameters raise :class:`~soartc_cli.errors.UsageError`. Files are opened only if
they are regular files (never a FIFO, device or socket, which could block or have side
effects), and decoded only by the Pillow plugins of the formats SPEC §2.1 names, so that no
external program (Ghostscript for EPS, …) ever runs on a user's file; the Pillow state that
guards this lives in :mod:`soartc_cli.imaging.pillow`.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from soartc_cli.errors import InputError, UsageError
from soartc_cli.imaging import pillow
from soartc_cli.imaging.files import NotRegularFile, open_regular
from soartc_cli.imaging.pillow import FORMATS

__all__ = [
    "CHANNELS",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "LUMA_WEIGHTS",
    "MAX_FIT_BYTES",
    "MAX_SIZE",
    "LoadedImage",
    "check_geometry",
    "decode",
    "fit",
    "largest_size",
    "load_image",
    "to_array",
    "working_bytes",
]

#: Values of the ``channels`` parameter: one luma channel, or R, G and B.
CHANNELS: tuple[str, ...] = ("luma", "rgb")
#: Default for ``max_pixels`` (SPEC §2.3).
DEFAULT_MAX_PIXELS = 100_000_000
#: ITU-R BT.601 luma weights of R, G and B (SPEC §2.4).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
#: Largest fit size ``S`` (:func:`check_geometry`), and largest patch with ``size=0``.
MAX_SIZE = 16384
#: Largest fitted image, ``C · S² · 4`` bytes of float32 (1 GiB: ``S = 16384`` luma, 9459 rgb;
#: :func:`largest_size`).
MAX_FIT_BYTES = 2**30
# The weights with the 1/255 scale folded in: luma is three multiply-adds on the 8-bit levels.
_LUMA_PER_LEVEL = (np.asarray(LUMA_WEIGHTS, dtype=np.float64) / 255.0).astype(np.float32)
_LUMA_PER_16BIT = (np.asarray(LUMA_WEIGHTS, dtype=np.float64) / 65535.0).astype(np.float32)
_LUMA_FLOAT = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
_GREY_8BIT = frozenset({"1", "L", "LA"})
_GREY_HIGH = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
_RGB_FIRST = frozenset({"RGB", "RGBA", "RGBX"})
_PALETTE = frozenset({"P", "PA"})
#: Modes whose luma Pillow's convert("F") computes directly (the others go through RGB).
_DIRECT_TO_F = frozenset({"1", "L", "RGB", "RGBA", "RGBX"})
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
_SCALE_8BIT = np.float32(1 / 255)
# size=0 converts the crop in row bands of about this many pixels (4 MiB of float32 each).
_CHUNK_PIXELS = 1 << 20
# What a file that is not a regular file is, for the reason given (st_mode → words).
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


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_geometry(size: int, *, patch: int, channels: str = "luma") -> None:
    """Validate the fit size and the patch size.

    Parameters
    ----------
    size : int
        Side ``S`` of the fitted square, or 0 for the native size.
    patch : int
        Side ``P`` of a patch; must divide ``size``.
    channels : {"luma", "rgb"}, default "luma"
        The channels kept, for the memory budget of the fitted image.

    Raises
    ------
    UsageError
        ``patch < 1``; ``size < 0``; ``size`` larger than :data:`MAX_SIZE` (16384); ``patch``
        larger than ``size`` (or than :data:`MAX_SIZE` with ``size=0``); ``size`` not a
        multiple of ``patch``; or a fitted image of more than :data:`MAX_FIT_BYTES` (1 GiB) of
        float32, ``C · S² · 4`` bytes with ``C`` = 1 (luma) or 3 (rgb).
    """
    if not _is_whole(patch) or patch < 1:
        raise UsageError(f"patch must be a positive whole number, got {patch!r}")
    if not _is_whole(size) or size < 0:
        raise UsageError(f"size must be 0 (native size) or a positive whole number, got {size!r}")
    _check_channels(channels)
    if size > MAX_SIZE:
        raise UsageError(
            f"size must be at most {MAX_SIZE}, got {size} (size 0 keeps the native size)"
        )
    if size and patch > size:
        raise UsageError(f"patch must not be larger than size: patch {patch} > size {size}")
    if patch > MAX_SIZE:
        raise UsageError(f"patch must be at most {MAX_SIZE}, got {patch}")
    if size % patch:
        raise UsageError(f"patch must divide size: {size} is not a multiple of {patch}")
    count = 1 if channels == "luma" else 3
    if count * size * size * 4 > MAX_FIT_BYTES:
        largest = largest_size(channels)
        raise UsageError(
            f"size {size} with channels {channels!r} needs "
            f"{count * size * size * 4 / 2**30:.2f} GiB per image, more than "
            f"{MAX_FIT_BYTES / 2**30:g} GiB: use a size of at most {largest}"
        )


def largest_size(channels: str = "luma") -> int:
    """The largest ``size`` whose fitted image stays within :data:`MAX_FIT_BYTES` (and
    :data:`MAX_SIZE`): 16384 for luma, 9459 for rgb (a multiple of the patch must not exceed it)."""
    _check_channels(channels)
    count = 1 if channels == "luma" else 3
    return min(MAX_SIZE, math.isqrt(MAX_FIT_BYTES // (4 * count)))


def working_bytes(width: int, height: int, *, size: int, patch: int, channels: str) -> int:
    """Bytes of the fitted float32 image of a ``width × height`` image.

    Parameters
    ----------
    width, height : int
        The image size in pixels (after EXIF orientation), as read from the file header.
    size, patch, channels
        As for :func:`load_image`.

    Returns
    -------
    int
        ``4 · C · S²``, or ``4 · C · H' · W'`` with ``size=0`` (``H' = P⌊h/P⌋``,
        ``W' = P⌊w/P⌋``; 0 for an image smaller than one patch), with ``C`` = 1 for luma and
        3 for rgb.

    Raises
    ------
    UsageError
        Bad ``size``, ``patch`` or ``channels`` (:func:`check_geometry`), or a negative size.

    Notes
    -----
    With ``size=0``, :func:`load_image` holds this many bytes plus the decoded image (Pillow's
    1–4 bytes per pixel; 4 for RGB) plus a few MiB for one band of rows being converted; with
    ``size > 0`` the decoded image and one float32 copy of it (the box is resized from a float
    image). ``load_image(..., max_bytes=B)`` refuses images whose fitted pixels exceed ``B``,
    from the header, before decoding.
    """
    check_geometry(size, patch=patch, channels=channels)
    if not (_is_whole(width) and _is_whole(height)) or width < 0 or height < 0:
        raise UsageError(f"width and height must be whole numbers ≥ 0, got {width!r}, {height!r}")
    return _fit_bytes(width, height, size=size, patch=patch, channels=channels)


def _fit_bytes(width: int, height: int, *, size: int, patch: int, channels: str) -> int:
    count = 1 if channels == "luma" else 3
    if size:
        return 4 * count * size * size
    if width < patch or height < patch:
        return 0
    return 4 * count * (height - height % patch) * (width - width % patch)


@dataclass(frozen=True)
class _Budget:
    """``load_image``'s ``max_bytes``, with the geometry that turns a header into bytes."""

    max_bytes: int
    size: int
    patch: int
    channels: str

    def check(self, width: int, height: int) -> None:
        need = _fit_bytes(width, height, size=self.size, patch=self.patch, channels=self.channels)
        if need > self.max_bytes:
            raise InputError(
                f"image is {width}×{height}: its fitted pixels need {need / 2**20:.1f} MiB, "
                f"more than max_bytes {self.max_bytes / 2**20:.1f} MiB"
            )


def _check_channels(channels: str) -> None:
    if channels not in CHANNELS:
        raise UsageError(f"channels must be 'luma' or 'rgb', got {channels!r}")


def _check_max_pixels(max_pixels: int) -> None:
    if not _is_whole(max_pixels) or max_pixels < 1:
        raise UsageError(f"max_pixels must be a positive whole number, got {max_pixels!r}")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"image is {width}×{height} = {width * height} pixels, "
            f"more than --max-pixels {max_pixels}"
        )


def _is_path(source: object) -> bool:
    return isinstance(source, (str, bytes, os.PathLike))


def _open_regular(path: str | bytes | os.PathLike[str]) -> tuple[IO[bytes], int]:
    """Open ``path`` if it is a regular file (:func:`soartc_cli.imaging.files.open_regular`):
    ``(file, size)``; anything else is an InputError saying what it is."""
    try:
        file, status = open_regular(path)
    except NotRegularFile as exc:
        raise InputError("is a directory" if exc.kind == "a directory"
                         else f"not a regular file ({exc.kind})") from None  # fmt: skip
    return file, status.st_size


def _is_empty(source: Source) -> bool:
    try:
        if _is_path(source):
            return os.stat(source).st_size == 0
        position = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(position)
        return end == 0
    except (OSError, ValueError, AttributeError):
        return False


def _is_link(source: Source) -> bool:
    return _is_path(source) and os.path.islink(source)


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
        if _is_empty(source):
            return "empty file"
        return "not a supported image (not PNG, JPEG, BMP, GIF, TIFF or WebP data)"
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
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block is not a broken image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(image: Image.Image, *, max_pixels: int, budget: _Budget | None) -> Image.Image:
    """Check the size of an opened image, load its pixels and apply its EXIF orientation."""
    _check_pixels(image.width, image.height, max_pixels)
    if budget is not None:  # the crop's bytes do not change when the image is turned
        budget.check(image.width, image.height)
    if image.format == "TIFF":
        with pillow.libtiff_quiet():
            image.load()
    else:
        image.load()
    if _orientation(image) == 1:
        return image
    # Turned as Pillow turns it (a new image: a caller's own is never changed).
    return ImageOps.exif_transpose(image)


def decode(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the first frame of an image file, upright.

    Parameters
    ----------
    source : str, path-like or binary file object
        The file to read. A path must name a regular file (links are followed). A file object
        must be seekable; Pillow reads it from the start, and it is left open.
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
        not a regular file (a FIFO, device or socket), empty, not a PNG, JPEG, BMP, GIF, TIFF or
        WebP image, truncated, corrupt, or more than ``max_pixels`` pixels.
    UsageError
        ``max_pixels`` is not a positive whole number.

    Notes
    -----
    Only the Pillow plugins of :data:`FORMATS` are tried, whatever the file's name or content:
    an EPS, PDF or PSD file named ``x.png`` is "not a supported image", and never reaches an
    external interpreter such as Ghostscript. A path is opened non-blocking and checked to be
    a regular file both before and after opening, so a FIFO, a device (``/dev/zero``) or a
    socket is refused at once instead of blocking or reading forever.

    Pillow's own decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is lifted only while
    this function runs, since ``max_pixels`` replaces it; ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
    is left False, so truncated files fail. libtiff's messages on standard error are turned off
    while a TIFF decodes (its failures still fail). An EXIF block that cannot be parsed is
    ignored (the image is used as stored) rather than refusing a readable image.
    """
    _check_max_pixels(max_pixels)
    return _decode(source, max_pixels=max_pixels, budget=None)


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[Image.Image]:
    """``source`` opened by Pillow (lazily: the header read) as every reader here opens it: a
    path only when it is a regular file, the plugins of :data:`FORMATS` only, Pillow's own pixel
    limit lifted (``max_pixels`` replaces it). Errors are InputErrors with the reason."""
    try:
        file, length = _open_regular(source) if _is_path(source) else (source, None)
        try:
            if length == 0:
                raise InputError("empty file")
            with pillow.limit_lifted, Image.open(file, formats=pillow.formats()) as opened:
                yield opened
        finally:
            if file is not source:
                file.close()
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        raise InputError(_reason(exc, source)) from exc


def _decode(source: Source, *, max_pixels: int, budget: _Budget | None) -> Image.Image:
    with _opened(source) as opened:
        image = _upright(opened, max_pixels=max_pixels, budget=budget)
    # Leaving the with-block closed the file; the loaded pixels stay in memory.
    if image.width < 1 or image.height < 1:
        raise InputError("image has no pixels")
    return image


def _luma(
    red: np.ndarray, green: np.ndarray, blue: np.ndarray, *, weights: np.ndarray = _LUMA_PER_LEVEL
) -> np.ndarray:
    """``(H, W)`` R, G, B → ``(1, H, W)`` float32 ``w_R R + w_G G + w_B B``.

    The default weights are the luma weights over 255 (8-bit levels to [0, 1]).
    """
    weight_r, weight_g, weight_b = weights
    # Planar multiply-adds on Pillow's separate bands: faster than a (H·W, 3) @ (3,) product
    # (no BLAS for uint8, and a stride-3 read), and only one float temporary however big.
    out = np.multiply(red, weight_r, dtype=np.float32)[np.newaxis]
    term = np.multiply(green, weight_g, dtype=np.float32)
    out[0] += term
    np.multiply(blue, weight_b, out=term)
    out[0] += term
    return out


def _as_rgb(image: Image.Image) -> Image.Image:
    """SPEC §2.4's colour rule: ``image`` in a mode whose first three bands are R, G, B.

    RGB, RGBA and RGBX are used as they are; palette images go through RGBA (the same R, G, B
    as a conversion to RGB, without Pillow's warning about transparency "expressed in bytes"),
    and every other colour mode (CMYK, YCbCr, LAB, HSV, …) through Pillow's conversion to RGB.
    Alpha is never composited: callers take the first three bands.
    """
    mode = image.mode
    if mode in _RGB_FIRST:
        return image
    try:
        return image.convert("RGBA" if mode in _PALETTE else "RGB")
    except ValueError as exc:
        raise InputError(f"unsupported image mode {mode}") from exc


def _grey_band(image: Image.Image) -> Image.Image:
    """The grey band of a grey image (``LA``: alpha dropped)."""
    return image.getchannel(0) if image.mode == "LA" else image


def _is_grey(mode: str) -> bool:
    return mode in _GREY_8BIT or mode in _GREY_HIGH or mode == "F"


def _grey_channels(grey: np.ndarray, *, mode: str, channels: str) -> np.ndarray:
    """The ``(H, W)`` values of a grey image of mode ``mode`` → ``(C, H, W)`` float32 in [0, 1]."""
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
    if _is_grey(image.mode):
        grey = np.asarray(_grey_band(image))
        return _grey_channels(grey, mode=image.mode, channels=channels)
    planes = [np.asarray(band) for band in _as_rgb(image).split()[:3]]
    if channels == "luma":
        return _luma(*planes)
    out = np.empty((3, image.height, image.width), dtype=np.float32)
    for channel, plane in enumerate(planes):
        np.divide(plane, np.float32(255), out=out[channel])
    return out


def _crop_box(width: int, height: int, *, size: int, patch: int) -> tuple:
    """The part of a ``width × height`` image that becomes the fitted image (SPEC §2.5).

    Every path of this module takes its box from here: :func:`fit`, and :func:`load_image`'s
    routes for 8-bit and for other images.

    Returns
    -------
    tuple
        ``size > 0``: the centred square ``((w − m)/2, (h − m)/2, (w + m)/2, (h + m)/2)``,
        ``m = min(w, h)``, in float pixel coordinates, for Pillow's ``resize(box=…)``.
        ``size == 0``: ``(left, top, right, bottom)`` in whole pixels, the centred crop to whole
        patches, for ``Image.crop`` or array slicing.

    Raises
    ------
    InputError
        ``size == 0`` and the image is smaller than one patch.
    """
    if size == 0:
        if height < patch or width < patch:
            raise InputError(f"image is {width}×{height}, smaller than one {patch}×{patch} patch")
        rows, cols = height - height % patch, width - width % patch
        top, left = (height - rows) // 2, (width - cols) // 2
        return (left, top, left + cols, top + rows)
    side = min(width, height)
    return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)


def _resize_planes(array: np.ndarray, *, box: tuple, size: int) -> np.ndarray:
    """Pillow's bilinear resize of ``box`` of each ``(C, H, W)`` channel: ``(C, S, S)`` float32."""
    out = np.empty((array.shape[0], size, size), dtype=np.float32)
    for channel in range(array.shape[0]):
        plane = np.ascontiguousarray(array[channel], dtype=np.float32)
        resized = Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR, box=box)
        out[channel] = np.asarray(resized)
    return out


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
    _, height, width = array.shape
    box = _crop_box(width, height, size=size, patch=patch)
    if size == 0:
        left, top, right, bottom = box
        return np.array(array[:, top:bottom, left:right], dtype=np.float32)
    return _resize_planes(array, box=box, size=size)


def load_image(
    source: Source | Image.Image | np.ndarray,
    *,
    size: int = 224,
    patch: int = 16,
    channels: str = "luma",
    invert: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> LoadedImage:
    """Load one image and fit it to the patch grid (SPEC §2.3–2.5).

    Parameters
    ----------
    source : path, binary file object, PIL.Image.Image or array
        - a path (``str``, ``bytes``, path-like) or a binary file object: decoded by
          :func:`decode` (a regular file of a supported format);
        - a Pillow image, e.g. from a notebook: used as decoded (its current frame), with the
          same rules as a file: EXIF orientation, ``max_pixels``, modes;
        - an array (anything ``numpy.asarray`` takes), channels last: ``(H, W)`` grey,
          ``(H, W, 1)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA (alpha dropped).
          ``uint8`` values are divided by 255 and ``uint16`` by 65535, floats are used as they
          are, ``bool`` gives 0 or 1 (as Pillow's mode ``1``). A ``uint8`` array gives the same
          pixels as a PNG file of it.
    size : int, default 224
        Side ``S`` of the fitted square; 0 keeps the native size, cropped to whole patches.
    patch : int, default 16
        Side ``P`` of a patch; must divide ``size``.
    channels : {"luma", "rgb"}, default "luma"
        One luma channel, or R, G and B.
    invert : bool, default False
        Replace each value ``v`` by ``1 − v`` (after the luma conversion, before fitting).
    max_pixels : int, default 100,000,000
        Refuse larger images, judged from the header (or the size) before decoding.
    max_bytes : int, optional
        Refuse images whose fitted pixels would take more than this many bytes
        (:func:`working_bytes`: with ``size=0``, 4 bytes per channel and pixel of the crop),
        judged from the header before decoding. None (the default): no limit besides
        ``max_pixels``.

    Returns
    -------
    LoadedImage
        ``pixels`` as a ``(C, S, S)`` float32 array, and the original width and height after EXIF
        orientation.

    Raises
    ------
    UsageError
        A bad parameter, checked before the file is opened; or an array of another shape
        (``(H, W, 2)``, 1-D, 4-D, channels first, no pixels) or dtype (signed or 32/64-bit
        integers, complex, object, strings), named in the message; or a source of another type.
    InputError
        The image cannot be used; the message is a short reason.

    See Also
    --------
    decode, to_array, fit : the steps, in this order.

    Notes
    -----
    For 8-bit images the route is shorter than the plain steps, with the same result to
    float32 rounding: Pillow's ``convert("F")`` computes the luma (or takes a band) on the
    0–255 scale, the box is resized in Pillow, and the 1/255 scale is applied to the S×S
    result. With ``size=0`` the crop to whole patches is converted in bands of rows, so only
    the decoded image and the result are ever held whole (see :func:`working_bytes`): for a
    4000 × 4000 RGB photo, about 2.3 float32 planes at the peak (luma) instead of 5, and 4.2
    instead of 10 with ``channels="rgb"``.
    """
    check_geometry(size, patch=patch, channels=channels)
    _check_max_pixels(max_pixels)
    budget = None
    if max_bytes is not None:
        if not _is_whole(max_bytes) or max_bytes < 1:
            raise UsageError(f"max_bytes must be a positive whole number, got {max_bytes!r}")
        budget = _Budget(max_bytes, size, patch, channels)
    limits = {"max_pixels": max_pixels, "budget": budget}
    options = {"size": size, "patch": patch, "channels": channels, "invert": invert}
    if isinstance(source, Image.Image):
        return _fit_decoded([_from_pillow(source, **limits)], **options)
    if _is_path(source) or hasattr(source, "read"):
        return _fit_decoded([_decode(source, **limits)], **options)
    return _fit_array(_image_array(source), **limits, **options)


def _from_pillow(image: Image.Image, *, max_pixels: int, budget: _Budget | None) -> Image.Image:
    """A caller's Pillow image, loaded and upright (as :func:`decode` leaves a file's)."""
    try:
        image = _upright(image, max_pixels=max_pixels, budget=budget)
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        raise InputError(_reason(exc, image)) from exc
    if image.width < 1 or image.height < 1:
        raise InputError("image has no pixels")
    return image


def _fit_decoded(
    held: list[Image.Image], *, size: int, patch: int, channels: str, invert: bool
) -> LoadedImage:
    """Fit a decoded image; ``held`` holds the only reference to it, dropped once converted."""
    image = held.pop()
    width, height = image.size
    box = _crop_box(width, height, size=size, patch=patch)
    if size == 0:
        pixels = _native(image, box=box, channels=channels, invert=invert)
        return LoadedImage(pixels=pixels, width=width, height=height)
    levels = _levels(image, channels=channels)
    if levels is None:
        array = _grey_channels(np.asarray(image), mode=image.mode, channels=channels)
        del image
        pixels = _finish(array, box=box, size=size, invert=invert)
        return LoadedImage(pixels=pixels, width=width, height=height)
    del image
    pixels = np.empty((1 if channels == "luma" else 3, size, size), dtype=np.float32)
    for channel in range(len(levels)):
        level, levels[channel] = levels[channel].convert("F"), None
        _fit_levels([level], box=box, size=size, invert=invert, out=pixels[channel])
    pixels[len(levels) :] = pixels[0]  # a grey image's one band, as R, G and B
    return LoadedImage(pixels=pixels, width=width, height=height)


def _levels(image: Image.Image, *, channels: str) -> list[Image.Image] | None:
    """8-bit Pillow images whose ``convert("F")`` gives each channel on the 0–255 scale.

    Luma: the image itself for the modes whose conversion to ``F`` is the luma (or the grey
    level), else the grey band (``LA``) or the RGB image (:func:`_as_rgb`). rgb: R, G and B, or a
    grey image's one band. None for 16/32-bit and float images.
    """
    mode = image.mode
    if mode in _GREY_HIGH or mode == "F":
        return None
    if channels == "luma":
        if mode in _DIRECT_TO_F:
            return [image]
        return [_grey_band(image) if mode == "LA" else _as_rgb(image)]
    if mode in _GREY_8BIT:
        return [_grey_band(image)]
    return list(_as_rgb(image).split()[:3])


def _native(image: Image.Image, *, box: tuple, channels: str, invert: bool) -> np.ndarray:
    """``size=0``: the crop ``box`` of ``image`` as ``(C, H', W')`` float32, in row bands.

    Every step is per pixel, so converting bands of about :data:`_CHUNK_PIXELS` pixels gives
    the same values as converting the whole crop at once, while the only full-size arrays are
    the decoded image and the result: the float copies and byte strings of a conversion exist
    for one band at a time.
    """
    left, top, right, bottom = box
    count = 1 if channels == "luma" else 3
    out = np.empty((count, bottom - top, right - left), dtype=np.float32)
    step = max(1, _CHUNK_PIXELS // (right - left))
    for start in range(top, bottom, step):
        stop = min(bottom, start + step)
        band = (left, start, right, stop)
        part = image if band == (0, 0, *image.size) else image.crop(band)
        rows = out[:, start - top : stop - top]
        levels = _levels(part, channels=channels)
        if levels is None:
            values = _grey_channels(np.asarray(part), mode=part.mode, channels=channels)
            if invert:
                np.subtract(np.float32(1), values, out=values)
            rows[...] = values
            continue
        del part
        for channel in range(len(levels)):
            level, levels[channel] = levels[channel].convert("F"), None
            _fit_levels([level], box=None, size=0, invert=invert, out=rows[channel])
        rows[len(levels) :] = rows[0]
    return out


def _finish(array: np.ndarray, *, box: tuple, size: int, invert: bool) -> np.ndarray:
    """Invert (in place) and resize a fresh ``(C, H, W)`` float32 array, already cropped for
    ``size=0``."""
    if invert:
        np.subtract(np.float32(1), array, out=array)
    return array if size == 0 else _resize_planes(array, box=box, size=size)


def _fit_levels(
    held: list[Image.Image], *, box: tuple | None, size: int, invert: bool, out: np.ndarray
) -> None:
    """Fit a mode ``F`` image on the 0–255 scale (SPEC §2.5) into ``out``, scaled to [0, 1].

    Without ``invert`` the scaling by 1/255 is done after the resize, on S×S values instead of
    the whole image: the box filter is linear, so the two orders agree to float32 rounding.
    ``invert`` is applied before fitting, as SPEC §2.4 orders it. ``held`` holds the only
    reference to the image, dropped as soon as its bytes are read.
    """
    level = held.pop()
    if invert:
        level = level.point(lambda v: v * (-1 / 255) + 1)
    if size:
        level = level.resize((size, size), Image.Resampling.BILINEAR, box=box)
    data = level.tobytes()
    del level
    values = np.frombuffer(data, dtype=np.float32).reshape(out.shape)
    if invert:
        np.copyto(out, values)
    else:
        np.multiply(values, _SCALE_8BIT, out=out)


def _image_array(source: object) -> np.ndarray:
    """``source`` as a valid ``(H, W)`` or ``(H, W, 3|4)`` image array, or a UsageError."""
    try:
        array = np.asarray(source)
    except Exception as exc:
        raise UsageError(
            f"source must be a path, a binary file, a PIL image or an array, "
            f"got {type(source).__name__}"
        ) from exc
    shape, dtype = array.shape, array.dtype
    if array.ndim == 0:  # None, a number, any other object
        raise UsageError(
            f"source must be a path, a binary file, a PIL image or an array, "
            f"got {type(source).__name__}"
        )
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    if not dtype.isnative:  # big-endian data from a file: the same values in native order
        dtype = dtype.newbyteorder("=")
        array = array.astype(dtype)
    good_dtype = dtype == np.bool_ or dtype == np.uint8 or dtype == np.uint16 or dtype.kind == "f"
    good_shape = array.ndim == 2 or (array.ndim == 3 and shape[2] in (3, 4))
    if not (good_dtype and good_shape) or array.size == 0:
        hint = ""
        if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4):
            hint = " (channels first? pass array.transpose(1, 2, 0))"
        raise UsageError(
            "an image array must be H×W (grey) or H×W×3, H×W×4 (RGB, RGBA) of uint8, uint16, "
            f"float or bool, with at least one pixel; got shape {shape} dtype {dtype}{hint}"
        )
    return array


def _fit_array(
    array: np.ndarray,
    *,
    size: int,
    patch: int,
    channels: str,
    invert: bool,
    max_pixels: int,
    budget: _Budget | None,
) -> LoadedImage:
    """Fit a validated ``(H, W)`` or ``(H, W, 3|4)`` image array (see :func:`load_image`)."""
    height, width = array.shape[:2]
    _check_pixels(width, height, max_pixels)
    if budget is not None:
        budget.check(width, height)
    options = {"size": size, "patch": patch, "channels": channels, "invert": invert}
    if array.dtype == np.bool_:
        array = np.multiply(array, np.uint8(255), dtype=np.uint8)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    if array.dtype == np.uint8 or array.ndim == 2:
        # L, RGB, RGBA, I;16 or F: exactly the route of a file with these pixels.
        return _fit_decoded([Image.fromarray(array)], **options)
    # R, G, B of uint16 or float: no Pillow mode holds them.
    box = _crop_box(width, height, size=size, patch=patch)
    if size == 0:
        left, top, right, bottom = box
        array = array[top:bottom, left:right]
    planes = [array[:, :, channel] for channel in range(3)]
    if array.dtype == np.uint16:
        weights, scale = _LUMA_PER_16BIT, np.float32(1 / 65535)
    else:
        weights, scale = _LUMA_FLOAT, np.float32(1)
        if not all(np.isfinite(plane).all() for plane in planes):
            raise InputError("image contains NaN or infinite values")
    if channels == "luma":
        values = _luma(*planes, weights=weights)
    else:
        values = np.empty((3, *planes[0].shape), dtype=np.float32)
        for channel, plane in enumerate(planes):
            np.multiply(plane, scale, out=values[channel], dtype=np.float32)
    return LoadedImage(
        pixels=_finish(values, box=box, size=size, invert=invert), width=width, height=height
    )


def native_grid(
    source: Source, *, patch: int, max_pixels: int = DEFAULT_MAX_PIXELS, orient: bool = True
) -> tuple[int, int]:
    """The patch grid of ``source`` at its native size (``--size 0``), read from its header only.

    The EXIF orientation is applied to the size (a portrait photo stored sideways has its sides
    swapped); no pixel is decoded. The file is opened as :func:`decode` opens it (regular files,
    the formats of :data:`FORMATS` only). InputError when the file cannot be read or is smaller
    than one patch.

    ``orient=False`` skips the EXIF orientation, which Pillow may only find by decoding the whole
    file (a PNG whose eXIf chunk follows its pixels): the number of patches is the same either
    way, which is all a memory budget needs.
    """
    _check_max_pixels(max_pixels)
    with _opened(source) as opened:
        width, height = opened.size
        if orient and _orientation(opened) in (5, 6, 7, 8):
            width, height = height, width
    if width * height > max_pixels or width < patch or height < patch:
        raise InputError(f"image is {width}×{height}: no patch grid")
    return height // patch, width // patch
