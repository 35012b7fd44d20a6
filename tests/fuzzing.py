"""A seeded generator of broken image files: valid seeds in six formats, and their mutants.

Used by ``tests/test_fuzz.py`` (issue 12). Everything is deterministic for a given seed: the seeds
are made with Pillow from a fixed crop of a real photo, and every mutation draws from one
``random.Random(seed)``, so a failing mutant can be remade by name.

Mutations:

* byte flips: one to four bytes XOR-ed with a random non-zero value at random offsets;
* truncations: the file cut at a spread of offsets (inside the header, in the data, one byte short);
* header edits, format by format: PNG ``IHDR`` width/height (0, 1, 2³¹−1, with the CRC recomputed so
  the decoder believes them) and chunk lengths; JPEG ``SOF`` height/width (0, 65535); BMP file-size,
  data-offset, width, height, bit-count and image-size fields; GIF logical-screen and frame sizes;
  TIFF ``ImageWidth``/``ImageLength``/strip fields; WebP ``RIFF`` and ``VP8`` chunk sizes and the
  ``VP8`` frame width/height.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image

#: The six formats, by file extension, with Pillow's format name.
FORMATS: dict[str, str] = {
    "png": "PNG",
    "jpg": "JPEG",
    "tif": "TIFF",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
}


@dataclass(frozen=True)
class Mutant:
    """One file to write: its name (format, mutation, number) and its bytes."""

    name: str
    data: bytes


def seed_files(
    photo: str, *, box: tuple[int, int, int, int] = (96, 64, 160, 112)
) -> dict[str, bytes]:
    """Valid files of a 64×48 crop of ``photo`` in each of :data:`FORMATS`, by extension."""
    with Image.open(photo) as image:
        crop = image.convert("RGB").crop(box)
    seeds = {}
    for ext, fmt in FORMATS.items():
        buffer = io.BytesIO()
        if fmt == "GIF":
            crop.convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, fmt)
        elif fmt == "TIFF":
            crop.save(buffer, fmt)  # uncompressed, one strip: its fields are easy to reach
        else:
            crop.save(buffer, fmt)
        seeds[ext] = buffer.getvalue()
    return seeds


def variant_seed_files(
    photo: str, *, box: tuple[int, int, int, int] = (96, 64, 160, 112)
) -> dict[str, tuple[str, bytes]]:
    """Valid files in the formats' other encodings: name → (extension, bytes).

    Compressed TIFF (LZW, deflate, JPEG, PackBits on a bilevel image), 16-bit and float TIFF,
    16-bit, palette-with-transparency and grey-alpha PNG, progressive and CMYK JPEG, an animated
    GIF and WebP, lossless and alpha WebP, and an 8-bit palette BMP: the decoders that
    :func:`seed_files` does not reach.
    """
    with Image.open(photo) as image:
        crop = image.convert("RGB").crop(box)
    turned = crop.rotate(90)

    def save(picture: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        return buffer.getvalue()

    return {
        "tif_lzw": ("tif", save(crop, "TIFF", compression="tiff_lzw")),
        "tif_deflate": ("tif", save(crop, "TIFF", compression="tiff_adobe_deflate")),
        "tif_jpeg": ("tif", save(crop, "TIFF", compression="jpeg")),
        "tif_packbits": ("tif", save(crop.convert("1"), "TIFF", compression="packbits")),
        "tif_16": ("tif", save(crop.convert("I;16"), "TIFF")),
        "tif_float": ("tif", save(crop.convert("F"), "TIFF")),
        "png_16": ("png", save(crop.convert("I;16"), "PNG")),
        "png_palette": ("png", save(crop.convert("P"), "PNG", transparency=0)),
        "png_la": ("png", save(crop.convert("LA"), "PNG")),
        "jpg_progressive": ("jpg", save(crop, "JPEG", progressive=True)),
        "jpg_cmyk": ("jpg", save(crop.convert("CMYK"), "JPEG")),
        "gif_animated": (
            "gif",
            save(crop.convert("P"), "GIF", save_all=True, append_images=[turned.convert("P")]),
        ),
        "webp_lossless": ("webp", save(crop, "WEBP", lossless=True)),
        "webp_animated": ("webp", save(crop, "WEBP", save_all=True, append_images=[turned])),
        "webp_alpha": ("webp", save(crop.convert("RGBA"), "WEBP")),
        "bmp_palette": ("bmp", save(crop.convert("P"), "BMP")),
    }


def variant_mutants(
    seeds: dict[str, tuple[str, bytes]], *, seed: int = 13, flips: int = 8, cuts: int = 6
) -> list[Mutant]:
    """Byte flips and truncations of :func:`variant_seed_files` (about 240 with the defaults).

    Named ``{variant}_valid.{ext}``, ``{variant}_flip_{i}.{ext}`` and ``{variant}_cut_{n}.{ext}``.
    """
    rng = random.Random(seed)
    result = []
    for variant, (ext, data) in seeds.items():
        result.append(Mutant(f"{variant}_valid.{ext}", data))
        for index in range(flips):
            result.append(Mutant(f"{variant}_flip_{index:02d}.{ext}", _flip(data, rng)))
        for offset in _cut_offsets(len(data), rng, cuts):
            result.append(Mutant(f"{variant}_cut_{offset:05d}.{ext}", data[:offset]))
    return result


# --- header editors: each yields (label, edited bytes) ---------------------------------------


def _png_chunks(data: bytes) -> Iterator[tuple[int, bytes, int]]:
    """(offset of the length field, chunk type, data length) of each PNG chunk."""
    offset = 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        yield offset, kind, length
        offset += 12 + length


def _png_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    ihdr = 16  # signature 8 + length 4 + "IHDR" 4
    for field, at in (("width", ihdr), ("height", ihdr + 4)):
        for value in (0, 1, 2**31 - 1):
            edited = bytearray(data)
            edited[at : at + 4] = struct.pack(">I", value)
            crc = zlib.crc32(bytes(edited[12:29])) & 0xFFFFFFFF  # over "IHDR" and its 13 bytes
            edited[29:33] = struct.pack(">I", crc)
            yield f"ihdr_{field}_{value}", bytes(edited)
    for offset, kind, length in _png_chunks(data):
        if kind in (b"IHDR", b"IDAT", b"IEND"):
            for label, value in (("zero", 0), ("plus1", length + 1), ("huge", 0x7FFFFFFF)):
                edited = bytearray(data)
                edited[offset : offset + 4] = struct.pack(">I", value)
                yield f"len_{kind.decode().lower()}_{label}", bytes(edited)


def _jpeg_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    sof = next(
        i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)
    )
    for field, at in (("height", sof + 5), ("width", sof + 7)):
        for value in (0, 65535):
            edited = bytearray(data)
            edited[at : at + 2] = struct.pack(">H", value)
            yield f"sof_{field}_{value}", bytes(edited)
    edited = bytearray(data)
    edited[sof + 2 : sof + 4] = struct.pack(">H", 0xFFFF)  # the SOF segment's own length
    yield "sof_length_65535", bytes(edited)


def _bmp_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    fields = {  # name: (offset, struct format)
        "filesize": (2, "<I"),
        "offbits": (10, "<I"),
        "width": (18, "<i"),
        "height": (22, "<i"),
        "bitcount": (28, "<H"),
        "sizeimage": (34, "<I"),
    }
    values = {
        "filesize": (0, 0xFFFFFFFF),
        "offbits": (0, 0x7FFFFFFF),
        "width": (0, -1, 2**31 - 1),
        "height": (0, -(2**31), 2**31 - 1),
        "bitcount": (0, 7, 64),
        "sizeimage": (0xFFFFFFFF,),
    }
    for name, (at, fmt) in fields.items():
        for value in values[name]:
            edited = bytearray(data)
            struct.pack_into(fmt, edited, at, value)
            yield f"{name}_{value}", bytes(edited)


def _gif_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    descriptor = data.index(b"\x2c", 13)  # the first image descriptor, after the colour table
    for where, base in (("screen", 6), ("frame", descriptor + 5)):
        for field, at in (("width", base), ("height", base + 2)):
            for value in (0, 65535):
                edited = bytearray(data)
                struct.pack_into("<H", edited, at, value)
                yield f"{where}_{field}_{value}", bytes(edited)


def _tiff_entries(data: bytes) -> dict[int, tuple[int, int]]:
    """Tag → (offset of the entry, field type) of the first IFD of a little-endian TIFF."""
    assert data[:4] == b"II*\x00", "seed TIFF must be little-endian"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    entries = {}
    for index in range(count):
        at = ifd + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, at)
        entries[tag] = (at, kind)
    return entries


def _tiff_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    entries = _tiff_entries(data)
    names = {256: "width", 257: "length", 273: "stripoffsets", 279: "stripbytecounts"}
    for tag, name in names.items():
        if tag not in entries:
            continue
        at, kind = entries[tag]
        for value in (0, 65535, 2**31 - 1):
            edited = bytearray(data)
            if kind == 3:  # SHORT: the value sits in the first two bytes of the value field
                struct.pack_into("<H", edited, at + 8, min(value, 65535))
            else:
                struct.pack_into("<I", edited, at + 8, value)
            yield f"{name}_{value}", bytes(edited)


def _webp_edits(data: bytes) -> Iterator[tuple[str, bytes]]:
    for label, at, value in (
        ("riff_zero", 4, 0),
        ("riff_huge", 4, 0xFFFFFFFF),
        ("chunk_zero", 16, 0),
        ("chunk_huge", 16, 0x7FFFFFFF),
    ):
        edited = bytearray(data)
        struct.pack_into("<I", edited, at, value)
        yield label, bytes(edited)
    if data[12:16] == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        for field, at in (("width", 26), ("height", 28)):
            for value in (0, 0x3FFF):
                edited = bytearray(data)
                struct.pack_into("<H", edited, at, value)
                yield f"vp8_{field}_{value}", bytes(edited)


#: Header editors by extension.
EDITORS: dict[str, Callable[[bytes], Iterator[tuple[str, bytes]]]] = {
    "png": _png_edits,
    "jpg": _jpeg_edits,
    "tif": _tiff_edits,
    "gif": _gif_edits,
    "webp": _webp_edits,
    "bmp": _bmp_edits,
}


def _flip(data: bytes, rng: random.Random) -> bytes:
    edited = bytearray(data)
    for offset in rng.sample(range(len(edited)), rng.randint(1, 4)):  # distinct: no flip undone
        edited[offset] ^= rng.randint(1, 255)
    return bytes(edited)


def _cut_offsets(size: int, rng: random.Random, count: int) -> list[int]:
    """Offsets spread over the file: the first bytes (headers), random ones, and one byte short."""
    fixed = [1, 4, 8, 12, 16, 24, 32, 64, size // 2, size - 1]
    offsets = {offset for offset in fixed if 0 < offset < size}
    while len(offsets) < count:
        offsets.add(rng.randrange(1, size))
    return sorted(offsets)


def mutants(
    seeds: dict[str, bytes], *, seed: int = 12, flips: int = 24, cuts: int = 14
) -> list[Mutant]:
    """All mutants of ``seeds`` (about 300 with the defaults), in a fixed order.

    Parameters
    ----------
    seeds : dict of str to bytes
        Valid files by extension (:func:`seed_files`).
    seed : int
        Seed of the one ``random.Random`` every random choice draws from.
    flips, cuts : int
        Byte-flip mutants and truncations per format.

    Returns
    -------
    list of Mutant
        Named ``{ext}_{kind}_{detail}.{ext}``, e.g. ``png_ihdr_width_0.png``, ``jpg_cut_0123.jpg``,
        ``gif_flip_07.gif``; the valid seeds themselves are ``{ext}_valid.{ext}``.
    """
    rng = random.Random(seed)
    result = []
    for ext, data in seeds.items():
        result.append(Mutant(f"{ext}_valid.{ext}", data))
        for index in range(flips):
            result.append(Mutant(f"{ext}_flip_{index:02d}.{ext}", _flip(data, rng)))
        for offset in _cut_offsets(len(data), rng, cuts):
            result.append(Mutant(f"{ext}_cut_{offset:05d}.{ext}", data[:offset]))
        for label, edited in EDITORS[ext](data):
            if edited != data:  # an edit to the value a field already has is no mutant
                result.append(Mutant(f"{ext}_{label}.{ext}", edited))
    names = [mutant.name for mutant in result]
    assert len(set(names)) == len(names), "mutant names must be unique"
    return result
