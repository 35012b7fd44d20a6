"""Model files of ``fit``: an ``.npz`` archive written atomically, never pickled.

The numbers are :mod:`soartc_cli.core.unitspace`'s; this module only stores and reads them.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import IO

import numpy as np

from soartc_cli.core.unitspace import MIN_GOOD_IMAGES, UNIT_SPACES, UnitSpace
from soartc_cli.errors import UsageError

__all__ = ["FORMAT", "FORMAT_VERSION", "load_model", "save_model"]

FORMAT = "soartc.unitspace"
"""Value of the ``format`` array of a model file."""
FORMAT_VERSION = 1
"""Value of the ``format_version`` array of a model file written by this version."""

# -- model files ----------------------------------------------------------------------------

_ARRAYS = ("center", "scale", "means", "precisions", "shrinkage", "oof_scores")
_SCALARS = ("threshold", "quantile", "unit_space", "meta", "format", "format_version")


def save_model(model: UnitSpace, path_or_file: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write a model as an ``.npz`` archive (never pickled).

    Parameters
    ----------
    model : UnitSpace
    path_or_file : path or binary file object
        A path is written atomically: to a temporary file in the same directory, renamed over
        the target with ``os.replace`` only when complete. A file object is written in place.

    Notes
    -----
    Arrays ``center, scale, means, precisions, shrinkage, oof_scores`` (float64), 0-d
    ``threshold``, ``quantile`` (float64), ``unit_space``, ``format`` (``"soartc.unitspace"``),
    ``meta`` (the JSON text of ``model.meta``; unicode), and ``format_version`` (int64).
    """
    arrays: dict[str, np.ndarray] = {
        name: np.asarray(getattr(model, name), dtype=np.float64) for name in _ARRAYS
    }
    arrays["threshold"] = np.array(float(model.threshold))
    arrays["quantile"] = np.array(float(model.quantile))
    arrays["unit_space"] = np.array(str(model.unit_space))
    arrays["meta"] = np.array(json.dumps(model.meta, sort_keys=True, allow_nan=False))
    arrays["format"] = np.array(FORMAT)
    arrays["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    if isinstance(path_or_file, (str, os.PathLike)):
        from soartc_cli.output.targets import AtomicFile

        with AtomicFile(path_or_file, binary=True) as handle:
            np.savez(handle.file, **arrays)
    else:
        np.savez(path_or_file, **arrays)


def _bad(reason: str) -> UsageError:
    return UsageError(f"not a usable soartc model: {reason}")


def load_model(path_or_file: str | os.PathLike[str] | IO[bytes]) -> UnitSpace:
    """Read a model written by :func:`save_model`.

    Parameters
    ----------
    path_or_file : path or binary file object

    Returns
    -------
    UnitSpace
        The fitted unit space. A :class:`~soartc_cli.errors.UsageError` with a one-line reason
        is raised when the file cannot be read, is not an ``.npz`` archive, lacks an array,
        holds an object array (never unpickled: ``allow_pickle=False``), has an unknown
        ``format`` or a ``format_version`` other than this version's, or arrays whose shapes or
        values do not fit together.
    """
    name = os.fspath(path_or_file) if isinstance(path_or_file, (str, os.PathLike)) else "model"
    try:
        archive = np.load(path_or_file, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"model file not found: {name}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation) as exc:
        raise _bad(f"{name} is not an .npz archive ({_one_line(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _bad(f"{name} is a single .npy array, not an .npz archive")
    try:
        with archive:
            missing = [k for k in (*_ARRAYS, *_SCALARS) if k not in archive.files]
            if missing:
                raise _bad(f"{name} lacks the array(s) {', '.join(missing)}")
            data = {key: archive[key] for key in (*_ARRAYS, *_SCALARS)}
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _bad(f"{name}: {_one_line(exc)}") from None
    return _model_from(data, name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _text(data: dict[str, np.ndarray], key: str, name: str) -> str:
    value = data[key]
    if value.shape != () or value.dtype.kind != "U":
        raise _bad(f"{name}: {key} must be a 0-d text array, got {value.dtype} {value.shape}")
    return str(value[()])


def _number(data: dict[str, np.ndarray], key: str, name: str, kinds: str = "f") -> float:
    value = data[key]
    if value.shape != () or value.dtype.kind not in kinds:
        raise _bad(f"{name}: {key} must be a 0-d number, got {value.dtype} {value.shape}")
    return value[()].item()


def _model_from(data: dict[str, np.ndarray], name: str) -> UnitSpace:
    kind = _text(data, "format", name)
    if kind != FORMAT:
        raise _bad(f"{name}: format is {kind!r}, not {FORMAT!r}")
    version = _number(data, "format_version", name, kinds="iu")
    if version != FORMAT_VERSION:
        raise _bad(
            f"{name} has format version {version}; this soartc reads version {FORMAT_VERSION}"
        )
    arrays = {}
    for key in _ARRAYS:
        if data[key].dtype != np.float64:
            raise _bad(f"{name}: {key} must be float64, got {data[key].dtype}")
        arrays[key] = data[key]
    unit_space = _text(data, "unit_space", name)
    if unit_space not in UNIT_SPACES:
        raise _bad(f"{name}: unknown unit space {unit_space!r}")
    try:
        meta = json.loads(_text(data, "meta", name))
    except json.JSONDecodeError as exc:
        raise _bad(f"{name}: meta is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise _bad(f"{name}: meta must be a JSON object")
    center, scale, means, precisions = (arrays[k] for k in _ARRAYS[:4])
    k = center.shape[0] if center.ndim == 1 else -1
    groups = means.shape[0] if means.ndim == 2 else -1
    shapes_fit = (
        k > 0
        and scale.shape == (k,)
        and means.shape == (groups, k)
        and groups > 0
        and (unit_space == "position" or groups == 1)
        and precisions.shape == (groups, k, k)
        and arrays["shrinkage"].shape == (groups,)
        and arrays["oof_scores"].ndim == 1
        and arrays["oof_scores"].size >= MIN_GOOD_IMAGES
    )
    if not shapes_fit:
        shapes = ", ".join(f"{key} {arrays[key].shape}" for key in _ARRAYS)
        raise _bad(f"{name}: array shapes do not fit together ({shapes}, unit space {unit_space})")
    if not (np.isfinite(center).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise _bad(f"{name}: the scaling holds non-finite or non-positive values")
    if not np.isfinite(means).all() or not np.isfinite(precisions).all():
        raise _bad(f"{name}: the means or precisions hold non-finite values")
    threshold = _number(data, "threshold", name)
    quantile = _number(data, "quantile", name)
    if not math.isfinite(threshold) or not (0.0 < quantile <= 1.0):
        raise _bad(f"{name}: threshold {threshold} or quantile {quantile} out of range")
    return UnitSpace(
        center=center,
        scale=scale,
        means=means,
        precisions=precisions,
        shrinkage=arrays["shrinkage"],
        oof_scores=arrays["oof_scores"],
        threshold=threshold,
        unit_space=unit_space,
        quantile=quantile,
        meta=meta,
    )
