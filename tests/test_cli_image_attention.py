"""`soartc attention DIR…` and `--maps`: attention over real image patches, and its pictures."""

import csv
import io
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from soartc_cli.core.patches import patch_names
from soartc_cli.imaging.discover import MAPS_MARKER
from soartc_cli.imaging.load import load_image
from soartc_cli.interfaces.cli import app
from soartc_cli.output import pictures
from tests.test_attention import _plain_patch_attention
from tests.test_cli_compute import _photo

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "x").mkdir(parents=True)
    _photo(root / "x" / "one.png", 1)
    _photo(root / "two.jpg", 2, size=(50, 70))
    return root


def _plain_rows(pixels, patch):
    """Patches as rows, written out with loops (R, G, B values of a patch concatenated)."""
    c, h, w = pixels.shape
    rows = []
    for i in range(h // patch):
        for j in range(w // patch):
            block = pixels[:, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            rows.append(np.concatenate([block[k].ravel() for k in range(c)]))
    return np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("channels", ["luma", "rgb"])
@pytest.mark.parametrize("mode", ["random", "identity", "file"])
def test_received_and_entropy_match_the_plain_implementation(folder, tmp_path, mode, channels):
    patch, size = 8, 32
    k = (3 if channels == "rgb" else 1) * patch * patch
    weights = mode
    rng = np.random.default_rng(5)
    if mode == "file":
        arrays = {n: rng.standard_normal((k, 6)) for n in ("W_Q", "W_K", "W_V")}
        weights = tmp_path / "w.npz"
        np.savez(weights, **arrays)
    dim = ["--dim", 16] if mode == "random" else []  # identity and a file fix d themselves
    result = invoke("attention", folder, "--size", size, "--patch", patch, "--channels", channels,
                    "--weights", weights, *dim, "--seed", 3, "-o", "-", "--precision", 17,
                    "--workers", 1)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    names = patch_names(4, 4)
    assert list(rows[0])[4:] == [
        f"attention.{m}.{p}" for m in ("received", "entropy") for p in names
    ]
    for row, path in zip(rows, [folder / "two.jpg", folder / "x" / "one.png"], strict=True):
        pixels = load_image(path, size=size, patch=patch, channels=channels).pixels
        x = _plain_rows(pixels, patch)
        if mode == "random":
            g = np.random.default_rng(3)
            w_q, w_k = (g.standard_normal((k, 16)) / math.sqrt(k) for _ in range(2))
        elif mode == "identity":
            w_q = w_k = np.eye(k)
        else:
            w_q, w_k = arrays["W_Q"], arrays["W_K"]
        received, entropy = _plain_patch_attention(x, w_q, w_k, norm="layer")
        got_r = np.array([float(row[f"attention.received.{p}"]) for p in names])
        got_e = np.array([float(row[f"attention.entropy.{p}"]) for p in names])
        np.testing.assert_allclose(got_r, received, rtol=1e-9)
        np.testing.assert_allclose(got_e, entropy, rtol=1e-9, atol=1e-12)
        assert math.isclose(got_r.sum(), 1.0, rel_tol=1e-12)
        assert np.all((got_e >= 0) & (got_e <= math.log(16) + 1e-12))


def test_norm_none_and_summary_layout(folder):
    result = invoke("attention", folder, "--size", 32, "--patch", 16, "--norm", "none",
                    "--layout", "summary", "-o", "-", "--workers", 1)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["transform"] for r in rows] == ["attention", "attention"]
    assert float(rows[0]["received_mean"]) == pytest.approx(1 / 4, rel=1e-6)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [({"W_Q": (63, 8), "W_K": (64, 8), "W_V": (64, 8)}, "(64, d)"),
     ({"W_Q": (64, 8), "W_K": (64, 8)}, "lacks W_V")],
)  # fmt: skip
def test_a_weights_file_of_the_wrong_shape_is_a_usage_error(folder, tmp_path, shapes, message):
    weights = tmp_path / "w.npz"
    np.savez(weights, **{n: np.ones(s) for n, s in shapes.items()})
    result = invoke("attention", folder, "--patch", 8, "--size", 32, "--weights", weights)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "nope.npz"], "no such file"),
        (["--norm", "batch"], "--norm"),
        (["--softmax", "global"], "only for the seed demo"),
        (["--words", "1,0"], "only for the seed demo"),
        (["--dim", "0"], "--dim"),
    ],
)
def test_attention_usage_errors(folder, args, message):
    result = invoke("attention", folder, *args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


@pytest.mark.parametrize("kind", ["text", "npy", "empty"])
def test_not_a_weights_file(folder, tmp_path, kind):
    bad = tmp_path / "w.npz"
    if kind == "text":
        bad.write_text("W_Q = [[1, 2], [3, 4]]\n")
    elif kind == "npy":  # one array saved by numpy.save, then renamed: np.load would take it
        with open(bad, "wb") as f:
            np.save(f, np.ones((64, 4)))
    else:
        bad.write_bytes(b"")
    result = invoke("attention", folder, "--weights", bad, "--size", 32, "--patch", 8)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"soartc: error: --weights: cannot read {bad}: ")
    assert "not an .npz file (a zip of .npy arrays)" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "pickle" not in result.stderr


