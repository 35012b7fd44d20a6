"""The format-2 model file: an ``.npz`` archive written without pickles and read as untrusted
input (SPEC §10, §12).

Reading checks everything it can before it allocates: the file is a regular file of at most
``max_bytes``; the zip's end record bounds the member count and the central directory; every
member's declared size, compression ratio and ``.npy`` header (dtype, shape, order) are checked
against each other and against the model's own layout text (components, ``k``, ``N_cells``, bank
sizes) — and against what the caller's settings imply — before any array is unpacked. Any
problem is one :class:`~soartc_cli.errors.UsageError` line that names the file.

Members (every one a ``.npy``; ``c`` is a component name):

========================  ==========  ======================================================
name                      dtype       shape
========================  ==========  ======================================================
``format``                ``<U``      ``()``: ``"soartc.model"``
``format_version``        ``<i8``     ``()``: 2
``layout``                ``<U``      ``()``: JSON of the numerics' own settings (below)
``meta``                  ``<U``      ``()``: JSON object, the caller's settings
``threshold``             ``<f8``     ``()``
``oof_heat_min``          ``<f8``     ``()``
``oof_scores``            ``<f8``     ``(n,)``
``c.center, c.scale``     ``<f8``     ``(k,)``
``c.means``               ``<f8``     ``(G, k)``, gaussian; ``G = N_c`` (position) or 1
``c.precisions``          ``<f8``     ``(G, k, k)``, gaussian
``c.shrinkage``           ``<f8``     ``(G,)``, gaussian
``c.mean, c.std``         ``<f8``     ``(k,)``, bank
``c.bank``                ``<f4``     ``(m, k)``, bank; ``m = bank_size(n · N_c)``
``c.calib_mean``          ``<f8``     ``(G',)``; ``G' = N_cells`` (position) or 1
``c.calib_std``           ``<f8``     ``(G',)``
========================  ==========  ======================================================

``layout`` = ``{"components": [{"name", "scorer", "n_units", "n_features"}, …], "unit_space",
"seed", "quantile", "n_cells", "n_images"}`` (components in the order of the heat's sum).
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from soartc_cli.core import scoring
from soartc_cli.errors import UsageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "Expected",
    "load_model",
    "save_model",
]

FORMAT = "soartc.model"
FORMAT_VERSION = 2
FORMAT_1 = "soartc.unitspace"
DEFAULT_MAX_BYTES = 256 << 20
"""Default limit of a model file's size and of its arrays' total (a model of the defaults for
10,000 images is about 2 MB)."""
MAX_MEMBERS = 256
MAX_CENTRAL_DIRECTORY = 1 << 20
MAX_RATIO = 50  # uncompressed / compressed, for a member larger than RATIO_FREE
RATIO_FREE = 1 << 16
MAX_HEADER = 10000  # bytes of a .npy header (numpy's own limit)
MAX_TEXT = 1 << 20  # characters of a JSON text
MAX_JSON_DEPTH = 64
MAX_COMPONENTS = 16
MAX_FEATURES = 4096
MAX_UNITS = 1 << 24
MAX_IMAGES = 10**9
Z_MAX = 710.0  # |z| = ln(1 + |u|) ≤ ln(1 + 1.8e308) < 710
Y_MAX = 1.5e15  # |y| ≤ 2·Z_MAX / 1e-12
P_MAX = 1e40  # |P| ≤ k / (1e-9 · tr Σ) with σ ≥ 1e-12: far below; keeps every h finite
CALIB_MAX = 1e6
_END = b"PK\x05\x06"
_END64_LOCATOR = b"PK\x06\x07"
_END64 = b"PK\x06\x06"
_TEXT = re.compile(r"<U([1-9][0-9]{0,7})\Z")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


@dataclass(frozen=True)
class Expected:
    """What the caller's settings imply about a model, returned by ``check_meta``; None fields
    are not checked.

    Attributes
    ----------
    components : mapping of str to (int, int), optional
        ``name → (N_c, k_c)`` in the model's order.
    n_cells : int, optional
    unit_space : str, optional
    seed : int, optional
    quantile : float, optional
    """

    components: Mapping[str, tuple[int, int]] | None = None
    n_cells: int | None = None
    unit_space: str | None = None
    seed: int | None = None
    quantile: float | None = None


# -- writing --------------------------------------------------------------------------------


def _text(value: str) -> np.ndarray:
    return np.array(value, dtype=f"<U{max(1, len(value))}")


def _arrays(model: scoring.Model) -> dict[str, np.ndarray]:
    layout = {
        "components": [
            {
                "name": name,
                "scorer": part.scorer,
                "n_units": int(part.n_units),
                "n_features": int(part.n_features),
            }
            for name, part in model.components.items()
        ],
        "unit_space": model.unit_space,
        "seed": int(model.seed),
        "quantile": float(model.quantile),
        "n_cells": int(model.n_cells),
        "n_images": int(model.n_images),
    }
    try:
        meta = json.dumps(model.meta, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"model meta must be JSON-ready: {exc}") from None
    f8 = np.dtype("<f8")
    arrays = {
        "format": _text(FORMAT),
        "format_version": np.array(FORMAT_VERSION, dtype="<i8"),
        "layout": _text(json.dumps(layout, allow_nan=False)),
        "meta": _text(meta),
        "threshold": np.array(model.threshold, dtype=f8),
        "oof_heat_min": np.array(model.oof_heat_min, dtype=f8),
        "oof_scores": np.asarray(model.oof_scores, dtype=f8),
    }
    for name, part in model.components.items():
        fields = ["center", "scale"]
        fields += (
            ["means", "precisions", "shrinkage"] if part.scorer == "gaussian" else ["mean", "std"]
        )
        for key in fields:
            arrays[f"{name}.{key}"] = np.asarray(getattr(part.fit, key), dtype=f8)
        if part.scorer == "bank":
            arrays[f"{name}.bank"] = np.asarray(part.fit.bank, dtype="<f4")
        arrays[f"{name}.calib_mean"] = np.asarray(part.calib_mean, dtype=f8)
        arrays[f"{name}.calib_std"] = np.asarray(part.calib_std, dtype=f8)
    return arrays


def _write(handle: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():
            # A fixed date: the same model gives the same bytes (and the same sha256).
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, np.asarray(value, order="C"), allow_pickle=False)


def save_model(model: scoring.Model, path_or_file: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write a format-2 model as an ``.npz`` archive (never pickled).

    Parameters
    ----------
    model : scoring.Model
    path_or_file : path or binary file object
        A path is written atomically (:class:`~soartc_cli.output.targets.AtomicFile`: a temporary
        file in the same directory renamed over the target once complete); a file object is written
        in place (it need not be seekable).

    Raises
    ------
    UsageError
        ``model.meta`` is not JSON-ready (``allow_nan=False``).
    soartc_cli.output.targets.WriteError
        The file cannot be written (one line naming it).

    Notes
    -----
    The members and their dtypes and shapes are this module's table; stored uncompressed, with
    fixed timestamps, so that the same model gives the same bytes.
    """
    if not isinstance(model, scoring.Model):
        raise UsageError(f"save_model needs a scoring.Model, got {type(model).__name__}")
    arrays = _arrays(model)
    if not isinstance(path_or_file, (str, os.PathLike)):
        _write(path_or_file, arrays)
        return
    from soartc_cli.output.targets import AtomicFile, write_error

    path = os.fspath(path_or_file)
    try:
        with AtomicFile(path, binary=True) as handle:
            _write(handle.file, arrays)
    except OSError as exc:
        raise write_error(exc, path) from None


