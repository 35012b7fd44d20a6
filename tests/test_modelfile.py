"""The format-2 model file: round trip, and hostile files made here (SPEC §12: a model file is
untrusted input)."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from soartc_cli.core import scoring as sc
from soartc_cli.core import unitspace
from soartc_cli.errors import UsageError
from soartc_cli.output import modelfile as mf
from soartc_cli.output.targets import WriteError


def upsample(heat):
    grid = np.asarray(heat).reshape(*np.shape(heat)[:-1], 2, 2)
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rows = np.einsum("ra,...ab->...rb", weights, grid)
    return np.einsum("cb,...rb->...rc", weights, rows).reshape(*np.shape(heat)[:-1], 9)


def make_model(unit_space="position", n=10):
    rng = np.random.default_rng(0 if unit_space == "position" else 1)
    parts = {
        "soartc": sc.ComponentData(rng.standard_normal((n, 9, 4)), "gaussian"),
        "stats": sc.ComponentData(rng.standard_normal((n, 9, 3)).astype(np.float32), "bank"),
        "glcm": sc.ComponentData(rng.standard_normal((n, 4, 2)), "bank", upsample),
    }
    meta = {"stride": 8, "invert": False, "kernels": [[0.5, -1.0]], "version": "2.0"}
    return sc.fit_model(parts, unit_space=unit_space, seed=3, quantile=0.95, meta=meta)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def arrays(model):
    return mf._arrays(model)


def npz(members: dict, *, raw: dict | None = None, compression=zipfile.ZIP_STORED) -> bytes:
    """An archive of .npy members (written without pickles) and raw byte members."""
    handle = io.BytesIO()
    with zipfile.ZipFile(handle, "w", compression=compression) as archive:
        for key, value in members.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(value, order="C"), allow_pickle=False)
        for name, data in (raw or {}).items():
            archive.writestr(name, data)
    return handle.getvalue()


def refused(data: bytes, match: str, **kwargs):
    with pytest.raises(UsageError, match=match) as info:
        mf.load_model(io.BytesIO(data), **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(("cannot use model", "model "))
    return message


def npy_bytes(descr: str, shape: tuple, data: bytes, *, fortran=False) -> bytes:
    handle = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    np.lib.format.write_array_header_1_0(handle, header)
    return handle.getvalue() + data


# -- round trip --------------------------------------------------------------------------------


@pytest.mark.parametrize("unit_space", ["position", "shared"])
def test_round_trip_is_bit_identical(unit_space, tmp_path):
    model = make_model(unit_space)
    path = tmp_path / "model.npz"
    mf.save_model(model, path)
    loaded = mf.load_model(path)
    before, after = mf._arrays(model), mf._arrays(loaded)
    assert list(before) == list(after)
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert_array_equal(before[key], after[key])
        assert before[key].tobytes() == after[key].tobytes(), key
    assert loaded.meta == model.meta and list(loaded.meta) == list(model.meta)
    assert loaded.threshold == model.threshold and loaded.unit_space == unit_space
    assert loaded.components["stats"].fit.bank.dtype == np.float32
    rng = np.random.default_rng(5)
    query = {"soartc": rng.random((9, 4)), "stats": rng.random((9, 3)), "glcm": rng.random((4, 2))}
    a = sc.score_cells(model, query, to_cells={"glcm": upsample})
    b = sc.score_cells(loaded, query, to_cells={"glcm": upsample})
    assert_array_equal(a.heat, b.heat)
    # the same model gives the same bytes
    again = tmp_path / "again.npz"
    mf.save_model(loaded, again)
    assert again.read_bytes() == path.read_bytes()


def test_members_are_the_documented_ones(arrays):
    assert arrays["format"][()] == "soartc.model" and arrays["format_version"][()] == 2
    layout = json.loads(str(arrays["layout"][()]))
    assert layout["components"][2] == {
        "name": "glcm", "scorer": "bank", "n_units": 4, "n_features": 2,
    }  # fmt: skip
    assert (layout["n_cells"], layout["n_images"], layout["unit_space"]) == (9, 10, "position")
    assert arrays["soartc.precisions"].shape == (9, 4, 4)
    assert arrays["stats.bank"].shape == (sc.bank_size(90), 3)
    assert arrays["glcm.bank"].shape == (sc.bank_size(40), 2)
    assert arrays["glcm.calib_mean"].shape == (9,)
    assert {a.dtype.str for k, a in arrays.items() if k.endswith(".bank")} == {"<f4"}


def test_save_is_atomic_and_refuses_what_it_cannot_write(model, tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(b"old")
    bad = sc.Model(**{**model.__dict__, "meta": {"x": float("nan")}})
    with pytest.raises(UsageError, match="meta must be JSON-ready"):
        mf.save_model(bad, path)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    with pytest.raises(WriteError, match="writing"):
        mf.save_model(model, tmp_path / "missing" / "m.npz")
    mf.save_model(model, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(UsageError, match=r"needs a scoring\.Model"):
        mf.save_model(unitspace, path)


# -- not a model at all ------------------------------------------------------------------------


def test_not_found_directory_and_fifo(tmp_path):
    with pytest.raises(UsageError, match="model file not found"):
        mf.load_model(tmp_path / "none.npz")
    with pytest.raises(UsageError, match="it is a directory, not a file"):
        mf.load_model(tmp_path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            mf.load_model(fifo)
        except UsageError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "a FIFO blocked load_model"
    assert outcome and "it is a named pipe, not a file" in outcome[0]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not an .npz archive"),
        (b"soartc,model\n1,2\n", "not an .npz archive"),
        (pickle.dumps({"format": "soartc.model"}), "not an .npz archive"),
        (b"PK\x03\x04" + bytes(100), "no zip end record"),
    ],
)
def test_not_a_zip(data, match):
    refused(data, match)


def test_a_single_npy_is_refused():
    handle = io.BytesIO()
    np.save(handle, np.zeros(3))
    refused(handle.getvalue(), "single .npy array")


def test_truncated_files_are_refused(model):
    handle = io.BytesIO()
    mf.save_model(model, handle)
    data = handle.getvalue()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        refused(data[:cut], "cannot use model")


def test_random_damage_is_always_one_usage_error(model):
    handle = io.BytesIO()
    mf.save_model(model, handle)
    data = handle.getvalue()
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(300):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), size=rng.integers(1, 4)):
            damaged[at] = rng.integers(256)
        try:
            mf.load_model(io.BytesIO(bytes(damaged)))
            outcomes.add("loaded")
        except UsageError as exc:
            assert "\n" not in str(exc)
            outcomes.add("refused")
    assert "refused" in outcomes


def test_too_large_and_too_many_members(arrays):
    data = npz(arrays)
    refused(data, f"it is {len(data)} bytes, more than the limit of 1000", max_bytes=1000)
    many = npz({}, raw={f"a{i}.npy": b"" for i in range(300)})
    refused(many, "declares 300 members")


def test_a_non_seekable_file_object():
    class Stream(io.RawIOBase):
        def readable(self):
            return True

        def seekable(self):
            return False

        def seek(self, *args):
            raise io.UnsupportedOperation("not seekable")

    with pytest.raises(UsageError, match="not seekable"):
        mf.load_model(Stream())


# -- format --------------------------------------------------------------------------------------


def test_a_format_1_model_says_to_refit(tmp_path):
    # A model of an older soartc: its arrays as format 1 wrote them (one Gaussian per patch).
    path = tmp_path / "old.npz"
    k, n_patches = 3, 4
    np.savez(
        path, center=np.zeros(k), scale=np.ones(k), means=np.zeros((n_patches, k)),
        precisions=np.tile(np.eye(k), (n_patches, 1, 1)), shrinkage=np.zeros(n_patches),
        oof_scores=np.ones(6), threshold=np.array(1.0), quantile=np.array(0.99),
        unit_space=np.array("position"), meta=np.array("{}"),
        format=np.array("soartc.unitspace"), format_version=np.array(1, dtype=np.int64),
    )  # fmt: skip
    with pytest.raises(UsageError) as info:
        mf.load_model(path)
    message = str(info.value)
    assert "format 1" in message and "refit it with this soartc (soartc fit" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": mf._text("soartc.other")}, "its format is 'soartc.other'"),
        ({"format_version": np.array(3, "<i8")}, "format version is 3; this soartc reads 2"),
        ({"format_version": np.array(2, "<i4")}, "format_version must be int64"),
        ({"format": np.array(["soartc.model"])}, "format must be a 0-d text"),
    ],
)
def test_other_formats_and_versions(arrays, change, match):
    refused(npz({**arrays, **change}), match)


# -- members, dtypes, shapes ---------------------------------------------------------------------


def test_missing_and_extra_arrays(arrays):
    refused(
        npz({k: v for k, v in arrays.items() if k != "stats.bank"}), "lacks the array.* stats.bank"
    )
    refused(npz({**arrays, "stats.extra": np.zeros(3)}), "unexpected array.* stats.extra")
    refused(npz(arrays, raw={"notes.txt": b"hello"}), "unexpected member 'notes.txt'")
    refused(npz({k: v for k, v in arrays.items() if k != "format"}), "lacks the array format")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("stats.bank", "float64", r"stats.bank must be float32 \(<f4\), got <f8"),
        ("soartc.precisions", "float32", "must be float64"),
        ("soartc.precisions", ">f8", "got >f8"),
        ("oof_scores", "int64", "got <i8"),
    ],
)
def test_wrong_dtypes(arrays, key, value, match):
    refused(npz({**arrays, key: arrays[key].astype(value)}), match)


def test_object_arrays_are_never_unpickled(arrays):
    touched = []
    global _SIDE_EFFECT
    _SIDE_EFFECT = touched

    handle = io.BytesIO()
    payload = np.array([Boom()], dtype=object)
    np.savez(handle, **{**arrays, "stats.bank": payload})
    refused(handle.getvalue(), r"stats.bank must be float32 \(<f4\), got \|O")
    handle = io.BytesIO()
    np.savez(handle, **{**arrays, "meta": payload})
    refused(handle.getvalue(), "meta must be a 0-d text")
    assert touched == []
    pickle.loads(pickle.dumps(Boom()))  # the payload does have a side effect when unpickled
    assert touched == ["unpickled"]


_SIDE_EFFECT: list = []


def _unpickled():
    _SIDE_EFFECT.append("unpickled")
    return 0


class Boom:
    def __reduce__(self):
        return (_unpickled, ())


def test_a_pickled_member_is_not_a_npy(arrays):
    members = {k: v for k, v in arrays.items() if k != "meta"}
    refused(
        npz(members, raw={"meta.npy": pickle.dumps({"stride": 8})}), "meta.npy is not a .npy array"
    )


def test_shapes_that_do_not_fit(arrays):
    means = arrays["soartc.means"]
    refused(npz({**arrays, "soartc.means": means[:-1]}), r"soartc.means has shape \(8, 4\)")
    bank = arrays["stats.bank"]
    refused(npz({**arrays, "stats.bank": bank[:-1]}), "stats.bank has shape")
    refused(npz({**arrays, "glcm.calib_std": np.ones(4)}), r"the layout implies \(9,\)")
    refused(npz({**arrays, "threshold": np.array([1.0])}), "threshold has shape")
    fortran = np.asfortranarray(arrays["soartc.precisions"])
    raw = {"soartc.precisions.npy": npy_bytes("<f8", fortran.shape, fortran.tobytes("F"),
                                              fortran=True)}  # fmt: skip
    members = {k: v for k, v in arrays.items() if k != "soartc.precisions"}
    refused(npz(members, raw=raw), "Fortran order")


def test_a_declared_shape_of_10_to_the_15(arrays):
    members = {k: v for k, v in arrays.items() if k != "oof_scores"}
    raw = {"oof_scores.npy": npy_bytes("<f8", (10**15,), bytes(80))}
    tracemalloc.start()
    try:
        refused(npz(members, raw=raw), r"oof_scores has shape \(1000000000000000,\)")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20
    # the same shape in the layout: refused before any header is read
    layout = json.loads(str(arrays["layout"][()]))
    layout["n_images"] = 10**15
    refused(npz({**arrays, "layout": mf._text(json.dumps(layout))}), "n_images must be")
    # a shape that fits the layout but not the member's size
    raw = {"oof_scores.npy": npy_bytes("<f8", (10,), bytes(8))}
    refused(npz(members, raw=raw), "declared size does not match its shape")


# -- zip bombs -------------------------------------------------------------------------------------


def bomb_member(archive: zipfile.ZipFile, name: str, header: bytes, zeros: int) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=zeros > 2**31 - 2**20) as member:
        member.write(header)
        chunk = bytes(1 << 20)
        for _ in range(zeros >> 20):
            member.write(chunk)


def patch_size(data: bytearray, name: bytes, size: int) -> None:
    """Set the uncompressed size of member ``name`` in its local header and the central
    directory (an archive without zip64 records)."""
    local = data.rfind(b"PK\x03\x04", 0, data.find(name))
    struct.pack_into("<L", data, local + 22, size)
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(name))
    struct.pack_into("<L", data, central + 24, size)


@pytest.fixture(scope="module")
def declared_bomb(arrays):
    """A valid model whose oof_scores member declares 1 GiB from about 1 KB of deflated data."""
    members = {k: v for k, v in arrays.items() if k != "oof_scores"}
    handle = io.BytesIO(npz(members))
    header = npy_bytes("<f8", (1 << 27,), b"")
    with zipfile.ZipFile(handle, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        bomb_member(zf, "oof_scores.npy", header, 1 << 20)
    data = bytearray(handle.getvalue())
    patch_size(data, b"oof_scores.npy", len(header) + (1 << 30))
    return bytes(data)


def test_a_declared_zip_bomb_is_refused_before_inflating(declared_bomb):
    assert len(declared_bomb) < 8 << 20
    tracemalloc.start()
    try:
        refused(declared_bomb, "declares 1073741952 bytes from", max_bytes=1 << 31)
        refused(declared_bomb, "more than 268435456 bytes in all")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


def test_a_lying_zip_bomb_inflates_no_further_than_declared(arrays):
    """Declared sizes those of the real array; the data inflates to 64 MiB."""
    members = {k: v for k, v in arrays.items() if k != "oof_scores"}
    handle = io.BytesIO(npz(members))
    header = npy_bytes("<f8", (10,), b"")
    with zipfile.ZipFile(handle, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        bomb_member(zf, "oof_scores.npy", header, 1 << 26)
    data = bytearray(handle.getvalue())
    patch_size(data, b"oof_scores.npy", len(header) + 80)
    tracemalloc.start()
    try:
        message = refused(bytes(data), "damaged")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "Bad CRC-32" in message
    assert peak < 20 << 20


# -- JSON texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ("[" * 100_000 + "]" * 100_000, "meta is nested deeper than 64 levels"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "meta is nested deeper than 64 levels"),
        ("{not json", "meta is not JSON"),
        ('{"a": NaN}', "meta is not JSON .*NaN is not JSON"),
        ('{"a": 1e999}', "meta is not JSON .*out of range"),
        ('{"a": 1, "a": 2}', "appears twice"),
        ('{"a": ' + "9" * 5000 + "}", "meta is not JSON"),
        ("[1, 2]", "meta must be a JSON object"),
    ],
)
def test_meta_texts(arrays, meta, match):
    refused(npz({**arrays, "meta": mf._text(meta)}), match)


def test_a_bracket_inside_a_string_is_not_nesting(arrays):
    meta = json.dumps({"note": "[" * 1000, "escaped": '\\"[[[['})
    loaded = mf.load_model(io.BytesIO(npz({**arrays, "meta": mf._text(meta)})))
    assert loaded.meta["note"] == "[" * 1000


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("seed", True, "seed must be an integer"),
        ("n_cells", 9.0, "n_cells must be an integer"),
        ("n_images", 4, "n_images must be an integer in 5"),
        ("quantile", True, "quantile must be a number"),
        ("quantile", 1.5, "quantile must be a number"),
        ("unit_space", "cells", "unknown unit space"),
        ("extra", 1, "layout must be an object with the keys"),
    ],
)
def test_layout_types_are_strict(arrays, key, value, match):
    layout = json.loads(str(arrays["layout"][()]))
    layout[key] = value
    refused(npz({**arrays, "layout": mf._text(json.dumps(layout))}), match)


def test_layout_component_entries_are_strict(arrays):
    layout = json.loads(str(arrays["layout"][()]))
    for change, match in (
        ({"n_features": False}, "n_features of soartc must be an integer"),
        ({"scorer": "knn"}, "unknown scorer 'knn'"),
        ({"name": "stats"}, "repeated component name 'stats'"),
        ({"n_units": 5000000000}, "n_units of soartc must be"),
    ):
        changed = json.loads(json.dumps(layout))
        changed["components"][0].update(change)
        refused(npz({**arrays, "layout": mf._text(json.dumps(changed))}), match)


def strict_settings(meta):
    """A caller's validator: booleans must be JSON booleans."""
    if not isinstance(meta.get("invert"), bool):
        raise UsageError(f"--invert must be true or false, got {meta.get('invert')!r}")
    return mf.Expected(
        components={"soartc": (9, 4), "stats": (9, 3), "glcm": (4, 2)},
        n_cells=9,
        unit_space="position",
        seed=3,
        quantile=0.95,
    )


