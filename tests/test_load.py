"""Tests of soartc_cli.imaging.load: decoding every mode, fitting, and every way a file can be bad.

Each image is written by the test into tmp_path (or memory) and compared with an independent
numpy computation of the SPEC §2.3–2.5 formulas.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageFile

from soartc_cli.errors import InputError, UsageError
from soartc_cli.imaging import load
from soartc_cli.imaging.load import (
    LoadedImage,
    check_geometry,
    decode,
    fit,
    load_image,
    to_array,
    working_bytes,
)

# float32 arithmetic against float64 references: a few float32 ulps of values in [0, 1].
TOL = {"rtol": 0, "atol": 2e-6}


# --- independent references ------------------------------------------------------------------


def ref_luma(rgb: np.ndarray) -> np.ndarray:
    """SPEC §2.4 in float64: Y = 0.299 R + 0.587 G + 0.114 B on channels / 255."""
    rgb = rgb[..., :3].astype(np.float64) / 255.0
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def bilinear_weights(in_size: int, out_size: int, lo: float, hi: float) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's bilinear resampling of the interval [lo, hi).

    A plain loop over Pillow's published algorithm (Resample.c ``precompute_coeffs``): a
    triangle filter of support 1, widened by the scale when shrinking, centred on each output
    pixel's centre, cut to the image, normalised to sum 1.
    """
    scale = (hi - lo) / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out_size, in_size))
    for out in range(out_size):
        center = lo + (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        for x in range(first, last):
            distance = abs((x - center + 0.5) / filterscale)
            weights[out, x] = max(0.0, 1.0 - distance)
        total = weights[out].sum()
        if total:
            weights[out] /= total
    return weights


def plain_fit(plane: np.ndarray, size: int) -> np.ndarray:
    """SPEC §2.5 for one (h, w) channel in float64: the centred square, bilinear, to size×size."""
    height, width = plane.shape
    side = min(width, height)
    rows = bilinear_weights(height, size, (height - side) / 2, (height + side) / 2)
    cols = bilinear_weights(width, size, (width - side) / 2, (width + side) / 2)
    return rows @ plane.astype(np.float64) @ cols.T


def spec_fit(plane: np.ndarray, size: int) -> np.ndarray:
    """SPEC §2.5 written literally: Pillow's resize of a mode F image with the centred box."""
    height, width = plane.shape
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    image = Image.fromarray(plane.astype(np.float32), mode="F")
    return np.asarray(image.resize((size, size), Image.BILINEAR, box=box))


def native(path, **options) -> np.ndarray:
    """The (C, H, W) float32 array of a file, before fitting."""
    return to_array(decode(path), **options)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture
def rgb_array(rng) -> np.ndarray:
    return rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


# --- modes -------------------------------------------------------------------------------------


def test_grey_8bit(tmp_path, rng):
    grey = rng.integers(0, 256, size=(40, 30), dtype=np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    out = native(path)
    assert out.shape == (1, 40, 30) and out.dtype == np.float32
    assert_allclose(out[0], grey / 255.0, **TOL)


def test_rgb_luma_is_float_not_pillow_integer_l(tmp_path, rgb_array):
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(path)
    out = native(path)[0]
    assert_allclose(out, ref_luma(rgb_array), **TOL)
    rounded = np.asarray(Image.fromarray(rgb_array).convert("L")) / 255.0
    assert np.abs(out - rounded).max() > 1e-3  # Pillow's rounded "L" is not what the spec asks


def test_rgba_alpha_dropped_not_composited(tmp_path, rgb_array, rng):
    rgba = np.dstack([rgb_array, rng.integers(0, 256, size=rgb_array.shape[:2], dtype=np.uint8)])
    rgba[0, 0] = (200, 100, 50, 0)  # fully transparent, but the colour counts
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = native(path)[0]
    assert_allclose(out, ref_luma(rgba[..., :3]), **TOL)
    assert out[0, 0] == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency(tmp_path, rng, suffix, recwarn):
    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, size=(20, 24), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    path = tmp_path / f"palette{suffix}"
    if suffix == ".png":  # several alpha values: transparency "expressed in bytes"
        image.save(path, transparency=bytes(range(0, 256, 16)))
    else:
        image.save(path, transparency=3)
    assert Image.open(path).mode == "P"
    out = native(path)[0]
    assert_allclose(out, ref_luma(palette[indices]), **TOL)
    assert not [w for w in recwarn if "Transparency" in str(w.message)]


def test_cmyk_jpeg_converted_by_pillow(tmp_path, rng):
    cmyk = rng.integers(0, 256, size=(32, 32, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, mode="CMYK").save(path, quality=95)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
        rgb = np.asarray(stored.convert("RGB"))
    assert_allclose(native(path)[0], ref_luma(rgb), **TOL)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB", "RGBX", "RGBa", "PA"])
def test_other_colour_modes_go_through_pillows_rgb(rgb_array, mode):
    image = Image.fromarray(rgb_array).convert("RGBA" if mode in ("RGBa", "PA") else "RGB")
    if mode == "PA":
        image = image.convert("P").convert("PA")
    else:
        image = image.convert(mode)
    expected = np.asarray(image.convert("RGBA" if mode == "PA" else "RGB"))
    assert_allclose(to_array(image)[0], ref_luma(expected), **TOL)
    rgb = expected[..., :3].transpose(2, 0, 1) / 255.0
    assert_allclose(to_array(image, channels="rgb"), rgb, **TOL)


def test_unconvertible_mode_is_an_input_error():
    with pytest.raises(InputError, match=r"^unsupported image mode La$"):
        to_array(Image.new("La", (4, 4)))


def test_one_bit(tmp_path, rng):
    bits = rng.random((17, 23)) > 0.5
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"
    out = native(path)[0]
    assert_array_equal(out, bits.astype(np.float32))


def test_grey_16bit_png(tmp_path, rng):
    values = rng.integers(0, 65536, size=(30, 20), dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = native(path)[0]
    assert_allclose(out, values / 65535.0, **TOL)
    assert out[0, 0] == 0.0 and out[0, 1] == 1.0


def test_32bit_integer_clipped(tmp_path):
    values = np.array([[-5, 0, 100], [65535, 70000, 32768]], dtype=np.int32)
    path = tmp_path / "int32.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I"
    out = native(path)[0]
    assert_allclose(out, np.clip(values / 65535.0, 0, 1), **TOL)


def test_float_tiff_used_as_is(tmp_path, rng):
    values = rng.normal(0.5, 2.0, size=(12, 16)).astype(np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    assert Image.open(path).mode == "F"
    assert_array_equal(native(path)[0], values)  # outside [0, 1] too: "used as is"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_non_finite_is_input_error(tmp_path, bad):
    values = np.zeros((16, 16), dtype=np.float32)
    values[3, 4] = bad
    path = tmp_path / "nan.tif"
    Image.fromarray(values, mode="F").save(path)
    with pytest.raises(InputError, match="NaN or infinite"):
        load_image(path)


def test_grey_alpha(tmp_path, rng):
    la = rng.integers(0, 256, size=(10, 14, 2), dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    assert Image.open(path).mode == "LA"
    assert_allclose(native(path)[0], la[..., 0] / 255.0, **TOL)


def test_webp_lossless(tmp_path, rgb_array):
    path = tmp_path / "image.webp"
    Image.fromarray(rgb_array).save(path, lossless=True)
    assert_allclose(native(path)[0], ref_luma(rgb_array), **TOL)


def test_animated_gif_first_frame(tmp_path, rng):
    frames = [rng.integers(0, 256, size=(20, 20), dtype=np.uint8) for _ in range(3)]
    images = [Image.fromarray(frame).convert("P") for frame in frames]
    path = tmp_path / "anim.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=50, loop=0)
    with Image.open(path) as stored:
        assert stored.n_frames == 3
        first = ref_luma(np.asarray(stored.convert("RGB")))
        stored.seek(1)
        second = ref_luma(np.asarray(stored.convert("RGB")))
    out = native(path)[0]
    assert_allclose(out, first, **TOL)
    assert np.abs(out - second).max() > 0.1


def test_multipage_tiff_first_page(tmp_path, rng):
    pages = [rng.integers(0, 256, size=(16, 24), dtype=np.uint8) for _ in range(3)]
    path = tmp_path / "pages.tif"
    images = [Image.fromarray(page) for page in pages]
    images[0].save(path, save_all=True, append_images=images[1:])
    assert Image.open(path).n_frames == 3
    assert_allclose(native(path)[0], pages[0] / 255.0, **TOL)


def test_no_unclosed_files(tmp_path, rng):
    frames = [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "a.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "a.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("a.gif", "a.tif", "a.png"):
            load_image(tmp_path / name, size=16)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# EXIF orientation → how the stored pixels must be turned to stand upright.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90° clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, k=1),  # rotate 90° counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_png(tmp_path, rng, orientation):
    stored = rng.integers(0, 256, size=(20, 32), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    Image.fromarray(stored).save(path, exif=exif)
    image = decode(path)
    expected = UPRIGHT[orientation](stored)
    assert (image.height, image.width) == expected.shape
    assert_allclose(to_array(image)[0], expected / 255.0, **TOL)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg(tmp_path, rgb_array, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.JPG"
    Image.fromarray(rgb_array).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:  # the pixels as stored, without the orientation
        stored = ref_luma(np.asarray(raw.convert("RGB")))
    loaded = load_image(path, size=0, patch=16)
    assert (loaded.width, loaded.height) == (48, 64)  # stored 64 wide, 48 high: swapped
    assert loaded.pixels.shape == (1, 64, 48)
    assert_allclose(loaded.pixels[0], UPRIGHT[orientation](stored), **TOL)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_block_is_ignored(tmp_path, rgb_array):
    path = tmp_path / "odd_exif.jpg"
    Image.fromarray(rgb_array).save(path, exif=b"Exif\x00\x00MM\x00*garbage")
    assert load_image(path, size=16).pixels.shape == (1, 16, 16)


@pytest.mark.parametrize("name", ["UPPER.PNG", "photo.JPEG", "scan.TIFF", "x.Gif", "y.BMP"])
def test_upper_case_extensions(tmp_path, rgb_array, name):
    path = tmp_path / name
    Image.fromarray(rgb_array).save(
        path, format=Image.registered_extensions()[os.path.splitext(name)[1].lower()]
    )
    assert load_image(path, size=32).pixels.shape == (1, 32, 32)


def test_file_object_source(rgb_array):
    buffer = io.BytesIO()
    Image.fromarray(rgb_array).save(buffer, format="PNG")
    buffer.seek(0)
    loaded = load_image(buffer, size=0)
    assert_allclose(loaded.pixels[0], ref_luma(rgb_array), **TOL)
    assert not buffer.closed


# --- fit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(48, 64, 32), (64, 48, 32), (37, 50, 16), (3, 3, 32), (300, 201, 48), (33, 33, 224)],
)
def test_fit_matches_plain_bilinear_and_spec(rng, height, width, size):
    plane = rng.random((height, width)).astype(np.float32)
    out = fit(plane[np.newaxis], size=size, patch=16)
    assert out.shape == (1, size, size) and out.dtype == np.float32
    assert_allclose(out[0], plain_fit(plane, size), rtol=0, atol=1e-5)
    assert_array_equal(out[0], spec_fit(plane, size))


def test_fit_same_size_is_the_centred_crop(rng):
    plane = rng.random((3, 40, 32)).astype(np.float32)
    assert_array_equal(fit(plane, size=32, patch=16), plane[:, 4:36, :])


def test_fit_does_not_modify_input(rng):
    array = rng.random((3, 20, 30)).astype(np.float32)
    before = array.copy()
    fit(array, size=16, patch=8)
    fit(array, size=0, patch=8)
    assert_array_equal(array, before)


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    value=st.floats(0, 1, width=32),
)
def test_fit_keeps_a_constant_image_constant(height, width, value):
    plane = np.full((1, height, width), value, dtype=np.float32)
    assert_allclose(fit(plane, size=16, patch=4), value, rtol=1e-6, atol=1e-7)


def _spy_on_pillow(monkeypatch) -> list[tuple[str, tuple[int, int]]]:
    """Record the size of every image fit builds or resizes."""
    seen: list[tuple[str, tuple[int, int]]] = []
    real_resize, real_fromarray = Image.Image.resize, Image.fromarray

    def resize(self, size, *args, **kwargs):
        seen.append(("resize-source", self.size))
        result = real_resize(self, size, *args, **kwargs)
        seen.append(("resize-result", result.size))
        return result

    def fromarray(obj, *args, **kwargs):
        result = real_fromarray(obj, *args, **kwargs)
        seen.append(("fromarray", result.size))
        return result

    monkeypatch.setattr(Image.Image, "resize", resize)
    monkeypatch.setattr(Image, "fromarray", fromarray)
    return seen


@pytest.mark.parametrize("shape", [(20000, 1), (1, 20000)])
def test_extreme_aspect_ratio_builds_no_big_square(tmp_path, monkeypatch, rng, shape):
    grey = rng.integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "thin.png"
    Image.fromarray(grey).save(path)
    seen = _spy_on_pillow(monkeypatch)
    loaded = load_image(path, size=224)
    assert (loaded.height, loaded.width) == shape
    assert loaded.pixels.shape == (1, 224, 224)
    assert seen, "fit did not go through Pillow's resize"
    for what, (width, height) in seen:
        # Nothing bigger than the image itself or the S×S output: never a 20000×20000 square.
        assert width * height <= max(20000, 224 * 224), (what, width, height)
    assert_allclose(loaded.pixels[0], plain_fit(grey / 255.0, 224), rtol=0, atol=1e-5)


def test_tiny_image(tmp_path):
    grey = np.array([[0, 128, 255], [10, 20, 30], [255, 255, 0]], dtype=np.uint8)
    path = tmp_path / "tiny.png"
    Image.fromarray(grey).save(path)
    loaded = load_image(path, size=32, patch=16)
    assert loaded.pixels.shape == (1, 32, 32) and (loaded.width, loaded.height) == (3, 3)
    assert_allclose(loaded.pixels[0], plain_fit(grey / 255.0, 32), rtol=0, atol=1e-5)
    with pytest.raises(InputError, match=r"3×3, smaller than one 16×16 patch"):
        load_image(path, size=0, patch=16)
    assert_allclose(load_image(path, size=0, patch=3).pixels[0], grey / 255.0, **TOL)


def test_all_black(tmp_path):
    path = tmp_path / "black.jpg"
    Image.new("RGB", (50, 40)).save(path)
    assert_array_equal(load_image(path, size=32).pixels, 0.0)
    assert_array_equal(load_image(path, size=32, invert=True).pixels, 1.0)


def test_native_size_crops_to_whole_patches(tmp_path, rng):
    grey = rng.integers(0, 256, size=(37, 50), dtype=np.uint8)
    path = tmp_path / "odd.png"
    Image.fromarray(grey).save(path)
    loaded = load_image(path, size=0, patch=16)
    # 37 → 32 rows from (37 − 32)//2 = 2; 50 → 48 columns from (50 − 48)//2 = 1
    assert loaded.pixels.shape == (1, 32, 48)
    assert (loaded.width, loaded.height) == (50, 37)
    assert_allclose(loaded.pixels[0], grey[2:34, 1:49] / 255.0, **TOL)


def test_invert_before_fit(tmp_path, rgb_array):
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(path)
    plain = load_image(path, size=0).pixels
    inverted = load_image(path, size=0, invert=True).pixels
    assert_allclose(inverted, 1.0 - plain, **TOL)
    fitted = load_image(path, size=32, invert=True).pixels[0]
    assert_allclose(fitted, plain_fit(1.0 - ref_luma(rgb_array), 32), rtol=0, atol=1e-5)


def test_rgb_channels(tmp_path, rgb_array):
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(path)
    loaded = load_image(path, size=0, channels="rgb")
    assert loaded.pixels.shape == (3, 48, 64) and loaded.pixels.flags.c_contiguous
    assert_allclose(loaded.pixels, rgb_array.transpose(2, 0, 1) / 255.0, **TOL)
    fitted = load_image(path, size=16, channels="rgb", invert=True).pixels
    for channel in range(3):
        expected = plain_fit(1.0 - rgb_array[..., channel] / 255.0, 16)
        assert_allclose(fitted[channel], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("array", "scale"), [(np.uint8, 255.0), (np.uint16, 65535.0)])
def test_rgb_channels_of_grey_image_repeat_the_grey(tmp_path, rng, array, scale):
    grey = rng.integers(0, int(scale) + 1, size=(16, 16)).astype(array)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    pixels = load_image(path, size=0, channels="rgb").pixels
    assert pixels.shape == (3, 16, 16)
    for channel in range(3):
        assert_allclose(pixels[channel], grey / scale, **TOL)


def test_loaded_image_record(tmp_path, rgb_array):
    path = tmp_path / "rgb.jpg"
    Image.fromarray(rgb_array).save(path)
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert loaded.pixels.shape == (1, 224, 224) and loaded.pixels.dtype == np.float32
    assert (loaded.width, loaded.height) == (64, 48)
    assert 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
    with pytest.raises(AttributeError):
        loaded.width = 3  # frozen


# --- parameters --------------------------------------------------------------------------------


def test_check_geometry():
    check_geometry(224, patch=16)
    check_geometry(0, patch=7)
    with pytest.raises(UsageError, match="patch must divide size: 224 is not a multiple of 15"):
        check_geometry(224, patch=15)
    with pytest.raises(UsageError, match="patch must be a positive whole number, got 0"):
        check_geometry(224, patch=0)
    with pytest.raises(UsageError, match=r"size must be 0 .* got -16"):
        check_geometry(-16, patch=16)


def test_bad_parameters_are_usage_errors_before_opening(tmp_path):
    missing = tmp_path / "does-not-matter.png"
    with pytest.raises(UsageError, match="channels must be 'luma' or 'rgb', got 'cmyk'"):
        load_image(missing, channels="cmyk")
    with pytest.raises(UsageError, match="max_pixels must be a positive whole number, got 0"):
        load_image(missing, max_pixels=0)
    with pytest.raises(UsageError, match="not a multiple of 15"):
        load_image(missing, size=224, patch=15)


def test_fit_rejects_a_flat_array():
    with pytest.raises(ValueError, match=r"array must be \(C, H, W\)"):
        fit(np.zeros((16, 16), dtype=np.float32), size=16, patch=16)


# --- bad files ---------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@pytest.fixture
def png_bytes(rgb_array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb_array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def jpeg_bytes(rgb_array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb_array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"^empty file$"):
        load_image(path)
    with pytest.raises(InputError, match=r"^empty file$"):
        load_image(io.BytesIO(b""))


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(InputError, match=r"^not a supported image \(not PNG, JPEG"):
        load_image(path)


def test_truncated_jpeg(tmp_path, jpeg_bytes):
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(path)


def test_truncated_png(tmp_path, png_bytes):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes[: len(png_bytes) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(path)


def test_corrupt_png_data(tmp_path, png_bytes):
    data = bytearray(png_bytes)
    start = data.index(b"IDAT") + 4 + 2  # past the chunk type and the zlib header
    for offset in range(start, start + 32):
        data[offset] ^= 0xFF
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"^corrupt image data"):
        load_image(path)


def test_too_many_pixels_refused_from_the_header(tmp_path, monkeypatch):
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)  # 8-bit grey
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(
        InputError,
        match=r"^image is 40000×40000 = 1600000000 pixels, more than --max-pixels 100000000$",
    ):
        load_image(path)


def test_max_pixels_boundary(tmp_path):
    path = tmp_path / "small.png"
    Image.new("L", (20, 20), 7).save(path)
    assert load_image(path, size=16, max_pixels=400).width == 20
    with pytest.raises(InputError, match="20×20 = 400 pixels, more than --max-pixels 399"):
        load_image(path, size=16, max_pixels=399)


def test_pillow_limit_replaced_not_changed(tmp_path, monkeypatch):
    path = tmp_path / "big-for-pillow.png"
    Image.new("L", (40, 40), 7).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse 1600 pixels
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, size=16).width == 40
    assert Image.MAX_IMAGE_PIXELS == 100


def test_truncated_images_are_never_allowed():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_broken_symlink(tmp_path):
    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"^broken symbolic link$"):
        load_image(link)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match=r"^file not found$"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match=r"^is a directory$"):
        load_image(tmp_path / "folder.png")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path, png_bytes):
    path = tmp_path / "secret.png"
    path.write_bytes(png_bytes)
    path.chmod(0)
    with pytest.raises(InputError, match=r"^permission denied$"):
        load_image(path)


def test_permission_denied_reason(monkeypatch, tmp_path, png_bytes):
    # Runs as root too: the open itself is made to fail as it would for another user.
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = tmp_path / "secret.png"
    path.write_bytes(png_bytes)
    monkeypatch.setattr(load.os, "open", denied)
    with pytest.raises(InputError, match=r"^permission denied$"):
        load_image(path)


@pytest.mark.parametrize(
    "error",
    [
        SyntaxError("broken PNG file"),
        struct.error("unpack requires a buffer"),
        zlib.error("Error -3 while decompressing data"),
        ValueError("tile cannot extend outside image"),
        IndexError("list index out of range"),
        MemoryError(),
        EOFError(),
    ],
)
def test_any_decoder_failure_is_an_input_error(monkeypatch, png_bytes, error):
    def failing_load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    with pytest.raises(InputError) as caught:
        load_image(io.BytesIO(png_bytes))
    assert str(caught.value)  # a short reason, never empty
    assert caught.value.__cause__ is error


@pytest.mark.parametrize("channels", ["luma", "rgb"])
@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGB", "RGBA", "P", "CMYK", "YCbCr"])
@pytest.mark.parametrize(("size", "invert"), [(32, False), (32, True), (0, False), (0, True)])
def test_fast_path_equals_the_plain_steps(tmp_path, rng, mode, size, invert, channels):
    # load_image takes Pillow's convert("F") for 8-bit images; it must agree with the plain
    # steps (to_array: float values from the 8-bit levels, invert, then fit) to float32 rounding.
    pixels = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "YCbCr") else "x.png")
    if mode == "YCbCr":
        path = tmp_path / "x.jpg"
    image.save(path)
    decoded = decode(path)
    plain = to_array(decoded, channels=channels)
    if invert:
        plain = 1 - plain
    want = fit(plain, size=size, patch=8)
    got = load_image(path, size=size, patch=8, invert=invert, channels=channels).pixels
    assert got.dtype == np.float32
    assert got.shape == want.shape
    assert_allclose(got, want, rtol=0, atol=3e-7)


# --- one crop box for every route ----------------------------------------------------------------


def test_the_crop_box_of_every_route_comes_from_one_function(tmp_path, monkeypatch, rng):
    # Move the box to the top-left square: the 8-bit route (PNG), the 16-bit route (to_array)
    # and the public fit must all follow, with size S and with size 0.
    grey = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    Image.fromarray(grey).save(eight)
    Image.fromarray(deep).save(sixteen)
    real_box = load._crop_box

    def top_left(width, height, *, size, patch):
        box = real_box(width, height, size=size, patch=patch)
        return (0, 0, box[2] - box[0], box[3] - box[1])

    monkeypatch.setattr(load, "_crop_box", top_left)
    values = grey / 255.0
    plane = Image.fromarray(values.astype(np.float32))
    want = np.asarray(plane.resize((16, 16), Image.BILINEAR, box=(0, 0, 40, 40)))
    for path in (eight, sixteen):
        assert_allclose(load_image(path, size=16, patch=8).pixels[0], want, **TOL)
    assert_allclose(fit(values[np.newaxis], size=16, patch=8)[0], want, **TOL)
    want_native = values[:32, :48]  # 40 × 56 → 32 × 48, from (0, 0) instead of (4, 4)
    for path in (eight, sixteen):
        assert_allclose(load_image(path, size=0, patch=16).pixels[0], want_native, **TOL)
    assert_allclose(fit(values[np.newaxis], size=0, patch=16)[0], want_native, **TOL)


def test_native_size_converts_only_the_crop(tmp_path, monkeypatch, rng):
    # size 0 crops the decoded 8-bit image before any float conversion: no float copy of the
    # whole image is made (memory bound of issue 13).
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (37, 71, 3), dtype=np.uint8)).save(path)
    converted = []
    real_convert = Image.Image.convert

    def spy(self, mode=None, *args, **kwargs):
        if mode == "F":
            converted.append(self.size)
        return real_convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    for channels in ("luma", "rgb"):
        converted.clear()
        assert load_image(path, size=0, patch=8, channels=channels).pixels.shape[1:] == (32, 64)
        assert converted and set(converted) == {(64, 32)}