@pytest.mark.parametrize("weights", ["identity", "npz"])
def test_dim_with_fixed_weights_is_a_usage_error(folder, tmp_path, weights):
    if weights == "npz":
        weights = tmp_path / "w.npz"
        np.savez(weights, **{n: np.ones((64, 4)) for n in ("W_Q", "W_K", "W_V")})
    result = invoke("attention", folder, "--weights", weights, "--dim", 8, "--size", 32,
                    "--patch", 8, "--workers", 1, "-o", tmp_path / "out.csv")  # fmt: skip
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "soartc: error: --dim: only with --weights random"
    )
    assert not (tmp_path / "out.csv").exists()


def test_attention_refuses_too_many_patches_before_reading(folder, tmp_path):
    # 2048 / 8 = 256 → 65,536 patches: more than attention compares pair by pair.
    result = invoke("attention", folder, "--size", 2048, "--patch", 8, "-o", tmp_path / "o.csv")
    assert result.exit_code == 2
    assert "256×256 = 65536 patches are more than the 16384" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "o.csv").exists()
    # 1024 / 8 = 128 → 16,384 patches: allowed (computed in blocks of rows, memory bounded)
    from soartc_cli.pipeline import jobs
    from soartc_cli.settings.features import AttentionSettings
    from soartc_cli.settings.image import ImageSettings

    job = jobs.AttentionJob(AttentionSettings.parse(image=ImageSettings(1024, 8)))
    job.check_grid((128, 128))
    assert job.work_bytes(128 * 128) < 100 * 2**20


def _visible(directory):
    """The names in ``directory`` a user sees (the hidden ``.soartc-maps`` marker left out)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("command", ["compute", "attention"])
def test_maps_are_written_for_every_image(folder, tmp_path, command):
    out = tmp_path / "maps"
    result = invoke(command, folder, "--maps", out, "--size", 32, "--patch", 8, "--workers", 1,
                    "-o", tmp_path / "res.csv", "--precision", 17)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert _visible(out) == ["two.png", "x__one.png"]
    assert (out / MAPS_MARKER).is_file()  # the hidden marker: never read as input images
    transforms = ("attention",) if command == "attention" else (
        "bend1", "bend2", "bend3", "bend4", "line1", "line2")  # fmt: skip
    metrics = ("received", "entropy") if command == "attention" else ("beta", "delta", "distance")
    expected = pictures.layout(image_shape=(1, 32, 32), grid=(4, 4), channels=("luma",),
                           transforms=transforms, metrics=metrics)  # fmt: skip
    with Image.open(out / "x__one.png") as picture:
        assert picture.size == (expected.width, expected.height)
        drawn = np.asarray(picture.convert("RGB"))
    # The picture is the one render_map draws from the image's own values, pixel for pixel: the
    # values read back from the run's CSV at --precision 17, the pixels from the loader.
    rows = {row["path"]: row for row in csv.DictReader(open(tmp_path / "res.csv"))}
    row = rows["x/one.png"]
    names = patch_names(4, 4)
    values = np.array(
        [[[float(row[f"{t}.{m}.{p}"]) for p in names] for m in metrics] for t in transforms]
    )[np.newaxis]
    pixels = load_image(folder / "x" / "one.png", size=32, patch=8).pixels
    again = pictures.render_map(pixels, values, grid=(4, 4), channels=("luma",),
                            transforms=transforms, metrics=metrics, title="x/one.png")  # fmt: skip
    assert np.array_equal(np.asarray(again.convert("RGB")), drawn)


def test_maps_name_collisions_are_announced(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    _photo(root / "a.jpg", 1)
    _photo(root / "a.png", 2)
    result = invoke("compute", root, "--maps", tmp_path / "maps", "--size", 16, "--patch", 8,
                    "--workers", 1, "-o", tmp_path / "out.csv")  # fmt: skip
    assert result.exit_code == 0
    assert "a.jpg and a.png both draw a.png" in result.stderr
    assert _visible(tmp_path / "maps") == ["a.png"]
