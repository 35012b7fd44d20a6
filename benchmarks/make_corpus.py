"""Build the benchmark corpora from the real photos in ``sample_images/``.

Two corpora, each cached in its own folder under ``benchmarks/corpus/`` (git-ignored):

``vga`` (``corpus/vga640/``)
    2,000 JPEGs of 640×480, quality 90, as users run the tool on a folder of web-sized photos.
    Every image is a random crop of one source photo (at one of several scales, always of the
    4:3 shape of the output), resized to 640×480, possibly flipped horizontally and/or
    vertically. Spread over 20 sub-folders of 100 (``set00/`` … ``set19/``), so that one
    sub-folder is a ready-made smaller corpus. The draws are those of the former 400-image
    corpus, so ``set00`` … ``set03`` hold the same pictures.
``photo`` (``corpus/photo4000/``)
    100 JPEGs of 4000×3000, quality 92, standing for camera photos, where decoding dominates.
    The sample photos are at most 1411 pixels wide, so each image is a 2 × 2 mosaic of random
    crops (each resized to 2000×1500, possibly flipped) with Gaussian noise of σ = 4 grey levels
    added to every channel, like a sensor's: without the noise the upscaled tiles would be
    smoother, and compress better, than real photos. Spread over 4 sub-folders of 25.

Everything is drawn from seeded generators, so the same sources give the same corpus on every
machine (bit for bit with the same Pillow and numpy builds). ``manifest.json`` in each corpus
folder records what it was made from; a corpus is rebuilt when its sources or parameters change.

Run ``python benchmarks/make_corpus.py [--kind vga|photo|all]`` to build them alone;
``bench_pipeline.py`` calls :func:`ensure_corpus` itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
#: Where the real photos come from.
DEFAULT_SOURCES = HERE.parent / "sample_images"
#: Where the corpora are cached (git-ignored), one sub-folder each.
CORPUS_ROOT = HERE / "corpus"
SEED = 20240604
#: Side of a crop, as a fraction of the largest 4:3 box that fits in the source photo.
SCALES = (0.35, 0.5, 0.65, 0.8, 1.0)
#: Bump when the way images are made changes, so that old caches are rebuilt.
RECIPE_VERSION = 3
_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_MANIFEST = "manifest.json"


class CorpusSpec(NamedTuple):
    """How one corpus is made.

    Attributes
    ----------
    folder : str
        Its sub-folder of :data:`CORPUS_ROOT`.
    width, height : int
        Size of every image (4:3).
    count, folders : int
        Number of images, and of equal sub-folders they are spread over.
    quality : int
        JPEG quality.
    tiles : int
        Each image is a ``tiles × tiles`` mosaic of random crops (1: one crop).
    noise : float
        Standard deviation, in grey levels, of the Gaussian noise added to every channel
        (0: none).
    """

    folder: str
    width: int
    height: int
    count: int
    folders: int
    quality: int
    tiles: int
    noise: float


#: The corpora of ``make bench``, by kind.
CORPORA: dict[str, CorpusSpec] = {
    "vga": CorpusSpec("vga640", 640, 480, 2000, 20, 90, 1, 0.0),
    "photo": CorpusSpec("photo4000", 4000, 3000, 100, 4, 92, 2, 4.0),
}
VGA = CORPORA["vga"]
PHOTO = CORPORA["photo"]
#: Default folder of the 640×480 corpus.
DEFAULT_CORPUS = CORPUS_ROOT / VGA.folder


def source_photos(sources: Path) -> list[Path]:
    """The image files directly or recursively under ``sources``, sorted.

    Parameters
    ----------
    sources : Path
        Folder of photos.

    Returns
    -------
    list of Path
        Files with an image extension; hidden names are skipped.
    """
    if not sources.is_dir():
        return []
    found = []
    for path in sorted(sources.rglob("*")):
        relative = path.relative_to(sources)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in _EXTENSIONS:
            found.append(path)
    return found


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe(sources: Path, spec: CorpusSpec = VGA) -> dict:
    """Everything a corpus depends on: parameters and the content hash of every source.

    Parameters
    ----------
    sources : Path
        Folder of photos.
    spec : CorpusSpec
        Which corpus.

    Returns
    -------
    dict
        JSON-serialisable; two equal recipes make the same corpus.
    """
    return {
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "count": spec.count,
        "folders": spec.folders,
        "size": [spec.width, spec.height],
        "quality": spec.quality,
        "tiles": spec.tiles,
        "noise": spec.noise,
        "scales": list(SCALES),
        "sources": {p.relative_to(sources).as_posix(): _digest(p) for p in source_photos(sources)},
    }


def _open_photo(path: Path) -> Image.Image:
    """A source photo, upright (EXIF orientation applied), in RGB."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        return image.convert("RGB")


