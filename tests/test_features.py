"""SOARTC / SOART features of one image: by hand, against the loop oracle, and SPEC §4's checks."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image, ImageDraw, ImageFilter
from scipy.signal import correlate2d

from soartc_cli.core import features
from soartc_cli.core.features import soartc_features
from soartc_cli.core.metrics import (
    METRIC_PRESETS,
    METRICS,
    METRICS_REGISTRY,
    TINY,
    parse_metrics,
    register_metric,
    soart_compare,
    unregister_metric,
)
from soartc_cli.core.transforms import KERNELS, TRANSFORM_PRESETS, merge_kernels
from soartc_cli.errors import InputError, UsageError
from tests.oracle import (
    ORACLE_METRICS,
    ROTATION_FUNCTIONS,
    SPEC_METRICS,
    compare_one,
    features_oracle,
)

# Fast path vs oracle: both evaluate the formulas in float64 and differ by summation order only.
RTOL = 1e-9
ATOL = 1e-12

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "sample_images"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

USER_KERNELS = {
    "cross3": np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]),
    "diag3": np.eye(3),
    "sobel3": np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]),
    "smooth3": np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16,
    "centre3": np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
    "wide_d": np.array([[0.0, 0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0], [0, 0, 1, 0, 0]]),
    "wide_k": np.array([[0.5, 0.0, -1.0, 0.0, 0.25], [0.0, 3.0, 0.0, 1.0, 0.0], [1, 0, 0, 0, 2]]),
}
BANK = merge_kernels(USER_KERNELS)


def synthetic_photo(size: int) -> np.ndarray:
    """A photo-like RGB picture drawn with Pillow: shading, shapes, soft edges, grain."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([180 * x + 40, 120 + 60 * np.sin(5 * y), 200 * (1 - x * y)], axis=-1)
    picture = Image.fromarray(base.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    draw.ellipse((size * 0.2, size * 0.15, size * 0.65, size * 0.6), fill=(230, 210, 40))
    draw.polygon([(0, size), (size * 0.5, size * 0.55), (size, size)], fill=(30, 70, 20))
    draw.line((0, size * 0.3, size, size * 0.1), fill=(250, 250, 250), width=2)
    picture = picture.filter(ImageFilter.GaussianBlur(1.2))
    grain = np.random.default_rng(7).normal(0, 6, (size, size, 3))
    return np.clip(np.asarray(picture, dtype=np.float64) + grain, 0, 255).astype(np.uint8)


def photo(size: int = 64) -> np.ndarray:
    """A real photo from sample_images when there is one, else the synthetic one: (3, S, S)."""
    files = sorted(
        p for p in SAMPLE_IMAGES.glob("**/*") if p.suffix.lower() in IMAGE_SUFFIXES
    ) if SAMPLE_IMAGES.is_dir() else []  # fmt: skip
    rgb = None
    for path in files:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                side = min(img.size)
                left, top = (img.width - side) / 2, (img.height - side) / 2
                box = (left, top, left + side, top + side)
                rgb = np.asarray(img.resize((size, size), Image.BILINEAR, box=box))
            break
        except OSError:
            continue
    if rgb is None:
        rgb = synthetic_photo(size)
    return (np.moveaxis(rgb, -1, 0) / 255).astype(np.float32)


def luma(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.float32)


# --- by hand ----------------------------------------------------------------------------------

# A 4×4 patch, a 3×3 user datum (the cross) and a 3×3 user part (the main diagonal).
PATCH_4X4 = np.array(
    [
        [1, 2, 0, 1],
        [0, 1, 3, 1],
        [2, 0, 1, 0],
        [1, 1, 0, 2],
    ],
    dtype=np.float32,
)


def test_soartc_by_hand_4x4_patch_3x3_user_kernels():
    # s[u,v] = centre x[u+1,v+1] + top x[u,v+1] + bottom x[u+2,v+1] + left x[u+1,v] + right
    # x[u+1,v+2]:   s[0,0] = 1+2+0+0+3 = 6   s[0,1] = 3+0+1+1+1 = 6
    #               s[1,0] = 0+1+1+2+1 = 5   s[1,1] = 1+3+0+0+0 = 4
    # m[u,v] = x[u,v] + x[u+1,v+1] + x[u+2,v+2]:
    #               m[0,0] = 1+1+1 = 3       m[0,1] = 2+3+0 = 5
    #               m[1,0] = 0+0+0 = 0       m[1,1] = 1+1+2 = 4
    s = [[6, 6], [5, 4]]
    m = [[3, 5], [0, 4]]
    assert_array_equal(correlate2d(PATCH_4X4, USER_KERNELS["cross3"], mode="valid"), s)
    assert_array_equal(correlate2d(PATCH_4X4, USER_KERNELS["diag3"], mode="valid"), m)
    # k = 4; ⟨s,s⟩ = 36+36+25+16 = 113; ⟨s,m⟩ = 18+30+0+16 = 64
    # beta     = 64/113
    # delta    = Σm/Σs − β = 12/21 − 64/113 = (452 − 448)/791 = 4/791
    # e        = m − βs = (339−384, 565−384, 0−320, 452−256)/113 = (−45, 181, −320, 196)/113
    #            (check: ⟨e,s⟩ = (−270 + 1086 − 1600 + 784)/113 = 0)
    # distance = (45 + 181 + 320 + 196)/(4·113) = 742/452 = 371/226
    # noise    = √(Σe²/3), Σe² = (2025 + 32761 + 102400 + 38416)/113² = 175602/12769 = 1554/113
    #            → √(1554/339) = √(518/113)
    # vol      = mean|m| / mean|βs| = (12/4) / ((64/113)·(21/4)) = 12·113/(21·64) = 113/112
    # shear    : β·vol = (64/113)(113/112) = 4/7; m − (4/7)s = (−3, 11, −20, 12)/7;
    #            mean of |·| = 46/28 = 23/14
    expected = {
        "beta": 64 / 113,
        "delta": 4 / 791,
        "distance": 371 / 226,
        "noise": math.sqrt(518 / 113),
        "vol": 113 / 112,
        "shear": 23 / 14,
    }
    out = soartc_features(
        PATCH_4X4,
        patch=4,
        transforms=["diag3"],
        datum="cross3",
        metrics=SPEC_METRICS,
        kernels=BANK,
    )
    assert out.shape == (1, 1, 6, 1)
    assert out.dtype == np.float64
    assert_allclose(out[0, 0, :, 0], [expected[name] for name in SPEC_METRICS], rtol=1e-14)


# A 4×4 image with patch 2: four patches, rotations worked out by hand.
IMAGE_4X4 = np.array(
    [
        [1, 2, 0, 0],  # r00c00 = [[1, 2], [3, 4]]   r00c01 = zeros
        [3, 4, 0, 0],
        [5, 5, 1, 0],  # r01c00 = [[5, 5], [5, 5]]   r01c01 = [[1, 0], [0, 1]]
        [5, 5, 0, 1],
    ],
    dtype=np.float32,
)
NEUTRAL = [1, 0, 0, 0, 1, 0]  # beta, delta, distance, noise, vol, shear
# r00c00, s = (1, 2, 3, 4), ⟨s,s⟩ = 30, Σs = 10:
#  rot90:   m = (2, 4, 1, 3), ⟨s,m⟩ = 25, β = 5/6, delta = 1 − 5/6 = 1/6,
#           e = (7, 14, −9, −2)/6 → distance = 32/24 = 4/3,
#           noise = √((49+196+81+4)/36/3) = √(55/18), vol = 10/(10·5/6) = 6/5,
#           β·vol = 1 → shear = mean|m − s| = (1+2+2+1)/4 = 3/2
#  rot180:  m = (4, 3, 2, 1), ⟨s,m⟩ = 20, β = 2/3, delta = 1/3, e = (10, 5, 0, −5)/3
#           → distance = 20/12 = 5/3, noise = √(150/9/3) = √(50/9), vol = 3/2,
#           shear = mean|m − s| = (3+1+1+3)/4 = 2
#  flip_lr: m = (2, 1, 4, 3), ⟨s,m⟩ = 28, β = 14/15, delta = 1/15, e = (16, −13, 18, −11)/15
#           → distance = 58/60 = 29/30, noise = √((256+169+324+121)/225/3) = √(58/45),
#           vol = 15/14, shear = mean|m − s| = 1
# r00c01 (zeros) and r01c00 (flat 5, symmetric): neutral values under every rotation.
# r01c01, s = (1, 0, 0, 1):
#  rot90 and flip_lr: m = (0, 1, 1, 0), ⟨s,m⟩ = 0, β = 0, delta = 2/2 − 0 = 1, e = m
#           → distance = 1/2, noise = √(2/3), vol = 1 (mean|βs| = 0), shear = mean|m| = 1/2
#  rot180:  m = s → neutral values
ROTATIONS_BY_HAND = {
    "rot90": [
        [5 / 6, 1 / 6, 4 / 3, math.sqrt(55 / 18), 6 / 5, 3 / 2],
        NEUTRAL,
        NEUTRAL,
        [0, 1, 1 / 2, math.sqrt(2 / 3), 1, 1 / 2],
    ],
    "rot180": [
        [2 / 3, 1 / 3, 5 / 3, math.sqrt(50 / 9), 3 / 2, 2],
        NEUTRAL,
        NEUTRAL,
        NEUTRAL,
    ],
    "flip_lr": [
        [14 / 15, 1 / 15, 29 / 30, math.sqrt(58 / 45), 15 / 14, 1],
        NEUTRAL,
        NEUTRAL,
        [0, 1, 1 / 2, math.sqrt(2 / 3), 1, 1 / 2],
    ],
}


def test_soart_by_hand_4x4_image_patch_2():
    out = soartc_features(
        IMAGE_4X4, patch=2, transforms=list(ROTATIONS_BY_HAND), metrics=SPEC_METRICS
    )
    assert out.shape == (1, 3, 6, 4)
    for t, (name, patches) in enumerate(ROTATIONS_BY_HAND.items()):
        expected = np.array(patches, dtype=float).T  # (metric, patch)
        assert_allclose(out[0, t], expected, rtol=1e-14, atol=1e-15, err_msg=name)


# --- against the loop oracle ------------------------------------------------------------------

ALL_WITH_DATUM = (*TRANSFORM_PRESETS["all"], "datum")


@pytest.mark.parametrize("patch", [8, 16])
def test_against_oracle_photo_all_transforms_all_metrics(patch):
    image = luma(photo(64))
    out = soartc_features(image, patch=patch, transforms=ALL_WITH_DATUM, metrics=METRICS)
    expected = features_oracle(
        image, patch=patch, transforms=ALL_WITH_DATUM, datum="datum", metrics=METRICS,
        kernels=KERNELS,
    )  # fmt: skip
    assert out.shape == (1, len(ALL_WITH_DATUM), len(METRICS), (64 // patch) ** 2)
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_against_oracle_rgb_photo_three_channels():
    rgb = photo(48)
    transforms = ("bend2", "line1", "rot270", "flip_ud")
    out = soartc_features(rgb, patch=8, transforms=transforms, metrics=METRICS)
    expected = features_oracle(
        rgb, patch=8, transforms=transforms, datum="datum", metrics=METRICS, kernels=KERNELS
    )
    assert out.shape == (3, 4, len(METRICS), 36)
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    # each channel alone gives its own slice
    alone = soartc_features(rgb[1], patch=8, transforms=transforms, metrics=METRICS)
    assert_allclose(out[1], alone[0], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    ("shape", "patch", "dtype"),
    [((32, 48), 8, np.float32), ((3, 24, 36), 6, np.float64), ((40, 20), 5, np.uint8)],
)
def test_against_oracle_random_images_user_3x3_kernels(shape, patch, dtype):
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape)
    image = (image * 255).astype(dtype) if dtype == np.uint8 else image.astype(dtype)
    transforms = ("sobel3", "diag3", "smooth3", "rot90", "cross3", "flip_lr")
    out = soartc_features(
        image, patch=patch, transforms=transforms, datum="smooth3", metrics=METRICS, kernels=BANK
    )
    expected = features_oracle(
        image, patch=patch, transforms=transforms, datum="smooth3", metrics=METRICS, kernels=BANK
    )
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_against_oracle_rectangular_kernels():
    image = luma(photo(40))
    transforms = ("wide_k", "wide_d")
    out = soartc_features(
        image, patch=8, transforms=transforms, datum="wide_d", metrics=METRICS, kernels=BANK
    )
    expected = features_oracle(
        image, patch=8, transforms=transforms, datum="wide_d", metrics=METRICS, kernels=BANK
    )
    assert out.shape == (1, 2, len(METRICS), 25)
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_defaults_are_soartc_parts_soart3_metrics_and_the_datum_cross():
    image = luma(photo(32))
    out = soartc_features(image)
    expected = features_oracle(
        image, patch=16, transforms=TRANSFORM_PRESETS["soartc"], datum="datum",
        metrics=METRIC_PRESETS["soart3"], kernels=KERNELS,
    )  # fmt: skip
    assert out.shape == (1, 6, 3, 4)
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)


def test_order_of_transforms_and_metrics_is_the_order_given():
    image = luma(photo(32))
    forward = soartc_features(image, patch=8, transforms=("rot90", "bend1", "line2"),
                              metrics=("noise", "beta", "vol"))  # fmt: skip
    backward = soartc_features(image, patch=8, transforms=("line2", "bend1", "rot90"),
                               metrics=("vol", "beta", "noise"))  # fmt: skip
    assert_allclose(backward, forward[:, ::-1, ::-1], rtol=1e-13, atol=1e-15)


def test_large_images_are_processed_in_chunks_with_the_same_result(monkeypatch):
    image = photo(48)
    settings_ = {"patch": 8, "transforms": ALL_WITH_DATUM, "metrics": METRICS}
    whole = soartc_features(image, **settings_)
    monkeypatch.setattr(features, "CHUNK_PIXELS", 3 * 8 * 48 * 2)  # two patch rows per pass
    monkeypatch.setattr(features, "BLOCK_COLUMNS", 50)  # many small im2col blocks, ragged end
    assert_allclose(soartc_features(image, **settings_), whole, rtol=1e-13, atol=1e-15)


def test_input_is_never_modified_and_may_be_read_only():
    image = luma(photo(32))
    before = image.copy()
    image.flags.writeable = False
    soartc_features(image, patch=8, transforms=TRANSFORM_PRESETS["all"], metrics=METRICS)
    assert_array_equal(image, before)


def test_two_dimensional_input_gives_one_channel():
    image = luma(photo(32))
    assert_array_equal(soartc_features(image, patch=8), soartc_features(image[None], patch=8))


# --- SPEC §4's checks through whole images -----------------------------------------------------


def test_flat_image_kernel_parts_are_proportional_to_the_datum():
    # A flat float32 patch: s = v·ΣD, m = v·ΣK exactly, so m = (ΣK/ΣD)·s. A float32 correlation
    # would leave distance ≈ 1e-7 here; the float64 path keeps it at rounding level.
    image = np.full((32, 32), 0.3, dtype=np.float32)
    out = soartc_features(
        image, patch=16, transforms=TRANSFORM_PRESETS["soartc"], metrics=SPEC_METRICS
    )
    sums = [KERNELS[name].sum() for name in TRANSFORM_PRESETS["soartc"]]  # datum: ΣD = 9
    assert_allclose(out[0, :, 0], np.repeat(np.array(sums)[:, None] / 9, 4, axis=1), rtol=1e-13)
    assert np.abs(out[0, :, [1, 2, 3, 5]]).max() <= 1e-12  # delta, distance, noise, shear
    assert_allclose(out[0, :, 4], 1.0, rtol=1e-13)  # vol


def test_all_zero_image_gives_neutral_values_everywhere():
    out = soartc_features(np.zeros((32, 32), np.float32), patch=8, transforms=ALL_WITH_DATUM,
                          metrics=METRICS)  # fmt: skip
    neutral = [METRICS_REGISTRY[name].neutral for name in METRICS]  # NEUTRAL, and any added
    assert neutral[: len(NEUTRAL)] == NEUTRAL
    expected = np.array(neutral, dtype=float)[None, None, :, None]
    assert_array_equal(out, np.broadcast_to(expected, out.shape))


@settings(max_examples=25, deadline=None)
@given(
    size=st.sampled_from([2, 3, 5, 8]),
    seed=st.integers(0, 2**32 - 1),
    flips=st.booleans(),
)
def test_rotation_symmetric_patches_give_beta_one_and_zero_distance(size, seed, flips):
    base = np.random.default_rng(seed).integers(0, 50, (size, size))
    # summing integer copies over the group makes the patch exactly symmetric
    group = [np.rot90(base, k) for k in range(4)]
    if flips:
        group += [np.fliplr(g) for g in group]
    patch = sum(group)
    image = np.tile(patch, (2, 3)).astype(np.float64) / 7
    transforms = ("rot90", "rot180", "rot270", *(("flip_lr", "flip_ud") if flips else ()))
    out = soartc_features(image, patch=size, transforms=transforms, metrics=SPEC_METRICS)
    for t in range(len(transforms)):
        assert_allclose(out[0, t, 0], 1.0, rtol=1e-14)  # beta
        assert np.abs(out[0, t, [1, 2, 3, 5]]).max() <= 1e-14  # delta, distance, noise, shear
        assert_allclose(out[0, t, 4], 1.0, rtol=1e-14)  # vol


def test_delta_kernel_as_datum_and_part_gives_beta_one_and_exactly_zero_noise():
    image = luma(photo(32))
    out = soartc_features(image, patch=8, transforms=("centre3", "cross3"), datum="centre3",
                          metrics=SPEC_METRICS, kernels=BANK)  # fmt: skip
    # s and m come from the same correlation, so the comparison is exact, not just close
    assert_array_equal(out[0, 0], np.broadcast_to(np.array(NEUTRAL, float)[:, None], (6, 16)))
    assert np.all(np.abs(out[0, 1, 0] - 1) > 1e-3)  # the cross part does differ


def test_kernel_as_large_as_the_patch_gives_one_value_and_nan_noise():
    # k = 1: β = m/s, nothing left over; noise √(S_e/(k − 1)) is undefined → NaN.
    image = luma(photo(20))
    out = soartc_features(image, patch=5, transforms=("bend1",), metrics=METRICS)
    expected = features_oracle(image, patch=5, transforms=("bend1",), datum="datum",
                               metrics=METRICS, kernels=KERNELS)  # fmt: skip
    assert np.isnan(out[0, 0, 3]).all()
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL, equal_nan=True)


