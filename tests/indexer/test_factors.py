"""The low-rank item-item model (indexer/factors.py): the fold-in algebra on factors small enough
to invert by hand, the neighbour cut, the ALS fit's contract and the build step's switches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.factors import (
    FactorsConfig,
    build_factor_neighbours,
    factor_neighbours,
    fit_als,
    fit_item_factors,
    fold_in_weights,
)

# Items 0 and 1 share the first factor, item 2 has the second: V^T V = diag(2, 1), so with
# mu = 1 the fold-in inverse is diag(1/3, 1/2) and S = V diag(1/3, 1/2) V^T is
# [[1/3, 1/3, 0], [1/3, 1/3, 0], [0, 0, 1/2]].
V = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)


def test_fold_in_weights_are_v_times_the_ridge_inverse():
    w = fold_in_weights(V, 1.0)
    assert w.dtype == np.float32
    assert w == pytest.approx(np.array([[1 / 3, 0], [1 / 3, 0], [0, 1 / 2]]), abs=1e-6)
    # a user who took item 0 is folded in to u = (1/3, 0) and scores items 0, 1, 2 by 1/3, 1/3, 0
    assert (np.array([1, 0, 0]) @ w) @ V.T == pytest.approx([1 / 3, 1 / 3, 0], abs=1e-6)
    # a stronger ridge shrinks every score: mu = 2 gives diag(1/4, 1/3)
    assert fold_in_weights(V, 2.0)[0] == pytest.approx([1 / 4, 0], abs=1e-6)


def test_neighbours_are_the_positive_off_diagonal_entries_in_catalogue_rows():
    # The three model items sit at catalogue rows 1, 4, 5 of 6; no item is its own neighbour and
    # the zero entries (items 0/1 against item 2) are not links.
    t = factor_neighbours(V, np.array([1, 4, 5]), 6, FactorsConfig(fold_in=1.0, top_n=5))
    assert np.diff(t.indptr).tolist() == [0, 1, 0, 0, 1, 0]
    assert t.rows.tolist() == [4, 1]
    assert t.scores == pytest.approx([1 / 3, 1 / 3], abs=1e-6)


def test_neighbours_keep_the_top_n_best_first():
    v = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]], np.float32)
    s = fold_in_weights(v, 0.5) @ v.T
    t = factor_neighbours(v, np.arange(4), 4, FactorsConfig(fold_in=0.5, top_n=2))
    for i in range(4):
        others = [j for j in np.argsort(-s[i], kind="stable") if j != i and s[i, j] > 0][:2]
        got = t.rows[t.indptr[i] : t.indptr[i + 1]].tolist()
        assert got == others
        assert t.scores[t.indptr[i] : t.indptr[i + 1]] == pytest.approx(s[i, others], rel=1e-5)


def _taste_matrix() -> sp.csr_matrix:
    # Two tastes: items 0-3 and items 4-7; every user takes three items of one taste.
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(200):
        taste = u % 2
        for i in rng.choice(4, size=3, replace=False):
            rows.append(u)
            cols.append(4 * taste + i)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(200, 8))


def test_the_als_fit_is_deterministic_and_links_items_of_one_taste():
    config = FactorsConfig(factors=2, iterations=10)
    x = _taste_matrix()
    a, b = fit_item_factors(x, config), fit_item_factors(x, config)
    assert a.shape == (8, 2)
    assert a.dtype == np.float32
    assert np.array_equal(a, b)
    t = factor_neighbours(a, np.arange(8), 8, FactorsConfig(top_n=3))
    for i in range(8):
        taste = set(range(4 * (i // 4), 4 * (i // 4) + 4)) - {i}
        assert set(t.rows[t.indptr[i] : t.indptr[i + 1]].tolist()) == taste


def test_the_build_step_reports_and_turns_off():
    x = _taste_matrix()
    table, report = build_factor_neighbours(x, FactorsConfig(factors=2, top_n=3))
    assert table is not None
    assert table.n_items == 8
    assert report["method"] == "als-fold-in"
    assert report["items"] == 8
    assert report["links"] == len(table.rows) == 24
    # off: top_n 0; below two items with enough users: none
    assert build_factor_neighbours(x, FactorsConfig(top_n=0))[0] is None
    one = sp.csr_matrix(np.array([[1, 0], [1, 0]], np.float32))
    table, report = build_factor_neighbours(one, FactorsConfig(min_users=2))
    assert table is None
    assert report["items"] == 1
    # two items are enough for a table: each may link to the other
    two = sp.csr_matrix(np.array([[1, 1], [1, 1], [1, 0]], np.float32))
    table, report = build_factor_neighbours(two, FactorsConfig(factors=1, min_users=2))
    assert table is not None
    assert report["items"] == 2
    assert report["links"] == len(table.rows)
    assert set(report) == {"method", "config", "items", "links", "seconds"}
    assert report["seconds"] >= 0


def test_only_the_items_with_most_users_are_modelled():
    x = _taste_matrix()
    table, report = build_factor_neighbours(x, FactorsConfig(factors=2, top_n=3, max_items=4))
    assert report["items"] == 4
    modelled = np.flatnonzero(np.diff(table.indptr))
    users = np.diff(x.tocsc().indptr)
    assert set(modelled.tolist()) <= set(np.argsort(-users, kind="stable")[:4].tolist())


def test_settings_are_checked_and_the_defaults_pinned():
    c = FactorsConfig()
    assert (c.factors, c.regularization, c.iterations, c.alpha, c.fold_in) == (
        64,
        0.05,
        15,
        1.0,
        1.0,
    )
    assert (c.max_items, c.min_users, c.top_n, c.seed) == (50_000, 2, 100, 0)
    for bad in (
        {"factors": 0},
        {"iterations": 0},
        {"max_items": 0},
        {"min_users": 0},
        {"regularization": -1.0},
        {"alpha": -1.0},
        {"fold_in": 0.0},
        {"top_n": -1},
    ):
        with pytest.raises(ValueError, match="invalid factor settings"):
            FactorsConfig(**bad)
    # the smallest settings that make sense are accepted
    FactorsConfig(
        factors=1, iterations=1, max_items=1, min_users=1, regularization=0.0, alpha=0.0, top_n=0
    )


def test_index_inspect_names_the_learned_tables_and_skips_them_when_off():
    from indexer.cli import summarise

    manifest = {
        "version": "v1",
        "format_version": 1,
        "items": 8,
        "dim": 4,
        "category_shards": {},
        "shards": [],
        "encoders": [],
        "fusion": {"parts": []},
        "ease": {"items": 8, "lambda": 50.0, "links": 24},
        "factors": build_factor_neighbours(_taste_matrix(), FactorsConfig(factors=2, top_n=3))[1],
    }
    lines = summarise(manifest, {})
    assert "learned item-item (EASE): 8 items, lambda 50, 24 neighbour links" in lines
    assert "low-rank item-item (ALS fold-in): 8 items, 2 factors, 24 neighbour links" in lines
    manifest["factors"] = build_factor_neighbours(_taste_matrix(), FactorsConfig(top_n=0))[1]
    assert not any("low-rank" in line for line in summarise(manifest, {}))


def test_the_fit_hands_implicit_the_confidences_and_settings_and_returns_both_factor_sets(
    monkeypatch,
):
    import implicit.cpu.als as als

    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen["kwargs"] = kwargs

        def fit(self, confidence, show_progress):
            seen["confidence"] = confidence.toarray()
            self.user_factors = np.ones((confidence.shape[0], 3), np.float64)
            self.item_factors = np.full((confidence.shape[1], 3), 2.0, np.float64)

    monkeypatch.setattr(als, "AlternatingLeastSquares", Recorder)
    x = sp.csr_matrix(np.array([[2.0, 0.0], [0.0, 4.0], [1.0, 1.0]], np.float32))
    config = FactorsConfig(factors=3, regularization=0.5, iterations=7, alpha=0.25, seed=9)
    users, items = fit_als(x, config)
    # confidence 1 + alpha * w where w > 0; absent pairs stay absent
    assert seen["confidence"] == pytest.approx(np.array([[1.5, 0.0], [0.0, 2.0], [1.25, 1.25]]))
    kwargs = seen["kwargs"]
    assert (kwargs["factors"], kwargs["regularization"], kwargs["iterations"]) == (3, 0.5, 7)
    assert kwargs["random_state"] == 9
    assert users.shape == (3, 3)
    assert items.shape == (2, 3)
    assert users.dtype == items.dtype == np.float32
    assert (items == 2.0).all()
    assert x.toarray()[0, 0] == 2.0  # the caller's matrix is not changed
