"""Hostile inputs to the loader (issue 13): other formats under image names, files that are not
regular files, files that change under the run, and libtiff's messages on standard error."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from PIL import EpsImagePlugin, Image

from soartc_cli.errors import InputError
from soartc_cli.imaging import load, pillow
from soartc_cli.imaging.load import FORMATS, decode, load_image

POSIX = pytest.mark.skipif(os.name != "posix", reason="POSIX file types")

TINY_EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
%%EndComments
0 setgray 0 0 8 8 rectfill
showpage
%%EOF
"""


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241129)


@pytest.fixture
def png_bytes(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def in_thread(function, *, timeout: float = 10.0):
    """Run ``function()`` in a daemon thread: a hang fails the test instead of the suite."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = function()
        except BaseException as exc:  # handed to the test
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"still running after {timeout} s: it blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


# --- formats -----------------------------------------------------------------------------------


def test_eps_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(TINY_EPS)
    with Image.open(path) as unrestricted:  # the file is an EPS Pillow would open and load …
        assert unrestricted.format == "EPS"

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("the EPS plugin ran on a user's file")

    # … by running Ghostscript: neither its opener nor its loader may be reached.
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", no_ghostscript)
    with pytest.raises(InputError, match=r"^not a supported image \(not PNG, JPEG, BMP, GIF"):
        load_image(path)
    with pytest.raises(InputError, match=r"^not a supported image"):
        load_image(io.BytesIO(TINY_EPS))


def test_only_the_formats_of_the_extension_list_are_tried(monkeypatch, png_bytes):
    seen = []
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    load_image(io.BytesIO(png_bytes), size=16)
    assert seen and set(seen[0]) == {"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"} - {
        name for name in FORMATS if name not in Image.OPEN
    }
    assert "EPS" not in seen[0] and "PDF" not in seen[0]


@pytest.mark.parametrize("kind", ["ICO", "PPM", "PCX", "SGI", "TGA", "DDS", "PDF"])
def test_other_formats_named_jpg_are_not_supported_images(tmp_path, rng, kind):
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, format=kind)
    if kind != "PDF":  # Pillow reads these (it only writes PDF): refused by choice, not by luck
        with Image.open(path) as unrestricted:
            assert unrestricted.format == kind
    with pytest.raises(InputError, match=r"^not a supported image"):
        load_image(path, size=16)


def test_camera_mpo_jpeg_decodes(tmp_path, rng):
    first = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    second = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    path = tmp_path / "camera.jpg"
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
        want = load_image(opened.convert("RGB"), size=16).pixels
    assert_array_equal(load_image(path, size=16).pixels, want)
    assert decode(path).format == "MPO"


# --- file types --------------------------------------------------------------------------------


@POSIX
def test_fifo_without_writer_is_refused_at_once(tmp_path):
    path = tmp_path / "a.png"
    os.mkfifo(path)
    with pytest.raises(InputError, match=r"^not a regular file \(a named pipe\)$"):
        in_thread(lambda: load_image(path))


@POSIX
def test_file_replaced_by_a_fifo_after_the_check_is_refused(tmp_path, monkeypatch, png_bytes):
    # The race of a run: the path was a regular file when looked at, a FIFO when opened.
    regular = tmp_path / "was-regular.png"
    regular.write_bytes(png_bytes)
    path = tmp_path / "a.png"
    os.mkfifo(path)
    real_stat = os.stat

    def stale_stat(target, *args, **kwargs):
        return real_stat(regular if os.fspath(target) == os.fspath(path) else target)

    monkeypatch.setattr(load.os, "stat", stale_stat)
    with pytest.raises(InputError, match=r"^not a regular file \(a named pipe\)$"):
        in_thread(lambda: load_image(path))


@POSIX
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_and_a_link_to_it_are_not_regular_files(tmp_path):
    link = tmp_path / "a.png"
    link.symlink_to("/dev/zero")
    for source in ("/dev/zero", link):
        with pytest.raises(InputError, match=r"^not a regular file \(a character device\)$"):
            in_thread(lambda source=source: load_image(source))


@POSIX
def test_socket_named_png_is_not_a_regular_file(tmp_path):
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(os.fspath(path))
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        with pytest.raises(InputError, match=r"^not a regular file \(a socket\)$"):
            in_thread(lambda: load_image(path))
    finally:
        server.close()


def test_directory_named_png(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(InputError, match=r"^is a directory$"):
        load_image(tmp_path / "x.png")


def test_no_descriptor_left_open_after_a_refusal(tmp_path, png_bytes):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(png_bytes[:100])
    before = len(os.listdir("/proc/self/fd"))
    for name in ("dir.png", "text.png", "empty.png", "cut.png", "missing.png"):
        with pytest.raises(InputError):
            load_image(tmp_path / name)
    assert len(os.listdir("/proc/self/fd")) == before


# --- files that change under the run -----------------------------------------------------------


def test_file_deleted_or_truncated_after_discovery(tmp_path, png_bytes):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes)
    assert load_image(path, size=16).width == 56  # what discovery saw
    path.write_bytes(png_bytes[: len(png_bytes) // 2])
    with pytest.raises(InputError, match=r"^truncated image"):
        load_image(path, size=16)
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"^empty file$"):
        load_image(path, size=16)
    path.unlink()
    with pytest.raises(InputError, match=r"^file not found$"):
        load_image(path, size=16)


# --- libtiff on standard error -----------------------------------------------------------------


def corrupt_lzw_tiff(rng) -> bytes:
    """An LZW TIFF whose compressed strip is garbage: libtiff reports it on the C stderr."""
    buffer = io.BytesIO()
    pixels = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    for offset in range(20, 200):  # the strip follows the 8-byte header
        data[offset] ^= 0x5A
    return bytes(data)


@pytest.mark.skipif(sys.platform != "linux", reason="libtiff found through /proc/self/maps")
def test_libtiff_messages_do_not_reach_stderr(tmp_path, rng, capfd):
    path = tmp_path / "bad.tif"
    path.write_bytes(corrupt_lzw_tiff(rng))
    with Image.open(path) as opened:
        assert opened.tile[0].codec_name == "libtiff"  # the test reaches libtiff at all
    capfd.readouterr()
    with pytest.raises(InputError, match=r"^corrupt image data"):
        load_image(path)
    # capfd captures file descriptor 2, where libtiff's handler writes (not sys.stderr).
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(sys.platform != "linux", reason="libtiff found through /proc/self/maps")
def test_libtiff_handlers_are_put_back(tmp_path, rng):
    path = tmp_path / "good.tif"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
        path, compression="tiff_lzw"
    )
    setters = pillow._libtiff_setters()
    assert setters, "Pillow's libtiff was not found"
    set_error_handler = setters[0]
    before = set_error_handler(None)
    set_error_handler(before)
    assert before  # libtiff's own handler, which prints
    load_image(path, size=16)
    after = set_error_handler(before)
    assert after == before


def test_a_good_tiff_still_decodes_with_libtiff_quiet(tmp_path, rng):
    pixels = rng.integers(0, 256, (24, 42), dtype=np.uint8)
    path = tmp_path / "good.tif"
    Image.fromarray(pixels).save(path, compression="tiff_adobe_deflate")
    want = pixels[:, 1:41].astype(np.float32) * np.float32(1 / 255)
    assert_array_equal(load_image(path, size=0, patch=8).pixels[0], want)


@pytest.mark.skipif(sys.platform != "linux", reason="libtiff found through /proc/self/maps")
def test_a_run_with_a_corrupt_tiff_prints_only_its_skip_line(tmp_path, rng):
    # The whole pipeline, in worker processes: libtiff's own line must not reach stderr.
    root = tmp_path / "images"
    root.mkdir()
    (root / "bad.tif").write_bytes(corrupt_lzw_tiff(rng))
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / "good.png")
    for workers in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "soartc_cli", "compute", str(root), "-q", "--workers", workers,
             "-o", str(tmp_path / "out.csv"), "--size", "32", "--patch", "8"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr == "soartc: skipped bad.tif: corrupt image data (decoder error -2)\n"
