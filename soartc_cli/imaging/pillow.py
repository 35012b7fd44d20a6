"""Pillow's process-wide state, guarded: the only module that changes it.

Pillow keeps its decompression-bomb limit, its registered plugins and libtiff's message handlers
in process globals. soartc decodes with only the plugins of the formats SPEC §2.1 names (so no
external program, such as Ghostscript for EPS, ever runs on a user's file), checks the pixel
count itself (so Pillow's limit is lifted while, and only while, one of its decodes runs), and
keeps libtiff's messages off the C stderr while a TIFF decodes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from PIL import Image

__all__ = ["FORMATS", "formats", "libtiff_quiet", "limit_lifted"]

#: Pillow formats decoded: those of SPEC §2.1's extensions (.png .jpg .jpeg .bmp .gif .tif
#: .tiff .webp). Camera JPEGs that are MPO files open through the JPEG plugin, which hands
#: them to the MPO one; "MPO" is listed for Pillow versions that register it separately.
FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "BMP", "GIF", "TIFF", "WEBP")
_PLUGINS = (
    "JpegImagePlugin",
    "MpoImagePlugin",
    "PngImagePlugin",
    "BmpImagePlugin",
    "GifImagePlugin",
    "TiffImagePlugin",
    "WebPImagePlugin",
)


# Pillow's own decompression-bomb limit is one module global (Image.MAX_IMAGE_PIXELS) with no
# per-call override. We check the pixel count ourselves (max_pixels), so Pillow's check is lifted
# only while one of our decodes runs, and put back when the last of them ends. Users of Pillow
# outside these calls keep their limit; a thread decoding with Pillow at the same moment as ours
# would see no limit during that window.
_limit_lock = threading.Lock()
_limit_users = 0
_saved_limit: int | None = None


class _PillowLimitLifted:
    """Context manager: Pillow's pixel limit lifted while at least one of our decodes runs.

    A class rather than a generator: entered once per image, it is on the hot path.
    """

    def __enter__(self) -> None:
        global _limit_users, _saved_limit
        with _limit_lock:
            if _limit_users == 0:
                _saved_limit = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
            _limit_users += 1

    def __exit__(self, *exc_info: object) -> None:
        global _limit_users
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


#: Entered around every decode: Pillow's pixel limit lifted while at least one of ours runs.
limit_lifted = _PillowLimitLifted()


@functools.cache
def formats() -> tuple[str, ...]:
    """The Pillow formats of :data:`FORMATS` this Pillow can open (their plugins imported)."""
    for name in _PLUGINS:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"PIL.{name}")
    return tuple(name for name in FORMATS if name in Image.OPEN)


# libtiff prints its errors ("LZWDecode: Corrupted LZW table at scanline 0", …) on the C stderr
# through a process-wide handler, whatever Python does with sys.stderr; Pillow turns its warning
# handler off but not its error handler. Pillow reports the failure itself (an OSError, which
# becomes the InputError's reason), so while a TIFF decodes, libtiff's handlers are set to none
# and put back when the last such decode ends, as for the pixel limit above.
_TIFF_HANDLER_SETTERS = (
    "TIFFSetErrorHandler",
    "TIFFSetErrorHandlerExt",
    "TIFFSetWarningHandler",
    "TIFFSetWarningHandlerExt",
)
_tiff_lock = threading.Lock()
_tiff_users = 0
_tiff_saved: list[Any] = []


def _loaded_library_paths(fragment: str) -> list[str]:
    """Paths of the shared libraries mapped in this process whose file name has ``fragment``."""
    paths = []
    with contextlib.suppress(OSError), open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            path = line.rstrip("\n").split(None, 5)[-1]
            if path.startswith("/") and fragment in os.path.basename(path) and path not in paths:
                paths.append(path)
    if not paths:  # no /proc (macOS): the libraries bundled with Pillow's wheels
        import glob

        here = os.path.dirname(Image.__file__)
        for pattern in ("../pillow.libs/*", ".dylibs/*"):
            paths += glob.glob(os.path.join(here, pattern + fragment + "*"))
    return paths


@functools.cache
def _libtiff_setters() -> tuple[Any, ...]:
    """libtiff's four handler setters, from the libtiff Pillow uses; () when not found."""
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:
        return ()
    for path in _loaded_library_paths("libtiff"):
        try:  # RTLD_NOLOAD: only a library already loaded (Pillow's), never another copy
            library = ctypes.CDLL(path, mode=no_load | getattr(os, "RTLD_LOCAL", 0))
            setters = tuple(getattr(library, name) for name in _TIFF_HANDLER_SETTERS)
        except (OSError, AttributeError):
            continue
        for setter in setters:
            setter.restype = ctypes.c_void_p
            setter.argtypes = [ctypes.c_void_p]
        return setters
    return ()


@contextlib.contextmanager
def libtiff_quiet() -> Iterator[None]:
    global _tiff_users, _tiff_saved
    setters = _libtiff_setters()
    with _tiff_lock:
        if _tiff_users == 0:
            _tiff_saved = [setter(None) for setter in setters]
        _tiff_users += 1
    try:
        yield
    finally:
        with _tiff_lock:
            _tiff_users -= 1
            if _tiff_users == 0:
                for setter, saved in zip(setters, _tiff_saved, strict=True):
                    setter(saved)
