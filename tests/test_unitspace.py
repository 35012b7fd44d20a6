"""The unit space of SPEC §10 against a plain-loop oracle, scikit-learn, hand cases and a real
texture with drawn defects."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pathlib
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from soartc_cli.core import unitspace as us
from soartc_cli.core.features import soartc_features
from soartc_cli.errors import UsageError
from soartc_cli.output import modelfile_v1 as modelfile
from tests import oracle_unitspace as oracle

RTOL = 1e-9
DATA = pathlib.Path(__file__).parent / "data"


def correlated(seed, n=12, n_patches=4, k=5):
    """(n, N, k) features with correlated columns, one heavy-tailed (exp), no constant one."""
    rng = np.random.default_rng(seed)
    mix = 0.6 * rng.standard_normal((k, k)) + np.eye(k)
    x = rng.standard_normal((n, n_patches, k)) @ mix + rng.standard_normal((1, n_patches, k))
    x[..., -1] = np.exp(1.5 * x[..., -1])
    return x


def awkward(seed, n=11, n_patches=3):
    """Features that take every fallback: IQR 0 (std used), constant (q = 1), NaN and ±inf,
    a feature with no finite value (c = 0, q = 1)."""
    x = correlated(seed, n=n, n_patches=n_patches, k=6)
    rng = np.random.default_rng(seed + 1)
    mostly = np.full(n * n_patches, 0.25)
    mostly[rng.choice(n * n_patches, size=n * n_patches // 6, replace=False)] = rng.normal(
        1.0, 0.5, n * n_patches // 6
    )
    x[..., 2] = mostly.reshape(n, n_patches)
    x[..., 3] = 0.7
    x[0, 0, 0], x[1, -1, 0], x[2, 1 % n_patches, 4] = np.nan, np.inf, -np.inf
    x[..., 5] = np.nan
    return x


def assert_precisions(actual, expected):
    # Relative 1e-9 of each matrix's largest entry: near-zero off-diagonal entries carry the
    # rounding of the large ones.
    for a, e in zip(actual, expected, strict=True):
        assert_allclose(a, e, rtol=RTOL, atol=RTOL * np.abs(e).max())


# -- patch vectors and scaling --------------------------------------------------------------


def test_patch_vectors_order_is_channel_transform_metric():
    values = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    rows = us.patch_vectors(values)
    assert rows.shape == (5, 24)
    for c in range(2):
        for t in range(3):
            for m in range(4):
                assert_array_equal(rows[:, (c * 3 + t) * 4 + m], values[c, t, m])
    with pytest.raises(UsageError, match=r"\(C, T, M, N\)"):
        us.patch_vectors(np.zeros((3, 4, 5)))


def test_scaling_matches_oracle_with_every_fallback():
    x = awkward(3)
    model = us.fit_unit_space(x)
    center, scale = oracle.scaling(x)
    assert_allclose(model.center, center, rtol=RTOL)
    assert_allclose(model.scale, scale, rtol=RTOL)
    finite2 = x[..., 2].ravel()
    assert np.percentile(finite2, 75) - np.percentile(finite2, 25) == 0  # the IQR fallback ...
    assert model.scale[2] == pytest.approx(finite2.std(), rel=RTOL)  # ... to the std
    assert (model.center[3], model.scale[3]) == (0.7, 1.0)  # constant: q = 1
    assert (model.center[5], model.scale[5]) == (0.0, 1.0)  # no finite value


def test_z_matches_oracle_and_zeroes_non_finite():
    x = awkward(4)
    model = us.fit_unit_space(x)
    z = us.scale_features(x, center=model.center, scale=model.scale)
    assert_allclose(z, oracle.scale_all(x, model.center, model.scale), rtol=RTOL, atol=1e-300)
    assert z[0, 0, 0] == 0 and z[1, -1, 0] == 0 and z[2, 1, 4] == 0
    assert (z[..., 5] == 0).all()
    # z = sign(u) ln(1 + |u|), one value by hand
    u = (x[3, 1, 1] - model.center[1]) / model.scale[1]
    assert z[3, 1, 1] == pytest.approx(math.copysign(math.log1p(abs(u)), u), rel=1e-15)


# -- the unit space against the oracle ------------------------------------------------------


@pytest.mark.parametrize("unit_space", ["position", "shared"])
@pytest.mark.parametrize("make", [correlated, awkward], ids=["correlated", "awkward"])
def test_fit_matches_oracle(unit_space, make):
    x = make(5)
    model = us.fit_unit_space(x, unit_space=unit_space, quantile=0.9)
    _, _, means, precisions, shrinkage = oracle.fit(x, unit_space)
    assert_allclose(model.means, means, rtol=RTOL, atol=1e-15)
    assert_allclose(model.shrinkage, shrinkage, rtol=RTOL)
    assert_precisions(model.precisions, precisions)
    groups = x.shape[1] if unit_space == "position" else 1
    assert model.means.shape == (groups, x.shape[2])
    assert model.precisions.shape == (groups, x.shape[2], x.shape[2])

    oof, threshold = oracle.oof_threshold(x, unit_space, quantile=0.9)
    assert_allclose(model.oof_scores, oof, rtol=RTOL)
    assert model.threshold == pytest.approx(threshold, rel=RTOL)

    fresh = make(6)
    md = us.patch_distances(model, fresh)
    expected = oracle.distances(fresh, model.center, model.scale, model.means, model.precisions)
    assert_allclose(md, expected, rtol=RTOL)
    scores, patch_max = us.image_scores(md)
    by_loop = oracle.scores(expected)
    assert_allclose(scores, [s for s, _ in by_loop], rtol=RTOL)
    assert_array_equal(patch_max, [p for _, p in by_loop])
    assert_allclose(us.patch_distances(model, fresh[2]), md[2], rtol=1e-15)


def test_shrinkage_and_covariance_match_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    x = correlated(7, n=15, n_patches=3, k=6)
    for unit_space in ("position", "shared"):
        model = us.fit_unit_space(x, unit_space=unit_space)
        z = us.scale_features(x, center=model.center, scale=model.scale)
        groups = z.transpose(1, 0, 2) if unit_space == "position" else z.reshape(1, -1, 6)
        for g, samples in enumerate(groups):
            sigma = samples.std(axis=0)
            standard = (samples - samples.mean(axis=0)) / sigma
            lw = covariance.LedoitWolf().fit(standard)
            assert 0 < lw.shrinkage_ < 1
            assert model.shrinkage[g] == pytest.approx(lw.shrinkage_, rel=RTOL)
            assert covariance.ledoit_wolf_shrinkage(standard) == pytest.approx(
                model.shrinkage[g], rel=RTOL
            )
            cov = sigma[:, None] * lw.covariance_ * sigma[None, :]
            ridge = 1e-9 * np.trace(cov) / 6
            expected = np.linalg.inv(cov + ridge * np.eye(6))
            assert_precisions(model.precisions[g : g + 1], expected[None])


def test_identity_target_with_a_constant_feature():
    # A constant feature has σ = 1, a zero row in S, and δ on its diagonal of C.
    x = correlated(8, n=10, n_patches=2, k=4)
    x[..., 3] = 2.0
    model = us.fit_unit_space(x)
    precisions = oracle.fit(x)[3]
    assert_precisions(model.precisions, precisions)
    for g in range(2):
        cov = np.linalg.inv(model.precisions[g])
        delta = model.shrinkage[g]
        assert 0 < delta < 1
        assert cov[3, 3] == pytest.approx(delta, rel=1e-6)  # plus the 1e-9 ridge
        assert_allclose(cov[3, :3], 0, atol=1e-12)


def test_a_position_with_no_variation_keeps_an_invertible_precision():
    x = correlated(9, n=10, n_patches=3, k=3)
    x[:, 1, :] = x[0, 1, :]  # patch 1 identical in every good image (a black corner)
    model = us.fit_unit_space(x)
    assert model.shrinkage[1] == 0
    assert_allclose(model.precisions[1], 1e9 * np.eye(3), rtol=1e-12, atol=1e-12 * 1e9)
    assert_allclose(us.patch_distances(model, x)[:, 1], 0, atol=1e-12)
    moved = x[:1].copy()
    moved[0, 1, 0] = x[0, 1, 0] + 0.01 * model.scale[0]
    assert us.patch_distances(model, moved)[0, 1] > 1e3  # never seen to change: far off


# -- folds ----------------------------------------------------------------------------------


def test_each_fold_is_scored_by_a_model_that_never_saw_it():
    x = correlated(10, n=15, n_patches=4, k=4)
    base = us.fit_unit_space(x)
    changed = x.copy()
    changed[3] += 5.0 * x.std(axis=0)  # image 3, fold 3, becomes an outlier
    model = us.fit_unit_space(changed)
    # The other images of fold 3 are scored by a model fitted without fold 3: unchanged.
    assert_array_equal(model.oof_scores[[8, 13]], base.oof_scores[[8, 13]])
    # Every other fold's model saw image 3, so their scores moved.
    others = [i for i in range(15) if i % 5 != 3]
    assert not np.any(model.oof_scores[others] == base.oof_scores[others])
    # Out of fold, the outlier stands out far more than when the model has seen it.
    in_sample, _ = us.image_scores(us.patch_distances(model, changed[3]))
    assert model.oof_scores[3] > 3 * in_sample
    assert model.oof_scores[3] == model.oof_scores.max()


def test_threshold_is_the_linear_quantile_of_the_oof_scores():
    x = correlated(11, n=9)
    for q in (0.5, 0.9, 0.99, 1.0):
        model = us.fit_unit_space(x, quantile=q)
        assert model.threshold == np.quantile(model.oof_scores, q)
        assert model.quantile == q
    assert us.fit_unit_space(x, quantile=1.0).threshold == us.fit_unit_space(x).oof_scores.max()


# -- validation -----------------------------------------------------------------------------


def test_fewer_than_five_good_images_is_a_usage_error():
    with pytest.raises(UsageError, match="fit needs at least 5 good images, got 3"):
        us.fit_unit_space(correlated(1, n=3))
    us.fit_unit_space(correlated(1, n=5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit_space": "global"}, "unit_space must be one of position, shared: got 'global'"),
        ({"quantile": 0.0}, r"quantile must be a number in \(0, 1\], got 0.0"),
        ({"quantile": 1.5}, r"quantile must be a number in \(0, 1\]"),
        ({"quantile": float("nan")}, r"quantile must be a number in \(0, 1\]"),
        ({"quantile": "high"}, r"quantile must be a number in \(0, 1\]"),
        ({"meta": {"bad": object()}}, "meta must be JSON-ready"),
        ({"meta": {"nan": float("nan")}}, "meta must be JSON-ready"),
    ],
)
def test_fit_option_errors(kwargs, match):
    with pytest.raises(UsageError, match=match):
        us.fit_unit_space(correlated(2), **kwargs)


def test_shape_errors():
    with pytest.raises(
        UsageError, match=r"features must be a \(n, N, k\) array, got shape \(6, 4\)"
    ):
        us.fit_unit_space(np.zeros((6, 4)))
    with pytest.raises(UsageError, match="features must be a real array"):
        us.fit_unit_space(np.full((6, 2, 2), "a"))
    with pytest.raises(UsageError, match="at least one patch and one feature"):
        us.fit_unit_space(np.zeros((6, 2, 0)))
    model = us.fit_unit_space(correlated(2))
    with pytest.raises(UsageError, match="features have 4 values per patch, the model expects 5"):
        us.patch_distances(model, np.zeros((4, 4)))
    with pytest.raises(UsageError, match="features have 3 patches, the model expects 4"):
        us.patch_distances(model, np.zeros((2, 3, 5)))
    shared = us.fit_unit_space(correlated(2), unit_space="shared")
    assert us.patch_distances(shared, np.zeros((2, 3, 5))).shape == (2, 3)  # any N
    with pytest.raises(UsageError, match=r"md must be an \(N,\) or \(n, N\) array"):
        us.image_scores(np.zeros((2, 2, 2)))
    with pytest.raises(UsageError, match="md holds NaN"):
        us.image_scores([1.0, np.nan])


def test_image_scores_take_the_first_largest_patch():
    scores, patch_max = us.image_scores([[0.5, 2.0, 2.0, 1.0], [3.0, 0.0, 3.0, 3.0]])
    assert_array_equal(scores, [2.0, 3.0])
    assert_array_equal(patch_max, [1, 0])
    score, index = us.image_scores([0.1, 0.7, 0.2])
    assert (float(score), int(index)) == (0.7, 1)


# -- model files ----------------------------------------------------------------------------

META = {"settings": {"size": 64, "patch": 16}, "names": ["a.beta", "a.delta"], "version": "x"}


def assert_same_model(a, b):
    for name in ("center", "scale", "means", "precisions", "shrinkage", "oof_scores"):
        assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(b, name).dtype == np.float64
    assert (a.threshold, a.quantile, a.unit_space, a.meta) == (
        b.threshold,
        b.quantile,
        b.unit_space,
        b.meta,
    )


@pytest.mark.parametrize("unit_space", ["position", "shared"])
def test_model_round_trip_to_a_path_and_to_bytes(tmp_path, unit_space):
    model = us.fit_unit_space(correlated(12), unit_space=unit_space, quantile=0.95, meta=META)
    path = tmp_path / "model.npz"
    modelfile.save_model(model, path)
    assert_same_model(model, modelfile.load_model(path))
    assert_same_model(model, modelfile.load_model(str(path)))
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left
    buffer = io.BytesIO()
    modelfile.save_model(model, buffer)
    buffer.seek(0)
    loaded = modelfile.load_model(buffer)
    assert_same_model(model, loaded)
    assert loaded.meta == META
    with np.load(path, allow_pickle=False) as archive:
        assert archive["meta"].dtype.kind == "U" and archive["meta"].shape == ()
        assert json.loads(str(archive["meta"])) == META
        assert int(archive["format_version"]) == modelfile.FORMAT_VERSION
    assert_allclose(
        us.patch_distances(loaded, correlated(13)), us.patch_distances(model, correlated(13))
    )


def test_save_replaces_an_existing_file_only_when_complete(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    first = us.fit_unit_space(correlated(14), meta={"run": 1})
    modelfile.save_model(first, path)
    before = path.read_bytes()

    def broken(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(us.np, "savez", broken)
    with pytest.raises(KeyboardInterrupt):
        modelfile.save_model(us.fit_unit_space(correlated(15), meta={"run": 2}), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    second = us.fit_unit_space(correlated(15), meta={"run": 2})
    modelfile.save_model(second, path)
    assert modelfile.load_model(path).meta == {"run": 2}


PICKLE_CALLS: list[str] = []


def _record_unpickling():
    PICKLE_CALLS.append("unpickled")
    return "boom"


class Trap:
    """Records it if anything ever unpickles it."""

    def __reduce__(self):
        return (_record_unpickling, ())


def model_arrays(**changes):
    model = us.fit_unit_space(correlated(16), meta=META)
    buffer = io.BytesIO()
    modelfile.save_model(model, buffer)
    buffer.seek(0)
    with np.load(buffer) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (model_arrays(precisions=None), "lacks the array"),
        (model_arrays(format_version=np.array(2)), "format version 2; this soartc reads version 1"),
        (model_arrays(format=np.array("something.else")), "format is 'something.else'"),
        (model_arrays(means=np.zeros((3, 5))), "array shapes do not fit together"),
        (model_arrays(precisions=np.zeros((4, 5, 4))), "array shapes do not fit together"),
        (model_arrays(center=np.zeros(5, dtype=np.float32)), "center must be float64"),
        (model_arrays(scale=np.zeros(5)), "non-finite or non-positive"),
        (model_arrays(unit_space=np.array("global")), "unknown unit space 'global'"),
        (model_arrays(unit_space=np.array("shared")), "array shapes do not fit together"),
        (model_arrays(meta=np.array("{not json")), "meta is not JSON"),
        (model_arrays(meta=np.array("[1, 2]")), "meta must be a JSON object"),
        (model_arrays(threshold=np.array(np.nan)), "out of range"),
        (model_arrays(quantile=np.array(0.0)), "out of range"),
        (model_arrays(threshold=np.array("high")), "threshold must be a 0-d number"),
        (model_arrays(oof_scores=np.zeros(3)), "array shapes do not fit together"),
    ],
)
def test_mismatched_models_are_usage_errors(tmp_path, arrays, match):
    path = tmp_path / "model.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=match):
        modelfile.load_model(path)


def test_an_object_array_is_refused_and_never_unpickled(tmp_path):
    path = tmp_path / "model.npz"
    arrays = model_arrays(center=np.array([Trap()] * 5, dtype=object))
    np.savez(path, allow_pickle=True, **arrays)
    PICKLE_CALLS.clear()
    with pytest.raises(UsageError, match="Object arrays cannot be loaded"):
        modelfile.load_model(path)
    assert PICKLE_CALLS == []
    # An object array as the whole file (np.save of a pickled object) is refused as well.
    single = tmp_path / "pickled.npz"
    np.save(single.with_suffix(".npy"), np.array([Trap()], dtype=object), allow_pickle=True)
    single.with_suffix(".npy").rename(single)
    with pytest.raises(UsageError, match="not a usable soartc model"):
        modelfile.load_model(single)
    assert PICKLE_CALLS == []


def test_files_that_are_not_models_are_usage_errors(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("threshold = 3\n")
    with pytest.raises(UsageError, match=r"notes\.npz is not an \.npz archive"):
        modelfile.load_model(text)
    npy = tmp_path / "array.npz"
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(npy)
    with pytest.raises(UsageError, match=r"single \.npy array, not an \.npz archive"):
        modelfile.load_model(npy)
    truncated = tmp_path / "truncated.npz"
    modelfile.save_model(us.fit_unit_space(correlated(17)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(UsageError, match="not a usable soartc model"):
        modelfile.load_model(truncated)
    empty = tmp_path / "empty.npz"
    with zipfile.ZipFile(empty, "w"):
        pass
    with pytest.raises(UsageError, match="lacks the array"):
        modelfile.load_model(empty)
    with pytest.raises(UsageError, match="model file not found"):
        modelfile.load_model(tmp_path / "missing.npz")
    with pytest.raises(UsageError, match=r"not an \.npz archive"):
        modelfile.load_model(io.BytesIO(b""))
    for error in (text, npy, truncated, empty):
        try:
            modelfile.load_model(error)
        except UsageError as exc:
            assert "\n" not in str(exc)


# -- evaluation -----------------------------------------------------------------------------


def test_evaluate_a_hand_computed_case_with_ties():
    # good: 1 2 3 3 | scratch: 3 4 | spot: 0.5 2; threshold 2.5 flags 3, 3, 3, 4.
    # scratch: 3 beats 1, 2 and ties 3, 3 -> 1 + 1 + ½ + ½ = 3; 4 beats all four -> 4; U = 7
    #          AUROC = 7 / (2·4) = 0.875; flagged 2 of 2, normal flagged 2 -> precision ½, recall 1
    # spot:    0.5 beats none; 2 beats 1, ties 2 -> 1.5; AUROC = 1.5 / 8 = 0.1875; none flagged
    #          -> precision 0 / (0 + 2) = 0, recall 0
    # all:     U = 7 + 1.5 = 8.5, AUROC = 8.5 / 16; TP 2, FP 2 -> precision ½, recall 2/4
    scores = [1, 2, 3, 3, 3, 4, 0.5, 2]
    labels = ["good"] * 4 + ["scratch"] * 2 + ["spot"] * 2
    anomalous = np.array(scores) > 2.5
    result = us.evaluate(scores, labels, anomalous)
    assert result == {
        "normal_label": "good",
        "n_normal": 4,
        "normal_flagged": 2,
        "labels": {
            "scratch": {"n": 2, "auroc": 0.875, "precision": 0.5, "recall": 1.0},
            "spot": {"n": 2, "auroc": 0.1875, "precision": 0.0, "recall": 0.0},
        },
        "all": {"n": 4, "auroc": 0.53125, "precision": 0.5, "recall": 0.5},
    }
    json.dumps(result, allow_nan=False)


def test_evaluate_undefined_cases():
    assert us.evaluate([1.0, 2.0], ["scratch", "spot"], [True, False]) is None
    # Only normal images, none flagged: no positives, nothing flagged.
    result = us.evaluate([1.0, 2.0], ["good", "good"], [False, False])
    assert result["labels"] == {}
    assert result["all"] == {"n": 0, "auroc": None, "precision": None, "recall": None}
    # A defect label none of whose images, nor any normal one, is flagged: precision undefined.
    result = us.evaluate(
        [1.0, 2.0, 5.0], ["ok", "ok", "crack"], [False, False, False], normal_label="ok"
    )
    assert result["labels"]["crack"] == {"n": 1, "auroc": 1.0, "precision": None, "recall": 0.0}
    with pytest.raises(UsageError, match="one value per image"):
        us.evaluate([1.0, 2.0], ["good"], [True, False])
    with pytest.raises(UsageError, match="scores hold NaN"):
        us.evaluate([1.0, np.nan], ["good", "x"], [True, False])


def test_evaluate_auroc_is_the_pairwise_probability():
    rng = np.random.default_rng(18)
    scores = np.round(rng.normal(size=60), 1)  # rounded: many ties
    labels = list(rng.choice(["good", "a", "b"], size=60))
    result = us.evaluate(scores, labels, scores > 0)
    normal = scores[np.array(labels) == "good"]
    for label in ("a", "b"):
        positive = scores[np.array(labels) == label]
        pairs = [1.0 if p > q else 0.5 if p == q else 0.0 for p in positive for q in normal]
        assert result["labels"][label]["auroc"] == pytest.approx(sum(pairs) / len(pairs), rel=1e-12)


# -- properties -----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 14),
    n_patches=st.integers(1, 4),
    k=st.integers(1, 6),
    unit_space=st.sampled_from(us.UNIT_SPACES),
    rough=st.booleans(),
)
def test_md_properties(seed, n, n_patches, k, unit_space, rough):
    # rough: the awkward features (every scaling fallback, NaN, ±inf, constant features).
    x = awkward(seed, n=n, n_patches=n_patches) if rough else correlated(seed, n, n_patches, k)
    k = x.shape[2]
    model = us.fit_unit_space(x, unit_space=unit_space)
    md = us.patch_distances(model, x)
    assert (md >= 0).all() and np.isfinite(md).all()
    assert (model.shrinkage >= 0).all() and (model.shrinkage <= 1).all()
    # In-sample mean MD of a group is tr(C⁻¹ S)/k = mean of λ/((1 − δ)λ + δ) over the
    # eigenvalues λ of the correlation S (mean λ ≤ 1): ≤ 1 by Jensen (concave), = 1 when δ = 0.
    per_group = md.mean(axis=0) if unit_space == "position" else md.mean(keepdims=True)
    assert (per_group <= 1 + 1e-7).all()
    # Features in another order, or one feature multiplied by a positive constant: same MD.
    rng = np.random.default_rng(seed)
    order = rng.permutation(k)
    assert_allclose(
        us.patch_distances(us.fit_unit_space(x[..., order], unit_space=unit_space), x[..., order]),
        md,
        rtol=1e-7,
        atol=1e-9,
    )
    stretched = x.copy()
    stretched[..., 0] *= 1000.0
    again = us.fit_unit_space(stretched, unit_space=unit_space)
    assert_allclose(us.patch_distances(again, stretched), md, rtol=1e-7, atol=1e-9)
    assert again.threshold == pytest.approx(model.threshold, rel=1e-7)


def test_mean_md_of_good_patches_is_about_one():
    # Position unit space, 60 good images of 6 correlated features: in sample the mean MD is
    # just under 1 (see test_md_properties); new good images drawn from the same distribution
    # land near 1 too, a little above (the covariance is estimated from 60 samples).
    x = correlated(19, n=120, n_patches=4, k=6)
    model = us.fit_unit_space(x[:60])
    in_sample = us.patch_distances(model, x[:60]).mean()
    held_out = us.patch_distances(model, x[60:]).mean()
    assert 0.8 < in_sample <= 1.0
    assert 0.8 < held_out < 1.6


# -- a real texture with drawn defects ------------------------------------------------------

TILE, PATCH = 64, 16
COLS = TILE // PATCH


def _tiles():
    image = np.asarray(Image.open(DATA / "brick.png"), dtype=np.float64) / 255.0
    rng = np.random.default_rng(1)
    offsets = rng.integers(0, image.shape[0] - TILE, size=(70, 2))
    return [image[a : a + TILE, b : b + TILE].copy() for a, b in offsets]


def _defects(base):
    """Defects drawn into clean tiles: kind -> (tiles, the patch the defect is centred on)."""
    yy, xx = np.mgrid[:TILE, :TILE]
    diagonal = (yy >= 18) & (yy < 30)
    kinds = {
        # a dark scratch, 3 px wide, from (18, 34) to (29, 45): patch r01c02
        "dark scratch": (lambda t: t.__setitem__((np.abs(yy - xx + 16) <= 1) & diagonal, 0.02), 6),
        # a bright scratch, 1 px wide, on the same line
        "bright scratch": (lambda t: t.__setitem__((yy - xx + 16 == 0) & diagonal, 1.0), 6),
        # a dark pit, radius 4, centred in patch r02c01
        "dark pit": (lambda t: t.__setitem__((yy - 40) ** 2 + (xx - 24) ** 2 <= 16, 0.0), 9),
        # a foreign flat dark square of 16 px straddling r02c00, r02c01, r03c00, r03c01
        "flat square": (lambda t: t.__setitem__((slice(40, 56), slice(8, 24)), 0.05), 9),
        # a small bright spot, radius 2, in patch r02c01 (the mortar is bright too: the weakest)
        "bright spot": (lambda t: t.__setitem__((yy - 40) ** 2 + (xx - 24) ** 2 <= 4, 1.0), 9),
    }
    out = {}
    for kind, (draw, patch) in kinds.items():
        tiles = [t.copy() for t in base]
        for t in tiles:
            draw(t)
        out[kind] = (tiles, patch)
    return out


def _vectors(tiles):
    return np.stack([us.patch_vectors(soartc_features(t, patch=PATCH)) for t in tiles])


@pytest.fixture(scope="module")
def texture():
    tiles = _tiles()
    good, held, base = tiles[:40], tiles[40:60], tiles[60:]
    defects = {k: (_vectors(t), p) for k, (t, p) in _defects(base).items()}
    return _vectors(good), _vectors(held), defects


def _touches(patch, target):
    return abs(patch // COLS - target // COLS) <= 1 and abs(patch % COLS - target % COLS) <= 1


def test_defects_on_a_real_texture_score_higher_than_good_tiles(texture):
    # Tiles are cut at random offsets, so every patch position sees the same texture: the
    # shared unit space (640 patches for 18 features) is the one this set calls for.
    good, held, defects = texture
    assert good.shape == (40, 16, 18)
    model = us.fit_unit_space(good, unit_space="shared")
    held_scores, _ = us.image_scores(us.patch_distances(model, held))
    # New good tiles: a typical patch about 1, none wildly off.
    assert 0.3 < us.patch_distances(model, held).mean() < 3
    for kind, (features, target) in defects.items():
        scores, patch_max = us.image_scores(us.patch_distances(model, features))
        labels = ["good"] * len(held_scores) + [kind] * len(scores)
        all_scores = np.concatenate([held_scores, scores])
        result = us.evaluate(all_scores, labels, all_scores > model.threshold)
        auroc = result["labels"][kind]["auroc"]
        if kind == "bright spot":
            assert auroc >= 0.9, kind
            assert sum(_touches(p, target) for p in patch_max) >= 8, (kind, patch_max)
            continue
        assert auroc == 1.0, kind
        assert all(_touches(p, target) for p in patch_max), (kind, patch_max)
        assert (scores > model.threshold).all(), kind


def test_position_unit_space_on_the_texture(texture):
    # 40 samples per position for 18 features: noisier, but the strong defects still stand out.
    good, held, defects = texture
    model = us.fit_unit_space(good)
    assert model.means.shape == (16, 18)
    md_held = us.patch_distances(model, held)
    assert 0.3 < md_held.mean() < 3
    held_scores, _ = us.image_scores(md_held)
    for kind in ("dark scratch", "flat square"):
        features, target = defects[kind]
        scores, patch_max = us.image_scores(us.patch_distances(model, features))
        assert scores.min() > held_scores.max(), kind
        assert all(_touches(p, target) for p in patch_max), (kind, patch_max)


@pytest.mark.parametrize("unit_space", us.UNIT_SPACES)
def test_every_precision_matrix_is_exactly_symmetric(unit_space):
    # inv() of a symmetric matrix is symmetric only up to rounding; the fit symmetrises it.
    model = us.fit_unit_space(correlated(7, 12, 5, 6), unit_space=unit_space)
    assert np.array_equal(model.precisions, model.precisions.transpose(0, 2, 1))


def test_patch_distances_are_never_negative_even_for_an_indefinite_precision():
    # A model read from a file may hold any symmetric matrix: MD is clamped at 0, never negative.
    x = correlated(3, 8, 2, 3)
    model = us.fit_unit_space(x, unit_space="shared")
    indefinite = dataclasses.replace(model, precisions=-np.eye(3)[None])
    md = us.patch_distances(indefinite, x)
    assert (md == 0).all()
