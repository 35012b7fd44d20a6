"""Terminal rendering: the seed demo (numbers, JSON, CSV), summary tables, transforms listing."""

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from soartc_cli.core import attention
from soartc_cli.core.transforms import KERNELS
from soartc_cli.interfaces import tables
from soartc_cli.output.layouts import Columns
from soartc_cli.pipeline.jobs import ImageResult


def _render(items, width=100):
    console = Console(width=width, file=io.StringIO(), color_system=None)
    for item in items:
        console.print(item)
    return console.file.getvalue()


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (np.int64(-2), "-2"), (0.5, "0.5"), (1 / 3, "0.33333333"), (2.0, "2"),
     (0.0, "0"), (1.5e-7, "1.5e-07"), (2.5e20, "2.5e+20"), (-0.25, "-0.25")],
)  # fmt: skip
def test_demo_numbers_print_like_numpy(value, text):
    assert tables.format_demo_number(value) == text


def test_demo_json_and_csv_hold_every_matrix_at_full_precision():
    result = attention.seed_demo(seed=7, dim=4, softmax="global")
    payload = json.loads(tables.demo_json(result, settings={"seed": 7, "dim": 4}))
    assert payload["softmax"] == "global" and payload["seed"] == 7
    for name, matrix in result.matrices().items():
        np.testing.assert_array_equal(np.array(payload[name]), matrix)
    rows = list(csv.DictReader(io.StringIO(tables.demo_csv(result))))
    assert {r["softmax"] for r in rows} == {"global"}
    probs = [r for r in rows if r["matrix"] == "probs"]
    assert len(probs) == result.probs.size
    assert float(probs[-1]["value"]) == result.probs[-1, -1]  # repr: exact


def test_demo_tables_and_header():
    result = attention.seed_demo()
    assert "row" in tables.demo_header(result)
    rendered = _render(tables.demo_tables(result))
    assert "probs (4×4)" in rendered and "W_Q (4×3)" in rendered
    assert tables.demo_tables(result)[0].title == "X (4×4)"
    assert tables.format_demo_number(result.attention[0, 0]) in rendered


COLUMNS = Columns(None, tuple(f"transform{i}" for i in range(12)), ("beta", "delta"))


def _rows(columns, count=3, *, path="cats/a.png"):
    c = 1 if columns.channels is None else len(columns.channels)
    rng = np.random.default_rng(0)
    return [
        ImageResult(i, f"{path}{i}", "cats", 640 + i, 480, (1, 1), None,
                    rng.standard_normal((c, len(columns.transforms), len(columns.metrics))))
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("width", [80, 100, 120])
def test_summary_tables_fit_the_terminal_and_split_the_transforms(width):
    rows = _rows(COLUMNS)
    built = tables.summary_tables(rows, COLUMNS, width=width)
    text = _render(built, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    titles = [t.title for t in built]
    assert all(t.startswith(("beta (mean over patches)", "delta (mean over patches)"))
               for t in titles)  # fmt: skip
    shown = [c.header for t in built for c in t.columns if c.header.startswith("transform")]
    assert sorted(shown) == sorted(COLUMNS.transforms * 2)  # every transform once per metric
    parts = [len([c for c in t.columns if c.header.startswith("transform")]) for t in built]
    assert max(parts) - min(parts) <= 1  # balanced: 6 + 6, not 11 + 1
    assert "%.4g" % rows[1].means[0, 5, 1] in text
    assert "641×480" in text


def test_summary_tables_have_one_table_per_channel_and_metric():
    columns = Columns(("R", "G", "B"), ("bend1", "rot90"), ("beta",))
    built = tables.summary_tables(_rows(columns, 2), columns, width=120)
    assert [t.title for t in built] == [
        f"channel {c}: beta (mean over patches)" for c in ("R", "G", "B")
    ]


def test_control_characters_in_names_are_escaped():
    columns = Columns(None, ("bend1",), ("beta",))
    rows = _rows(columns, 1, path="evil\x1b[31m\nname")
    text = _render(tables.summary_tables(rows, columns))
    assert "\x1b" not in text
    assert "\\x1b[31m\\nname" in text.replace("\n", "").replace(" ", "").replace("│", "")


def test_transform_listing_shows_kernels_with_values_presets_and_metrics():
    user = {"mine": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)}
    text = _render(tables.transform_listing({**KERNELS, **user}, {"mine"}), width=160)
    for word in ("datum", "default datum", "bend1", "rot90", "flip_lr", "soartc", "soart3",
                 "user kernel", "β = ⟨s,m⟩ / ⟨s,s⟩", " -4"):  # fmt: skip
        assert word in text, word
    # Every kernel's values, row by row, and every metric's formula and neutral value: a listing
    # that named things without their values would fail here.
    lines = [" ".join(line.replace("│", " ").split()) for line in text.splitlines()]
    for name, kernel in {**KERNELS, **user}.items():
        for values in kernel.tolist():
            row = " ".join(f"{v:g}" for v in values)
            assert any(row in line for line in lines), f"{name}: row {row} not listed"
    from soartc_cli.core.metrics import METRICS_REGISTRY

    for metric in METRICS_REGISTRY.values():
        line = next((line for line in lines if line.startswith(metric.name + " ")), "")
        assert metric.formula.split(" (")[0] in line, metric.name
        assert line.endswith(f"{metric.neutral:g}") or f" {metric.neutral:g}" in line, metric.name
