"""Patch grid, patch names rIIcJJ, cutting into patches and putting them back (SPEC §2.6)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from soartc_cli.core.patches import from_patches, patch_grid, patch_names, patch_view, to_patches
from soartc_cli.errors import UsageError

# A 4×4 image with patch 2, written out: four 2×2 patches, row-major.
IMAGE_4X4 = np.array(
    [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [9, 10, 11, 12],
        [13, 14, 15, 16],
    ]
)
PATCHES_4X4 = np.array(
    [
        [[1, 2], [5, 6]],  # r00c00: top left
        [[3, 4], [7, 8]],  # r00c01: top right
        [[9, 10], [13, 14]],  # r01c00: bottom left
        [[11, 12], [15, 16]],  # r01c01: bottom right
    ]
)


def test_patch_grid_counts_rows_and_columns():
    assert patch_grid((224, 224), patch=16) == (14, 14)
    assert patch_grid((224, 160), patch=16) == (14, 10)
    assert patch_grid((4, 4), patch=2) == (2, 2)
    assert patch_grid((5, 7), patch=1) == (5, 7)


@pytest.mark.parametrize(
    ("shape", "patch", "match"),
    [
        ((224, 224), 15, "224 is not a multiple of 15"),
        ((224, 100), 16, "width: 100 is not a multiple of 16"),
        ((8, 8), 16, "height: 8 is not a multiple of 16"),
        ((224, 224), 0, "patch must be a positive integer"),
        ((224, 224), -16, "patch must be a positive integer"),
        ((224, 224), 16.0, "patch must be a positive integer"),
        ((224, 224), True, "patch must be a positive integer"),
        ((224,), 16, "shape must be"),
    ],
)
def test_patch_grid_errors_name_the_problem(shape, patch, match):
    with pytest.raises(UsageError, match=match):
        patch_grid(shape, patch=patch)


def test_patch_names_are_row_major_with_two_digits():
    names = patch_names(14, 14)
    assert len(names) == 196
    assert names[:3] == ["r00c00", "r00c01", "r00c02"]
    assert names[14] == "r01c00"
    assert names[-1] == "r13c13"
    assert patch_names(1, 1) == ["r00c00"]
    assert patch_names(2, 3) == ["r00c00", "r00c01", "r00c02", "r01c00", "r01c01", "r01c02"]


def test_patch_names_widen_for_more_than_100_rows_or_columns():
    # 100 rows: indices 0..99 still fit two digits.
    assert patch_names(100, 1)[-1] == "r99c00"
    # 101 rows: index 100 needs three digits, and both r and c use them.
    names = patch_names(101, 2)
    assert names[0] == "r000c000"
    assert names[-1] == "r100c001"
    assert patch_names(2, 101)[-1] == "r001c100"
    assert patch_names(1000, 1)[-1] == "r999c000"
    assert patch_names(1001, 1)[-1] == "r1000c0000"


def test_patch_names_reject_an_empty_grid():
    with pytest.raises(UsageError, match="at least 1"):
        patch_names(0, 3)


def test_to_patches_by_hand_4x4_patch_2():
    patches = to_patches(IMAGE_4X4, patch=2)
    assert patches.shape == (4, 2, 2)
    assert_array_equal(patches, PATCHES_4X4)
    assert patches.dtype == IMAGE_4X4.dtype


def test_to_patches_with_channels_keeps_the_channel_axis_first():
    image = np.stack([IMAGE_4X4, -IMAGE_4X4, 10 * IMAGE_4X4])
    patches = to_patches(image, patch=2)
    assert patches.shape == (3, 4, 2, 2)
    assert_array_equal(patches[0], PATCHES_4X4)
    assert_array_equal(patches[1], -PATCHES_4X4)
    assert_array_equal(patches[2], 10 * PATCHES_4X4)


def test_to_patches_is_a_view_when_the_layout_allows_it():
    strip = np.arange(16.0).reshape(2, 8)  # one row of patches: a pure reshape of memory
    patches = to_patches(strip, patch=2)
    assert np.shares_memory(patches, strip)
    assert_array_equal(patches[1], [[2, 3], [10, 11]])
    # the 4-D view never copies, whatever the grid
    view = patch_view(IMAGE_4X4, patch=2)
    assert view.shape == (2, 2, 2, 2)
    assert np.shares_memory(view, IMAGE_4X4)
    assert_array_equal(view[1, 0], [[9, 10], [13, 14]])


def test_to_patches_does_not_modify_its_input():
    image = IMAGE_4X4.copy()
    to_patches(image, patch=2)
    assert_array_equal(image, IMAGE_4X4)


def test_to_patches_errors():
    with pytest.raises(UsageError, match=r"\(H, W\) or \(C, H, W\)"):
        to_patches(np.zeros(16), patch=2)
    with pytest.raises(UsageError, match="not a multiple of 3"):
        to_patches(np.zeros((4, 4)), patch=3)


def test_from_patches_by_hand():
    assert_array_equal(from_patches(PATCHES_4X4, rows=2, cols=2), IMAGE_4X4)
    # the same four patches as one row of the grid
    assert_array_equal(
        from_patches(PATCHES_4X4, rows=1, cols=4),
        [[1, 2, 3, 4, 9, 10, 11, 12], [5, 6, 7, 8, 13, 14, 15, 16]],
    )


def test_from_patches_errors():
    with pytest.raises(UsageError, match="rows \\* cols must equal the number of patches"):
        from_patches(PATCHES_4X4, rows=3, cols=2)
    with pytest.raises(UsageError, match="must be"):
        from_patches(np.zeros((4, 2, 3)), rows=2, cols=2)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    patch=st.integers(1, 6),
    channels=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_patches_round_trip(rows, cols, patch, channels, seed):
    lead = () if channels is None else (channels,)
    image = np.random.default_rng(seed).random((*lead, rows * patch, cols * patch))
    patches = to_patches(image, patch=patch)
    assert patches.shape == (*lead, rows * cols, patch, patch)
    back = from_patches(patches, rows=rows, cols=cols)
    assert_array_equal(back, image)
    assert not np.shares_memory(back, image)
    # patch n is block (n // cols, n % cols)
    n = rows * cols - 1
    i, j = divmod(n, cols)
    assert_array_equal(
        patches[..., n, :, :],
        image[..., i * patch : (i + 1) * patch, j * patch : (j + 1) * patch],
    )


@pytest.mark.parametrize(
    "image",
    [
        np.arange(3 * 12 * 18.0).reshape(3, 12, 18)[:, 3:9, 6:12],  # a crop: strided rows
        np.arange(12 * 18.0).reshape(12, 18).T,  # transposed: column-major
        np.arange(24 * 36.0).reshape(24, 36)[::2, ::3],  # every other row, every third column
    ],
)
def test_patch_view_of_a_strided_image_is_a_view(image):
    view = patch_view(image, patch=3)
    *lead, height, width = image.shape
    assert view.shape == (*lead, height // 3, width // 3, 3, 3)
    for i in range(height // 3):
        for j in range(width // 3):
            assert_array_equal(
                view[..., i, j, :, :], image[..., 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]
            )
    view[..., 0, 0, 0, 0] = -1.0  # writes through: never a copy
    assert np.all(image[..., 0, 0] == -1.0)


def test_patch_view_keeps_read_only_read_only():
    image = np.zeros((4, 4))
    image.flags.writeable = False
    view = patch_view(image, patch=2)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0, 0] = 1.0
