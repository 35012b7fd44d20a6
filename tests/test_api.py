"""The notebook API: ``import soartc_cli as soartc`` and ``features_table``, against the CLI."""

import csv
import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import soartc_cli as soartc
from soartc_cli.interfaces.cli import app
from tests.test_cli_compute import _photo

runner = CliRunner()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    _photo(root / "cats" / "a.png", 1)
    _photo(root / "cats" / "b.jpg", 2, size=(40, 72))
    _photo(root / "dogs" / "c.png", 3, size=(64, 96))
    return root


def _cli_table(*args):
    """The CLI's CSV on stdout at 17 digits, parsed back: header and rows."""
    result = runner.invoke(app, [str(a) for a in args] + ["-o", "-", "--precision", "17"])
    assert result.exit_code in (0, 1), result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    return rows[0], rows[1:], result


def _assert_same(table, header, rows):
    assert list(table) == header
    for j, name in enumerate(header):
        column = [r[j] for r in rows]
        if name in ("path", "label", "patch", "transform", "channel"):
            assert list(table[name]) == column, name
        else:  # %.17g round-trips every float64: equal, not close
            np.testing.assert_array_equal(
                np.asarray(table[name], dtype=float), np.array(column, dtype=float), err_msg=name
            )


def test_pooled_rows_equal_the_cli_pooled_csv(folder):
    header, rows, _ = _cli_table(
        "compute", folder, "--size", 32, "--patch", 8, "--layout", "pooled", "--workers", 1
    )
    table = soartc.features_table(folder, size=32, patch=8, as_frame=False)
    assert isinstance(table, soartc.FeatureTable) and isinstance(table, dict)
    assert table.failures == []
    assert header[4:8] == ["bend1.beta.mean", "bend1.beta.std", "bend1.beta.min", "bend1.beta.max"]
    _assert_same(table, header, rows)
    assert table["width"].dtype == np.int64 and table["bend1.beta.mean"].dtype == np.float64


def test_a_data_frame_when_pandas_is_there(folder):
    header, rows, _ = _cli_table(
        "compute",
        folder,
        "--size",
        32,
        "--patch",
        8,
        "--layout",
        "pooled",
        "--pool",
        "median,p95",
        "--transforms",
        "soart",
        "--metrics",
        "rt",
        "--channels",
        "rgb",
        "--workers",
        1,
    )
    frame = soartc.features_table(
        [folder],
        size=32,
        patch=8,
        pool="median,p95",
        transforms="soart",
        metrics=["rt"],
        channels="rgb",
    )
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == header
    assert frame.attrs["failures"] == []
    assert frame["path"].tolist() == ["cats/a.png", "cats/b.jpg", "dogs/c.png"]
    assert frame["label"].tolist() == ["cats", "cats", "dogs"]
    _assert_same({c: frame[c].tolist() for c in frame.columns}, header, rows)


@pytest.mark.parametrize("layout", ["wide", "long", "summary"])
def test_other_layouts_equal_the_cli_too(folder, layout):
    args = ["--size", 0, "--patch", 8] if layout != "wide" else ["--size", 16, "--patch", 8]
    header, rows, _ = _cli_table("compute", folder, *args, "--layout", layout, "--workers", 1)
    table = soartc.features_table(folder, layout=layout, size=args[1], patch=8, as_frame=False)
    _assert_same(table, header, rows)
    if layout == "long":  # 40×72 image at native size: 5 rows × 9 cols of 8×8 patches
        b = [i for i, p in enumerate(table["path"]) if p == "cats/b.jpg"]
        assert table["row"][b].max() == 8 and table["col"][b].max() == 4


def test_user_kernels_and_workers(folder, tmp_path):
    kernel = {"edge3": [[1, 0, -1], [2, 0, -2], [1, 0, -1]], "box3": [[1, 1, 1]] * 3}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(kernel))
    header, rows, _ = _cli_table(
        "compute",
        folder,
        "--size",
        16,
        "--patch",
        8,
        "--kernels",
        path,
        "--datum",
        "box3",
        "--transforms",
        "edge3,rot90",
        "--layout",
        "pooled",
        "--workers",
        1,
    )
    by_file = soartc.features_table(
        folder,
        size=16,
        patch=8,
        kernels=path,
        datum="box3",
        transforms="edge3,rot90",
        as_frame=False,
    )
    by_dict = soartc.features_table(
        folder,
        size=16,
        patch=8,
        kernels=kernel,
        datum="box3",
        transforms=("edge3", "rot90"),
        workers=2,
        as_frame=False,
    )
    _assert_same(by_file, header, rows)
    _assert_same(by_dict, header, rows)