def test_check_meta_validates_before_any_array_is_unpacked(arrays):
    assert mf.load_model(io.BytesIO(npz(arrays)), check_meta=strict_settings).n_cells == 9
    meta = json.loads(str(arrays["meta"][()]))
    meta["invert"] = 0
    members = {**arrays, "meta": mf._text(json.dumps(meta))}
    with pytest.raises(UsageError, match=r"^--invert must be true or false, got 0$"):
        mf.load_model(io.BytesIO(npz(members)), check_meta=strict_settings)
    # a broken array after the meta: the validator still speaks first
    data = bytearray(npz(members))
    at = data.find(arrays["soartc.precisions"].tobytes()[:16])
    data[at] ^= 0xFF  # a bad CRC
    with pytest.raises(UsageError, match=r"^--invert must be true or false"):
        mf.load_model(io.BytesIO(bytes(data)), check_meta=strict_settings)

    # another error of the validator is the caller's: it passes through unchanged
    def broken(meta):
        raise KeyError("stride")

    with pytest.raises(KeyError, match="stride"):
        mf.load_model(io.BytesIO(npz(arrays)), check_meta=broken)


@pytest.mark.parametrize(
    ("expected", "match"),
    [
        (mf.Expected(components={"soartc": (9, 4), "stats": (9, 3)}), "components"),
        (mf.Expected(components={"soartc": (9, 5), "stats": (9, 3), "glcm": (4, 2)}),
         r"soartc \(units, features\) \(9, 4\), its settings say \(9, 5\)"),
        (mf.Expected(n_cells=16), "n_cells 9, its settings say 16"),
        (mf.Expected(unit_space="shared"), "unit_space position"),
        (mf.Expected(seed=0), "seed 3"),
    ],
)  # fmt: skip
def test_the_layout_must_agree_with_what_the_settings_imply(arrays, expected, match):
    refused(npz(arrays), match, check_meta=lambda meta: expected)


