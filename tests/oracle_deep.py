"""Independent computations for tests/test_deep.py and benchmarks/bench_deep.py.

- :func:`forward_loops`: EfficientNet-Lite0 written as plain loops over output positions and
  kernel taps, in float64, from the weights file's tensors as they are stored (batch norm applied,
  not folded; padding from TensorFlow's documented "SAME" rule).
- :func:`forward_torch`: the same network in PyTorch's functional API on ``torch.load``'s tensors.
- :func:`cells_loops`: SPEC §10's 3×3 averaging and bilinear sampling, one cell at a time.
- :func:`write_legacy`: a writer of PyTorch's legacy serialisation, so that tests can make weights
  files (and hostile ones) without torch.
- :func:`synthetic_state_dict`: random tensors of the network's names and shapes.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from soartc_cli.core.deep import expected_shapes

# Written out here, not imported, so that a wrong constant in soartc_cli.core.deep fails the tests.
BN_EPS = 1e-3  # TensorFlow's EfficientNet(-Lite) builders: batch_norm_epsilon=1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SPEC §10
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-B0's blocks (Tan & Le 2019, table 1), one row per block:
# (kernel, stride, input channels, expansion, output channels).
BLOCKS = (
    (3, 1, 32, 1, 16),
    (3, 2, 16, 6, 24),
    (3, 1, 24, 6, 24),
    (5, 2, 24, 6, 40),
    (5, 1, 40, 6, 40),
    (3, 2, 40, 6, 80),
    (3, 1, 80, 6, 80),
    (3, 1, 80, 6, 80),
    (5, 1, 80, 6, 112),
    (5, 1, 112, 6, 112),
    (5, 1, 112, 6, 112),
    (5, 2, 112, 6, 192),
    (5, 1, 192, 6, 192),
    (5, 1, 192, 6, 192),
    (5, 1, 192, 6, 192),
    (3, 1, 192, 6, 320),
)
LAST_FEATURE_BLOCK = 7

# --------------------------------------------------------------------------- plain loops


def _tf_same_before(n: int, k: int, s: int) -> int:
    """Padding before, from TensorFlow's documentation of "SAME" (tf.nn.convolution)."""
    along = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
    return along // 2


def _conv_loops(x: np.ndarray, w: np.ndarray, *, stride: int, depthwise: bool) -> np.ndarray:
    _, h, wd = x.shape
    cout, _, k, _ = w.shape
    oh, ow = math.ceil(h / stride), math.ceil(wd / stride)
    top, left = _tf_same_before(h, k, stride), _tf_same_before(wd, k, stride)
    out = np.zeros((cout, oh, ow))
    for i in range(oh):
        for j in range(ow):
            for ky in range(k):
                y = i * stride + ky - top
                if not 0 <= y < h:
                    continue
                for kx in range(k):
                    xx = j * stride + kx - left
                    if not 0 <= xx < wd:
                        continue
                    if depthwise:
                        out[:, i, j] += w[:, 0, ky, kx] * x[:, y, xx]
                    else:
                        out[:, i, j] += w[:, :, ky, kx] @ x[:, y, xx]
    return out


def _bn(x: np.ndarray, t: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    g, b, m, v = (
        np.asarray(t[f"{name}.{p}"], float)
        for p in ("weight", "bias", "running_mean", "running_var")
    )
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + BN_EPS) * g[:, None, None] + b[
        :, None, None
    ]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