# --- errors -----------------------------------------------------------------------------------


def test_errors():
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(UsageError, match="not a multiple of 12"):
        soartc_features(image, patch=12)
    with pytest.raises(UsageError, match="unknown transforms 'bend7'"):
        soartc_features(image, transforms=("bend7",))
    with pytest.raises(UsageError, match="unknown metrics 'snr'"):
        soartc_features(image, metrics=("snr",))
    with pytest.raises(UsageError, match="unknown transforms 'bend7'"):
        soartc_features(image, transforms="soart,bend7")  # strings read like --transforms
    with pytest.raises(UsageError, match="unknown metrics 'snr'"):
        soartc_features(image, metrics="rt,snr")
    with pytest.raises(UsageError, match="datum 'cross3' is not a kernel"):
        soartc_features(image, datum="cross3")
    with pytest.raises(UsageError, match="larger than the 4×4 patch"):
        soartc_features(image, patch=4)
    with pytest.raises(InputError, match=r"\(H, W\) or \(C, H, W\)"):
        soartc_features(np.zeros(64))
    with pytest.raises(InputError, match=r"\(H, W\) or \(C, H, W\)"):
        soartc_features(np.zeros((16, 16), complex))
    bad = image.copy()
    bad[3, 30] = np.nan
    with pytest.raises(InputError, match="NaN"):
        soartc_features(bad)
    bad[3, 30] = np.inf
    with pytest.raises(InputError, match="infinite"):
        soartc_features(bad, transforms=("rot90",))


