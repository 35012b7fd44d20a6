"""Layouts (SPEC §6): column names and order, CSV rows, quoting, pooled statistics."""

import csv
import io
import json

import numpy as np
import pytest

from soartc_cli.errors import UsageError
from soartc_cli.output import layouts
from tests.outhelp import LUMA, NAMES, RGB, image_of, spec_of, text, values_of


def _header(layout, columns, pool=layouts.DEFAULT_POOL):
    return layouts.get_layout(layout, pool=pool).header(columns, NAMES)


def test_wide_header_order_is_transform_metric_patch():
    head = _header("wide", LUMA)
    assert head[:4] == ["path", "label", "width", "height"]
    assert head[4:8] == [f"bend1.beta.{n}" for n in NAMES]
    assert head[8] == "bend1.delta.r00c00"
    assert head[16] == "rot90.beta.r00c00"
    assert len(head) == 4 + 2 * 3 * 4


def test_wide_header_with_channels_puts_the_channel_outermost():
    head = _header("wide", RGB)
    assert head[4] == "R.bend1.beta.r00c00"
    assert head[4 + 8] == "G.bend1.beta.r00c00"
    assert head[-1] == "B.bend1.vol.r01c01"


@pytest.mark.parametrize(
    ("columns", "want"),
    [
        (LUMA, "path,label,patch,row,col,transform,beta,delta,distance"),
        (RGB, "path,label,channel,patch,row,col,transform,beta,vol"),
    ],
)
def test_long_header(columns, want):
    assert ",".join(_header("long", columns)) == want
    assert text("long", columns, values_of(columns)).split("\n")[0] == want


def test_summary_header():
    assert text("summary", RGB, values_of(RGB)).split("\n")[0] == (
        "path,label,channel,transform,beta_mean,beta_std,beta_min,beta_max,"
        "vol_mean,vol_std,vol_min,vol_max"
    )


def test_pooled_header_is_transform_metric_stat_with_the_channel_outermost():
    head = _header("pooled", RGB, pool=("median", "p95"))
    assert head[:4] == ["path", "label", "width", "height"]
    assert head[4:8] == ["R.bend1.beta.median", "R.bend1.beta.p95", "R.bend1.vol.median",
                         "R.bend1.vol.p95"]  # fmt: skip
    assert head[-1] == "B.bend1.vol.p95"
    assert len(head) == 4 + 3 * 1 * 2 * 2
    default = _header("pooled", LUMA)
    assert default[4:8] == [f"bend1.beta.{s}" for s in ("mean", "std", "min", "max")]


def test_wide_row_parses_back_to_the_values():
    values = values_of(LUMA)
    rows = list(csv.reader(io.StringIO(text("wide", LUMA, values, precision=17))))
    assert len(rows) == 2
    assert rows[1][:4] == ["a/b.png", "a", "640", "480"]
    np.testing.assert_array_equal(np.array(rows[1][4:], dtype=float), values.ravel())


def test_precision_is_significant_digits():
    values = np.full((1, 2, 3, 4), 1 / 3)
    rows = list(csv.reader(io.StringIO(text("wide", LUMA, values, precision=3))))
    assert set(rows[1][4:]) == {"0.333"}


def test_long_rows_cover_every_patch_and_transform():
    values = values_of(RGB)
    rows = list(csv.DictReader(io.StringIO(text("long", RGB, values, precision=17))))
    assert len(rows) == 3 * 4 * 1
    for r in rows:
        c = "RGB".index(r["channel"])
        n = NAMES.index(r["patch"])
        assert (int(r["row"]), int(r["col"])) == divmod(n, 2)
        assert float(r["beta"]) == values[c, 0, 0, n]
        assert float(r["vol"]) == values[c, 0, 1, n]
    assert [r["patch"] for r in rows[:4]] == list(NAMES)  # channel outermost, then patch


