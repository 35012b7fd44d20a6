"""Kernel bank, rotations, presets, --transforms parsing, kernel files, their checks (SPEC §3)."""

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from soartc_cli.core.transforms import (
    KERNELS,
    ROTATIONS,
    TRANSFORM_PRESETS,
    check_kernels,
    merge_kernels,
    parse_transforms,
)
from soartc_cli.errors import UsageError
from soartc_cli.settings.optionfiles import load_kernels

# SPEC §3's table, typed out again here, row by row, independently of the module.
SPEC_BANK = {
    "bend1": [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
    ],
    "bend2": [
        [0, 0, 0, -1, -1],
        [0, 0, 0, -1, -1],
        [0, 0, 0, -1, -1],
        [-1, -1, -1, -1, -1],
        [-1, -1, -1, -1, -1],
    ],
    "bend3": [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ],
    "bend4": [
        [-1, -1, -1, -1, -1],
        [-1, -1, -1, -1, -1],
        [-1, -1, 0, 0, 0],
        [-1, -1, 0, 0, 0],
        [-1, -1, 0, 0, 0],
    ],
    "line1": [  # −2 on the main diagonal
        [-2, 0, 0, 0, 0],
        [0, -2, 0, 0, 0],
        [0, 0, -2, 0, 0],
        [0, 0, 0, -2, 0],
        [0, 0, 0, 0, -2],
    ],
    "line2": [  # +2 on the anti-diagonal, top right to bottom left
        [0, 0, 0, 0, 2],
        [0, 0, 0, 2, 0],
        [0, 0, 2, 0, 0],
        [0, 2, 0, 0, 0],
        [2, 0, 0, 0, 0],
    ],
    "datum_h": [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ],
    "datum_v": [
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
    ],
    "datum": [
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
    ],
}


def test_kernel_bank_is_exactly_the_spec_table():
    assert list(KERNELS) == list(SPEC_BANK)
    for name, rows in SPEC_BANK.items():
        kernel = KERNELS[name]
        assert kernel.dtype == np.float64, name
        assert kernel.shape == (5, 5), name
        assert_array_equal(kernel, rows, err_msg=name)


def test_kernel_bank_is_read_only():
    for name, kernel in KERNELS.items():
        assert not kernel.flags.writeable, name
    with pytest.raises(ValueError, match="read-only"):
        KERNELS["datum"][0, 0] = 5.0


def test_rotations_by_hand_on_a_2x2_and_a_3x3():
    x = np.array([[1, 2], [3, 4]])
    assert_array_equal(ROTATIONS["rot90"](x), [[2, 4], [1, 3]])  # counter-clockwise
    assert_array_equal(ROTATIONS["rot180"](x), [[4, 3], [2, 1]])
    assert_array_equal(ROTATIONS["rot270"](x), [[3, 1], [4, 2]])
    assert_array_equal(ROTATIONS["flip_lr"](x), [[2, 1], [4, 3]])
    assert_array_equal(ROTATIONS["flip_ud"](x), [[3, 4], [1, 2]])
    y = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert_array_equal(ROTATIONS["rot90"](y), [[3, 6, 9], [2, 5, 8], [1, 4, 7]])
    assert_array_equal(ROTATIONS["rot270"](y), [[7, 4, 1], [8, 5, 2], [9, 6, 3]])


def test_rotations_act_on_the_last_two_axes_and_match_numpy():
    stack = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    expected = {
        "rot90": lambda p: np.rot90(p, 1),
        "rot180": lambda p: np.rot90(p, 2),
        "rot270": lambda p: np.rot90(p, 3),
        "flip_lr": np.fliplr,
        "flip_ud": np.flipud,
    }
    assert list(ROTATIONS) == list(expected)
    for name, rotate in ROTATIONS.items():
        turned = rotate(stack)
        assert turned.shape == stack.shape
        assert np.shares_memory(turned, stack), name  # a view, no copy
        for index in np.ndindex(2, 3):
            assert_array_equal(turned[index], expected[name](stack[index]), err_msg=name)