def test_cached_plan_follows_a_kernel_changed_under_the_same_name():
    image = luma(photo(32))
    kernel = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float)
    bank = {**KERNELS, "mine": kernel}
    settings_ = {
        "patch": 8,
        "transforms": ["mine", "rot90"],
        "datum": "datum_h3",
        "metrics": METRICS,
    }
    bank["datum_h3"] = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=float)
    first = soartc_features(image, kernels=bank, **settings_)
    kernel[0, 0] = 2.0  # same name, same array object, new values
    second = soartc_features(image, kernels=bank, **settings_)
    expected = features_oracle(image, kernels=bank, **settings_)
    assert_allclose(second, expected, rtol=RTOL, atol=ATOL)
    assert not np.allclose(first[:, 0], second[:, 0])
    bank["mine"] = np.ones((3, 3), dtype=np.float32)  # same name, a new array and dtype
    third = soartc_features(image, kernels=bank, **settings_)
    assert_allclose(third, features_oracle(image, kernels=bank, **settings_), rtol=RTOL, atol=ATOL)
    bank["mine"] = np.ones((5, 5))  # no longer the datum's shape: checked again
    with pytest.raises(UsageError):
        soartc_features(image, kernels=bank, **settings_)


def test_parts_and_rotations_in_any_order_and_repeated_metrics():
    image = luma(photo(32))
    transforms = ["rot90", "line1", "datum", "flip_ud", "bend2", "line1"]
    metrics = ["distance", "beta", "vol", "distance", "delta", "shear", "noise"]
    out = soartc_features(image, patch=8, transforms=transforms, metrics=metrics)
    expected = features_oracle(
        image, patch=8, transforms=transforms, datum="datum", metrics=metrics, kernels=KERNELS
    )
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert out.flags.c_contiguous