def test_long_rows_key_columns_equal_its_csv_rows():
    # Parquet takes ``rows()``, CSV takes ``csv()``: the same table either way.
    for columns in (LUMA, RGB):
        values = values_of(columns, seed=3)
        layout = layouts.get_layout("long")
        keys, numbers = layout.rows(columns, image_of(values), NAMES)
        parsed = list(csv.reader(io.StringIO(text("long", columns, values, precision=17))))[1:]
        names = layout.key_names(columns)
        assert list(keys) == names
        for i, row in enumerate(parsed):
            assert [str(keys[k][i]) for k in names] == row[: len(names)]
            assert [float(x) for x in row[len(names) :]] == numbers[i].tolist()


def test_summary_rows_hold_population_statistics():
    values = values_of(LUMA)
    rows = list(csv.DictReader(io.StringIO(text("summary", LUMA, values, precision=17))))
    assert [r["transform"] for r in rows] == ["bend1", "rot90"]
    for t, r in enumerate(rows):
        for m, metric in enumerate(LUMA.metrics):
            v = values[0, t, m]
            assert float(r[f"{metric}_mean"]) == pytest.approx(v.mean(), rel=1e-15)
            assert float(r[f"{metric}_std"]) == pytest.approx(v.std(ddof=0), rel=1e-15)
            assert float(r[f"{metric}_min"]) == v.min()
            assert float(r[f"{metric}_max"]) == v.max()


def test_summary_rows_with_channels_name_the_channel():
    values = values_of(RGB)
    rows = list(csv.DictReader(io.StringIO(text("summary", RGB, values, precision=17))))
    assert [(r["channel"], r["transform"]) for r in rows] == [("R", "bend1"), ("G", "bend1"),
                                                              ("B", "bend1")]  # fmt: skip
    assert float(rows[2]["vol_max"]) == values[2, 0, 1].max()


AWKWARD = [
    "a,b.png",
    'say "hi".png',
    "two\nlines.png",
    "写真/猫.jpg",
    "=SUM(A1).png",
    "bad\\xff.png",
    "-minus.png",
    "100%.png",
]


@pytest.mark.parametrize("layout", ["wide", "long", "summary", "pooled"])
@pytest.mark.parametrize("path", AWKWARD)
def test_awkward_names_round_trip_through_csv(layout, path):
    values = values_of(LUMA)
    out = text(layout, LUMA, values, path=path, label=path.split("/")[0])
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert len(rows) > 1
    assert all(r[0] == path for r in rows[1:])
    assert all(r[1] == path.split("/")[0] for r in rows[1:])
    assert "\r" not in out


def test_formula_like_fields_are_quoted():
    assert layouts.csv_field("=1+1") == '"=1+1"'
    assert layouts.csv_field('a"b') == '"a""b"'
    assert layouts.csv_field("a,b") == '"a,b"'
    assert layouts.csv_field("plain.png") == "plain.png"


def test_unknown_layout_and_pool_statistic_are_usage_errors():
    with pytest.raises(UsageError, match="--layout must be one of wide, long, summary, pooled"):
        layouts.get_layout("tall")
    with pytest.raises(UsageError, match="--pool"):
        layouts.get_layout("pooled", pool=("mean", "mode"))
    with pytest.raises(UsageError, match="unknown --pool statistic 'p50'"):
        layouts.pool_values(np.zeros((1, 3)), ["p50"])


def test_parse_pool_keeps_the_order_given_and_drops_repeats():
    assert layouts.parse_pool("max,mean,max") == ("max", "mean")
    assert layouts.parse_pool(["p95", "p05"]) == ("p95", "p05")


# --- pooled statistics ---------------------------------------------------------------------------

STATS = ("mean", "std", "min", "max", "median", "p05", "p95")


def _numpy_stat(name, v):
    return {
        "mean": np.mean, "std": lambda x: np.std(x, ddof=0), "min": np.min, "max": np.max,
        "median": np.median, "p05": lambda x: np.percentile(x, 5, method="linear"),
        "p95": lambda x: np.percentile(x, 95, method="linear"),
    }[name](v)  # fmt: skip


def test_pool_values_equal_numpy_on_every_statistic():
    values = np.random.default_rng(5).standard_normal((2, 3, 4, 37))
    got = layouts.pool_values(values, STATS)
    assert got.shape == (2, 3, 4, len(STATS))
    for idx in np.ndindex(values.shape[:-1]):
        want = [_numpy_stat(s, values[idx]) for s in STATS]
        np.testing.assert_array_equal(got[idx], want)