def test_transform_presets():
    soartc = ("bend1", "bend2", "bend3", "bend4", "line1", "line2")
    soart = ("rot90", "rot180", "rot270")
    assert TRANSFORM_PRESETS == {
        "soartc": soartc,
        "soart": soart,
        "all": (*soartc, *soart, "flip_lr", "flip_ud"),
    }


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("soartc", ("bend1", "bend2", "bend3", "bend4", "line1", "line2")),
        ("soart", ("rot90", "rot180", "rot270")),
        ("rot90,bend1", ("rot90", "bend1")),
        (" line2 , datum_h ", ("line2", "datum_h")),
        ("rot90,bend1,rot90", ("rot90", "bend1")),  # repeats dropped, the first wins
        ("soart,rot180,flip_ud", ("rot90", "rot180", "rot270", "flip_ud")),
        ("flip_lr,soart", ("flip_lr", "rot90", "rot180", "rot270")),
        ("datum,bend1", ("datum", "bend1")),  # the datum may be listed as a part
    ],
)
def test_parse_transforms(spec, expected):
    assert parse_transforms(spec) == expected


def test_parse_transforms_all_is_soartc_then_soart_then_flips():
    assert parse_transforms("all") == (
        "bend1", "bend2", "bend3", "bend4", "line1", "line2",
        "rot90", "rot180", "rot270", "flip_lr", "flip_ud",
    )  # fmt: skip


def test_parse_transforms_knows_user_kernels_only_when_given_them():
    bank = merge_kernels({"edge": np.array([[-1.0, 0.0, 1.0]])})
    assert parse_transforms("edge,soart", kernels=bank) == ("edge", "rot90", "rot180", "rot270")
    with pytest.raises(UsageError, match="unknown transforms 'edge'"):
        parse_transforms("edge")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("bend9", r"unknown transforms 'bend9'; valid names: bend1, .*rot90.*presets: soartc"),
        ("bend1,Rot90,nope", "unknown transforms 'Rot90', 'nope'"),
        ("", "transforms is empty"),
        ("  ", "transforms is empty"),
        ("bend1,,bend2", "empty name"),
        ("bend1,", "empty name"),
    ],
)
def test_parse_transforms_errors(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_transforms(spec)


def test_load_kernels_reads_names_in_order_as_read_only_float64():
    text = json.dumps(
        {"edge": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "dot": [[0.5]], "bar": [[1, 2, 3]]}
    )
    kernels = load_kernels(text)
    assert list(kernels) == ["edge", "dot", "bar"]
    assert_array_equal(kernels["edge"], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert_array_equal(kernels["dot"], [[0.5]])
    assert kernels["bar"].shape == (1, 3)  # rectangular kernels are fine
    for kernel in kernels.values():
        assert kernel.dtype == np.float64
        assert not kernel.flags.writeable


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[[1]]", "must hold a JSON object"),
        ('"edge"', "must hold a JSON object"),
        ("{}", "defines no kernel"),
        ('{"k": [[1, 2, 3], [4, 5]]}', r"kernel 'k' is ragged: its rows have lengths \[2, 3\]"),
        ('{"k": [[1, 2], [3, 4]]}', "kernel 'k' is 2×2: kernel sides must be odd"),
        ('{"k": [[1, 2, 3], [4, 5, 6]]}', "kernel 'k' is 2×3: kernel sides must be odd"),
        ('{"k": [[1, 2]]}', "kernel 'k' is 1×2: kernel sides must be odd"),
        ('{"k": []}', "kernel 'k' must be a non-empty list of rows"),
        ('{"k": [[]]}', "kernel 'k' has empty rows"),
        ('{"k": 3}', "kernel 'k' must be a non-empty list of rows"),
        ('{"k": [1, 2, 3]}', "kernel 'k' must be a list of rows"),
        ('{"k": [[[1]]]}', r"kernel 'k' holds \[1\], which is not a number"),
        ('{"k": [["1"]]}', "kernel 'k' holds \"1\", which is not a number"),
        ('{"k": [[true]]}', "kernel 'k' holds true, which is not a number"),
        ('{"k": [[null]]}', "kernel 'k' holds null, which is not a number"),
        ('{"k": [[NaN]]}', "kernel file holds NaN: every value must be a finite number"),
        ('{"k": [[-Infinity]]}', "kernel file holds -Infinity"),
        ('{"k": [[1e999]]}', "kernel 'k' holds inf: every value must be finite"),
        ('{"Edge": [[1]]}', r"kernel name 'Edge' is not valid: .*\[a-z0-9_\]\+"),
        ('{"my-kernel": [[1]]}', "kernel name 'my-kernel' is not valid"),
        ('{"": [[1]]}', "kernel name '' is not valid"),
        ('{"bend1": [[1]]}', "kernel name 'bend1' clashes with a built-in"),
        ('{"datum": [[1]]}', "kernel name 'datum' clashes"),
        ('{"rot90": [[1]]}', "kernel name 'rot90' clashes"),
        ('{"soartc": [[1]]}', "kernel name 'soartc' clashes"),
        ('{"k": [[1]], "k": [[2]]}', "defines 'k' twice"),
    ],
)
def test_load_kernels_errors(text, match):
    with pytest.raises(UsageError, match=match):
        load_kernels(text)


