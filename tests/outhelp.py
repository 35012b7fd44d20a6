"""Helpers of the output tests: one image's values through a layout and a format, in memory."""

from __future__ import annotations

import io
import os
import stat

import numpy as np

from soartc_cli.output import formats, layouts
from soartc_cli.output.layouts import Columns, ImageValues

LUMA = Columns(None, ("bend1", "rot90"), ("beta", "delta", "distance"))
RGB = Columns(("R", "G", "B"), ("bend1",), ("beta", "vol"))
NAMES = ("r00c00", "r00c01", "r01c00", "r01c01")


def values_of(columns, n=4, seed=0):
    """Random ``(C, T, M, N)`` values for ``columns``."""
    c = 1 if columns.channels is None else len(columns.channels)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((c, len(columns.transforms), len(columns.metrics), n))


def spec_of(layout="wide", kind="csv", precision=7, pool=layouts.DEFAULT_POOL, compression=None):
    """The :class:`OutputSpec` of a format name and a layout name."""
    return formats.OutputSpec(
        formats.FORMATS[kind], layouts.get_layout(layout, pool=pool), precision, compression
    )


def image_of(values, *, path="a/b.png", label="a", grid=(2, 2)):
    return ImageValues(path, label, 640, 480, grid, values)


def encode(spec, columns, values, *, path="a/b.png", label="a"):
    """One image's payload, as a worker makes it."""
    return spec.format.encode(spec, columns, image_of(values, path=path, label=label), NAMES)


def write(spec, columns, images, *, record=None):
    """Header and the images (``(values, path, label)`` triples) through the format's sink."""
    stream = io.BytesIO()
    sink = spec.format.sink(stream, spec, columns)
    sink.begin(NAMES)
    for values, path, label in images:
        sink.write(encode(spec, columns, values, path=path, label=label))
    sink.close(record)
    return stream.getvalue()


def text(layout, columns, values, *, path="a/b.png", label="a", precision=7, kind="csv",
         pool=layouts.DEFAULT_POOL):  # fmt: skip
    """Header and one image's rows as text (CSV or JSON Lines)."""
    spec = spec_of(layout, kind, precision, pool)
    return write(spec, columns, [(values, path, label)]).decode("utf-8")


def char_device(path, minor):
    """A private character device node (``minor`` 3: like /dev/null, 7: like /dev/full).

    The tests use their own node: a run of old code elsewhere on the machine (an atomic rename
    as root) could replace the shared /dev/null by a regular file while they run.
    """
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return str(path)