# -- reading: the container -------------------------------------------------------------------


class _Bad(Exception):
    """A reason, turned into one UsageError naming the file by :func:`load_model`."""


def _read_exactly(handle: IO[bytes], size: int, what: str) -> bytes:
    parts, left = [], size
    while left > 0:
        chunk = handle.read(min(left, 1 << 20))
        if not chunk:
            raise _Bad(f"{what} is truncated")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _end_record(handle: IO[bytes], size: int) -> tuple[int, int, int]:
    """(entries, central directory size, its offset) from the zip's end record(s)."""
    tail_size = min(size, 22 + 0xFFFF)
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    at = tail.rfind(_END)
    if at < 0 or tail_size - at < 22:
        raise _Bad("not an .npz archive (no zip end record)")
    _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset, _ = struct.unpack(
        "<4s4H2LH", tail[at : at + 22]
    )
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        locator = at - 20
        if locator < 0 or tail[locator : locator + 4] != _END64_LOCATOR:
            raise _Bad("not an .npz archive (a zip64 end record is missing)")
        _, _, offset, _ = struct.unpack("<4sLQL", tail[locator : locator + 20])
        if offset + 56 > size:
            raise _Bad("not an .npz archive (a zip64 end record points outside the file)")
        handle.seek(offset)
        record = handle.read(56)
        if len(record) != 56 or record[:4] != _END64:
            raise _Bad("not an .npz archive (a zip64 end record is damaged)")
        _, _, _, _, disk, cd_disk, disk_entries, entries, cd_size, cd_offset = struct.unpack(
            "<4sQ2H2L4Q", record
        )
    if disk != 0 or cd_disk != 0 or disk_entries != entries:
        raise _Bad("a zip archive split over several disks")
    if entries > MAX_MEMBERS:
        raise _Bad(f"the archive declares {entries} members (at most {MAX_MEMBERS})")
    if cd_size > MAX_CENTRAL_DIRECTORY or cd_offset + cd_size > size:
        raise _Bad(f"the archive's central directory ({cd_size} bytes) does not fit the file")
    return entries, cd_size, cd_offset


