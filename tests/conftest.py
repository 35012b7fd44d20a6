"""Fixtures shared by several test files."""

import shutil

import pytest
from PIL import Image

from tests import photoruns, tinyruns

# --- from test_issue9_outputs.py ------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sample images' wide CSV (and its record) written to a regular file."""
    out = tmp_path_factory.mktemp("reference") / "ref.csv"
    result = photoruns.invoke(
        "compute", photoruns.SAMPLES, "-o", out, *photoruns.FAST, "--workers", 1, "--quiet"
    )
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """96 images (the 12 samples eight times over) and a broken file among the first ones."""
    root = tmp_path_factory.mktemp("many")
    for copy in range(8):
        for name in photoruns.IMAGES:
            target = root / f"c{copy}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photoruns.SAMPLES / name, target)
    (root / "c0" / "animals" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    return root


@pytest.fixture(scope="module")
def uninterrupted(many, tmp_path_factory):
    """One uninterrupted run over ``many`` without --resume: CSV and Parquet."""
    folder = tmp_path_factory.mktemp("whole")
    for name in ("whole.csv", "whole.parquet"):
        result = photoruns.invoke(
            "compute", many, "-o", folder / name, *photoruns.HEAVY, "--workers", 2, "--quiet"
        )
        assert result.exit_code == 1, result.stderr  # the broken file
        assert "skipped c0/animals/broken.jpg" in result.stderr
    return folder / "whole.csv", folder / "whole.parquet"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The sample images in three shards (CSV), and the whole run."""
    folder = tmp_path_factory.mktemp("shards")
    for i in range(3):
        result = photoruns.invoke(
            "compute",
            photoruns.SAMPLES,
            "-o",
            folder / f"part{i}.csv",
            "--shard",
            f"{i}/3",
            *photoruns.FAST,
            "--workers",
            1,
            "--quiet",
        )
        assert result.exit_code == 0, result.stderr
    result = photoruns.invoke(
        "compute",
        photoruns.SAMPLES,
        "-o",
        folder / "whole.csv",
        *photoruns.FAST,
        "--workers",
        1,
        "--quiet",
    )
    assert result.exit_code == 0
    return folder


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inp"
    folder.mkdir()
    shutil.copyfile(photoruns.SAMPLES / "coins.png", folder / "a.png")
    shutil.copyfile(
        photoruns.SAMPLES / "rocket.jpg", folder / "a.jpg"
    )  # its picture would be a.png
    return folder


# --- from test_issue13.py ------------------------------------------------------------


@pytest.fixture
def tiny_photos(tmp_path):
    root = tmp_path / "inp"
    root.mkdir()
    for i in range(3):
        tinyruns.picture(root / f"p{i}.png", i)
    return root


@pytest.fixture(scope="module")
def huge_photo(tmp_path_factory):
    """A 5000×5000 PNG of one colour (about 80 kB on disk, 75 MB decoded)."""
    root = tmp_path_factory.mktemp("huge")
    Image.new("RGB", (5000, 5000), (90, 120, 30)).save(root / "big.png")
    return root


@pytest.fixture
def mixed_sizes(tmp_path):
    """a 64², b 48², c 48², d 64²: the whole list's first grid is 4×4, shard 1/2's first 3×3."""
    root = tmp_path / "mixed"
    root.mkdir()
    for i, (name, side) in enumerate([("a", 64), ("b", 48), ("c", 48), ("d", 64)]):
        tinyruns.picture(root / f"{name}.png", i, size=(side, side))
    return root