def test_features_imports_only_public_names_of_rt():
    tree = ast.parse(Path(features.__file__).read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "soartc_cli.core.metrics"
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.startswith("_")]
    assert "rt._" not in Path(features.__file__).read_text(encoding="utf-8")


# --- a metric added by the README's recipe (Adding a metric), inside this test only ---------


def cos(shared):
    """Cosine similarity of ``s`` and ``m``.

    Notes
    -----
    .. math:: \\cos = ⟨s, m⟩ / (‖s‖ ‖m‖), \\qquad 1 \\text{ when } ‖s‖ ‖m‖ ≤ 10^{-12}
    """
    norms = np.sqrt(shared.ss * shared.dot(shared.m, shared.m))
    out = np.ones(shared.batch)
    return np.divide(shared.sm, norms, out=out, where=norms > TINY)


def oracle_cos(s, m):
    """⟨s, m⟩ / (‖s‖ ‖m‖); 1 when ‖s‖ ‖m‖ ≤ 1e-12."""
    norms = math.sqrt(math.fsum(a * a for a in s) * math.fsum(b * b for b in m))
    return math.fsum(a * b for a, b in zip(s, m, strict=True)) / norms if norms > 1e-12 else 1.0


@pytest.fixture
def cos_metric(monkeypatch):
    """The recipe: one function, its registration, its oracle branch (and no other change)."""
    register_metric("cos", formula="⟨s,m⟩ / (‖s‖‖m‖) (1 when ‖s‖‖m‖ ≤ 1e-12)", neutral=1.0)(cos)
    monkeypatch.setitem(ORACLE_METRICS, "cos", oracle_cos)
    yield "cos"
    unregister_metric("cos")


