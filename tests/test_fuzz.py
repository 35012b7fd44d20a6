"""A fuzz campaign over broken image files (issue 12).

About 300 seeded mutants of valid JPEG, PNG, TIFF, GIF, WebP and BMP files (``tests/fuzzing.py``)
go through ``soartc compute`` with one and with two workers. Each run must end (a time bound),
without a traceback or an internal error, with every file either a row or a ``skipped`` line and a
run-record failure, counts that add up, the same bytes for both worker counts, and a bounded peak
memory.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from soartc_cli.interfaces.cli.base import printable as one_line
from tests import fuzzing

PHOTO = Path(__file__).resolve().parent.parent / "sample_images" / "camera.png"
#: Seconds one whole run may take (about 0.5 s here for 300 files at --size 64).
RUN_TIMEOUT = 120
#: Peak resident memory of the largest process of a run, in KiB (ru_maxrss on Linux).
RSS_BOUND_KIB = 1 << 20

# Runs a command and reports the peak RSS of its largest (waited-for) descendant: a fresh
# process, so that nothing this test process ran before counts.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stdout.write(f'{peak}\\n')\n"
    "sys.exit(code)\n"
)


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return fuzzing.seed_files(str(PHOTO))


@pytest.fixture(scope="module")
def mutant_dir(tmp_path_factory, seeds) -> tuple[Path, list[fuzzing.Mutant]]:
    root = tmp_path_factory.mktemp("mutants")
    mutants = fuzzing.mutants(seeds)
    for mutant in mutants:
        (root / mutant.name).write_bytes(mutant.data)
    return root, mutants


def test_the_generator_is_seeded_and_makes_about_300_mutants(seeds):
    first = fuzzing.mutants(seeds)
    assert first == fuzzing.mutants(seeds)  # the same seed, the same bytes
    assert 280 <= len(first) <= 320
    assert first != fuzzing.mutants(seeds, seed=13)
    by_format = {ext: [m for m in first if m.name.endswith(f".{ext}")] for ext in fuzzing.FORMATS}
    assert all(len(group) >= 40 for group in by_format.values()), {
        ext: len(group) for ext, group in by_format.items()
    }
    originals = dict(seeds)
    for mutant in first:
        ext = mutant.name.rsplit(".", 1)[1]
        if "_valid." in mutant.name:
            assert mutant.data == originals[ext]
        else:
            assert mutant.data != originals[ext], mutant.name


@pytest.mark.parametrize("ext", list(fuzzing.FORMATS))
def test_the_seeds_are_valid_files_of_their_format(seeds, ext):
    with Image.open(io.BytesIO(seeds[ext])) as image:
        assert image.format == fuzzing.FORMATS[ext]
        assert image.size == (64, 48)
        image.load()


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("png_ihdr_width_1.png", (1, 48)),
        ("png_ihdr_height_2147483647.png", (64, 2**31 - 1)),
        ("jpg_sof_height_65535.jpg", (64, 65535)),
        ("jpg_sof_width_65535.jpg", (65535, 48)),
        ("gif_screen_width_65535.gif", (65535, 48)),
        ("tif_width_65535.tif", (65535, 48)),
        ("tif_length_2147483647.tif", (64, 2**31 - 1)),
        ("bmp_width_2147483647.bmp", (2**31 - 1, 48)),
        ("webp_vp8_width_16383.webp", (16383, 48)),
    ],
)
def test_header_edits_reach_the_decoder(seeds, name, size, monkeypatch):
    # The edited sizes are what Pillow reads from the header: the CRCs and offsets are right.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # only the header is read here
    (mutant,) = [m for m in fuzzing.mutants(seeds) if m.name == name]
    with Image.open(io.BytesIO(mutant.data)) as image:
        assert image.size == size


def test_png_ihdr_edits_keep_a_valid_crc(seeds):
    for mutant in fuzzing.mutants(seeds):
        if mutant.name.startswith("png_ihdr_"):
            body = mutant.data[12:29]
            (crc,) = struct.unpack(">I", mutant.data[29:33])
            assert zlib.crc32(body) & 0xFFFFFFFF == crc, mutant.name


#: The runs of the campaign: SOARTC and SOART at a fixed size, and attention at native size
#: (``--size 0``: the crop to whole patches sees the edited widths and heights as they are;
#: ``--max-pixels`` keeps the 64×65535 mutants, a few seconds each, to their own test below).
COMMANDS = {
    "compute": ["compute", "--size", "64", "--patch", "16", "--transforms", "all",
                "--metrics", "all"],
    "attention-native": ["attention", "--size", "0", "--patch", "16", "--dim", "8",
                         "--max-pixels", "1000000"],
}  # fmt: skip


def _run(
    root: Path, out: Path, workers: int, command: list[str]
) -> tuple[subprocess.CompletedProcess, int]:
    cmd = [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "soartc_cli", command[0],
           str(root), *command[1:], "-o", str(out), "--workers", str(workers)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    return result, int(result.stdout.strip().splitlines()[-1])


def _campaign(
    root: Path, mutants: list[fuzzing.Mutant], out: Path, workers: int, command: list[str]
) -> tuple[bytes, list[str]]:
    """Run one command over the mutants, check every invariant; the CSV bytes, foreign lines."""
    result, peak_kib = _run(root, out, workers, command)
    stderr = result.stderr
    assert result.returncode in (0, 1), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert peak_kib < RSS_BOUND_KIB, f"peak RSS {peak_kib} KiB with {workers} workers"
    lines = stderr.splitlines()
    assert lines[-1].startswith("soartc: "), lines[-1]  # the summary
    skipped = {}
    foreign = []
    for line in lines[:-1]:
        # A C library's warning written in pieces by a worker (libtiff: "module: ", message,
        # ".\n") can land around a skip line of the main process: find the skip line in it.
        before, marker, after = line.partition("soartc: skipped ")
        if marker:
            path, reason = after.split(": ", 1)
            skipped[path] = reason
        if before or not marker:
            foreign.append(line)
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    row_paths = [row[0] for row in rows[1:]]
    # Every file exactly once: a row or a skip line, never both, never neither.
    assert sorted(row_paths + list(skipped)) == sorted(mutant.name for mutant in mutants)
    assert row_paths == sorted(row_paths)  # rows in input order
    record = json.loads(out.with_name(out.name + ".meta.json").read_text())
    counts = record["counts"]
    assert counts["found"] == len(mutants)
    assert counts["found"] == counts["processed"] + counts["failed"]
    assert counts["processed"] == len(row_paths)
    assert {f["path"]: one_line(f["error"]) for f in record["failures"]} == skipped
    assert result.returncode == (1 if skipped else 0)
    # The valid seeds always make rows; many mutants are skipped.
    assert {m.name for m in mutants if "_valid." in m.name} <= set(row_paths)
    assert len(skipped) > len(mutants) // 4
    return out.read_bytes(), foreign


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_mutants_give_rows_or_skip_lines_the_same_for_one_and_two_workers(
    mutant_dir, tmp_path, command
):
    root, mutants = mutant_dir
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.csv"
        outputs[workers], foreign = _campaign(root, mutants, out, workers, COMMANDS[command])
        assert foreign == []  # nothing but skip lines: no decoder warnings, no stray output
    assert outputs[1] == outputs[2]


@pytest.fixture(scope="module")
def variant_dir(tmp_path_factory) -> tuple[Path, list[fuzzing.Mutant]]:
    root = tmp_path_factory.mktemp("variants")
    mutants = fuzzing.variant_mutants(fuzzing.variant_seed_files(str(PHOTO)))
    for mutant in mutants:
        (root / mutant.name).write_bytes(mutant.data)
    return root, mutants


@pytest.mark.slow
def test_variant_mutants_give_rows_or_skip_lines_the_same_for_one_and_two_workers(
    variant_dir, tmp_path
):
    # Compressed TIFF, 16-bit and float images, animations, palettes: other decoders' paths.
    root, mutants = variant_dir
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.csv"
        outputs[workers], _ = _campaign(root, mutants, out, workers, COMMANDS["compute"])
    assert outputs[1] == outputs[2]


@pytest.mark.slow
def test_variant_mutants_write_nothing_but_soartc_lines_on_stderr(variant_dir, tmp_path):
    root, mutants = variant_dir
    _, foreign = _campaign(root, mutants, tmp_path / "out.csv", 1, COMMANDS["compute"])
    assert foreign == []


@pytest.mark.slow
def test_attention_at_native_size_of_a_64x65535_gif_ends_in_bounded_memory(seeds, tmp_path):
    # Regression: the GIF's logical screen edited to 64×65535 decodes to 16,380 patches of 16×16;
    # attention over all pairs took 2 GB and ran past the 120 s bound before it was computed in
    # blocks of query rows.
    (mutant,) = [m for m in fuzzing.mutants(seeds) if m.name == "gif_screen_height_65535.gif"]
    path = tmp_path / mutant.name
    path.write_bytes(mutant.data)
    out = tmp_path / "out.csv"
    cmd = ["attention", "--size", "0", "--patch", "16", "--dim", "8"]
    result, peak_kib = _run(path, out, 1, cmd)
    assert result.returncode == 0, result.stderr
    assert peak_kib < 512 * 1024, f"peak RSS {peak_kib} KiB"
    (row,) = list(csv.DictReader(io.StringIO(out.read_text())))
    assert (row["width"], row["height"]) == ("64", "65535")
    received = [float(v) for k, v in row.items() if k.startswith("attention.received.")]
    assert len(received) == 4 * 4095
    assert sum(received) == pytest.approx(1.0, rel=1e-6)