def test_failures_are_reported_not_dropped(folder, tmp_path):
    (folder / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    header, rows, _ = _cli_table(
        "compute",
        folder,
        "--size",
        16,
        "--patch",
        8,
        "--layout",
        "pooled",
        "--workers",
        1,
        "--record",
        tmp_path / "r.json",
    )
    error = json.loads((tmp_path / "r.json").read_text())["failures"][0]["error"]
    with pytest.warns(
        soartc.SkippedImagesWarning,
        match=r"1 image\(s\) skipped, the first "
        r"cats/broken.png",
    ):
        table = soartc.features_table(folder, size=16, patch=8, as_frame=False)
    assert table.failures == [("cats/broken.png", error)]
    _assert_same(table, header, rows)
    with pytest.warns(soartc.SkippedImagesWarning):
        frame = soartc.features_table(folder, size=16, patch=8, as_frame=True)
    assert frame.attrs["failures"] == [("cats/broken.png", error)]
    assert len(frame) == 3


def test_bad_options_raise_usage_errors(folder):
    for kwargs, message in [
        ({"layout": "tall"}, "--layout must be one of"),
        ({"pool": "mode"}, "--pool"),
        ({"size": 30, "patch": 8}, "multiple"),
        ({"transforms": "nope"}, "nope"),
        ({"channels": "cmyk"}, "--channels"),
        ({"workers": 0}, "workers"),
    ]:
        with pytest.raises(soartc.UsageError, match=message):
            soartc.features_table(folder, **kwargs)
    with pytest.raises(soartc.UsageError):
        soartc.features_table(folder / "missing")


def test_an_empty_folder_gives_the_columns_and_no_rows(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = soartc.features_table(tmp_path, size=16, patch=8, as_frame=False)
    assert list(table)[:6] == [
        "path",
        "label",
        "width",
        "height",
        "bend1.beta.mean",
        "bend1.beta.std",
    ]
    assert all(len(v) == 0 for v in table.values())


def test_the_package_exports_the_main_functions_lazily():
    code = (
        "import sys, soartc_cli as s; "
        "assert 'numpy' not in sys.modules and 'soartc_cli.interfaces.api' not in sys.modules; "
        "f = s.features_table; assert 'soartc_cli.interfaces.api' in sys.modules; "
        "print(sorted(set(s.__all__) - set(dir(s))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    for name in soartc.__all__:
        assert getattr(soartc, name) is not None, name
    from soartc_cli.core import attention, features, unitspace
    from soartc_cli.imaging import load

    assert soartc.fit_image is load.fit

    assert soartc.soartc_features is features.soartc_features
    assert soartc.seed_demo is attention.seed_demo
    assert soartc.fit_unit_space is unitspace.fit_unit_space
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        soartc.nope  # noqa: B018


def test_the_numeric_core_from_the_package(folder):
    loaded = soartc.load_image(folder / "cats" / "a.png", size=32, patch=8)
    values = soartc.soartc_features(loaded.pixels, patch=8)
    assert values.shape == (1, 6, 3, 16)
    table = soartc.features_table(folder / "cats" / "a.png", size=32, patch=8, as_frame=False)
    np.testing.assert_array_equal(
        table["bend1.beta.mean"], [soartc.pool_values(values[0, 0, 0], ["mean"])[0]]
    )
    rows = soartc.to_patches(loaded.pixels[0], patch=8)
    assert rows.shape[0] == 16 and soartc.patch_names(4, 4)[5] == "r01c01"


def test_soartc_features_takes_presets(folder):
    pixels = soartc.load_image(folder / "cats" / "a.png", size=32, patch=8).pixels
    want = soartc.soartc_features(
        pixels, patch=8, transforms=("rot90", "rot180", "rot270"), metrics=("beta", "noise")
    )
    got = soartc.soartc_features(pixels, patch=8, transforms="soart", metrics="rt")
    np.testing.assert_array_equal(got, want)