def test_a_metric_registered_at_run_time_flows_everywhere(cos_metric):
    assert METRICS_REGISTRY["cos"].func is cos
    # --metrics parsing reads the registry when called; presets are unchanged
    assert parse_metrics("rt,cos") == ("beta", "noise", "cos")
    assert "cos" not in parse_metrics("all")
    # soart_compare, against the oracle, with its neutral value on an all-zero pair
    rng = np.random.default_rng(11)
    s = rng.normal(size=(30, 25))
    m = 0.5 * s + rng.normal(scale=0.5, size=s.shape)
    m[4] = -3 * s[4]  # cos = −1
    s[7] = 0.0  # cos falls back to 1
    out = soart_compare(s, m, metrics=["cos", "beta", "cos"])
    expected = [compare_one(s[n], m[n], "cos") for n in range(30)]
    assert_allclose(out[0], expected, rtol=RTOL, atol=ATOL)
    assert_array_equal(out[0], out[2])
    assert out[0, 4] == pytest.approx(-1.0, rel=1e-14) and out[0, 7] == 1.0
    assert_allclose(out[1], [compare_one(s[n], m[n], "beta") for n in range(30)], rtol=RTOL)
    zeros = np.zeros((2, 9))
    assert_array_equal(soart_compare(zeros, zeros, metrics=["cos"]), [[1.0, 1.0]])
    # soartc_features: kernel parts and rotations, RGB, against the loop oracle
    rgb = photo(32)
    transforms = ("bend1", "rot90", "line2", "flip_lr")
    metrics = ("distance", "cos", "beta")
    out = soartc_features(rgb, patch=8, transforms=transforms, metrics=metrics)
    expected = features_oracle(
        rgb, patch=8, transforms=transforms, datum="datum", metrics=metrics, kernels=KERNELS
    )
    assert_allclose(out, expected, rtol=RTOL, atol=ATOL)
    assert np.all(np.abs(out[:, :, 1]) <= 1 + 1e-12)