def _crop_box(
    rng: random.Random, width: int, height: int, scale: float, aspect: float
) -> tuple[float, float, float, float]:
    """A random box of shape ``aspect`` (w / h) inside a photo, ``scale`` × the largest one."""
    full_w = min(width, height * aspect)
    box_w = min(full_w * scale, width)
    box_h = min(box_w / aspect, height)  # min(): float rounding must not overflow
    left = max(0.0, rng.uniform(0.0, width - box_w))
    top = max(0.0, rng.uniform(0.0, height - box_h))
    return (left, top, min(left + box_w, width), min(top + box_h, height))


def _tile(
    rng: random.Random, pictures: list[Image.Image], size: tuple[int, int]
) -> tuple[Image.Image, dict]:
    """One random crop of one picture, resized to ``size``, maybe flipped; and how it was made."""
    which = rng.randrange(len(pictures))
    picture = pictures[which]
    scale = rng.choice(SCALES)
    box = _crop_box(rng, picture.width, picture.height, scale, size[0] / size[1])
    flip_h = rng.random() < 0.5
    flip_v = rng.random() < 0.25
    image = picture.resize(size, Image.Resampling.BICUBIC, box=box)
    if flip_h:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_v:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    how = {
        "source": which,
        "scale": scale,
        "box": [round(v, 2) for v in box],
        "flip_h": flip_h,
        "flip_v": flip_v,
    }
    return image, how


def _add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """``image`` plus rounded Gaussian noise of standard deviation ``sigma``, clipped to 0…255."""
    import numpy as np  # only the photo corpus needs it

    pixels = np.asarray(image, dtype=np.float32)
    noise = np.random.default_rng(seed).standard_normal(pixels.shape, dtype=np.float32)
    pixels += sigma * noise
    np.rint(pixels, out=pixels)
    np.clip(pixels, 0, 255, out=pixels)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def make_image(
    rng: random.Random, pictures: list[Image.Image], spec: CorpusSpec, index: int
) -> tuple[Image.Image, list[dict]]:
    """Image ``index`` of a corpus: a mosaic of ``spec.tiles²`` crops, noise added.

    Parameters
    ----------
    rng : random.Random
        The corpus's generator (its draws depend on the images made before).
    pictures : list of PIL.Image.Image
        The source photos, RGB.
    spec : CorpusSpec
        The corpus.
    index : int
        Number of the image (seeds its noise).

    Returns
    -------
    (PIL.Image.Image, list of dict)
        The image and how each of its tiles was made.
    """
    tile_w, tile_h = spec.width // spec.tiles, spec.height // spec.tiles
    if spec.tiles == 1:
        image, how = _tile(rng, pictures, (spec.width, spec.height))
        tiles = [how]
    else:
        image = Image.new("RGB", (spec.width, spec.height))
        tiles = []
        for row in range(spec.tiles):
            for col in range(spec.tiles):
                part, how = _tile(rng, pictures, (tile_w, tile_h))
                image.paste(part, (col * tile_w, row * tile_h))
                tiles.append(how)
    if spec.noise > 0:
        image = _add_noise(image, spec.noise, SEED + index)
    return image, tiles