def prepare_loops(pixels: np.ndarray) -> np.ndarray:
    """(C, S, S) in [0, 1] → (3, S, S) float64 of (v − mean)/std, luma copied to each channel."""
    out = np.empty((3, *pixels.shape[1:]))
    for c in range(3):
        source = pixels[0] if pixels.shape[0] == 1 else pixels[c]
        out[c] = (source.astype(float) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
    return out


def forward_loops(
    tensors: Mapping[str, np.ndarray], pixels: np.ndarray, *, last: int = LAST_FEATURE_BLOCK
) -> list[np.ndarray]:
    """Outputs (C, h, w) float64 of blocks 0 … ``last`` of the fitted image ``pixels``."""
    t = {k: np.asarray(v, float) for k, v in tensors.items()}
    x = _conv_loops(prepare_loops(pixels), t["_conv_stem.weight"], stride=2, depthwise=False)
    x = _relu6(_bn(x, t, "_bn0"))
    outputs = []
    for i, (k, stride, cin, expand, cout) in enumerate(BLOCKS[: last + 1]):
        p = f"_blocks.{i}"
        h = x
        if expand != 1:
            h = _conv_loops(h, t[f"{p}._expand_conv.weight"], stride=1, depthwise=False)
            h = _relu6(_bn(h, t, f"{p}._bn0"))
        assert t[f"{p}._depthwise_conv.weight"].shape[2] == k
        h = _conv_loops(h, t[f"{p}._depthwise_conv.weight"], stride=stride, depthwise=True)
        h = _relu6(_bn(h, t, f"{p}._bn1"))
        h = _bn(
            _conv_loops(h, t[f"{p}._project_conv.weight"], stride=1, depthwise=False),
            t,
            f"{p}._bn2",
        )
        if stride == 1 and cin == cout:
            h = h + x
        x = h
        outputs.append(x)
    return outputs


def logits_loops(tensors: Mapping[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """The (1000,) float64 class scores: all 16 blocks, the head, the mean and the classifier."""
    t = {k: np.asarray(v, float) for k, v in tensors.items()}
    x = forward_loops(tensors, pixels, last=15)[-1]
    x = _relu6(_bn(_conv_loops(x, t["_conv_head.weight"], stride=1, depthwise=False), t, "_bn1"))
    return t["_fc.weight"] @ x.mean(axis=(1, 2)) + t["_fc.bias"]


def cells_loops(
    maps: list[np.ndarray], *, size: int, patch: int, stride: int, strides: tuple[int, ...]
) -> np.ndarray:
    """SPEC §10's sampling, one position and one cell at a time: (ΣC, N_cells) float64."""
    n = (size - patch) // stride + 1
    columns = []
    for fmap, s in zip(maps, strides, strict=True):
        c, h, w = fmap.shape
        avg = np.zeros((c, h, w))
        for a in range(h):
            for b in range(w):
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        avg[:, a, b] += fmap[
                            :, min(max(a + da, 0), h - 1), min(max(b + db, 0), w - 1)
                        ]
        avg /= 9
        values = np.zeros((c, n * n))
        for i in range(n):
            for j in range(n):
                cy, cx = stride * i + (patch - 1) / 2, stride * j + (patch - 1) / 2
                uy = min(max((cy - (s - 1)) / s, 0.0), h - 1)
                ux = min(max((cx - (s - 1)) / s, 0.0), w - 1)
                y0, x0 = math.floor(uy), math.floor(ux)
                y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                fy, fx = uy - y0, ux - x0
                values[:, i * n + j] = (
                    (1 - fy) * (1 - fx) * avg[:, y0, x0]
                    + (1 - fy) * fx * avg[:, y0, x1]
                    + fy * (1 - fx) * avg[:, y1, x0]
                    + fy * fx * avg[:, y1, x1]
                )
        columns.append(values)
    return np.concatenate(columns)


# --------------------------------------------------------------------------- torch


def forward_torch(sd: Mapping[str, Any], x: Any, *, last: int = 15, head: bool = False) -> Any:
    """Blocks 0 … ``last`` (list of (1, C, h, w) tensors), or with ``head`` the (1, 1000) logits,
    of the prepared (1, 3, S, S) tensor ``x``; ``sd`` is ``torch.load``'s state dict."""
    import torch.nn.functional as F

    def same(v, k, s):
        pads = []
        for n in (v.shape[-1], v.shape[-2]):  # F.pad wants the last dimension first
            o = -(-n // s)
            total = max((o - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(v, pads)

    def bn(v, n):
        return F.batch_norm(
            v,
            sd[f"{n}.running_mean"],
            sd[f"{n}.running_var"],
            sd[f"{n}.weight"],
            sd[f"{n}.bias"],
            training=False,
            eps=BN_EPS,
        )

    x = F.relu6(bn(F.conv2d(same(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    outputs = []
    for i, (k, stride, cin, expand, cout) in enumerate(BLOCKS[: last + 1]):
        p = f"_blocks.{i}"
        h = x
        if expand != 1:
            h = F.relu6(bn(F.conv2d(h, sd[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        h = F.conv2d(
            same(h, k, stride),
            sd[f"{p}._depthwise_conv.weight"],
            stride=stride,
            groups=cin * expand,
        )
        h = F.relu6(bn(h, f"{p}._bn1"))
        h = bn(F.conv2d(h, sd[f"{p}._project_conv.weight"]), f"{p}._bn2")
        x = h + x if stride == 1 and cin == cout else h
        outputs.append(x)
    if not head:
        return outputs
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


# --------------------------------------------------------------------------- files


def synthetic_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors of every name and shape the network expects, activations kept O(1)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes().items():
        if name.endswith("num_batches_tracked"):
            out[name] = np.zeros((), np.int64)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("running_mean") or name.endswith(".bias"):
            out[name] = rng.normal(0, 0.1, shape).astype(np.float32)
        elif len(shape) == 1:  # batch-norm gamma
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[name] = rng.normal(0, 1.5 / math.sqrt(fan_in), shape).astype(np.float32)
    return out


class Global:
    """A global name to write into a pickle as is (torch need not be importable)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # pickle wants reduce functions callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


class _Tensor:
    def __init__(self, storage: _Storage, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.shape, self.stride = storage, shape, stride

    def __reduce__(self):
        hooks = collections.OrderedDict()
        rebuild = Global("torch._utils", "_rebuild_tensor_v2")
        return rebuild, (self.storage, 0, self.shape, self.stride, False, hooks)


_TYPE_NAMES = {np.dtype("<f4"): "FloatStorage", np.dtype("<i8"): "LongStorage"}


class _Writer(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[Global] = _save_global

    def __init__(self, file: IO[bytes], storage_types: Mapping[str, str], delta: int) -> None:
        super().__init__(file, protocol=2)
        self.storage_types, self.delta = storage_types, delta

    def persistent_id(self, obj: object):
        if isinstance(obj, _Storage):
            kind = Global("torch", self.storage_types[obj.key])
            return ("storage", kind, obj.key, "cpu", obj.array.size + self.delta, None)
        return None


def write_legacy(
    tensors: Mapping[str, object],
    file: IO[bytes],
    *,
    hwio: bool = False,
    storage_type: str | None = None,
    numel_delta: int = 0,
) -> None:
    """Write ``tensors`` as ``torch.save`` (legacy format, protocol 2) does.

    Values that are not arrays are pickled as they are (a test's hostile object). ``hwio``
    stores 4-d weights in (kh, kw, in, out) memory order, as the package's file does.
    ``storage_type`` names every storage's type instead of the dtype's; ``numel_delta`` is
    added to every declared storage size (a lie about the storage sizes).
    """
    storages: list[_Storage] = []
    types: dict[str, str] = {}
    obj: collections.OrderedDict = collections.OrderedDict()
    for i, (name, value) in enumerate(tensors.items()):
        if not isinstance(value, np.ndarray):
            obj[name] = value
            continue
        a = value.astype(value.dtype.newbyteorder("<"))
        if hwio and a.ndim == 4:
            memory = np.ascontiguousarray(a.transpose(2, 3, 1, 0))
            o, c, _, kw = a.shape
            stride = (1, o, kw * c * o, c * o)
        else:
            memory = np.array(a, order="C")  # ascontiguousarray would make a 0-d array 1-d
            stride = tuple(s // a.itemsize for s in memory.strides)
        key = str(1000 + i)
        storages.append(_Storage(key, memory.reshape(-1)))
        types[key] = storage_type or _TYPE_NAMES[a.dtype]
        obj[name] = _Tensor(storages[-1], a.shape, stride)
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
        pickle.dump(header, file, protocol=2)
    buffer = io.BytesIO()
    writer = _Writer(buffer, types, numel_delta)
    writer.dump(obj)
    file.write(buffer.getvalue())
    pickle.dump([s.key for s in storages], file, protocol=2)
    for s in storages:
        file.write(struct.pack("<q", s.array.size + numel_delta))
        file.write(s.array.tobytes())


def legacy_bytes(tensors: Mapping[str, object], **options: Any) -> bytes:
    buffer = io.BytesIO()
    write_legacy(tensors, buffer, **options)
    return buffer.getvalue()