def test_an_unregistered_metric_is_unknown_again_even_to_a_cached_plan(monkeypatch):
    image = luma(photo(32))
    register_metric("cos", formula="cosine", neutral=1.0)(cos)
    try:
        first = soartc_features(image, patch=8, metrics=("cos",))  # the plan is cached now
    finally:
        unregister_metric("cos")
    with pytest.raises(UsageError, match="unknown metrics 'cos'"):
        soartc_features(image, patch=8, metrics=("cos",))
    with pytest.raises(UsageError, match="unknown metrics 'cos'"):
        parse_metrics("beta,cos")
    # registered again as another function under the same name: computed by the new one
    register_metric("cos", formula="minus cosine", neutral=-1.0)(lambda shared: -cos(shared))
    try:
        again = soartc_features(image, patch=8, metrics=("cos",))
    finally:
        unregister_metric("cos")
    assert_array_equal(again, -first)


def test_unknown_metric_in_features_raises():
    with pytest.raises(UsageError, match="unknown metrics 'corr'"):
        soartc_features(np.zeros((16, 16)), metrics=("beta", "corr"))


# --- non-square grids, repeated metrics, m = c·s exactly ---------------------------------------


def test_non_square_grid_per_patch_against_the_oracle():
    # A 32×48 image with patch 16 is a 2×3 grid: patch N = row·3 + col holds
    # image[16·row : 16·row + 16, 16·col : 16·col + 16]. Every patch differs, so a mix-up of
    # rows and columns (or of the grid's axes) moves values between patches and fails.
    rng = np.random.default_rng(48)
    image = rng.random((3, 32, 48)) + np.arange(6).repeat(8)[None, None, :]
    transforms = ("bend3", "rot90", "line1", "flip_ud", "rot270")
    out = soartc_features(image, patch=16, transforms=transforms, metrics=METRICS)
    assert out.shape == (3, 5, len(METRICS), 6)
    for c in range(3):
        for row in range(2):
            for col in range(3):
                x = image[c, 16 * row : 16 * row + 16, 16 * col : 16 * col + 16]
                for t, name in enumerate(transforms):
                    if name in KERNELS:
                        s = correlate2d(x, KERNELS["datum"], mode="valid")
                        m = correlate2d(x, KERNELS[name], mode="valid")
                    else:
                        s, m = x, ROTATION_FUNCTIONS[name](x)
                    expected = [compare_one(s, m, metric) for metric in METRICS]
                    assert_allclose(out[c, t, :, row * 3 + col], expected, rtol=RTOL, atol=ATOL)
    # the values do tell the patches apart
    assert len({round(v, 6) for v in out[0, 1, 0]}) == 6