# -- values ----------------------------------------------------------------------------------------


def with_value(arrays, key, index, value):
    changed = arrays[key].copy()
    changed[index] = value
    return npz({**arrays, key: changed})


@pytest.mark.parametrize(
    ("key", "index", "value", "match"),
    [
        ("soartc.precisions", (0, 1, 2), np.nan, "soartc.precisions holds NaN"),
        ("stats.bank", (0, 0), np.inf, "stats.bank holds NaN or infinite"),
        ("oof_scores", 3, np.nan, "oof_scores holds NaN"),
        ("soartc.precisions", (0, 1, 2), 1e3, "not symmetric"),
        ("soartc.precisions", (0, 0, 0), 1e300, "outside"),
        ("stats.scale", 0, 0.0, "stats.scale"),
        ("stats.std", 1, -1.0, "stats.std must be above 1e-12"),
        ("stats.bank", (1, 1), 1e30, "stats.bank holds values outside"),
        ("glcm.calib_std", 0, 1e-9, "glcm.calib_std holds values outside"),
        ("soartc.shrinkage", 0, 1.5, "soartc.shrinkage"),
        ("threshold", (), 99.0, "threshold is not the quantile"),
        ("oof_heat_min", (), 1e9, "oof_heat_min is above"),
    ],
)
def test_values_out_of_range(arrays, key, index, value, match):
    refused(with_value(arrays, key, index, value), match)
