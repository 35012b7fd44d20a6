"""Model format 2 (SPEC §10 steps 1–5) against the plain-loop oracle, hand cases and a synthetic
inspection."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from soartc_cli.core import scoring as sc
from soartc_cli.errors import UsageError
from tests import oracle_scoring as oracle
from tests import oracle_unitspace as gauss

RTOL = 1e-9


def good(seed, n=11, n_units=6, k=3, dtype=np.float64):
    """Correlated features with a heavy tail; no constant column."""
    rng = np.random.default_rng(seed)
    mix = 0.5 * rng.standard_normal((k, k)) + np.eye(k)
    x = rng.standard_normal((n, n_units, k)) @ mix + rng.standard_normal((1, n_units, k))
    x[..., -1] = np.exp(x[..., -1])
    return x.astype(dtype)


def awkward(seed, n=10, n_units=4):
    """Every fallback of the scaling: IQR 0 (std), constant (1), NaN and ±inf, all non-finite."""
    x = good(seed, n=n, n_units=n_units, k=5)
    x[..., 1] = 0.5
    x[: n // 4, 0, 1] = 2.0  # IQR 0 but a std
    x[..., 2] = 3.0
    x[0, 0, 0], x[1, 1, 3], x[2, 2, 4] = np.nan, np.inf, -np.inf
    x[..., 4] = np.where(np.arange(n)[:, None] % 2 == 0, x[..., 4], np.nan)
    return x


def upsample(heat):
    """A to_cells of the glcm kind: 4 units (2 × 2) onto 9 cells (3 × 3), bilinear."""
    grid = np.asarray(heat).reshape(*np.shape(heat)[:-1], 2, 2)
    weights = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rows = np.einsum("ra,...ab->...rb", weights, grid)
    return np.einsum("cb,...rb->...rc", weights, rows).reshape(*np.shape(heat)[:-1], 9)


def components(seed, n=11):
    return {
        "soartc": (good(seed, n=n, n_units=9, k=4), "gaussian", None),
        "stats": (good(seed + 1, n=n, n_units=9, k=3, dtype=np.float32), "bank", None),
        "glcm": (good(seed + 2, n=n, n_units=4, k=2), "bank", upsample),
    }


def fit(parts, **kwargs):
    return sc.fit_model(
        {name: sc.ComponentData(f, s, t) for name, (f, s, t) in parts.items()}, **kwargs
    )


def assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected, dtype=float)
    assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max()))


# -- steps 1–3 against the oracle -------------------------------------------------------------


@pytest.mark.parametrize("scorer", ["gaussian", "bank"])
def test_scaling_matches_oracle_with_every_fallback(scorer):
    x = awkward(2)
    model = sc.fit_model({"c": sc.ComponentData(x, scorer)})
    center, scale = gauss.scaling(x)
    assert_close(model.components["c"].fit.center, center)
    assert_close(model.components["c"].fit.scale, scale)
    assert scale[2] == 1.0 and 0.0 < scale[1] != 1.0  # the fallbacks were taken


@pytest.mark.parametrize("unit_space", ["position", "shared"])
def test_gaussian_and_its_heat_match_oracle(unit_space):
    x = awkward(5)
    part = sc._fit_gaussian(x, np.arange(len(x)), unit_space)
    center, scale, means, precisions, shrinkage = gauss.fit(x, unit_space)
    assert part.means.shape[0] == (x.shape[1] if unit_space == "position" else 1)
    assert_close(part.means, means)
    assert_close(part.shrinkage, shrinkage)
    for a, e in zip(part.precisions, precisions, strict=True):
        assert_close(a, e)
    queries = good(9, n=3, n_units=4, k=5)
    h = sc._raw_heat(part, queries, np.arange(3))
    assert_close(h, gauss.distances(queries, center, scale, means, precisions))
    assert (h >= 0).all()


def test_bank_standardisation_pool_and_coreset_match_oracle():
    x = good(4, n=8, n_units=30, k=3, dtype=np.float32)  # N = 240: m = 24, pool = all 240
    part = sc._fit_bank(x, np.arange(8), seed=7)
    expected = oracle.fit_bank(x, seed=7)
    assert_close(part.mean, expected["mean"])
    assert_close(part.std, expected["std"])
    assert part.bank.dtype == np.float32 and part.bank.shape == (24, 3)
    assert_allclose(part.bank, expected["bank"], rtol=1e-6)
    pool = sc.pool_indices(240, seed=7)
    assert_array_equal(pool, expected["pool"])
    assert_array_equal(pool, np.random.default_rng(8).choice(240, 240, replace=False))
    assert len(set(expected["chosen"])) == 24


def test_bank_of_one_fold_uses_its_own_rows_image_major():
    x = good(6, n=10, n_units=7, k=2)
    rows = np.array([1, 2, 3, 4, 6, 7, 8, 9])  # fold 0 and 5 held out
    part = sc._fit_bank(x, rows, seed=3)
    expected = oracle.fit_bank(x[rows], seed=3)
    assert_allclose(part.bank, expected["bank"], rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 11])
def test_greedy_coreset_gives_the_brute_force_indices(seed):
    vectors = np.random.default_rng(seed).standard_normal((150, 4))
    chosen = sc.k_center_greedy(vectors, 20, seed=seed)
    assert_array_equal(chosen, oracle.greedy(vectors.tolist(), 20, seed))


def test_greedy_coreset_breaks_ties_on_the_lowest_index_and_never_repeats():
    # integer points: exact ties everywhere, and only 6 distinct vectors for m = 9
    rng = np.random.default_rng(5)
    vectors = rng.integers(0, 2, size=(40, 3)).astype(float)
    vectors[:, 2] = 0.0  # 4 distinct vectors; the rest are duplicates
    chosen = sc.k_center_greedy(vectors, 9, seed=2)
    assert_array_equal(chosen, oracle.greedy(vectors.tolist(), 9, 2))
    assert len(set(chosen.tolist())) == 9


def test_permuting_the_pool_permutes_the_indices_only():
    vectors = np.random.default_rng(8).standard_normal((120, 3))
    first = int(np.random.default_rng(4).integers(120))
    perm = np.random.default_rng(9).permutation(120)
    # keep the first draw pointing at the same vector
    perm[[np.flatnonzero(perm == first)[0], first]] = perm[
        [first, np.flatnonzero(perm == first)[0]]
    ]
    assert perm[first] == first
    a = sc.k_center_greedy(vectors, 30, seed=4)
    b = sc.k_center_greedy(vectors[perm], 30, seed=4)
    assert_array_equal(perm[b], a)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("method", ["kdtree", "product"])
def test_nearest_neighbour_is_exact_against_brute_force(method):
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((300, 5)).astype(np.float32)
    y = np.concatenate([rng.standard_normal((250, 5)), 40 * rng.standard_normal((20, 5))])
    expected = np.array([min(oracle.sq_distance(q, b) for b in bank) for q in y])
    got = sc.nearest_sq_distances(y, bank, method=method)
    assert_close(got, expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["kdtree", "product"])
def test_nearest_neighbour_guard_on_near_ties_and_bank_vectors(method):
    # Two bank vectors whose distances to y differ by 1e-9 at about 1e-4: float32 cannot tell
    # them apart, so the product form alone picks the wrong one about half the time.
    rng = np.random.default_rng(3)
    k, q = 4, 200
    y = rng.standard_normal((q, k)) + 5.0
    direction = rng.standard_normal((q, k))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    near = (y + 1e-2 * direction).astype(np.float32)
    other = (y - (1e-2 + 1e-7 * rng.random((q, 1))) * direction).astype(np.float32)
    bank = np.concatenate([near, other, rng.standard_normal((500, k)).astype(np.float32) + 5])
    expected = np.array([min(oracle.sq_distance(a, b) for b in bank) for a in y])
    got = sc.nearest_sq_distances(y, bank, method=method)
    assert_close(got, expected, rtol=1e-12)
    # the product form alone is wrong here: the guard did the work
    naive = (bank.astype(np.float64) ** 2).sum(1) - 2 * y.astype(np.float32) @ bank.T
    picked = np.einsum("qk,qk->q", y - bank[naive.argmin(1)], y - bank[naive.argmin(1)])
    assert (np.abs(picked - expected) > 1e-9 * expected).any()
    # a bank vector itself: exactly 0, never below
    itself = sc.nearest_sq_distances(bank[::7].astype(np.float64), bank, method=method)
    assert_array_equal(itself, 0.0)


def test_the_search_follows_the_directions_the_bank_spreads_in():
    rng = np.random.default_rng(4)
    flat = rng.standard_normal((400, 3)) @ rng.standard_normal((3, 12))  # 12 values, 3 directions
    flat += 1e-3 * rng.standard_normal(flat.shape)
    bank = lambda v: sc.BankFit(*(np.zeros(12),) * 4, v.astype(np.float32))  # noqa: E731
    assert bank(flat).search == "kdtree"
    assert bank(rng.standard_normal((400, 12))).search == "product"
    assert bank(rng.standard_normal((400, 6))).search == "kdtree"
    y = rng.standard_normal((50, 12)) @ np.eye(12)
    a = sc.nearest_sq_distances(y, bank(flat))
    assert_array_equal(a, sc.nearest_sq_distances(y, bank(flat), method="product"))
    with pytest.raises(UsageError, match="method must be kdtree or product"):
        sc.nearest_sq_distances(y, flat, method="brute")


def test_bank_heat_matches_oracle():
    x = good(12, n=7, n_units=10, k=3)
    part = sc._fit_bank(x, np.arange(7), seed=0)
    expected = oracle.fit_bank(x, seed=0)
    queries = good(13, n=3, n_units=10, k=3)
    assert_close(sc._raw_heat(part, queries, np.arange(3)), oracle.bank_heat(expected, queries))


def test_bank_size_and_its_branches(monkeypatch):
    assert [sc.bank_size(n) for n in (4, 5, 6, 25, 35, 39999, 40005, 10**7)] == [
        1,
        1,
        1,
        2,
        4,
        4000,
        4000,
        4000,
    ]
    # m ≥ N: every cell is the bank, in image-major order, no draw at all
    monkeypatch.setattr(sc, "BANK_FRACTION", 1.0)
    x = good(3, n=5, n_units=4, k=2)
    part = sc._fit_bank(x, np.arange(5), seed=0)
    monkeypatch.setattr(oracle, "bank_size", lambda n: n)
    expected = oracle.fit_bank(x, seed=0)
    assert part.bank.shape == (20, 2)
    assert_allclose(part.bank, expected["bank"], rtol=1e-6)
    assert_allclose(sc._raw_heat(part, x, np.arange(5)), 0.0, atol=1e-12)


def test_pool_branch_draws_30000_cells_and_chooses_among_them():
    n, n_units, k = 5, 6001, 2  # N = 30005 > 30000
    x = good(21, n=n, n_units=n_units, k=k, dtype=np.float32)
    part = sc._fit_bank(x, np.arange(n), seed=4)
    m = sc.bank_size(n * n_units)
    assert part.bank.shape == (m, k) and m == 3000
    pool = np.random.default_rng(5).choice(n * n_units, 30000, replace=False)
    standard = (part.center, part.scale, part.mean, part.std)
    vectors = sc._y_of_cells(x, np.arange(n), pool, standard)
    first = int(np.random.default_rng(4).integers(30000))
    assert_array_equal(part.bank[0], vectors[first].astype(np.float32))
    # every bank vector is a pool vector, each once
    key = {tuple(v): i for i, v in enumerate(vectors.astype(np.float32).tolist())}
    picked = [key[tuple(b)] for b in part.bank.tolist()]
    assert len(set(picked)) == m
    # the greedy's insertion radii never grow and cover the pool at the end
    bank = part.bank.astype(np.float64)
    radii = [min(((bank[:t] - bank[t]) ** 2).sum(1)) for t in range(1, m, 97)]
    assert (np.diff(radii) <= 0).all()
    cover = sc.nearest_sq_distances(vectors, bank).max()
    assert cover <= radii[-1] * (1 + 1e-6)


# -- steps 4–5: folds, calibration, heat, threshold -------------------------------------------


def test_folds_are_i_mod_5():
    assert_array_equal(sc.folds(12), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])


@pytest.mark.parametrize("unit_space", ["position", "shared"])
def test_whole_fit_and_score_match_oracle(unit_space):
    parts = components(30)
    model = fit(parts, unit_space=unit_space, seed=2, quantile=0.9)
    expected = oracle.fit_model(parts, unit_space=unit_space, seed=2, quantile=0.9)
    assert list(model.components) == ["soartc", "stats", "glcm"]
    assert model.n_cells == 9 and model.n_images == 11
    groups = 9 if unit_space == "position" else 1
    for name in parts:
        centre, spread = expected["calibration"][name]
        assert model.components[name].calib_mean.shape == (groups,)
        assert_close(model.components[name].calib_mean, centre)
        assert_close(model.components[name].calib_std, spread)
    assert_close(model.oof_scores, expected["oof_scores"])
    assert model.oof_heat_min == pytest.approx(expected["oof_heat"].min(), rel=RTOL)
    assert model.threshold == pytest.approx(expected["threshold"], rel=RTOL)
    assert model.threshold == np.quantile(model.oof_scores, 0.9)
    queries = {
        name: good(40 + i, n=3, n_units=f.shape[1], k=f.shape[2])
        for i, (name, (f, _, _)) in enumerate(parts.items())
    }
    result = sc.score_cells(model, queries, to_cells={"glcm": upsample})
    heat, terms, score, cell_max = oracle.score(expected, queries)
    assert_close(result.heat, heat)
    for name in parts:
        assert_close(result.terms[name], terms[name])
    assert_close(result.score, score)
    assert_array_equal(result.cell_max, cell_max)
    assert_array_equal(
        result.heat, result.terms["soartc"] + result.terms["stats"] + result.terms["glcm"]
    )


def test_position_and_shared_differ():
    parts = components(31)
    a, b = fit(parts), fit(parts, unit_space="shared")
    assert a.components["soartc"].fit.means.shape == (9, 4)
    assert b.components["soartc"].fit.means.shape == (1, 4)
    assert not np.allclose(a.oof_scores, b.oof_scores)


def test_an_outlier_leaves_the_rest_of_its_fold_alone():
    x = good(14, n=15, n_units=6, k=3)
    y = x.copy()
    y[7] += 25.0  # image 7 is in fold 2, with images 2 and 12
    checked = [("c", x, "gaussian", None), ("b", x, "bank", None)]
    before = sc._out_of_fold(checked, unit_space="position", seed=0, n_cells=6)
    checked = [("c", y, "gaussian", None), ("b", y, "bank", None)]
    after = sc._out_of_fold(checked, unit_space="position", seed=0, n_cells=6)
    for name in ("c", "b"):
        for i in range(15):
            same = np.array_equal(before[name][i], after[name][i])
            assert same == (i in (2, 12)), (name, i)


def test_cell_max_is_the_first_of_tied_cells():
    x = good(15, n=10, n_units=12, k=3)
    model = sc.fit_model({"c": sc.ComponentData(x, "gaussian")}, unit_space="shared")
    query = x[0].copy()
    query[8] = query[3] = 40.0  # equal features in a shared model: equal heat, the largest
    result = sc.score_cells(model, {"c": query})
    assert result.heat[3] == result.heat[8] == result.heat.max()
    assert result.cell_max == 3 and result.score == result.heat[3]


def test_single_image_and_batch_agree():
    parts = components(32)
    model = fit(parts)
    queries = {name: f[:4] for name, (f, _, _) in parts.items()}
    batch = sc.score_cells(model, queries, to_cells={"glcm": upsample})
    for i in range(4):
        one = sc.score_cells(
            model, {name: q[i] for name, q in queries.items()}, to_cells={"glcm": upsample}
        )
        assert_allclose(one.heat, batch.heat[i], rtol=1e-12, atol=1e-12)
        assert one.cell_max == batch.cell_max[i] and isinstance(one.score, float)


def test_a_model_pickles_without_its_search_structures():
    import pickle

    parts = components(36)
    model = fit(parts)
    part = model.components["stats"].fit
    query = {name: f[:2] for name, (f, _, _) in parts.items()}
    a = sc.score_cells(model, query, to_cells={"glcm": upsample})
    assert part.search == "kdtree" and "tree" in part._cache  # built by the first score
    again = pickle.loads(pickle.dumps(model))
    assert again.components["stats"].fit._cache == {}
    b = sc.score_cells(again, query, to_cells={"glcm": upsample})
    assert_array_equal(a.heat, b.heat)


def test_same_seed_same_model_other_seed_other_bank():
    parts = components(33, n=10)
    a, b, c = fit(parts, seed=5), fit(parts, seed=5), fit(parts, seed=6)
    for name in parts:
        fa, fb = a.components[name].fit, b.components[name].fit
        for field_name in fa.__dataclass_fields__:
            if not field_name.startswith("_"):
                assert_array_equal(getattr(fa, field_name), getattr(fb, field_name))
    assert_array_equal(a.oof_scores, b.oof_scores)
    assert a.threshold == b.threshold
    assert not np.array_equal(a.components["stats"].fit.bank, c.components["stats"].fit.bank)
    assert_array_equal(a.components["soartc"].fit.means, c.components["soartc"].fit.means)


def test_scaling_a_feature_changes_nothing():
    x = good(16, n=10, n_units=5, k=3)
    y = x.copy()
    y[..., 1] = 7.0 * y[..., 1] - 3.0
    a = sc.fit_model({"c": sc.ComponentData(x, "bank"), "g": sc.ComponentData(x, "gaussian")})
    b = sc.fit_model({"c": sc.ComponentData(y, "bank"), "g": sc.ComponentData(y, "gaussian")})
    assert_allclose(a.oof_scores, b.oof_scores, rtol=1e-9)
    assert_allclose(a.components["c"].fit.bank, b.components["c"].fit.bank, rtol=1e-5)


def test_inputs_are_never_modified_and_float32_is_accepted():
    parts = components(34)
    copies = {name: f.copy() for name, (f, _, _) in parts.items()}
    model = fit(parts)
    sc.score_cells(model, {name: f[0] for name, f in copies.items()}, to_cells={"glcm": upsample})
    for name, (f, _, _) in parts.items():
        assert_array_equal(f, copies[name])
    assert parts["stats"][0].dtype == np.float32


def test_synthetic_inspection_finds_the_shifted_cell():
    rng = np.random.default_rng(17)
    n, n_units = 40, 49
    parts = {
        "soartc": sc.ComponentData(rng.standard_normal((n, n_units, 6)), "gaussian"),
        "stats": sc.ComponentData(rng.standard_normal((n, n_units, 3)).astype(np.float32), "bank"),
    }
    model = sc.fit_model(parts)
    soartc, stats = rng.standard_normal((n_units, 6)), rng.standard_normal((n_units, 3))
    clean = sc.score_cells(model, {"soartc": soartc, "stats": stats})
    soartc[23] += 4.0
    stats[23] += 4.0
    defect = sc.score_cells(model, {"soartc": soartc, "stats": stats})
    assert defect.score > model.threshold > clean.score
    assert defect.cell_max == 23
    for name in parts:
        assert int(np.argmax(defect.terms[name])) == 23


# -- memory -------------------------------------------------------------------------------------


def test_memory_need_bounds_the_traced_peak():
    n = 30
    rng = np.random.default_rng(18)
    soartc = rng.standard_normal((n, 729, 18))
    stats = rng.standard_normal((n, 729, 6)).astype(np.float32)
    parts = {
        "soartc": sc.ComponentData(soartc, "gaussian"),
        "stats": sc.ComponentData(stats, "bank"),
    }
    need = sc.memory_need(
        n, components={"soartc": (729, 18, np.float64), "stats": (729, 6, np.float32)}
    )
    features = soartc.nbytes + stats.nbytes
    import scipy.spatial  # noqa: F401  (its import is MODULE_BYTES, not traced here)

    tracemalloc.start()
    try:
        sc.fit_model(parts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    need -= sc.MODULE_BYTES  # what the modules add to the resident size, not traced
    assert peak + features <= need
    assert peak + features >= 0.4 * need  # a bound, but not a wild one


def test_memory_need_grows_with_the_images_and_knows_the_scorers():
    shapes = {"soartc": (729, 18, "float64"), "stats": (729, 6, "float32")}
    features = 10000 * 729 * (18 * 8 + 6 * 4)
    sizes = [sc.memory_need(n, components=shapes) for n in (0, 1000, 5000, 10000)]
    assert sizes == sorted(sizes)
    # at scale the features are held once: the rest is less than half of them
    assert features < sizes[-1] < 1.5 * features < 24 * 2**30
    shared = sc.memory_need(10000, components=shapes, unit_space="shared")
    assert shared > sizes[-1] + 10000 * 729 * 18 * 8  # the shared Gaussian's z
    with pytest.raises(UsageError, match="unknown scorer"):
        sc.memory_need(10, components={"other": (9, 2, "float32")})
    assert sc.memory_need(10, components={"other": (9, 2, "float32", "bank")}) > 0
    with pytest.raises(UsageError, match="give n_cells"):
        sc.memory_need(10, components={"soartc": (9, 2, "f8"), "glcm": (4, 16, "f4")})


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 4])
def test_fit_needs_five_good_images(n):
    with pytest.raises(UsageError, match=f"fit needs at least 5 good images, got {n}$"):
        sc.fit_model({"c": sc.ComponentData(np.zeros((n, 3, 2)), "bank")})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"unit_space": "cell"}, "unit_space must be one of position, shared"),
        ({"seed": -1}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"quantile": 0.0}, "quantile"),
        ({"meta": {"x": float("nan")}}, "meta must be JSON-ready"),
    ],
)
def test_fit_validates_its_settings(kwargs, match):
    with pytest.raises(UsageError, match=match):
        sc.fit_model({"c": sc.ComponentData(good(1), "bank")}, **kwargs)


def test_fit_validates_components():
    x = good(1)
    with pytest.raises(UsageError, match="at least one component"):
        sc.fit_model({})
    with pytest.raises(UsageError, match="scorer of c must be one of gaussian, bank"):
        sc.fit_model({"c": sc.ComponentData(x, "knn")})
    with pytest.raises(UsageError, match="component name"):
        sc.fit_model({"C.npy": sc.ComponentData(x, "bank")})
    with pytest.raises(UsageError, match="real array"):
        sc.fit_model({"c": sc.ComponentData(x.astype(complex), "bank")})
    with pytest.raises(UsageError, match=r"\(n, N_c, k_c\)"):
        sc.fit_model({"c": sc.ComponentData(x[..., 0], "bank")})
    with pytest.raises(UsageError, match="same images: d has 10, not 11"):
        sc.fit_model({"c": sc.ComponentData(x, "bank"), "d": sc.ComponentData(x[1:], "bank")})
    with pytest.raises(UsageError, match="d has 4 cells per image, not the 6 of c: give it"):
        sc.fit_model({"c": sc.ComponentData(x, "bank"), "d": sc.ComponentData(x[:, :4], "bank")})
    with pytest.raises(
        UsageError, match=r"to_cells of component d must map shape \(1, 6\) to \(1, N_cells\)"
    ):
        sc.fit_model({"d": sc.ComponentData(x, "bank", lambda h: h[..., None])})
    with pytest.raises(UsageError, match="to_cells of component d failed: division by zero"):
        sc.fit_model({"d": sc.ComponentData(x, "bank", lambda h: 1 / 0 if h.size else h)})


def test_score_validates_its_features():
    parts = components(35)
    model = fit(parts)
    one = {name: f[0] for name, (f, _, _) in parts.items()}
    cells = {"to_cells": {"glcm": upsample}}
    with pytest.raises(UsageError, match="missing glcm"):
        sc.score_cells(model, {k: v for k, v in one.items() if k != "glcm"}, **cells)
    with pytest.raises(UsageError, match="unknown deep"):
        sc.score_cells(model, {**one, "deep": one["stats"]}, **cells)
    with pytest.raises(UsageError, match=r"features of stats must be \(9, 3\)"):
        sc.score_cells(model, {**one, "stats": one["stats"][:, :2]}, **cells)
    with pytest.raises(UsageError, match="all one image"):
        sc.score_cells(model, {**one, "stats": one["stats"][None]}, **cells)
    with pytest.raises(UsageError, match="glcm has 4 units per image, not 9 cells"):
        sc.score_cells(model, one)
    with pytest.raises(UsageError, match="finite values"):
        sc.score_cells(model, one, to_cells={"glcm": lambda h: upsample(h) - 1.0})