def test_pool_values_leave_non_finite_values_out():
    values = np.random.default_rng(6).standard_normal((1, 2, 1, 9))
    values[0, 0, 0, [1, 4]] = [np.nan, np.inf]
    values[0, 1, 0, :] = np.nan  # none left: NaN
    got = layouts.pool_values(values, STATS)
    finite = values[0, 0, 0][np.isfinite(values[0, 0, 0])]
    assert finite.size == 7
    want = [_numpy_stat(s, finite) for s in STATS]
    # nanmean and nanstd sum with zeros in the NaN places: the pairwise order may differ from a
    # sum over the finite values alone by an ulp.
    np.testing.assert_allclose(got[0, 0, 0], want, rtol=1e-15, atol=0)
    assert np.isnan(got[0, 1, 0]).all()


def test_pooled_row_holds_the_statistics_in_header_order():
    values = values_of(RGB, n=4, seed=9)
    pool = ("p95", "mean")
    out = text("pooled", RGB, values, precision=17, pool=pool)
    header, row = list(csv.reader(io.StringIO(out)))
    got = dict(zip(header[4:], map(float, row[4:]), strict=True))
    assert got["G.bend1.vol.p95"] == np.percentile(values[1, 0, 1], 95)
    assert got["B.bend1.beta.mean"] == values[2, 0, 0].mean()
    assert len(got) == 3 * 2 * 2


# --- the template writers against value-by-value formatting -------------------------------------


def _plain(spec, columns, values, *, path, label):
    """The layouts written value by value with ``%``: the oracle of the template-based writer."""
    num = f"%.{spec.precision}g"
    head = f"{layouts.csv_field(path)},{layouts.csv_field(label)}"
    channels = columns.channels or [None]
    layout = spec.layout.name
    numbers = values
    if layout == "pooled":
        numbers = layouts.pool_values(values, spec.layout.stats)
    if spec.format.name == "jsonl":
        keys = spec.layout.value_names(columns, NAMES)
        texts = [num % x if np.isfinite(x) else "null" for x in numbers.ravel().tolist()]
        obj = json.dumps({"path": path, "label": label, "width": 640, "height": 480})
        body = ", ".join(f'"{k}": {t}' for k, t in zip(keys, texts, strict=True))
        return obj[:-1] + ", " + body + "}\n"
    if layout in ("wide", "pooled"):
        return f"{head},640,480" + "".join("," + num % x for x in numbers.ravel().tolist()) + "\n"
    lines = []
    for c, channel in enumerate(channels):
        lead = head if channel is None else f"{head},{channel}"
        for n, name in enumerate(NAMES):
            for t, transform in enumerate(columns.transforms):
                cells = "".join("," + num % values[c, t, m, n] for m in range(len(columns.metrics)))
                lines.append(f"{lead},{name},{n // 2},{n % 2},{transform}{cells}\n")
    return "".join(lines)


@pytest.mark.parametrize(
    ("kind", "layout"),
    [("csv", "wide"), ("csv", "long"), ("csv", "pooled"), ("jsonl", "wide"), ("jsonl", "pooled")],
)
@pytest.mark.parametrize("columns", [LUMA, RGB], ids=["luma", "rgb"])
@pytest.mark.parametrize("precision", [3, 7, 12, 17])
def test_rows_match_value_by_value_formatting(kind, layout, columns, precision):
    values = values_of(columns, seed=precision)
    values *= 10.0 ** np.random.default_rng(precision).integers(-8, 8, values.shape)
    values.reshape(-1)[[0, 5, 7]] = [np.nan, -np.inf, -0.0]  # every notation and oddity
    spec = spec_of(layout, kind, precision, pool=("mean", "p05", "max"))
    path, label = 'odd,"name" 100%.png', "%s"
    got = spec.format.encode(spec, columns, image_of(values, path=path, label=label), NAMES)
    assert got.decode("utf-8") == _plain(spec, columns, values, path=path, label=label)