# --- sources: Pillow images and arrays ---------------------------------------------------------


def test_pillow_image_source_is_the_file(tmp_path, rgb_array):
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(path)
    for options in ({}, {"size": 0, "channels": "rgb"}, {"size": 32, "invert": True}):
        want = load_image(path, **options)
        with Image.open(path) as lazy:  # not loaded yet: load_image loads it
            got = load_image(lazy, **options)
        assert_array_equal(got.pixels, want.pixels)
        assert (got.width, got.height) == (want.width, want.height)


def test_pillow_image_source_gets_exif_orientation_and_max_pixels(rgb_array):
    image = Image.fromarray(rgb_array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    image.info["exif"] = exif.tobytes()
    image.getexif()[0x0112] = 6
    loaded = load_image(image, size=0, patch=8)
    assert (loaded.width, loaded.height) == (48, 64)
    upright = np.rot90(rgb_array, k=-1)
    assert_allclose(loaded.pixels[0], ref_luma(upright), **TOL)
    assert image.size == (64, 48)  # the caller's image is not changed
    with pytest.raises(InputError, match="more than --max-pixels 100"):
        load_image(image, max_pixels=100)


def test_uint8_arrays_give_the_pixels_of_a_png_of_them(tmp_path, rng):
    for shape in [(40, 56), (40, 56, 3), (40, 56, 4)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / "same.png"
        Image.fromarray(pixels).save(path)
        kept = pixels.copy()
        for options in ({}, {"size": 0, "patch": 8, "channels": "rgb", "invert": True}):
            got = load_image(pixels, **options)
            assert_array_equal(got.pixels, load_image(path, **options).pixels)
            assert (got.width, got.height) == (56, 40)
        assert_array_equal(pixels, kept)  # the caller's array is not changed
    single = rng.integers(0, 256, (40, 56, 1), dtype=np.uint8)
    assert_array_equal(load_image(single).pixels, load_image(single[:, :, 0]).pixels)


def test_uint16_float_and_bool_arrays(rng):
    deep = rng.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
    luma = load_image(deep, size=0, patch=8).pixels[0]
    want = (0.299 * deep[..., 0] + 0.587 * deep[..., 1] + 0.114 * deep[..., 2]) / 65535.0
    assert_allclose(luma, want, **TOL)
    rgb = load_image(deep, size=0, patch=8, channels="rgb").pixels
    assert_allclose(rgb, deep.transpose(2, 0, 1) / 65535.0, **TOL)
    assert_allclose(
        load_image(deep[..., 0], size=0, patch=8).pixels[0], deep[..., 0] / 65535, **TOL
    )
    swapped = deep.astype(">u2")  # big-endian, as read from some files: the same values
    assert_array_equal(load_image(swapped, size=0, patch=8).pixels[0], luma)
    assert_array_equal(
        load_image(swapped[..., 0], size=0, patch=8).pixels[0], deep[..., 0] / np.float32(65535)
    )
    values = rng.random((24, 32, 4))  # float: used as is, alpha dropped
    want = 0.299 * values[..., 0] + 0.587 * values[..., 1] + 0.114 * values[..., 2]
    assert_allclose(load_image(values, size=0, patch=8).pixels[0], want, **TOL)
    assert_allclose(load_image(values, size=16, patch=8).pixels[0], spec_fit(want, 16), **TOL)
    grey = rng.random((24, 32)) * 3 - 1  # outside [0, 1]: still as is, like a mode F file
    assert_allclose(load_image(grey, size=0, patch=8).pixels[0], grey, **TOL)
    inverted = load_image(grey.astype(np.float16), size=0, patch=8, invert=True).pixels[0]
    assert_allclose(inverted, 1 - grey.astype(np.float16).astype(np.float64), **TOL)
    mask = rng.random((24, 32)) > 0.5
    assert_array_equal(load_image(mask, size=0, patch=8).pixels[0], mask)


def test_non_finite_float_arrays_are_input_errors():
    for shape in [(16, 16), (16, 16, 3)]:
        values = np.zeros(shape)
        values[3, 4] = np.nan
        with pytest.raises(InputError, match="NaN or infinite"):
            load_image(values, size=16)


@pytest.mark.parametrize(
    ("array", "named"),
    [
        (np.zeros((16, 16, 2), np.uint8), r"shape \(16, 16, 2\) dtype uint8"),
        (np.zeros((2, 16, 16, 3), np.uint8), r"shape \(2, 16, 16, 3\)"),
        (np.zeros(16, np.uint8), r"shape \(16,\)"),
        (np.zeros((16, 16), np.complex64), "dtype complex64"),
        (np.zeros((16, 16), np.int32), "dtype int32"),
        (np.zeros((16, 16), np.int64), "dtype int64"),
        (np.zeros((16, 16), object), "dtype object"),
        (np.zeros((0, 16), np.uint8), r"at least one pixel; got shape \(0, 16\)"),
        (np.zeros((3, 32, 32), np.uint8), r"channels first\? pass array.transpose\(1, 2, 0\)"),
        ([[1, 2], [3, 4]], "dtype int64"),
    ],
)
def test_bad_arrays_are_usage_errors_naming_shape_and_dtype(array, named):
    with pytest.raises(UsageError, match=r"^an image array must be H×W .*" + named):
        load_image(array, size=16)


def test_other_sources_are_usage_errors():
    for source in (None, 42, object()):
        with pytest.raises(UsageError, match="source must be a path, a binary file, a PIL image"):
            load_image(source)


# --- geometry budget ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "patch", "channels", "message"),
    [
        (2**40, 16, "luma", r"^size must be at most 16384, got 1099511627776"),
        (100000, 10000, "luma", r"^size must be at most 16384, got 100000"),
        (10**9, 16, "luma", r"^size must be at most 16384"),
        (1, 16, "luma", r"^patch must not be larger than size: patch 16 > size 1$"),
        (16, 32, "luma", r"^patch must not be larger than size: patch 32 > size 16$"),
        (0, 10**9, "luma", r"^patch must be at most 16384, got 1000000000$"),
        (224, -16, "luma", r"^patch must be a positive whole number, got -16$"),
        (224, 0, "luma", r"^patch must be a positive whole number, got 0$"),
        (224, 16.0, "luma", r"^patch must be a positive whole number, got 16.0$"),
        (224, True, "luma", r"^patch must be a positive whole number, got True$"),
        (-224, 16, "luma", r"^size must be 0 \(native size\) or a positive whole number"),
        (16000, 16, "rgb", r"^size 16000 with channels 'rgb' needs 2.86 GiB per image, more "
         r"than 1 GiB: use a size of at most 9459$"),
        (224, 16, "cmyk", r"^channels must be 'luma' or 'rgb', got 'cmyk'$"),
    ],
)  # fmt: skip
def test_check_geometry_budget(size, patch, channels, message):
    with pytest.raises(UsageError, match=message):
        check_geometry(size, patch=patch, channels=channels)
    with pytest.raises(UsageError, match=message):
        load_image(np.zeros((16, 16), np.uint8), size=size, patch=patch, channels=channels)


def test_check_geometry_limits_are_reachable():
    check_geometry(16384, patch=16)  # 1 GiB of luma: the limit itself
    check_geometry(9456, patch=16, channels="rgb")
    check_geometry(1, patch=1)
    check_geometry(0, patch=16384)
    with pytest.raises(UsageError, match="use a size of at most 9459"):
        check_geometry(9472, patch=16, channels="rgb")


def test_working_bytes():
    assert working_bytes(640, 480, size=224, patch=16, channels="luma") == 4 * 224 * 224
    assert working_bytes(640, 480, size=224, patch=16, channels="rgb") == 3 * 4 * 224 * 224
    assert working_bytes(5000, 5000, size=0, patch=16, channels="rgb") == 3 * 4 * 4992 * 4992
    assert working_bytes(50, 37, size=0, patch=16, channels="luma") == 4 * 32 * 48
    assert working_bytes(15, 300, size=0, patch=16, channels="luma") == 0
    with pytest.raises(UsageError, match="patch must divide size"):
        working_bytes(640, 480, size=224, patch=15, channels="luma")
    with pytest.raises(UsageError, match="width and height must be whole numbers"):
        working_bytes(-1, 480, size=0, patch=16, channels="luma")


def test_working_bytes_is_the_size_of_the_pixels(rng):
    for shape, options in [((37, 50, 3), {"size": 0, "channels": "rgb"}), ((20, 30), {})]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        loaded = load_image(pixels, patch=8, **options)
        height, width = shape[:2]
        options.setdefault("size", 224)
        options.setdefault("channels", "luma")
        assert loaded.pixels.nbytes == working_bytes(width, height, patch=8, **options)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "CMYK", "I;16", "F"])