def build(sources: Path, corpus: Path, spec: CorpusSpec = VGA) -> dict:
    """Write a corpus into ``corpus`` (replacing what is there) and return its manifest.

    Parameters
    ----------
    sources : Path
        Folder of real photos (at least one).
    corpus : Path
        Destination folder; built in a temporary sibling and renamed into place.
    spec : CorpusSpec
        Which corpus; sub-folders ``set00`` … of ``ceil(count / folders)`` images.

    Returns
    -------
    dict
        The manifest: the :func:`recipe` plus the list of images made and how.

    Raises
    ------
    SystemExit
        When ``sources`` holds no photo.
    """
    photos = source_photos(sources)
    if not photos:
        raise SystemExit(
            f"make_corpus: no photos in {sources}; add some (JPEG/PNG…) or pass --sources DIR"
        )
    manifest = recipe(sources, spec)
    rng = random.Random(SEED)
    pictures = [_open_photo(p) for p in photos]
    names = [p.relative_to(sources).as_posix() for p in photos]
    corpus.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".corpus-", dir=corpus.parent))
    made = []
    try:
        per_folder = -(-spec.count // spec.folders)
        for index in range(spec.count):
            image, tiles = make_image(rng, pictures, spec, index)
            folder = f"set{index // per_folder:02d}"
            name = f"{folder}/img{index:04d}.jpg"
            (staging / folder).mkdir(exist_ok=True)
            image.save(staging / name, "JPEG", quality=spec.quality)
            for how in tiles:
                how["source"] = names[how["source"]]
            made.append({"path": name, "bytes": (staging / name).stat().st_size, "tiles": tiles})
        manifest["images"] = made
        manifest["built"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if corpus.exists():
            shutil.rmtree(corpus)
        staging.rename(corpus)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def ensure_corpus(
    sources: Path = DEFAULT_SOURCES,
    corpus: Path | None = None,
    spec: CorpusSpec = VGA,
    *,
    log=print,
) -> dict:
    """Return a corpus's manifest, building the corpus first unless the cached one is current.

    Parameters
    ----------
    sources : Path
        Folder of real photos.
    corpus : Path, optional
        Cache folder of the corpus; default ``CORPUS_ROOT / spec.folder``.
    spec : CorpusSpec
        Which corpus.
    log : callable
        Called with one line of text when the corpus is (re)built.

    Returns
    -------
    dict
        The manifest (see :func:`build`).
    """
    corpus = CORPUS_ROOT / spec.folder if corpus is None else corpus
    wanted = recipe(sources, spec)
    manifest_path = corpus / _MANIFEST
    if manifest_path.is_file():
        try:
            cached = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            cached = {}
        fresh = all(cached.get(k) == v for k, v in wanted.items())
        if fresh and all((corpus / item["path"]).is_file() for item in cached.get("images", [])):
            return cached
    log(
        f"building the corpus: {spec.count} JPEGs of {spec.width}×{spec.height} from {sources}"
        f" into {corpus} …"
    )
    started = time.perf_counter()
    manifest = build(sources, corpus, spec)
    megabytes = sum(item["bytes"] for item in manifest["images"]) / 1e6
    log(f"corpus built in {time.perf_counter() - started:.1f} s ({megabytes:.0f} MB)")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: build (or check) the corpora.

    Parameters
    ----------
    argv : list of str, optional
        Arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES, help="folder of photos")
    parser.add_argument("--kind", choices=[*CORPORA, "all"], default="all", help="which corpus")
    parser.add_argument("--corpus", type=Path, help="corpus folder (one --kind only)")
    parser.add_argument("--count", type=int, help="number of images (one --kind only)")
    args = parser.parse_args(argv)
    kinds = list(CORPORA) if args.kind == "all" else [args.kind]
    if len(kinds) > 1 and (args.corpus or args.count):
        parser.error("--corpus and --count need one --kind")
    for kind in kinds:
        spec = CORPORA[kind]
        if args.count:
            spec = spec._replace(count=args.count)
        folder = args.corpus or CORPUS_ROOT / spec.folder
        manifest = ensure_corpus(args.sources, folder, spec)
        megabytes = sum(item["bytes"] for item in manifest["images"]) / 1e6
        print(
            f"{folder}: {len(manifest['images'])} images of {spec.width}×{spec.height}"
            f" from {len(manifest['sources'])} photos, {megabytes:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