def test_a_metric_named_twice_gives_equal_rows_in_features():
    image = photo(32)
    metrics = ("shear", "beta", "shear", "noise", "beta")
    out = soartc_features(image, patch=8, transforms=("rot90", "bend2", "line1"), metrics=metrics)
    assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert_array_equal(out[:, :, 1], out[:, :, 4])
    once = soartc_features(image, patch=8, transforms=("rot90", "bend2", "line1"),
                           metrics=("shear", "beta", "noise"))  # fmt: skip
    assert_array_equal(out[:, :, [0, 1, 3]], once)


@pytest.mark.parametrize("c", [-2.0, 0.5])
def test_a_part_that_is_c_times_the_datum_gives_beta_c_and_neutral_values(c):
    # m = x ⋆ (c·D) = c·(x ⋆ D) = c·s exactly when c is a power of two: β = c, vol = 1 and
    # delta = distance = noise = shear = 0 bit for bit, on every patch of a real photo.
    bank = {**KERNELS, "scaled": c * KERNELS["datum"]}
    out = soartc_features(photo(32), patch=8, transforms=("scaled",), metrics=SPEC_METRICS,
                          kernels=bank)  # fmt: skip
    expected = np.array([c, 0.0, 0.0, 0.0, 1.0, 0.0])[None, None, :, None]
    assert_array_equal(out, np.broadcast_to(expected, out.shape))
