"""Build the benchmark corpus: 640×480 JPEG photos cut from the real photos in ``sample_images/``.

Every image is a random crop of one source photo (at one of several scales, always of the 4:3
shape of the output), resized to 640×480, possibly flipped horizontally and/or vertically, and
saved as a JPEG of quality 90. Everything is drawn from one seeded generator, so the same sources
give the same corpus on every machine (bit for bit with the same Pillow build).

The images are spread over a few sub-folders of equal size (``set0/``, ``set1/``, …), so that a
whole sub-folder is a ready-made smaller corpus. The corpus is built once and cached under
``benchmarks/corpus/`` (git-ignored); ``corpus/manifest.json`` records what it was made from, and
it is rebuilt when the sources or the parameters change.

Run ``python benchmarks/make_corpus.py`` to build it alone; ``bench_pipeline.py`` calls
:func:`ensure_corpus` itself.
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

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
#: Where the real photos come from.
DEFAULT_SOURCES = HERE.parent / "sample_images"
#: Where the corpus is cached (git-ignored).
DEFAULT_CORPUS = HERE / "corpus"
#: Output size of every image.
WIDTH, HEIGHT = 640, 480
#: Number of images and of sub-folders they are spread over.
COUNT, FOLDERS = 400, 4
SEED = 20240604
QUALITY = 90
#: Side of a crop, as a fraction of the largest 4:3 box that fits in the source photo.
SCALES = (0.35, 0.5, 0.65, 0.8, 1.0)
#: Bump when the way images are made changes, so that old caches are rebuilt.
RECIPE_VERSION = 2
_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_MANIFEST = "manifest.json"


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


def recipe(sources: Path, count: int = COUNT, folders: int = FOLDERS) -> dict:
    """Everything the corpus depends on: parameters and the content hash of every source.

    Parameters
    ----------
    sources : Path
        Folder of photos.
    count, folders : int
        Number of images, and of sub-folders they are spread over.

    Returns
    -------
    dict
        JSON-serialisable; two equal recipes make the same corpus.
    """
    return {
        "recipe_version": RECIPE_VERSION,
        "seed": SEED,
        "count": count,
        "folders": folders,
        "size": [WIDTH, HEIGHT],
        "quality": QUALITY,
        "scales": list(SCALES),
        "sources": {p.relative_to(sources).as_posix(): _digest(p) for p in source_photos(sources)},
    }


def _open_photo(path: Path) -> Image.Image:
    """A source photo, upright (EXIF orientation applied), in RGB."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        return image.convert("RGB")


def _crop_box(
    rng: random.Random, width: int, height: int, scale: float
) -> tuple[float, float, float, float]:
    """A random 4:3 box inside a ``width × height`` photo, ``scale`` times the largest such box."""
    full_w = min(width, height * WIDTH / HEIGHT)
    box_w = min(full_w * scale, width)
    box_h = min(box_w * HEIGHT / WIDTH, height)  # min(): float rounding must not overflow
    left = max(0.0, rng.uniform(0.0, width - box_w))
    top = max(0.0, rng.uniform(0.0, height - box_h))
    return (left, top, min(left + box_w, width), min(top + box_h, height))


def build(sources: Path, corpus: Path, *, count: int = COUNT, folders: int = FOLDERS) -> dict:
    """Write the corpus into ``corpus`` (replacing what is there) and return its manifest.

    Parameters
    ----------
    sources : Path
        Folder of real photos (at least one).
    corpus : Path
        Destination folder; built in a temporary sibling and renamed into place.
    count, folders : int
        Number of images, and of equal sub-folders (``set0`` … ``set{folders-1}``).

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
    manifest = recipe(sources, count, folders)
    rng = random.Random(SEED)
    pictures = [_open_photo(p) for p in photos]
    corpus.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".corpus-", dir=corpus.parent))
    made = []
    try:
        per_folder = -(-count // folders)
        for index in range(count):
            which = rng.randrange(len(pictures))
            picture = pictures[which]
            scale = rng.choice(SCALES)
            box = _crop_box(rng, picture.width, picture.height, scale)
            flip_h = rng.random() < 0.5
            flip_v = rng.random() < 0.25
            image = picture.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC, box=box)
            if flip_h:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if flip_v:
                image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
            folder = f"set{index // per_folder}"
            name = f"{folder}/img{index:04d}.jpg"
            (staging / folder).mkdir(exist_ok=True)
            image.save(staging / name, "JPEG", quality=QUALITY)
            made.append(
                {
                    "path": name,
                    "source": photos[which].relative_to(sources).as_posix(),
                    "scale": scale,
                    "box": [round(v, 2) for v in box],
                    "flip_h": flip_h,
                    "flip_v": flip_v,
                }
            )
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
    corpus: Path = DEFAULT_CORPUS,
    *,
    count: int = COUNT,
    folders: int = FOLDERS,
    log=print,
) -> dict:
    """Return the corpus manifest, building the corpus first unless the cached one is current.

    Parameters
    ----------
    sources : Path
        Folder of real photos.
    corpus : Path
        Cache folder of the corpus.
    count, folders : int
        Number of images, and of sub-folders.
    log : callable
        Called with one line of text when the corpus is (re)built.

    Returns
    -------
    dict
        The manifest (see :func:`build`).
    """
    wanted = recipe(sources, count, folders)
    manifest_path = corpus / _MANIFEST
    if manifest_path.is_file():
        try:
            cached = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            cached = {}
        fresh = all(cached.get(k) == v for k, v in wanted.items())
        if fresh and all((corpus / item["path"]).is_file() for item in cached.get("images", [])):
            return cached
    log(f"building the corpus: {count} JPEGs of {WIDTH}×{HEIGHT} from {sources} into {corpus} …")
    started = time.perf_counter()
    manifest = build(sources, corpus, count=count, folders=folders)
    log(f"corpus built in {time.perf_counter() - started:.1f} s")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command line: build (or check) the corpus.

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
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder")
    parser.add_argument("--count", type=int, default=COUNT, help="number of images")
    parser.add_argument("--folders", type=int, default=FOLDERS, help="number of sub-folders")
    args = parser.parse_args(argv)
    manifest = ensure_corpus(args.sources, args.corpus, count=args.count, folders=args.folders)
    print(f"{args.corpus}: {len(manifest['images'])} images from {len(manifest['sources'])} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
