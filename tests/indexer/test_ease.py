"""EASE (indexer/ease.py) and the validation split it chooses lambda on (indexer/holdout.py), on
matrices small enough to solve by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from indexer.ease import (
    EaseConfig,
    build_ease_neighbours,
    choose_lambda,
    ease_neighbours,
    fit_ease,
    model_items,
)
from indexer.holdout import holdout


def _binary(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(rows), n_items))


def test_two_items_give_the_closed_form_weights():
    # item 0: 3 users, item 1: 2 users, both: 2 users. G = [[3+l, 2], [2, 2+l]], so
    # B_01 = c / (a + l) = 2 / 4 and B_10 = c / (b + l) = 2 / 3 at l = 1; the diagonal is zero.
    x = _binary([[0, 1], [0, 1], [0]], 2)
    model = fit_ease(x, 1.0, np.array([0, 1]))
    assert model.weights == pytest.approx(np.array([[0.0, 0.5], [2 / 3, 0.0]]), abs=1e-6)
    # a user who took item 0 scores item 1 by B_01
    assert model.scores(_binary([[0]], 2), 2) == pytest.approx(np.array([[0.0, 0.5]]))


def test_weights_agree_with_a_float64_general_inverse():
    x = sp.random(400, 60, density=0.08, format="csr", random_state=3)
    x.data[:] = 1.0
    g = (x.T @ x).toarray() + 20.0 * np.eye(60)
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert fit_ease(x, 20.0, np.arange(60)).weights == pytest.approx(b, abs=1e-5)


def test_model_items_keeps_items_with_enough_users_most_used_first_then_sorts_them():
    # users per item: 0 -> 1, 1 -> 3, 2 -> 2, 3 -> 3, 4 -> 0
    x = _binary([[0, 1, 3], [1, 2, 3], [1, 2, 3]], 5)
    assert model_items(x, 2, EaseConfig.max_items).tolist() == [1, 2, 3]
    assert model_items(x, 2, 2).tolist() == [1, 3]
    assert model_items(x, 1, 1).tolist() == [1]  # tie: lower row


def test_neighbours_are_the_positive_weights_best_first_in_catalogue_rows():
    x = _binary([[1, 3], [1, 3], [1, 3, 4], [3, 4], [4]], 5)
    model = fit_ease(x, 1.0, np.array([1, 3, 4]))
    n = ease_neighbours(model, 5, top_n=2)
    assert n.n_items == 5
    assert n.problem(5) is None
    for row in (0, 2):  # outside the model: no neighbours
        assert len(n.of(row)[0]) == 0
    b = model.weights
    rows, scores = n.of(1)  # model index 0
    expected = sorted(
        ((float(b[0, j]), [1, 3, 4][j]) for j in (1, 2) if b[0, j] > 0), key=lambda t: -t[0]
    )
    assert rows.tolist() == [r for _, r in expected]
    assert scores == pytest.approx([s for s, _ in expected])
    assert all(s > 0 for s in n.scores)
    assert len(ease_neighbours(model, 5, top_n=1).of(3)[0]) == 1


def test_lambda_is_chosen_by_validation_recall_and_the_table_says_what_each_scored():
    rng = np.random.default_rng(0)
    # 300 users, 40 items in 8 blocks of 5: each user takes 4 items of one block
    rows = [sorted(rng.choice(5, 4, replace=False) + 5 * (u % 8)) for u in range(300)]
    x = _binary([list(map(int, r)) for r in rows], 40)
    config = EaseConfig(lambdas=(1.0, 10_000.0))
    lam, table = choose_lambda(x, config)
    assert set(table) == {"1", "10000"}
    assert lam == max((1.0, 10_000.0), key=lambda v: table[f"{v:g}"])
    assert table["1"] > 0.5  # the block structure is learnable


def test_too_few_users_for_a_split_take_the_middle_of_the_grid():
    x = _binary([[0, 1, 2]] * 5, 3)
    assert choose_lambda(x, EaseConfig(lambdas=(1.0, 2.0, 3.0))) == (2.0, {})


def test_the_build_step_reports_its_choice_and_turns_off_below_two_items():
    x = _binary([[0, 1], [0, 1], [0]], 2)
    neighbours, report = build_ease_neighbours(x, EaseConfig(lambda_=1.0, min_users=1))
    assert report["lambda"] == 1.0
    assert report["items"] == 2
    assert report["links"] == 2
    assert neighbours.of(0)[0].tolist() == [1]
    none, report = build_ease_neighbours(x, EaseConfig(min_users=3))
    assert none is None
    assert report["items"] == 1


def test_holdout_hides_one_in_five_of_each_chosen_users_items_and_at_least_one():
    x = _binary([list(range(10))] * 15 + [[0, 1, 2]] * 10 + [[0, 1]] * 5, 12)
    split = holdout(x, users=100, seed=1)
    assert len(split.users) == 25  # only users with 3+ items
    lengths = np.diff(x.indptr)
    for u, hidden in zip(split.users, split.hidden):
        assert len(hidden) == max(1, lengths[u] // 5) == len(set(hidden.tolist()))
        visible = set(split.train[u].indices.tolist())
        assert visible.isdisjoint(hidden.tolist())
        assert len(visible) + len(hidden) == lengths[u]
    assert split.train[25:].nnz == x[25:].nnz  # users not chosen keep everything
    assert holdout(x[:19], seed=1) is None  # fewer than 20 users qualify
    again = holdout(x, users=100, seed=1)
    assert [h.tolist() for h in again.hidden] == [h.tolist() for h in split.hidden]
    other = holdout(x, users=100, seed=2)
    assert [h.tolist() for h in other.hidden] != [h.tolist() for h in split.hidden]


def test_validation_recall_counts_hidden_items_in_the_top_k_of_what_the_user_has_not_seen():
    x = _binary([list(range(5))] * 20, 8)
    split = holdout(x, seed=0)
    # a scorer that puts every hidden item of every user first scores 1; one that ranks only
    # items nobody took scores 0
    hidden_first = split.recall_at(
        lambda rows: np.tile(np.array([5, 5, 5, 5, 5, 0, 0, 0]), (rows.shape[0], 1))
    )
    assert hidden_first == 1.0
    assert (
        split.recall_at(
            lambda rows: np.tile(np.array([0, 0, 0, 0, 0, 1, 1, 1.0]), (rows.shape[0], 1))
        )
        == 0.0
    )


def test_neighbours_cut_in_blocks_equal_neighbours_cut_at_once():
    x = sp.random(300, 40, density=0.1, format="csr", random_state=5)
    x.data[:] = 1.0
    model = fit_ease(x, 5.0, np.arange(3, 40))
    whole, pieces = ease_neighbours(model, 45, 7), ease_neighbours(model, 45, 7, block=4)
    assert whole.indptr.tolist() == pieces.indptr.tolist()
    assert whole.rows.tolist() == pieces.rows.tolist()
    assert whole.scores.tolist() == pieces.scores.tolist()


def test_settings_are_checked_and_the_defaults_pinned():
    assert EaseConfig() == EaseConfig(
        lambda_=None,
        lambdas=(2.0, 10.0, 50.0, 200.0, 1000.0, 5000.0),
        max_items=12_000,
        min_users=2,
        top_n=100,
    )
    for bad in (
        {"lambda_": 0.0},
        {"lambdas": (10.0, 0.0)},
        {"lambdas": ()},
        {"max_items": 0},
        {"min_users": 0},
        {"top_n": -1},
    ):
        with pytest.raises(ValueError, match="EASE"):
            EaseConfig(**bad)
    assert EaseConfig(top_n=0).top_n == 0  # the stage off is allowed


def test_a_lambda_that_breaks_positive_definiteness_is_a_clear_error():
    x = _binary([[0, 1], [0, 1], [0]], 2)
    with pytest.raises(ValueError, match="not positive definite"):
        fit_ease(x, -10.0, np.array([0, 1]))
    assert fit_ease(x, 3.0, np.array([0, 1])).lambda_ == 3.0


def test_neighbours_are_exactly_the_top_weights_of_each_row():
    x = sp.random(500, 60, density=0.1, format="csr", random_state=7)
    x.data[:] = 1.0
    model = fit_ease(x, 10.0, np.arange(60))
    n = ease_neighbours(model, 60, top_n=5)
    for i in range(60):
        row = model.weights[i]
        expected = [j for j in np.argsort(-row, kind="stable")[:5] if row[j] > 0]
        assert sorted(n.of(i)[0].tolist()) == sorted(expected)
        assert n.of(i)[1] == pytest.approx(row[n.of(i)[0]])


def test_ties_in_validation_go_to_the_smaller_lambda_and_the_middle_of_a_longer_grid():
    # everyone took the same three items: whatever lambda, the one hidden item is the only one
    # left to recommend, so every lambda scores 1.0
    x = _binary([[0, 1, 2]] * 30, 3)
    lam, table = choose_lambda(x, EaseConfig(lambdas=(5.0, 1.0, 20.0), min_users=1))
    assert set(table.values()) == {1.0}
    assert lam == 1.0
    few = _binary([[0, 1, 2]] * 5, 3)
    assert choose_lambda(few, EaseConfig(lambdas=(1.0, 2.0, 3.0, 4.0)))[0] == 3.0


def test_the_build_step_chooses_lambda_on_the_data_when_not_told():
    rng = np.random.default_rng(1)
    rows = [sorted(rng.choice(5, 4, replace=False) + 5 * (u % 6)) for u in range(200)]
    x = _binary([list(map(int, r)) for r in rows], 30)
    neighbours, report = build_ease_neighbours(x, EaseConfig(lambdas=(1.0, 5.0)))
    assert set(report) == {
        "method",
        "config",
        "items",
        "lambda",
        "validation_recall_at_10",
        "links",
        "seconds",
    }
    assert report["method"] == "ease"
    assert report["lambda"] in (1.0, 5.0)
    assert set(report["validation_recall_at_10"]) == {"1", "5"}
    assert report["links"] == len(neighbours.rows) > 0
    off = build_ease_neighbours(x, EaseConfig(top_n=0))
    assert off[0] is None
    assert off[1] == {
        "method": "ease",
        "config": dataclasses.asdict(EaseConfig(top_n=0)),
        "items": 30,
    }


def test_validation_recall_never_counts_visible_items_and_divides_by_what_was_hidden():
    # 30 items; each user took items 0-9 (2 hidden). The scorer ranks every taken item above the
    # rest, visible ones highest: visible items must not take the top-k places.
    x = _binary([list(range(10))] * 25, 30)
    split = holdout(x, seed=3)

    def taken_first(rows):
        s = np.zeros((rows.shape[0], 30))
        s[:, :10] = 1.0
        s += rows.toarray() * 5.0  # visible items score highest
        return s

    assert split.recall_at(taken_first, k=2) == 1.0
    # a scorer that finds exactly one of the two hidden items per user scores 0.5

    def one_of_two(rows):
        s = np.zeros((rows.shape[0], 30))
        for r, u in enumerate(split.users[: rows.shape[0]]):
            s[r, split.hidden[list(split.users).index(u)][0]] = 1.0
        return s

    assert holdout(x, seed=3).recall_at(one_of_two, k=10) == 0.5
