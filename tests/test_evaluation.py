"""Tests for soartc_cli.core.evaluation: resampling, image metrics, pixel AUROC and AUPRO."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from soartc_cli.core import evaluation
from soartc_cli.core.evaluation import (
    PixelEvaluation,
    auroc,
    cell_centres,
    evaluate_images,
    resample_bilinear,
    upsample_heat,
)
from soartc_cli.errors import UsageError
from tests import oracle_evaluation as oracle

TOL = 1e-12


# -- resampling -----------------------------------------------------------------------------


def test_bilinear_by_hand():
    v = [[0.0, 1.0], [2.0, 3.0]]
    out = resample_bilinear(v, src_y=[0, 1], src_x=[0, 1], dst_y=[0, 0.5, 1], dst_x=[0, 0.25, 1])
    np.testing.assert_allclose(out, [[0, 0.25, 1], [1, 1.25, 2], [2, 2.25, 3]], rtol=0, atol=TOL)


def test_bilinear_holds_edge_values_outside():
    v = [[0.0, 1.0], [2.0, 3.0]]
    out = resample_bilinear(v, src_y=[10, 20], src_x=[10, 20], dst_y=[-5, 15, 99], dst_x=[0, 99])
    np.testing.assert_allclose(out, [[0, 1], [1, 2], [2, 3]], rtol=0, atol=TOL)


def test_bilinear_against_the_loop_oracle():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(5, 7))
    sy = np.cumsum(rng.uniform(0.5, 3.0, 5))
    sx = np.cumsum(rng.uniform(0.5, 3.0, 7))
    dy = rng.uniform(-3, sy[-1] + 3, 23)
    dx = np.r_[sx, rng.uniform(-3, sx[-1] + 3, 17)]  # the centres themselves too
    got = resample_bilinear(v, src_y=sy, src_x=sx, dst_y=dy, dst_x=dx)
    assert got.shape == (23, 24) and got.dtype == np.float64
    np.testing.assert_allclose(got, oracle.bilinear(v, sy, sx, dy, dx), rtol=0, atol=TOL)
    # At the centres, the values themselves.
    at = resample_bilinear(v, src_y=sy, src_x=sx, dst_y=sy, dst_x=sx)
    np.testing.assert_allclose(at, v, rtol=0, atol=TOL)


def test_bilinear_one_row_or_column_is_constant_along_it():
    out = resample_bilinear([[1.0, 3.0]], src_y=[4.0], src_x=[0.0, 2.0], dst_y=[0, 9], dst_x=[1])
    np.testing.assert_allclose(out, [[2.0], [2.0]], rtol=0, atol=TOL)
    single = resample_bilinear([[7.0]], src_y=[0], src_x=[0], dst_y=[-1, 1], dst_x=[5, 6])
    np.testing.assert_array_equal(single, np.full((2, 2), 7.0))


def test_bilinear_does_not_modify_its_input():
    v = np.arange(6.0).reshape(2, 3)
    before = v.copy()
    resample_bilinear(v, src_y=[0, 1], src_x=[0, 1, 2], dst_y=[0.5], dst_x=[0.5])
    np.testing.assert_array_equal(v, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": np.zeros(3)}, "values must be a non-empty 2-D"),
        ({"values": [[np.nan, 0], [0, 0]]}, "values must be finite"),
        ({"src_y": [0, 1, 2]}, "src_y must have 2 values"),
        ({"src_x": [1, 1]}, "src_x must be strictly increasing"),
        ({"src_y": [1, 0]}, "src_y must be strictly increasing"),
        ({"dst_x": []}, "dst_x must be a non-empty"),
        ({"dst_y": [np.inf]}, "dst_y must be finite"),
    ],
)
def test_bilinear_validation(kwargs, match):
    args = {"values": [[0, 1], [2, 3]], "src_y": [0, 1], "src_x": [0, 1]}
    args |= {"dst_y": [0], "dst_x": [0]}
    args.update(kwargs)
    values = args.pop("values")
    with pytest.raises(UsageError, match=match):
        resample_bilinear(values, **args)


def test_cell_centres():
    np.testing.assert_array_equal(cell_centres(3, patch=16, stride=8), [7.5, 15.5, 23.5])
    np.testing.assert_array_equal(cell_centres(2, patch=15, stride=15), [7.0, 22.0])
    with pytest.raises(UsageError, match="must be positive"):
        cell_centres(0, patch=16, stride=8)


def test_upsample_heat_against_the_oracle():
    # S = 32, P = 8, T = 4: 7 × 7 cells, centres 3.5, 7.5, …, 27.5; pixels 0…31.
    rng = np.random.default_rng(0)
    heat = rng.normal(size=(7, 7))
    up = upsample_heat(heat, patch=8, stride=4, shape=(32, 32))
    assert up.shape == (32, 32)
    centres = [4 * i + 3.5 for i in range(7)]
    want = oracle.bilinear(heat, centres, centres, range(32), range(32))
    np.testing.assert_allclose(up, want, rtol=0, atol=TOL)
    # Edge values held: the first four rows (0…3 ≤ 3.5) equal row 0 of cells along columns.
    np.testing.assert_allclose(up[0], up[3], rtol=0, atol=TOL)
    # Between two centres, linear: pixel 5 is 3/8 of the way from centre 3.5 to 7.5.
    np.testing.assert_allclose(
        up[5, 3], heat[0, 0] + (heat[1, 0] - heat[0, 0]) * 1.5 / 4, rtol=0, atol=TOL
    )


def test_upsample_heat_validation():
    with pytest.raises(UsageError, match="heat must be an"):
        upsample_heat(np.zeros(4), patch=2, stride=1, shape=(4, 4))
    with pytest.raises(UsageError, match="shape must be positive"):
        upsample_heat(np.zeros((2, 2)), patch=2, stride=1, shape=(0, 4))


# -- image metrics --------------------------------------------------------------------------


def test_auroc_with_ties_against_pairs_and_sklearn():
    rng = np.random.default_rng(1)
    pos = rng.integers(0, 6, 40).astype(float)  # many ties
    neg = rng.integers(0, 5, 55).astype(float)
    want = oracle.pair_auroc(list(pos), list(neg))
    assert auroc(pos, neg) == pytest.approx(want, abs=TOL)
    y = np.r_[np.ones(40), np.zeros(55)]
    assert auroc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=TOL)
    assert auroc([1.0], [1.0]) == 0.5
    assert auroc([], [1.0]) is None and auroc([1.0], []) is None


def _images():
    # 4 good, 3 scratch, 2 dent; threshold 0.5 flags scores above it.
    labels = ["good", "scratch", "good", "dent", "scratch", "good", "scratch", "good", "dent"]
    scores = np.array([0.1, 0.9, 0.6, 0.4, 0.3, 0.2, 0.3, 0.45, 0.8])
    return labels, scores, scores > 0.5


def test_evaluate_images_by_hand():
    labels, scores, flagged = _images()
    stats = scores * 0 + np.array([0, 1, 0, 1, 0, 0, 1, 0, 1], dtype=float)  # perfect component
    ev = evaluate_images(scores, labels, flagged, components={"stats": stats, "soartc": -scores})
    assert list(ev) == [
        "normal_label",
        "n_normal",
        "normal_flagged",
        "components",
        "labels",
        "all",
        "pixel",
    ]
    assert ev["normal_label"] == "good" and ev["n_normal"] == 4 and ev["normal_flagged"] == 1
    assert ev["components"] == ["stats", "soartc"]
    assert list(ev["labels"]) == ["dent", "scratch"]
    # scratch 0.9, 0.3, 0.3 against good 0.1, 0.6, 0.2, 0.45: pairs won 4 + 2 + 2 = 8 of 12.
    scratch = ev["labels"]["scratch"]
    assert scratch["n"] == 3 and scratch["auroc"] == pytest.approx(8 / 12, abs=TOL)
    assert scratch["precision"] == pytest.approx(1 / 2)
    assert scratch["recall"] == pytest.approx(1 / 3)
    assert scratch["components"]["stats"] == pytest.approx(5 / 6, abs=TOL)  # one tie at 0 of 3
    assert scratch["components"]["soartc"] == pytest.approx(4 / 12, abs=TOL)
    # dent 0.4, 0.8: pairs won 2 + 4 = 6 of 8; flagged 1 of 2 with 1 false positive.
    dent = ev["labels"]["dent"]
    assert dent["auroc"] == pytest.approx(6 / 8) and dent["recall"] == pytest.approx(1 / 2)
    assert dent["precision"] == pytest.approx(1 / 2)
    every = ev["all"]
    assert every["n"] == 5 and every["auroc"] == pytest.approx(14 / 20, abs=TOL)
    assert every["precision"] == pytest.approx(2 / 3) and every["recall"] == pytest.approx(2 / 5)
    assert ev["pixel"] is None
    json.dumps(ev, allow_nan=False)  # JSON-ready


def test_evaluate_images_against_sklearn():
    rng = np.random.default_rng(7)
    labels = list(rng.choice(["good", "a", "b", "c"], 200))
    scores = np.round(rng.normal(size=200) + np.isin(labels, ["a", "b"]), 1)  # ties
    ev = evaluate_images(scores, labels, scores > 1.0)
    normal = np.array(labels) == "good"
    for label in ("a", "b", "c"):
        keep = normal | (np.array(labels) == label)
        want = roc_auc_score(~normal[keep], scores[keep])
        assert ev["labels"][label]["auroc"] == pytest.approx(want, abs=TOL)
    assert ev["all"]["auroc"] == pytest.approx(roc_auc_score(~normal, scores), abs=TOL)


def test_evaluate_images_undefined_values_are_none():
    assert evaluate_images([1.0, 2.0], ["a", "b"], [False, True]) is None  # no normal image
    ev = evaluate_images([1.0, 2.0], ["good", "good"], [False, False])
    assert ev["labels"] == {} and ev["components"] == []
    assert ev["all"] == {"n": 0, "auroc": None, "precision": None, "recall": None, "components": {}}
    ev = evaluate_images([1.0, 2.0], ["good", "x"], [False, False], normal_label="good")
    assert ev["labels"]["x"]["precision"] is None and ev["labels"]["x"]["recall"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scores": [1.0, np.nan]}, "scores hold NaN"),
        ({"scores": [1.0]}, r"scores must have one value per image \(2\)"),
        ({"anomalous": [True]}, "anomalous must have one value per image"),
        ({"components": {"stats": [1.0]}}, "component 'stats' must have one value"),
        ({"components": {"stats": [np.nan, 1.0]}}, "component 'stats' hold NaN"),
    ],
)
def test_evaluate_images_validation(kwargs, match):
    args = {"scores": [1.0, 2.0], "labels": ["good", "x"], "anomalous": [False, True]}
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        evaluate_images(args.pop("scores"), args.pop("labels"), args.pop("anomalous"), **args)


# -- pixel metrics --------------------------------------------------------------------------


def _pixels(heats, masks):
    acc = PixelEvaluation()
    for heat, mask in zip(heats, masks, strict=True):
        acc.add(np.asarray(heat, dtype=float), np.asarray(mask, dtype=bool))
    return acc


def test_pixel_metrics_by_hand():
    # Normal heats 0, 1, 2, 3; one region of two pixels with heats 2.5 and 0.5.
    heat = [[0.0, 1.0, 2.0], [3.0, 2.5, 0.5]]
    mask = [[False, False, False], [False, True, True]]
    acc = _pixels([heat], [mask])
    assert (acc.n_images, acc.n_regions, acc.n_pixels, acc.n_defect_pixels) == (1, 1, 6, 2)
    # 2.5 beats 3 normal heats, 0.5 beats 1: (3 + 1) / 8.
    assert acc.pixel_auroc() == pytest.approx(0.5, abs=TOL)
    # Curve: (0,0) (¼,0) (¼,½) (½,½) (¾,½) (¾,1) (1,1): area ⅛ + ⅛ + ¼ = ½.
    assert acc.aupro(1.0) == pytest.approx(0.5, abs=TOL)
    # Up to 0.3: 0 from 0 to ¼, then ½ · 0.05 = 0.025; / 0.3.
    assert acc.aupro() == pytest.approx(0.025 / 0.3, abs=TOL)
    # Up to exactly ¼ (an FPR of the curve): nothing but the zero segment.
    assert acc.aupro(0.25) == pytest.approx(0.0, abs=TOL)


def _hand_made():
    """Three 6 × 6 images: one good; one with three regions — two touching only diagonally
    (one region with 8-connectivity) and a single pixel; one with ties in the heat."""
    good = np.zeros((6, 6), dtype=bool)
    two = np.zeros((6, 6), dtype=bool)
    two[0, 0] = two[1, 1] = two[2, 2] = True  # a diagonal line: one region
    two[0, 4:6] = two[1, 4:6] = True  # a 2 × 2 block
    two[5, 2] = True  # a single pixel
    three = np.zeros((6, 6), dtype=bool)
    three[3:5, 0:3] = True
    three[4, 5] = three[5, 4] = True  # touching diagonally: one region
    rng = np.random.default_rng(11)
    heats = [np.round(rng.uniform(0, 4, (6, 6)), 0) / 2 for _ in range(3)]  # values 0…2 by ½
    heats[1][two] += 1.0
    heats[2][three] += 0.5
    return heats, [good, two, three]


def test_pixel_metrics_on_hand_made_masks_against_the_oracle():
    heats, masks = _hand_made()
    acc = _pixels(heats, masks)
    assert acc.n_regions == 5  # 8-connectivity: 3 + 2
    assert len(oracle.regions(masks[1].tolist(), connectivity=4)) == 5  # 4-connectivity: 5 there
    assert acc.n_images == 3 and acc.n_defect_images == 2
    assert acc.n_defect_pixels == int(sum(m.sum() for m in masks))
    hs, ms = [h.tolist() for h in heats], [m.tolist() for m in masks]
    assert acc.pixel_auroc() == pytest.approx(oracle.pixel_auroc(hs, ms), abs=TOL)
    for limit in (0.3, 0.05, 0.5, 1.0, 7 / 99):
        assert acc.aupro(limit) == pytest.approx(oracle.aupro(hs, ms, limit), abs=TOL)
    # The regions matter: 4-connectivity would give another AUPRO.
    assert abs(oracle.aupro(hs, ms, connectivity=4) - acc.aupro()) > 1e-3


def test_pixel_metrics_on_random_images_against_the_oracle():
    rng = np.random.default_rng(5)
    heats, masks = [], []
    for k in range(6):
        mask = rng.uniform(size=(9, 8)) < (0.0 if k == 0 else 0.15)
        heat = np.round(rng.normal(size=(9, 8)) + 1.5 * mask, 1)  # ties
        heats.append(heat)
        masks.append(mask)
    acc = _pixels(heats, masks)
    hs, ms = [h.tolist() for h in heats], [m.tolist() for m in masks]
    assert acc.pixel_auroc() == pytest.approx(oracle.pixel_auroc(hs, ms), abs=TOL)
    for limit in (0.3, 0.01, 1.0):
        assert acc.aupro(limit) == pytest.approx(oracle.aupro(hs, ms, limit), abs=TOL)


def test_pixel_metrics_are_the_same_in_small_chunks(monkeypatch):
    heats, masks = _hand_made()
    whole = _pixels(heats, masks)
    want = (whole.pixel_auroc(), whole.aupro(), whole.aupro(1.0))
    monkeypatch.setattr(evaluation, "_CHUNK", 3)
    chunked = _pixels(heats, masks)
    got = (chunked.pixel_auroc(), chunked.aupro(), chunked.aupro(1.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)


def test_adding_after_computing_equals_adding_at_once():
    heats, masks = _hand_made()
    acc = _pixels(heats[:2], masks[:2])
    first = acc.aupro()
    acc.add(heats[2], masks[2])
    once = _pixels(heats, masks)
    assert acc.aupro() == pytest.approx(once.aupro(), abs=TOL) and acc.aupro() != first
    assert acc.pixel_auroc() == pytest.approx(once.pixel_auroc(), abs=TOL)
    assert acc.result() == once.result()


def test_heats_are_stored_as_float32_and_inputs_untouched():
    heat = np.array([[0.1, 0.2], [0.3, 0.4]])
    mask = np.array([[False, True], [False, False]])
    before = heat.copy()
    acc = PixelEvaluation()
    acc.add(heat, mask)
    np.testing.assert_array_equal(heat, before)
    assert acc._negatives().dtype == np.float32 and acc._positives()[0].dtype == np.float32


def test_pixel_metrics_undefined():
    empty = PixelEvaluation()
    assert empty.pixel_auroc() is None and empty.aupro() is None
    good = _pixels([np.ones((3, 3))], [np.zeros((3, 3), bool)])
    assert good.pixel_auroc() is None and good.aupro() is None and good.n_regions == 0
    only_defect = _pixels([np.ones((2, 2))], [np.ones((2, 2), bool)])
    assert only_defect.pixel_auroc() is None and only_defect.aupro() is None
    assert good.result() == {
        "n_images": 1,
        "n_defect_images": 0,
        "n_pixels": 9,
        "n_defect_pixels": 0,
        "n_regions": 0,
        "auroc": None,
        "aupro": None,
        "fpr_limit": 0.3,
    }


def test_perfect_and_inverted_heats():
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    heat = mask.astype(float)
    perfect = _pixels([heat], [mask])
    assert perfect.pixel_auroc() == 1.0 and perfect.aupro() == pytest.approx(1.0, abs=TOL)
    inverted = _pixels([-heat], [mask])
    assert inverted.pixel_auroc() == 0.0 and inverted.aupro() == pytest.approx(0.0, abs=TOL)
    flat = _pixels([np.zeros((4, 4))], [mask])  # every pixel tied: one point (1, 1)
    assert flat.pixel_auroc() == 0.5 and flat.aupro() == pytest.approx(0.5 * 0.3, abs=TOL)


def test_evaluate_images_includes_the_pixel_metrics():
    heats, masks = _hand_made()
    acc = _pixels(heats, masks)
    ev = evaluate_images([0.0, 1.0, 2.0], ["good", "a", "b"], [False, True, True], pixels=acc)
    assert ev["pixel"] == acc.result()
    assert type(ev["pixel"]["aupro"]) is float and type(ev["pixel"]["auroc"]) is float
    assert ev["pixel"]["aupro"] == pytest.approx(acc.aupro(), abs=TOL)
    json.dumps(ev, allow_nan=False)
    none_added = evaluate_images([0.0, 1.0], ["good", "a"], [False, True], pixels=PixelEvaluation())
    assert none_added["pixel"] is None


@pytest.mark.parametrize(
    ("heat", "mask", "match"),
    [
        (np.zeros(4), np.zeros(4, bool), "heat must be a non-empty"),
        (np.zeros((2, 2)), np.zeros((2, 3), bool), "mask must have the heat's shape"),
        (np.zeros((2, 2)), np.zeros((2, 2)), "mask must be boolean"),
        (np.full((2, 2), np.nan), np.zeros((2, 2), bool), "heat must be finite"),
        (np.full((2, 2), 1e300), np.zeros((2, 2), bool), "float32's range"),
    ],
)
def test_pixel_add_validation(heat, mask, match):
    with pytest.raises(UsageError, match=match):
        PixelEvaluation().add(heat, mask)


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5, float("nan")])
def test_aupro_limit_validation(limit):
    with pytest.raises(UsageError, match="fpr_limit must be in"):
        _pixels([np.eye(3)], [np.eye(3, dtype=bool)]).aupro(limit)