def test_native_size_in_row_bands_is_exact(tmp_path, monkeypatch, rng, mode):
    # size 0 converts the crop a band of rows at a time (memory bound): the same bits as one
    # band, and no float conversion wider than a band.
    pixels = rng.integers(0, 256, (45, 37, 3), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (45, 37), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((45, 37), dtype=np.float32))
    else:
        image = Image.fromarray(pixels).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "F") else "x.png")
    image.save(path)
    options = [
        {"size": 0, "patch": 8, "channels": channels, "invert": invert}
        for channels in ("luma", "rgb")
        for invert in (False, True)
    ]
    whole = [load_image(path, **option).pixels for option in options]
    monkeypatch.setattr(load, "_CHUNK_PIXELS", 100)  # bands of 100 // 32 = 3 rows
    converted = []
    real_convert = Image.Image.convert

    def spy(self, target=None, *args, **kwargs):
        converted.append(self.size)
        return real_convert(self, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    for option, want in zip(options, whole, strict=True):
        assert_array_equal(load_image(path, **option).pixels, want)
    assert all(height <= 3 for _, height in converted), converted


def test_max_bytes_refuses_from_the_header(tmp_path, monkeypatch, rng):
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(path)
    need = working_bytes(70, 40, size=0, patch=16, channels="rgb")  # 3 · 4 · 32 · 64 bytes
    assert load_image(path, size=0, channels="rgb", max_bytes=need).pixels.nbytes == need
    assert load_image(path, size=16, channels="rgb", max_bytes=3 * 4 * 16 * 16).width == 70

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    message = r"^image is 70×40: its fitted pixels need 0.0 MiB, more than max_bytes 0.0 MiB$"
    with pytest.raises(InputError, match=message):
        load_image(path, size=0, channels="rgb", max_bytes=need - 1)
    with pytest.raises(InputError, match="more than max_bytes"):
        load_image(np.zeros((40, 70), np.uint8), size=0, max_bytes=100)
    with pytest.raises(UsageError, match="max_bytes must be a positive whole number, got 0"):
        load_image(path, max_bytes=0)