def _members(archive: zipfile.ZipFile, entries: int, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) != entries:
        raise _Bad(f"the archive lists {len(infos)} members but declares {entries}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or "/" in name or name.startswith("."):
            raise _Bad(f"unexpected member {name!r} (a model holds .npy arrays only)")
        key = name[: -len(".npy")]
        if key in members:
            raise _Bad(f"the member {name!r} appears twice")
        if info.flag_bits & 0x1:
            raise _Bad(f"the member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Bad(f"the member {name!r} uses an unsupported compression")
        total += info.file_size
        if total > max_bytes:
            raise _Bad(f"the arrays declare more than {max_bytes} bytes in all (the limit)")
        if info.file_size > RATIO_FREE and info.file_size > MAX_RATIO * info.compress_size:
            raise _Bad(
                f"the member {name!r} declares {info.file_size} bytes from "
                f"{info.compress_size} (compression ratio above {MAX_RATIO}: a zip bomb?)"
            )
        members[key] = info
    return members


def _npy_header(handle: IO[bytes], key: str) -> tuple[str, tuple, int]:
    """(descr, shape, header length in bytes) of one member; fortran order refused."""
    magic = _read_exactly(handle, 8, f"{key}.npy")
    if magic[:6] != b"\x93NUMPY":
        raise _Bad(f"{key}.npy is not a .npy array")
    version = (magic[6], magic[7])
    if version == (1, 0):
        length_size, form = 2, "<H"
    elif version == (2, 0):
        length_size, form = 4, "<I"
    else:
        raise _Bad(f"{key}.npy has an unsupported .npy version {version}")
    (length,) = struct.unpack(form, _read_exactly(handle, length_size, f"{key}.npy"))
    if length > MAX_HEADER:
        raise _Bad(f"{key}.npy declares a header of {length} bytes (at most {MAX_HEADER})")
    text = _read_exactly(handle, length, f"{key}.npy").decode("latin1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise _Bad(f"{key}.npy has an unreadable header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise _Bad(f"{key}.npy has an unreadable header")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str):
        raise _Bad(f"{key} has a structured dtype {descr!r}")
    if fortran is not False:
        raise _Bad(f"{key} is stored in Fortran order")
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _Bad(f"{key}.npy declares a shape {shape!r}")
    return descr, shape, 8 + length_size + length


# -- reading: strict JSON and the layout ------------------------------------------------------


def _no_constants(token: str):
    raise ValueError(f"{token} is not JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token} is out of range")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _json(text: str, what: str) -> Any:
    stripped = _STRING.sub('""', text)
    codes = np.frombuffer(stripped.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = (
        (codes == ord("[")).astype(np.int64)
        + (codes == ord("{"))
        - (codes == ord("]"))
        - (codes == ord("}"))
    )
    if step.size and int(np.cumsum(step).max()) > MAX_JSON_DEPTH:
        raise _Bad(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(
            text,
            parse_constant=_no_constants,
            parse_float=_finite_float,
            object_pairs_hook=_unique,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _Bad(f"{what} is not JSON ({' '.join(str(exc).split())})") from None


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"layout: {what} must be an integer in {low} … {high}, got {value!r}")
    return value


def _layout(value: Any) -> dict:
    keys = {"components", "unit_space", "seed", "quantile", "n_cells", "n_images"}
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise _Bad(f"layout must be an object with the keys {', '.join(sorted(keys))}: {got}")
    if value["unit_space"] not in scoring.UNIT_SPACES:
        raise _Bad(f"layout: unknown unit space {value['unit_space']!r}")
    _integer(value["seed"], "seed", 0, 2**64)
    quantile = value["quantile"]
    if (
        isinstance(quantile, bool)
        or not isinstance(quantile, (int, float))
        or not 0.0 < quantile <= 1.0
    ):
        raise _Bad(f"layout: quantile must be a number in (0, 1], got {quantile!r}")
    _integer(value["n_cells"], "n_cells", 1, MAX_UNITS)
    _integer(value["n_images"], "n_images", scoring.MIN_GOOD_IMAGES, MAX_IMAGES)
    components = value["components"]
    if not isinstance(components, list) or not 1 <= len(components) <= MAX_COMPONENTS:
        raise _Bad(f"layout: components must be a list of 1 … {MAX_COMPONENTS} objects")
    names = set()
    for entry in components:
        fields = {"name", "scorer", "n_units", "n_features"}
        if not isinstance(entry, dict) or set(entry) != fields:
            raise _Bad(f"layout: a component must have the keys {', '.join(sorted(fields))}")
        name = entry["name"]
        if not isinstance(name, str) or not scoring.NAME.match(name) or name in names:
            raise _Bad(f"layout: bad or repeated component name {name!r}")
        names.add(name)
        if entry["scorer"] not in scoring.SCORER_KINDS:
            raise _Bad(f"layout: unknown scorer {entry['scorer']!r} of {name}")
        _integer(entry["n_units"], f"n_units of {name}", 1, MAX_UNITS)
        _integer(entry["n_features"], f"n_features of {name}", 1, MAX_FEATURES)
    return value


def _compare(layout: dict, expected: Expected) -> None:
    def differ(what: str, model: Any, settings: Any) -> _Bad:
        return _Bad(f"its arrays are for {what} {model}, its settings say {settings}")

    if expected.components is not None:
        got = {c["name"]: (c["n_units"], c["n_features"]) for c in layout["components"]}
        want = {str(k): tuple(int(x) for x in v) for k, v in expected.components.items()}
        if list(got) != list(want):
            raise differ("components", ",".join(got), ",".join(want))
        for name in got:
            if got[name] != want[name]:
                raise differ(f"{name} (units, features)", got[name], want[name])
    for key in ("n_cells", "unit_space", "seed", "quantile"):
        setting = getattr(expected, key)
        if setting is not None and setting != layout[key]:
            raise differ(key, layout[key], setting)


def _shapes(layout: dict) -> dict[str, tuple[str, tuple]]:
    """Every member the layout implies: key → (descr, shape); texts get descr ``<U``."""
    n, n_cells = layout["n_images"], layout["n_cells"]
    position = layout["unit_space"] == "position"
    out: dict[str, tuple[str, tuple]] = {
        "format": ("<U", ()),
        "format_version": ("<i8", ()),
        "layout": ("<U", ()),
        "meta": ("<U", ()),
        "threshold": ("<f8", ()),
        "oof_heat_min": ("<f8", ()),
        "oof_scores": ("<f8", (n,)),
    }
    for entry in layout["components"]:
        c, units, k = entry["name"], entry["n_units"], entry["n_features"]
        out[f"{c}.center"] = out[f"{c}.scale"] = ("<f8", (k,))
        if entry["scorer"] == "gaussian":
            groups = units if position else 1
            out[f"{c}.means"] = ("<f8", (groups, k))
            out[f"{c}.precisions"] = ("<f8", (groups, k, k))
            out[f"{c}.shrinkage"] = ("<f8", (groups,))
        else:
            out[f"{c}.mean"] = out[f"{c}.std"] = ("<f8", (k,))
            out[f"{c}.bank"] = ("<f4", (scoring.bank_size(n * units), k))
        out[f"{c}.calib_mean"] = out[f"{c}.calib_std"] = ("<f8", (n_cells if position else 1,))
    return out


# -- reading: values ----------------------------------------------------------------------------


def _check_values(arrays: dict[str, np.ndarray], layout: dict) -> None:
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise _Bad(f"{key} holds NaN or infinite values")

    def within(key: str, low: float, high: float) -> None:
        value = arrays[key]
        if value.size and not (value.min() >= low and value.max() <= high):
            raise _Bad(f"{key} holds values outside [{low:g}, {high:g}]")

    for entry in layout["components"]:
        c = entry["name"]
        within(f"{c}.scale", 1e-12, math.inf)
        if not (arrays[f"{c}.scale"] > scoring.TINY).all():
            raise _Bad(f"{c}.scale must be above 1e-12")
        within(f"{c}.calib_mean", -CALIB_MAX, CALIB_MAX)
        within(f"{c}.calib_std", scoring.STD_FLOOR, CALIB_MAX)
        if entry["scorer"] == "gaussian":
            within(f"{c}.means", -Z_MAX, Z_MAX)
            within(f"{c}.precisions", -P_MAX, P_MAX)
            within(f"{c}.shrinkage", 0.0, 1.0)
            precisions = arrays[f"{c}.precisions"]
            if not np.array_equal(precisions, precisions.transpose(0, 2, 1)):
                raise _Bad(f"{c}.precisions are not symmetric")
        else:
            within(f"{c}.mean", -Z_MAX, Z_MAX)
            within(f"{c}.bank", -Y_MAX, Y_MAX)
            if not (arrays[f"{c}.std"] > scoring.TINY).all():
                raise _Bad(f"{c}.std must be above 1e-12")
    scores = arrays["oof_scores"]
    threshold = float(arrays["threshold"])
    if not math.isclose(threshold, float(np.quantile(scores, layout["quantile"])), rel_tol=1e-12):
        raise _Bad("threshold is not the quantile of the out-of-fold scores")
    if float(arrays["oof_heat_min"]) > float(scores.min()):
        raise _Bad("oof_heat_min is above the lowest out-of-fold score")


def _model(arrays: dict[str, np.ndarray], layout: dict, meta: dict) -> scoring.Model:
    components = {}
    for entry in layout["components"]:
        c = entry["name"]
        if entry["scorer"] == "gaussian":
            keys = ("center", "scale", "means", "precisions", "shrinkage")
            fit: Any = scoring.GaussianFit(*(arrays[f"{c}.{k}"] for k in keys))
        else:
            fit = scoring.BankFit(
                *(arrays[f"{c}.{k}"] for k in ("center", "scale", "mean", "std", "bank"))
            )
        calibration = arrays[f"{c}.calib_mean"], arrays[f"{c}.calib_std"]
        components[c] = scoring.FittedComponent(
            entry["scorer"], entry["n_units"], fit, *calibration
        )
    return scoring.Model(
        components=components,
        unit_space=layout["unit_space"],
        seed=layout["seed"],
        quantile=float(layout["quantile"]),
        n_cells=layout["n_cells"],
        n_images=layout["n_images"],
        oof_scores=arrays["oof_scores"],
        oof_heat_min=float(arrays["oof_heat_min"]),
        threshold=float(arrays["threshold"]),
        meta=meta,
    )


# -- reading: the whole -------------------------------------------------------------------------


def _read_text(archive, members, key: str, limit: int) -> str:
    if key not in members:
        raise _Bad(f"it lacks the array {key}")
    with archive.open(members[key]) as handle:
        descr, shape, offset = _npy_header(handle, key)
        match = _TEXT.match(descr)
        if shape != () or match is None or int(match.group(1)) > limit:
            raise _Bad(f"{key} must be a 0-d text of at most {limit} characters: {descr} {shape}")
        size = 4 * int(match.group(1))
        if members[key].file_size != offset + size:
            raise _Bad(f"{key}: the declared size does not match its header")
        raw = _read_exactly(handle, size, key)
    try:
        return raw.decode("utf-32-le").rstrip("\0")
    except UnicodeDecodeError:
        raise _Bad(f"{key} is not valid text") from None


def _header_as(handle: IO[bytes], info: zipfile.ZipInfo, key: str, descr: str, shape: tuple):
    """Check one member's header against the dtype and shape the layout implies: its data
    size in bytes."""
    got, got_shape, offset = _npy_header(handle, key)
    if got != descr:
        raise _Bad(f"{key} must be {np.dtype(descr).name} ({descr}), got {got}")
    if got_shape != shape:
        raise _Bad(f"{key} has shape {got_shape}, the layout implies {shape}")
    size = math.prod(shape) * np.dtype(descr).itemsize
    if info.file_size != offset + size:
        raise _Bad(f"{key}: the declared size does not match its shape")
    return size


def _read_array(archive, info, key: str, descr: str, shape: tuple) -> np.ndarray:
    with archive.open(info) as handle:
        size = _header_as(handle, info, key, descr, shape)
        buffer = bytearray(_read_exactly(handle, size, key))
        if handle.read(1):  # also where the CRC of the whole member is checked
            raise _Bad(f"{key} is longer than its shape")
    return np.frombuffer(buffer, dtype=descr).reshape(shape)


class _CallerError(Exception):
    """An exception of the caller's ``check_meta`` other than UsageError: re-raised as it is."""


def _load(
    handle: IO[bytes],
    size: int,
    *,
    max_bytes: int,
    check_meta: Callable[[dict], Any] | None,
) -> scoring.Model:
    if size > max_bytes:
        raise _Bad(f"it is {size} bytes, more than the limit of {max_bytes}")
    handle.seek(0)
    start = handle.read(6)
    if start == b"\x93NUMPY":
        raise _Bad("it is a single .npy array, not an .npz archive")
    if start[:4] not in (b"PK\x03\x04", _END):
        raise _Bad("not an .npz archive")
    entries, _, _ = _end_record(handle, size)
    handle.seek(0)
    archive = zipfile.ZipFile(handle)
    with archive:
        members = _members(archive, entries, max_bytes)
        kind = _read_text(archive, members, "format", 64)
        if kind == FORMAT_1:
            raise _Bad(f"it is a model of format 1 ({FORMAT_1})")
        if kind != FORMAT:
            raise _Bad(f"its format is {kind!r}, not {FORMAT!r}")
        if "format_version" not in members:
            raise _Bad("it lacks the array format_version")
        version = int(
            _read_array(archive, members["format_version"], "format_version", "<i8", ())[()]
        )
        if version != FORMAT_VERSION:
            raise _Bad(f"its format version is {version}; this soartc reads {FORMAT_VERSION}")
        layout = _layout(_json(_read_text(archive, members, "layout", MAX_TEXT), "layout"))
        meta = _json(_read_text(archive, members, "meta", MAX_TEXT), "meta")
        if not isinstance(meta, dict):
            raise _Bad("meta must be a JSON object")
        if check_meta is not None:
            try:
                implied = check_meta(meta)  # the caller's validator: its errors pass through
            except UsageError:
                raise
            except Exception as exc:
                raise _CallerError() from exc
            if isinstance(implied, Expected):
                _compare(layout, implied)
        wanted = _shapes(layout)
        missing = [key for key in wanted if key not in members]
        extra = [key for key in members if key not in wanted]
        if missing:
            raise _Bad(f"it lacks the array(s) {', '.join(missing)}")
        if extra:
            raise _Bad(f"it holds unexpected array(s) {', '.join(extra)}")
        implied_bytes = sum(
            math.prod(shape) * np.dtype(descr).itemsize
            for descr, shape in wanted.values()
            if descr != "<U"
        )
        if implied_bytes > max_bytes:
            raise _Bad(f"its layout implies {implied_bytes} bytes of arrays (limit {max_bytes})")
        # Every header before any array: a wrong dtype or shape anywhere costs no allocation.
        for key, (descr, shape) in wanted.items():
            if descr != "<U":
                with archive.open(members[key]) as member:
                    _header_as(member, members[key], key, descr, shape)
        arrays = {
            key: _read_array(archive, members[key], key, descr, shape)
            for key, (descr, shape) in wanted.items()
            if descr != "<U"
        }
    _check_values(arrays, layout)
    return _model(arrays, layout, meta)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_model(
    path_or_file: str | os.PathLike[str] | IO[bytes],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    check_meta: Callable[[dict], Any] | None = None,
) -> scoring.Model:
    """Read a format-2 model file, checking it as untrusted input (SPEC §12).

    Parameters
    ----------
    path_or_file : path or binary file object
        A path must name a regular file (a FIFO, device or directory is refused without
        blocking); a file object must be seekable.
    max_bytes : int, optional
        Limit of the file's size and of the arrays' declared total. Default 256 MiB.
    check_meta : callable, optional
        Called with the meta dict before any array is unpacked: the caller's validator of its
        settings (the same code as its options'). A UsageError it raises passes through; if it
        returns an :class:`Expected`, the model's layout must agree with it.

    Returns
    -------
    scoring.Model

    Raises
    ------
    UsageError
        One line naming the file and what is wrong: not found, not a regular file, too large,
        not an ``.npz`` archive (a ``.npy``, truncated, damaged), a zip bomb (declared sizes,
        compression ratio, bad CRC), a format-1 model (refit), another format or version, a
        member that is missing, unexpected, not a ``.npy``, an object or other dtype, Fortran
        order, a shape that does not fit the layout, meta or layout text that is not strict JSON
        or nested too deep, a layout value of the wrong type (a boolean for an integer) or
        range, non-finite or out-of-range values.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise UsageError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    if isinstance(path_or_file, (str, os.PathLike)):
        from soartc_cli.imaging.files import NotRegularFile, open_regular

        name = os.fspath(path_or_file)
        try:
            handle, status = open_regular(name)
        except FileNotFoundError:
            raise UsageError(f"model file not found: {name}") from None
        except NotRegularFile as exc:
            raise UsageError(f"cannot use model {name}: it is {exc.kind}, not a file") from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"cannot read model {name}: {reason}") from None
        size, owned = status.st_size, True
    else:
        handle, owned = path_or_file, False
        name = str(getattr(handle, "name", "<model>"))
        try:
            size = handle.seek(0, io.SEEK_END)
        except (OSError, ValueError, AttributeError) as exc:
            raise UsageError(f"cannot use model {name}: not seekable ({_one_line(exc)})") from None
    try:
        return _load(handle, size, max_bytes=max_bytes, check_meta=check_meta)
    except _Bad as exc:
        reason = str(exc)
        if reason.startswith("it is a model of format 1"):
            raise UsageError(
                f"model {name} is format 1 ({FORMAT_1}, from an earlier soartc); "
                "refit it with this soartc (soartc fit …)"
            ) from None
        raise UsageError(f"cannot use model {name}: {reason}") from None
    except _CallerError as exc:
        raise exc.__cause__ from None
    except UsageError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        EOFError,
        ValueError,
        struct.error,
        NotImplementedError,
        OverflowError,
        MemoryError,
        RecursionError,
        KeyError,
        IndexError,
        TypeError,
        ZeroDivisionError,
        UnicodeError,
    ) as exc:
        raise UsageError(f"cannot use model {name}: damaged ({_one_line(exc)})") from None
    finally:
        if owned:
            handle.close()
