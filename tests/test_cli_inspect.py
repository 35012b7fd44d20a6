"""`soartc fit` and `soartc score` end to end on a small MVTec-style set cut from a brick texture:
train/good, test/good, test/scratch (a dark line), test/spot (a bright disc)."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from soartc_cli.core.patches import patch_names
from soartc_cli.interfaces.cli import app

runner = CliRunner()
TEXTURE = os.path.join(os.path.dirname(__file__), "..", "sample_images", "textures", "brick.png")
TILE, PATCH = 128, 16
LINE = [(20, 30), (100, 90)]  # the scratch, drawn 3 pixels wide
DISC = [70, 20, 90, 40]  # the spot's bounding box
FAST = ["--workers", "1"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tiles(source: Image.Image, rng, count: int) -> list[Image.Image]:
    """``count`` 128×128 tiles at random offsets of the texture."""
    out = []
    for _ in range(count):
        x, y = (int(v) for v in rng.integers(0, source.width - TILE, size=2))
        out.append(source.crop((x, y, x + TILE, y + TILE)))
    return out


def _save(tiles, folder):
    folder.mkdir(parents=True)
    for i, tile in enumerate(tiles):
        tile.save(folder / f"{i:03d}.png")


def _crossed(draw) -> set[str]:
    """Names of the patches that a drawing touches (drawn on an empty mask)."""
    mask = Image.new("L", (TILE, TILE), 0)
    draw(ImageDraw.Draw(mask), 255)
    on = np.asarray(mask) > 0
    grid = on.reshape(TILE // PATCH, PATCH, TILE // PATCH, PATCH).any(axis=(1, 3))
    names = patch_names(*grid.shape)
    return {names[i] for i in np.flatnonzero(grid.ravel())}


def _scratch(draw, fill):
    draw.line(LINE, fill=fill, width=3)


def _spot(draw, fill):
    draw.ellipse(DISC, fill=fill)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    """The set, a model fitted on train/good, and one score run over test/ with pictures."""
    root = tmp_path_factory.mktemp("mvtec")
    rng = np.random.default_rng(0)
    with Image.open(TEXTURE) as image:
        source = image.convert("L")
    _save(_tiles(source, rng, 30), root / "train" / "good")
    _save(_tiles(source, rng, 8), root / "test" / "good")
    for name, draw, fill in (("scratch", _scratch, 0), ("spot", _spot, 255)):
        tiles = _tiles(source, rng, 6)
        for tile in tiles:
            draw(ImageDraw.Draw(tile), fill)
        _save(tiles, root / "test" / name)
    model = root / "m.npz"
    fitted = invoke("fit", root / "train" / "good", "-o", model, "--size", TILE, *FAST)
    assert fitted.exit_code == 0, fitted.stderr
    scores = root / "s.csv"
    scored = invoke("score", root / "test", "--model", model, "-o", scores, "--maps",
                    root / "maps", "--precision", 17, *FAST)  # fmt: skip
    assert scored.exit_code == 0, scored.stderr
    return root, model, scores, fitted, scored


def _read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_fit_writes_the_model_and_its_record(mvtec):
    root, model, _, fitted, _ = mvtec
    assert model.exists()
    record = json.loads((root / "m.npz.meta.json").read_text())
    assert record["counts"] == {"found": 30, "processed": 30, "failed": 0}
    assert record["model"]["good_images"] == 30
    assert record["settings"]["size"] == TILE
    assert f"threshold {record['model']['threshold']:.4g}" in fitted.stderr


def test_score_columns_and_defects_above_good(mvtec):
    root, _, scores, _, scored = mvtec
    with open(scores, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split(",")
    names = patch_names(TILE // PATCH, TILE // PATCH)
    assert header == ["path", "label", "width", "height", "score", "anomalous", "patch_max"] + [
        f"md.{p}" for p in names
    ]
    rows = _read(scores)
    assert [r["label"] for r in rows] == ["good"] * 8 + ["scratch"] * 6 + ["spot"] * 6
    for row in rows:
        md = np.array([float(row[f"md.{p}"]) for p in names])
        assert float(row["score"]) == md.max()
        assert row["patch_max"] == names[int(np.argmax(md))]
    good = [float(r["score"]) for r in rows if r["label"] == "good"]
    bad = [float(r["score"]) for r in rows if r["label"] != "good"]
    assert min(bad) > max(good)
    record = json.loads((root / "s.csv.meta.json").read_text())
    evaluation = record["evaluation"]
    assert evaluation["n_normal"] == 8
    assert evaluation["all"]["auroc"] >= 0.8
    assert set(evaluation["labels"]) == {"scratch", "spot"}
    assert all(v["auroc"] >= 0.8 for v in evaluation["labels"].values())
    assert "evaluation against 'good' images" in scored.stdout
    threshold = record["settings"]["threshold"]
    assert all(int(r["anomalous"]) == (float(r["score"]) > threshold) for r in rows)


def test_the_worst_patch_of_a_scratch_is_on_the_line(mvtec):
    _, _, scores, _, _ = mvtec
    crossed = _crossed(_scratch)
    assert 8 <= len(crossed) < 20
    scratches = [r for r in _read(scores) if r["label"] == "scratch"]
    assert scratches and all(r["patch_max"] in crossed for r in scratches)


def test_score_pictures_are_written(mvtec):
    root, _, scores, _, _ = mvtec
    pictures = sorted(p.name for p in (root / "maps").glob("*.png"))
    want = sorted(r["path"].replace("/", "__") for r in _read(scores))
    assert pictures == want
    with Image.open(root / "maps" / "scratch__000.png") as picture:
        assert picture.width > TILE and picture.height >= TILE


def test_fewer_than_five_good_images_is_a_usage_error(mvtec, tmp_path):
    root = mvtec[0]
    few = tmp_path / "few"
    few.mkdir()
    for name in sorted(os.listdir(root / "train" / "good"))[:4]:
        (few / name).write_bytes((root / "train" / "good" / name).read_bytes())
    result = invoke("fit", few, "-o", tmp_path / "m.npz", "--size", TILE, *FAST)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("soartc: error: ") and "5" in lines[0]
    assert not (tmp_path / "m.npz").exists()


def _edited_model(model, tmp_path, edit):
    """A copy of the model with its arrays passed through ``edit(dict) -> dict``."""
    with np.load(model, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    out = tmp_path / "edited.npz"
    np.savez(out, **edit(arrays))
    return out


def _changed_kernel(arrays):
    meta = json.loads(str(arrays["meta"][()]))
    transforms = meta["features"]["transforms"]
    assert transforms[0]["name"] == "bend1"
    transforms[0]["kernel"][0][0] = 5  # not the built-in bend1 any more
    return {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("kernel", "kernel 'bend1' of the model differs from this soartc's built-in one"),
        ("arrays", "lacks the array(s) precisions"),
        ("text", "is not an .npz archive"),
        ("missing", "model file not found"),
    ],
)
def test_mismatched_or_broken_models_are_usage_errors(mvtec, tmp_path, kind, message):
    root, model = mvtec[0], mvtec[1]
    if kind == "kernel":
        bad = _edited_model(model, tmp_path, _changed_kernel)
    elif kind == "arrays":
        bad = _edited_model(
            model, tmp_path, lambda a: {k: v for k, v in a.items() if k != "precisions"}
        )
    elif kind == "text":
        bad = tmp_path / "notes.npz"
        bad.write_text("a model, honest\n")
    else:
        bad = tmp_path / "nope.npz"
    out = tmp_path / "s.csv"
    result = invoke("score", root / "test" / "good", "--model", bad, "-o", out, *FAST)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("soartc: error: "), result.stderr
    assert message in lines[0]
    assert not out.exists()


def test_threshold_overrides_the_models(mvtec, tmp_path):
    root, model, scores, _, _ = mvtec
    rows = _read(scores)
    # One image's own score (17 digits round-trip): "above the threshold" leaves it out.
    middle = sorted(float(r["score"]) for r in rows)[10]
    out = tmp_path / "t.csv"
    result = invoke("score", root / "test", "--model", model, "-o", out, "--threshold", middle,
                    "--precision", 17, *FAST)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    got = _read(out)
    assert [r["score"] for r in got] == [r["score"] for r in rows]
    assert [int(r["anomalous"]) for r in got] == [int(float(r["score"]) > middle) for r in rows]
    assert sum(int(r["anomalous"]) for r in got) == 9  # the 9 scores above the 11th of 20
    record = json.loads((tmp_path / "t.csv.meta.json").read_text())
    assert record["settings"]["threshold"] == middle
    original = json.loads((root / "s.csv.meta.json").read_text())["settings"]["threshold"]
    assert record["settings"]["model_threshold"] == original != middle


def test_score_to_parquet(mvtec, tmp_path):
    import pyarrow.parquet as pq

    root, model, scores, _, _ = mvtec
    out = tmp_path / "s.parquet"
    result = invoke("score", root / "test", "--model", model, "-o", out, *FAST)
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(out)
    rows = _read(scores)
    assert table.column_names == list(rows[0])
    assert table.column("path").to_pylist() == [r["path"] for r in rows]
    np.testing.assert_array_equal(
        table.column("score").to_numpy(), [float(r["score"]) for r in rows]
    )
    assert table.column("anomalous").to_pylist() == [int(r["anomalous"]) for r in rows]
    assert str(table.schema.field("width").type) == "int32"


def test_score_shards_merge_to_the_whole(mvtec, tmp_path):
    root, model = mvtec[:2]
    whole = tmp_path / "whole.csv"
    base = ["score", root / "test", "--model", model, *FAST]
    assert invoke(*base, "-o", whole).exit_code == 0
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.csv"
        result = invoke(*base, "--shard", f"{i}/3", "-o", part)
        assert result.exit_code == 0, result.stderr
        parts.append(part)
    merged = tmp_path / "merged.csv"
    result = invoke("merge", parts[2], parts[0], parts[1], "-o", merged)
    assert result.exit_code == 0, result.stderr
    assert merged.read_bytes() == whole.read_bytes()
    record = json.loads((tmp_path / "merged.csv.meta.json").read_text())
    assert record["counts"] == {"found": 20, "processed": 20, "failed": 0}


def test_score_of_two_folders_evaluates_by_their_labels_below_the_common_parent(mvtec, tmp_path):
    # SPEC §2.2: `score test/good test/scratch` labels good and scratch (the folders below their
    # deepest common parent), so the evaluation runs; before, every row was labelled "" and no
    # evaluation was printed at all.
    root, model, *_ = mvtec
    out = tmp_path / "s.csv"
    result = invoke("score", root / "test" / "good", root / "test" / "scratch", "--model", model,
                    "-o", out, "-q", *FAST)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _read(out)
    assert (rows[0]["path"], rows[0]["label"]) == ("good/000.png", "good")
    assert {r["label"] for r in rows} == {"good", "scratch"}
    record = json.loads((tmp_path / "s.csv.meta.json").read_text())
    assert set(record["evaluation"]["labels"]) == {"scratch"}


def test_score_without_the_normal_label_says_which_labels_it_found(mvtec, tmp_path):
    root, model, *_ = mvtec
    result = invoke("score", root / "test", "--model", model, "-o", tmp_path / "s.csv",
                    "--normal-label", "ok", *FAST)  # fmt: skip
    assert result.exit_code == 0
    hint = [line for line in result.stderr.splitlines() if "no evaluation" in line]
    assert hint == [
        "soartc: no evaluation: no image has the normal label 'ok' (labels found: 'good', "
        "'scratch', 'spot'; --normal-label names the good images' label)"
    ]