def test_merge_kernels_puts_the_bank_first_and_refuses_clashes():
    edge = np.array([[1.0, 0.0, -1.0]])
    merged = merge_kernels({"edge": edge})
    assert list(merged) == [*KERNELS, "edge"]
    assert merged["edge"] is edge
    assert merge_kernels() == KERNELS and merge_kernels() is not KERNELS
    with pytest.raises(UsageError, match="'line1' clashes"):
        merge_kernels({"line1": edge})


def test_check_kernels_accepts_fitting_settings():
    assert (
        check_kernels(datum="datum", transforms=TRANSFORM_PRESETS["all"], kernels=KERNELS, patch=16)
        is None
    )  # no UsageError
    assert check_kernels(datum="datum", transforms=("bend1",), kernels=KERNELS, patch=5) is None
    # rotations only: the datum's size does not matter, even with a patch smaller than it
    assert (
        check_kernels(datum="datum", transforms=("rot90", "flip_ud"), kernels=KERNELS, patch=2)
        is None
    )
    bank = merge_kernels({"c3": np.ones((3, 3)), "d3": np.eye(3)})
    assert (
        check_kernels(datum="c3", transforms=("d3", "c3", "rot90"), kernels=bank, patch=3) is None
    )


def test_check_kernels_errors():
    bank = merge_kernels({"c3": np.ones((3, 3)), "wide": np.ones((3, 5))})
    with pytest.raises(UsageError, match=r"datum 'nope' is not a kernel; choose one of: bend1"):
        check_kernels(datum="nope", transforms=("bend1",), kernels=bank, patch=16)
    with pytest.raises(UsageError, match="a rotation cannot be the datum"):
        check_kernels(datum="rot90", transforms=("bend1",), kernels=bank, patch=16)
    with pytest.raises(UsageError, match=r"kernel 'c3' is 3×3 but the datum 'datum' is 5×5"):
        check_kernels(datum="datum", transforms=("bend1", "c3"), kernels=bank, patch=16)
    with pytest.raises(UsageError, match=r"kernel 'wide' is 3×5 but the datum 'c3' is 3×3"):
        check_kernels(datum="c3", transforms=("wide",), kernels=bank, patch=16)
    with pytest.raises(UsageError, match=r"kernels are 5×5, larger than the 4×4 patch"):
        check_kernels(datum="datum", transforms=("bend1",), kernels=bank, patch=4)
    with pytest.raises(UsageError, match=r"kernels are 3×5, larger than the 4×4 patch"):
        check_kernels(datum="wide", transforms=("wide",), kernels=bank, patch=4)
    with pytest.raises(UsageError, match="unknown transforms 'swirl'"):
        check_kernels(datum="datum", transforms=("swirl",), kernels=bank, patch=16)
    with pytest.raises(UsageError, match="non-empty sequence"):
        check_kernels(datum="datum", transforms=(), kernels=bank, patch=16)
    with pytest.raises(UsageError, match="patch must be a positive integer"):
        check_kernels(datum="datum", transforms=("bend1",), kernels=bank, patch=0)


def test_check_kernels_validates_kernels_given_through_the_api():
    bad = {**KERNELS, "nan": np.full((5, 5), np.nan), "flat": np.ones(5)}
    with pytest.raises(UsageError, match="kernel 'nan' holds non-finite values"):
        check_kernels(datum="datum", transforms=("nan",), kernels=bad, patch=16)
    with pytest.raises(UsageError, match="kernel 'flat' must be a non-empty 2-D array"):
        check_kernels(datum="flat", transforms=("rot90",), kernels=bad, patch=16)


def test_check_kernels_refuses_kernels_too_large_given_through_the_api():
    # 1e308 is finite, but its features are not: the same bound as a kernel file's.
    bank = merge_kernels({"big": np.full((3, 3), 1e308), "edge": np.ones((3, 3))})
    with pytest.raises(UsageError, match=r"kernel 'big' holds values larger in size than 1e\+06"):
        check_kernels(datum="edge", transforms=["big"], kernels=bank, patch=4)
    bank = merge_kernels({"top": np.full((3, 3), -1e6), "edge": np.ones((3, 3))})
    check_kernels(datum="edge", transforms=["top"], kernels=bank, patch=4)
