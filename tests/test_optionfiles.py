"""Untrusted option files (issue 13): ``--kernels`` JSON and ``--weights`` .npz made to hurt.

Every refusal is a one-line :class:`UsageError` whose message starts with the option's name;
through the command line, exit code 2, one stderr line, no traceback.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from soartc_cli.core import attention
from soartc_cli.core.transforms import (
    MAX_KERNEL_VALUE,
    check_kernels,
    merge_kernels,
)
from soartc_cli.errors import InputError, UsageError
from soartc_cli.settings import optionfiles
from soartc_cli.settings.optionfiles import MAX_KERNEL_FILE_BYTES, load_kernels, read_kernel_file
from tests import tinyruns

# --- kernel files ------------------------------------------------------------------------------

HOSTILE_KERNELS = [
    ('{"k": [[NaN]]}', "kernel file holds NaN"),
    ('{"k": [[Infinity]]}', "kernel file holds Infinity"),
    ('{"k": [[-Infinity]]}', "kernel file holds -Infinity"),
    ('{"k": [[1e308]]}', "kernel 'k' holds 1e\\+308, larger in size than 1e\\+06"),
    ('{"k": [[-1e308]]}', "kernel 'k' holds -1e\\+308, larger in size"),
    ('{"k": [[1e999]]}', "kernel 'k' holds inf: every value must be finite"),
    ('{"k": [[1000000.5]]}', "larger in size than 1e\\+06"),
    ('{"k": [[' + "9" * 400 + "]]}", r"number too long \(400 digits"),
    ('{"k": [[' + "9" * 5000 + "]]}", r"number too long \(5000 digits"),
    ('{"k": [[-' + "9" * 5000 + "]]}", r"number too long \(5001 digits"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"k": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"k": ' + "[" * 900 + "1" + "]" * 900 + "}", r"holds \[\[\[.*\.\.\., which is not a number"),
    ('{"k": [[1, 0, 1], [0, 1]]}', "kernel 'k' is ragged"),
    ('{"k": [[true]]}', "holds true, which is not a number"),
    ('{"k": [["1"]]}', 'holds "1", which is not a number'),
    ('{"k": [[null]]}', "holds null, which is not a number"),
    ('{"k": [[{"a": 1}]]}', 'holds {"a": 1}, which is not a number'),
    ('{"k": [[1]], "k": [[2]]}', "defines 'k' twice"),
    ('{"Edge": [[1]]}', r"kernel name 'Edge' is not valid: .*\[a-z0-9_\]\+"),
    ('{"a b": [[1]]}', "kernel name 'a b' is not valid"),
    ('{"caf\\u00e9": [[1]]}', "kernel name 'café' is not valid"),
    ('{"x\\u0000": [[1]]}', r"kernel name 'x\\x00' is not valid"),
    ('{"' + "a" * 5000 + '!": [[1]]}', r"kernel name 'aaaa.*\.\.\. is not valid"),
    ('{"bend1": [[1]]}', "kernel name 'bend1' clashes with a built-in"),
    ('{"all": [[1]]}', "kernel name 'all' clashes"),
    ('{"flip_lr": [[1]]}', "kernel name 'flip_lr' clashes"),
    ('{"k": [[1, 1], [1, 1]]}', "kernel 'k' is 2×2: kernel sides must be odd"),
    ('{"k": [[1, 1, 1, 1]]}', "kernel 'k' is 1×4: kernel sides must be odd"),
    ("[[1]]", "must hold a JSON object"),
    ("{}", "defines no kernel"),
    ("", "not valid JSON"),
    ('{"k": [[1]]} trailing', "not valid JSON"),
]


@pytest.mark.parametrize(("text", "match"), HOSTILE_KERNELS)
def test_load_kernels_refuses_hostile_text_in_one_line(text, match):
    with pytest.raises(UsageError, match=match) as caught:
        load_kernels(text)
    message = str(caught.value)
    assert message.startswith("--kernels: ")
    assert "\n" not in message and len(message) < 300


def test_kernel_values_up_to_the_bound_are_accepted_and_stay_finite():
    kernels = load_kernels(json.dumps({"big": [[MAX_KERNEL_VALUE, -MAX_KERNEL_VALUE, 1]]}))
    assert kernels["big"].tolist() == [[1e6, -1e6, 1.0]]
    # The worst case of the bound: every pixel 1, the largest kernel, sums of squares of
    # correlations over a patch, and their product, all far from float64's limit.
    kernel = np.full((201, 201), MAX_KERNEL_VALUE)
    s = float(kernel.sum())
    assert np.isfinite((s * s * 2**27) ** 2)


def test_an_integer_of_40_digits_is_read_then_judged_by_size():
    with pytest.raises(UsageError, match="larger in size than 1e\\+06"):
        load_kernels('{"k": [[' + "1" * 40 + "]]}")
    with pytest.raises(UsageError, match=r"number too long \(41 digits"):
        load_kernels('{"k": [[' + "1" * 41 + "]]}")
    assert load_kernels('{"k": [[-0.5e-300, 1e6, 1000000]]}')["k"].tolist() == [
        [-0.5e-300, 1e6, 1e6]
    ]


def test_check_kernels_refuses_kernels_larger_than_the_patch():
    bank = merge_kernels(load_kernels('{"wide": [[1, 1, 1, 1, 1, 1, 1]]}'))
    with pytest.raises(UsageError, match="kernels are 1×7, larger than the 4×4 patch"):
        check_kernels(datum="wide", transforms=["wide"], kernels=bank, patch=4)
    check_kernels(datum="wide", transforms=["wide"], kernels=bank, patch=8)


def test_read_kernel_file_reads_a_good_file(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{"edge": [[-1, 0, 1]]}', encoding="utf-8")
    assert read_kernel_file(path)["edge"].tolist() == [[-1.0, 0.0, 1.0]]
    assert read_kernel_file(str(path))["edge"].shape == (1, 3)


def test_read_kernel_file_refuses_a_file_over_budget_by_its_size(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(64 * MAX_KERNEL_FILE_BYTES)  # sparse: 64 MiB of NULs on paper
    # Read, its NULs would be "not valid JSON": the size alone decides.
    with pytest.raises(UsageError, match=r"^--kernels: .*huge\.json is 67108864 bytes, more than"):
        read_kernel_file(path)
    exactly = tmp_path / "exactly.json"
    text = '{"k": [[1]]}'
    exactly.write_text(text + " " * (MAX_KERNEL_FILE_BYTES - len(text)))
    assert read_kernel_file(exactly)["k"].tolist() == [[1.0]]


def test_read_kernel_file_refuses_what_is_not_a_readable_text_file(tmp_path):
    with pytest.raises(UsageError, match=r"^--kernels: no such file"):
        read_kernel_file(tmp_path / "nope.json")
    with pytest.raises(UsageError, match=r"^--kernels: cannot read .*: it is a directory"):
        read_kernel_file(tmp_path)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening must not wait for a writer
    with pytest.raises(UsageError, match=r"^--kernels: cannot read .*: it is not a regular file"):
        read_kernel_file(fifo)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"caf\xe9": [[1]]}')
    with pytest.raises(UsageError, match=r"^--kernels: .* is not UTF-8 text \(byte 5 is 0xe9\)"):
        read_kernel_file(latin)
    with pytest.raises(UsageError, match=r"^--kernels: cannot read"):
        read_kernel_file("bad\0name.json")


# --- through the command line ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "a.png")
    return root


def run_cli(*args, timeout=60):
    cmd = [sys.executable, "-m", "soartc_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def assert_one_usage_line(result, option, match):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"soartc: error: {option}: "), lines[0]
    assert match in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"k": [[NaN]]}', "holds NaN"),
        ('{"k": [[1e308]]}', "larger in size than 1e+06"),
        ('{"k": [[' + "9" * 5000 + "]]}", "number too long"),
        ("[" * 100_000, "nested too deeply"),
        ('{"k": [[true]]}', "holds true"),
    ],
)
def test_cli_refuses_hostile_kernel_files(tiny_folder, tmp_path, text, match):
    path = tmp_path / "k.json"
    path.write_text(text)
    result = run_cli("compute", tiny_folder, "--kernels", path, "--size", 16, "--patch", 8)
    assert_one_usage_line(result, "--kernels", match)


def test_cli_refuses_an_oversized_kernel_file_by_its_size(tiny_folder, tmp_path):
    path = tmp_path / "k.json"
    with open(path, "wb") as f:
        f.truncate(8 * MAX_KERNEL_FILE_BYTES)
    result = run_cli("compute", tiny_folder, "--kernels", path, "--size", 16, "--patch", 8)
    assert_one_usage_line(result, "--kernels", "more than the 1048576 bytes")


# --- weights files -----------------------------------------------------------------------------

K = 4


def savez(path, **arrays):
    np.savez(path, **arrays)
    return path


def good(d=3):
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal((K, d)) for name in ("W_Q", "W_K", "W_V")}


def npy_header(shape, descr="<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_load_weights_file_reads_plain_and_compressed_npz(tmp_path):
    arrays = good()
    arrays["W_V"] = np.asfortranarray(arrays["W_V"]).astype(np.float32)
    savez(tmp_path / "w.npz", **arrays)
    np.savez_compressed(tmp_path / "c.npz", **arrays, extra=np.arange(3))
    for name in ("w.npz", "c.npz"):
        weights = optionfiles.load_weights_file(tmp_path / name, k=K)
        for field in ("W_Q", "W_K", "W_V"):
            got = getattr(weights, field)
            assert got.dtype == np.float64 and got.shape == (K, 3)
            np.testing.assert_array_equal(got, arrays[field].astype(np.float64))


@pytest.fixture(scope="module")
def weights_cases(tmp_path_factory):
    """Case name → (file, expected message), made once for the module."""
    tmp_path = tmp_path_factory.mktemp("weights")
    cases = {}
    ones = np.ones((K, 3))
    cases["objects"] = (
        savez(
            tmp_path / "obj.npz", W_Q=np.array([[None] * 3] * K, dtype=object), W_K=ones, W_V=ones
        ),
        "W_Q in .*obj.npz holds Python objects; soartc never unpickles",
    )
    np.save(tmp_path / "plain.npy", ones)
    os.rename(tmp_path / "plain.npy", tmp_path / "renamed.npz")
    cases["npy renamed"] = (
        tmp_path / "renamed.npz",
        r"not an \.npz file \(a zip of \.npy arrays\)",
    )
    (tmp_path / "text.npz").write_text("W_Q = [[1, 2, 3]]\n")
    cases["text"] = (tmp_path / "text.npz", r"not an \.npz file")
    whole = savez(tmp_path / "whole.npz", **good()).read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 10):
        (tmp_path / f"cut{cut}.npz").write_bytes(whole[:cut])
        cases[f"truncated at {cut}"] = (tmp_path / f"cut{cut}.npz", r"not an \.npz file")
    cases["missing"] = (savez(tmp_path / "two.npz", W_Q=ones, W_K=ones), "lacks W_V")
    cases["nan"] = (savez(tmp_path / "nan.npz", W_Q=ones, W_K=ones * np.nan, W_V=ones), "W_K must")
    cases["inf"] = (savez(tmp_path / "inf.npz", W_Q=ones, W_K=ones, W_V=ones * -np.inf), "W_V must")
    cases["huge"] = (
        savez(tmp_path / "huge.npz", W_Q=ones * 1e300, W_K=ones * 1e300, W_V=ones),
        r"W_Q and W_K are too large .*could overflow; need 2·k²·d·max\|W_Q\|·max\|W_K\| ≤ 1e\+300",
    )
    cases["1e150 each"] = (
        savez(tmp_path / "mid.npz", W_Q=ones * 1e150, W_K=ones * 1e150, W_V=ones),
        "too large",
    )
    cases["complex"] = (
        savez(tmp_path / "cx.npz", W_Q=ones * 1j, W_K=ones, W_V=ones),
        "holds complex128, not real numbers",
    )
    cases["strings"] = (
        savez(tmp_path / "str.npz", W_Q=np.full((K, 3), "a"), W_K=ones, W_V=ones),
        "not real numbers",
    )
    cases["structured"] = (
        savez(tmp_path / "rec.npz", W_Q=np.zeros((K, 3), dtype=[("a", "<f8")]), W_K=ones, W_V=ones),
        "not real numbers",
    )
    cases["longdouble"] = (
        savez(tmp_path / "ld.npz", W_Q=ones.astype(np.longdouble), W_K=ones, W_V=ones),
        "use float64 or a smaller type",
    )
    cases["wrong rows"] = (
        savez(tmp_path / "rows.npz", W_Q=np.ones((K + 1, 3)), W_K=ones, W_V=ones),
        r"W_Q in .* has shape \(5, 3\); each of W_Q, W_K, W_V must be \(k, d\) = \(4, d\)",
    )
    cases["3-D"] = (savez(tmp_path / "3d.npz", W_Q=np.ones((K, 3, 1)), W_K=ones, W_V=ones), "shape")
    cases["d over the cap"] = (
        savez(tmp_path / "wide.npz", W_Q=np.ones((K, 4097)), W_K=ones, W_V=ones),
        "1 ≤ d ≤ 4096",
    )
    cases["d differs"] = (
        savez(tmp_path / "dd.npz", W_Q=ones, W_K=np.ones((K, 2)), W_V=ones),
        r"must have shape \(k, d\)",
    )
    # A zip bomb: some 60 kB of deflate that declare 64 MiB for W_Q.
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("W_Q.npy", "w", force_zip64=True) as member:
            member.write(npy_header((K, 3)))
            for _ in range(64):
                member.write(bytes(1 << 20))
        for name in ("W_K", "W_V"):
            archive.writestr(f"{name}.npy", npy_header((K, 3)) + bytes(K * 3 * 8))
    cases["zip bomb"] = (tmp_path / "bomb.npz", r"W_Q in .* declares 6710\d+ bytes uncompressed")
    # A header that claims a shape the data does not hold.
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as archive:
        archive.writestr("W_Q.npy", npy_header((K, 3)) + bytes(8))
        for name in ("W_K", "W_V"):
            archive.writestr(f"{name}.npy", npy_header((K, 3)) + bytes(K * 3 * 8))
    cases["short data"] = (tmp_path / "short.npz", "W_Q in .* is truncated: its header needs 96")
    # Thousands of empty members: the zip reader would build an object for each.
    with zipfile.ZipFile(tmp_path / "many.npz", "w") as archive:
        for index in range(3000):
            archive.writestr(f"m{index}.npy", b"")
    cases["many members"] = (tmp_path / "many.npz", "the archive lists 3000 members")
    # A comment after the end record does not hide it; an archive with no end record is no zip.
    with zipfile.ZipFile(tmp_path / "comment.npz", "w") as archive:
        for index in range(300):
            archive.writestr(f"m{index}.npy", b"")
        archive.comment = b"x" * 60000
    cases["many members and a comment"] = (tmp_path / "comment.npz", "lists 300 members")
    (tmp_path / "noend.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    cases["no end record"] = (tmp_path / "noend.npz", "no zip end-of-directory record")
    with zipfile.ZipFile(tmp_path / "garbage.npz", "w") as archive:
        archive.writestr("W_Q.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 8) + b"{'a': 1}")
    cases["bad header"] = (tmp_path / "garbage.npz", r"not an \.npz file .*W_Q is not an \.npy")
    return cases


CASE_NAMES = [
    "objects", "npy renamed", "text", "truncated at 10", "missing", "nan", "inf", "huge",
    "1e150 each", "complex", "strings", "structured", "longdouble", "wrong rows", "3-D",
    "d over the cap", "d differs", "zip bomb", "short data", "bad header", "many members",
    "many members and a comment", "no end record",
]  # fmt: skip


@pytest.mark.parametrize("case", CASE_NAMES)
def test_load_weights_file_refuses_hostile_files_in_one_line(weights_cases, case):
    path, match = weights_cases[case]
    with pytest.raises(UsageError, match=match) as caught:
        optionfiles.load_weights_file(path, k=K)
    message = str(caught.value)
    assert message.startswith("--weights: ") and "\n" not in message, message
    assert "pickle" not in message.replace("unpickles", "")  # never numpy's "pickled data" text


def test_load_weights_file_refuses_every_truncation(weights_cases):
    for case, (path, _) in weights_cases.items():
        if case.startswith("truncated"):
            with pytest.raises(UsageError, match=r"^--weights: cannot read .*not an \.npz file"):
                optionfiles.load_weights_file(path, k=K)


def test_load_weights_file_refuses_an_oversized_file_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    with open(path, "wb") as f:
        f.truncate(optionfiles.MAX_WEIGHTS_FILE_BYTES + 1)  # sparse
    monkeypatch.setattr(zipfile, "ZipFile", None)  # reading would fail loudly
    with pytest.raises(UsageError, match=r"big\.npz is 1073741825 bytes, more than the"):
        optionfiles.load_weights_file(path, k=K)
    # A smaller budget when k is small: three (4 × 4096) float64 matrices and 1 MiB.
    budget = 3 * K * attention.MAX_WEIGHTS_DIM * 8 + (1 << 20)
    with open(path, "r+b") as f:
        f.truncate(budget + 1)
    with pytest.raises(UsageError, match=f"more than the {budget} bytes"):
        optionfiles.load_weights_file(path, k=K)


def test_load_weights_file_refuses_missing_files_directories_and_fifos(tmp_path):
    with pytest.raises(UsageError, match=r"^--weights: no such file"):
        optionfiles.load_weights_file(tmp_path / "nope.npz", k=K)
    with pytest.raises(UsageError, match=r"^--weights: cannot read .*: it is a directory"):
        optionfiles.load_weights_file(tmp_path, k=K)
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(UsageError, match=r"^--weights: cannot read .*: it is not a regular file"):
        optionfiles.load_weights_file(tmp_path / "pipe.npz", k=K)


def test_check_weights_bound_is_the_documented_one():
    # 2·k²·d·w_Q·w_K = 1e300 exactly at the limit: accepted; ten times more: refused.
    d = 2
    w_k = 1.0
    w_q = 1e300 / (2 * K * K * d * w_k)
    arrays = {"W_Q": np.full((K, d), w_q), "W_K": np.full((K, d), w_k), "W_V": np.ones((K, d))}
    attention.check_weights(arrays, k=K)
    arrays["W_Q"] = arrays["W_Q"] * 10
    with pytest.raises(UsageError, match="too large"):
        attention.check_weights(arrays, k=K)
    # Weights at the bound cannot overflow the worst input: rows of ones, the norm bound √k.
    x = np.ones((3, K))
    arrays["W_Q"] = arrays["W_Q"] / 10
    weights = attention.check_weights(arrays, k=K)
    received, entropy = attention.patch_attention(x, weights=weights, norm="none")
    assert np.isfinite(received).all() and np.isfinite(entropy).all()


def test_image_attention_refuses_non_finite_results_of_finite_inputs():
    image = np.random.default_rng(1).random((8, 8), dtype=np.float32)
    huge = np.full((16, 2), 1e300)
    weights = attention.Weights(huge, huge, np.ones((16, 2)))  # bypassing check_weights
    with pytest.raises(InputError, match="non-finite results of finite inputs"):
        attention.image_attention(image, patch=4, weights=weights, norm="none")
    image[0, 0] = np.nan
    fine = attention.identity_weights(16)
    with pytest.raises(InputError, match="image holds NaN or infinite pixel values"):
        attention.image_attention(image, patch=4, weights=fine, norm="none")


def test_cli_refuses_huge_weights(tiny_folder, tmp_path):
    ones = np.ones((64, 4))
    path = savez(tmp_path / "w.npz", W_Q=ones * 1e300, W_K=ones * 1e300, W_V=ones)
    result = run_cli("attention", tiny_folder, "--weights", path, "--size", 16, "--patch", 8)
    assert_one_usage_line(result, "--weights", "too large")


@pytest.mark.parametrize("case", ["objects", "npy renamed", "zip bomb"])
def test_cli_refuses_hostile_weights_with_the_reason(tiny_folder, weights_cases, case):
    path, _ = weights_cases[case]
    expected = {
        "objects": "holds Python objects",
        "npy renamed": "not an .npz file (a zip of .npy arrays)",
        "zip bomb": "declares",
    }[case]
    result = run_cli("attention", tiny_folder, "--weights", path, "--size", 16, "--patch", 2)
    assert_one_usage_line(result, "--weights", expected)


# --- moved from test_issue13.py ----------------------------------------


@pytest.mark.parametrize("digits", [400, 5000])
def test_a_kernel_file_with_a_long_integer_is_a_usage_error(tiny_photos, tmp_path, digits):
    kernels = tmp_path / "k.json"
    kernels.write_text('{"k": [[' + "9" * digits + "]]}")
    result = tinyruns.soartc(
        "compute", tiny_photos, "--kernels", kernels, "-o", "-", *tinyruns.FAST
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert "--kernels" in result.stderr and "number too long" in result.stderr


def test_an_npz_declaring_186_tib_is_a_usage_error(tiny_photos, tmp_path):
    import zipfile

    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:  # 5,050,000² doubles ≈ 186 TiB, 128 bytes stored
        for name in ("W_Q", "W_K", "W_V"):
            archive.writestr(f"{name}.npy", tinyruns._npy_header((5_050_000, 5_050_000)))
    result = tinyruns.soartc(
        "attention",
        tiny_photos,
        "--weights",
        path,
        "--size",
        32,
        "--patch",
        16,
        "--workers",
        1,
        "-o",
        "-",
        preexec_fn=tinyruns._limited,
    )
    tinyruns.no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("soartc: error: --weights")
    assert len(result.stderr.strip().splitlines()) == 1
