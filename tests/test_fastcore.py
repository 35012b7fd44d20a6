"""The optional compiled core (``soartc_cli._fastcore``, numba) against the numpy core.

The compiled core must give the numpy core's numbers to 1e-12 relative on real photos, for every
metric, every kind of transform (built-in kernels, user kernels of any values and shapes,
rotations and flips, in any order), luma and rgb, square and non-square grids, patches of 8, 16
and 32; refuse the same bad images; and leave the numpy core in charge when numba is missing.
The comparisons need numba (the ``soartc[fast]`` extra); the fallback tests run without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from numpy.testing import assert_allclose

from soartc_cli import _fastcore
from soartc_cli.errors import InputError
from soartc_cli.features import soartc_features
from soartc_cli.imageio import load_image
from soartc_cli.rt import METRICS, TINY
from soartc_cli.transforms import KERNELS, ROTATIONS, TRANSFORM_PRESETS, merge_kernels
from tests.oracle import features_oracle

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
#: Relative agreement asked of the two cores (they differ in the order of their sums only).
RTOL = 1e-12
#: Every transform of the built-in registries, kernels and rotations interleaved (so that
#: neither family is a consecutive run of columns), the datum itself among the parts.
EVERY_TRANSFORM = ("rot90", "bend1", "flip_ud", "line1", "bend2", "rot180", "datum", "bend3",
                   "flip_lr", "bend4", "rot270", "line2", "datum_h")  # fmt: skip


@pytest.fixture
def fast():
    """The compiled core (skips without numba), turned off again after the test."""
    pytest.importorskip("numba", reason="the compiled core needs the soartc[fast] extra (numba)")
    assert _fastcore.enable()
    yield _fastcore
    _fastcore.disable()


def both(image, **settings) -> tuple[np.ndarray, np.ndarray]:
    """``soartc_features`` by the compiled core, then by the numpy core; checked to agree."""
    _fastcore.enabled = True
    try:
        compiled = soartc_features(image, **settings)
    finally:
        _fastcore.disable()
    reference = soartc_features(image, **settings)
    assert_same(compiled, reference, image, settings)
    return compiled, reference


def operand_scales(image, settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """``max |s|`` and ``max |m|`` of every (channel, transform, patch), as ``(C, T, N)``."""
    image = np.asarray(image, dtype=np.float64)
    image = image[None] if image.ndim == 2 else image
    patch = settings.get("patch", 16)
    kernels = settings.get("kernels", KERNELS)
    channels, height, width = image.shape
    x = image.reshape(channels, height // patch, patch, width // patch, patch)
    x = x.transpose(0, 1, 3, 2, 4).reshape(channels, -1, patch, patch)

    def largest(kernel) -> np.ndarray:
        kernel = np.asarray(kernel, dtype=np.float64)
        windows = sliding_window_view(x, kernel.shape, axis=(-2, -1))
        return np.abs(np.einsum("cnuvij,ij->cnuv", windows, kernel)).max(axis=(-2, -1))

    datum = largest(kernels[settings.get("datum", "datum")])
    plain = np.abs(x).max(axis=(-2, -1))
    s_max, m_max = [], []
    for name in settings.get("transforms", TRANSFORM_PRESETS["soartc"]):
        kernel = name in kernels
        s_max.append(datum if kernel else plain)
        m_max.append(largest(kernels[name]) if kernel else plain)
    return np.stack(s_max, axis=1), np.stack(m_max, axis=1)


def assert_same(compiled: np.ndarray, reference: np.ndarray, image, settings: dict) -> None:
    """Same shape, same NaNs, and every value within RTOL of the numpy core's.

    ``beta`` and ``vol`` (ratios) are held to RTOL relative to their value. The others are
    differences that cancel, whose rounding is relative to their operands, so they are held
    to RTOL relative to the larger of their value and their operands' size:
    ``delta = Σm/Σs − β`` to ``|Σm/Σs| + |β|`` (order 1; they cancel for every rotation, where
    Σm = Σs); ``distance``, ``noise`` (``e = m − β s``) and ``shear`` (``m − β vol s``) to
    ``max |m| + |β| max(1, vol) max |s|`` (a flat patch gives ``e = 0`` exactly or at the level
    of rounding). ``β``, ``Σm/Σs = δ + β`` and ``vol`` come from the numpy core.
    """
    assert compiled.shape == reference.shape
    assert compiled.dtype == np.float64
    assert np.array_equal(np.isnan(compiled), np.isnan(reference))
    metrics = tuple(settings.get("metrics", ("beta", "delta", "distance")))
    helpers = soartc_features(image, **{**settings, "metrics": ("beta", "delta", "vol")})
    beta, delta, vol = helpers[:, :, 0], helpers[:, :, 1], helpers[:, :, 2]
    s_max, m_max = operand_scales(image, settings)
    residual = m_max + np.abs(beta) * np.maximum(1.0, vol) * s_max
    for q, name in enumerate(metrics):
        got, want = compiled[:, :, q], reference[:, :, q]
        if name in ("beta", "vol"):
            assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=name)
            continue
        scale = np.abs(beta) + np.abs(delta + beta) if name == "delta" else residual
        bound = RTOL * np.maximum(np.abs(want), scale)
        finite = ~np.isnan(want)
        assert np.all(np.abs(got - want)[finite] <= bound[finite]), name


@pytest.mark.parametrize("patch", [8, 16, 32])
@pytest.mark.parametrize("name", ["astronaut.jpg", "textures/brick.png", "coins.png"])
def test_real_photos_every_transform_every_metric(fast, name, patch):
    pixels = load_image(SAMPLES / name, size=224, patch=patch).pixels
    compiled, _ = both(pixels, patch=patch, transforms=EVERY_TRANSFORM, metrics=METRICS)
    assert compiled.shape == (1, len(EVERY_TRANSFORM), len(METRICS), (224 // patch) ** 2)


@pytest.mark.parametrize("patch", [8, 16, 32])
def test_rgb_non_square_grid_native_size(fast, patch):
    # size 0: the native 600×400 photo, centre-cropped to whole patches (a non-square grid).
    pixels = load_image(SAMPLES / "objects/coffee.jpg", size=0, patch=patch, channels="rgb").pixels
    assert pixels.shape[0] == 3 and pixels.shape[1] != pixels.shape[2]
    compiled, _ = both(pixels, patch=patch, transforms=EVERY_TRANSFORM, metrics=METRICS)
    assert compiled.shape[:3] == (3, len(EVERY_TRANSFORM), len(METRICS))


def test_default_settings_and_presets(fast):
    pixels = load_image(SAMPLES / "rocket.jpg").pixels
    for transforms in TRANSFORM_PRESETS.values():
        for metrics in (
            ("beta", "delta", "distance"),
            ("beta", "vol", "shear"),
            ("noise",),
            ("vol",),
        ):
            both(pixels, transforms=transforms, metrics=metrics)


def test_user_kernels_arbitrary_values_and_shapes(fast):
    rng = np.random.default_rng(7)
    user = {
        "dense3": rng.normal(size=(3, 3)),  # no zero tap
        "sparse5": np.where(rng.random((5, 5)) < 0.3, rng.normal(size=(5, 5)) * 1e3, 0.0),
        "wide3x7": rng.uniform(-2, 2, size=(3, 7)),  # rectangular: kernels share one shape…
        "one1": np.array([[2.5]]),
        "zero3": np.zeros((3, 3)),  # every tap zero: m = 0
    }
    pixels = load_image(SAMPLES / "astronaut.jpg", patch=16).pixels
    square = merge_kernels({k: user[k] for k in ("dense3", "sparse5", "zero3")})
    for datum, parts in (
        ("dense3", ("dense3", "zero3", "rot90")),  # a user datum, itself a part
        ("datum", ("sparse5", "bend1", "line2")),
    ):
        both(pixels, transforms=parts, datum=datum, metrics=METRICS, kernels=square)
    for name in ("wide3x7", "one1"):  # …so each of these is its own datum
        kernels = merge_kernels({name: user[name]})
        both(pixels, transforms=(name, "flip_lr"), datum=name, metrics=METRICS, kernels=kernels)


def test_repeated_metrics_and_float64_and_integer_images(fast):
    rng = np.random.default_rng(3)
    settings = {"transforms": ("bend2", "rot270", "bend2"), "metrics": ("shear", "beta", "shear")}
    for image in (
        rng.random((2, 48, 32)),  # float64, two channels
        rng.integers(0, 256, size=(32, 64)).astype(np.uint8),
        np.zeros((32, 32), dtype=np.float32),  # flat black: the neutral values of SPEC §4
    ):
        both(image, **settings)


def test_against_the_loop_oracle(fast):
    rng = np.random.default_rng(11)
    image = rng.random((2, 32, 48))
    transforms = ("bend1", "rot90", "line2", "flip_ud")
    _fastcore.enabled = True
    out = soartc_features(image, transforms=transforms, metrics=METRICS)
    expected = features_oracle(
        image, patch=16, transforms=transforms, datum="datum", metrics=METRICS, kernels=KERNELS
    )
    assert_allclose(out, expected, rtol=1e-9, atol=1e-12)  # test_features.py's tolerance


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bad_values_refused_like_the_numpy_core(fast, bad):
    image = np.ones((3, 32, 32), dtype=np.float32)
    image[2, 20, 5] = bad
    _fastcore.enabled = True
    with pytest.raises(InputError, match="NaN, infinite or overflowing"):
        soartc_features(image)


def test_rotation_codes_match_the_registry(fast):
    # Each rotation alone as m: beta of a patch with itself rotated, computed both ways.
    image = np.arange(16 * 16, dtype=np.float64).reshape(16, 16) ** 1.5
    for name in ROTATIONS:
        both(image, transforms=(name,), metrics=METRICS)


def test_enable_is_idempotent_and_disable_restores_numpy(fast):
    assert _fastcore.enable() and _fastcore.enabled
    _fastcore.disable()
    assert not _fastcore.enabled


def test_without_numba_the_numpy_core_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.setattr(_fastcore, "_kernel", None)
    monkeypatch.setattr(_fastcore, "enabled", False)
    assert not _fastcore.available()
    assert _fastcore.enable() is False
    assert _fastcore.enabled is False
    pixels = load_image(SAMPLES / "rocket.jpg").pixels
    out = soartc_features(pixels)
    expected = features_oracle(
        pixels[:, :32, :32], patch=16, transforms=TRANSFORM_PRESETS["soartc"], datum="datum",
        metrics=("beta", "delta", "distance"), kernels=KERNELS,
    )  # fmt: skip
    assert_allclose(out[..., [0, 1]], expected[..., [0, 1]], rtol=1e-9, atol=1e-12)


def test_features_refuses_a_core_that_was_never_built(monkeypatch):
    monkeypatch.setattr(_fastcore, "_kernel", None)
    with pytest.raises(RuntimeError, match="enable"):
        _fastcore.features(np.zeros((1, 16, 16)), None, patch=16, transforms=())


def test_threshold_is_specs():
    assert _fastcore._TINY == TINY


@pytest.mark.parametrize(
    ("images", "workers", "expected"),
    [(0, 1, False), (_fastcore.MIN_IMAGES - 1, 1, False), (_fastcore.MIN_IMAGES, 1, True),
     (_fastcore.MIN_IMAGES, 0, True), (2 * _fastcore.MIN_IMAGES - 1, 2, False),
     (2 * _fastcore.MIN_IMAGES, 2, True), (10 * _fastcore.MIN_IMAGES, 4, True)],
)  # fmt: skip
def test_worth_it_rule(images, workers, expected):
    assert _fastcore.worth_it(images, workers=workers) is expected
