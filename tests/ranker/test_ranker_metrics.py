"""Ranking metrics, calibration tables, gain shares and isotonic calibration, each against values
computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ranker.calibration import TIE_EPS, Calibration, fit_isotonic, pool_adjacent_violators
from ranker.metrics import (
    auc,
    calibration_table,
    gain_shares,
    positions_in_decision,
    ranking_metrics,
)

# Decision 1: scores .9 .8 .7 .1, positives at positions 1 and 3 (0-based).
# Decision 2: no positive (left out of the mean). Decision 3: its one positive first.
DECISIONS = np.array([1, 1, 1, 1, 2, 2, 3, 3])
ITEMS = np.array(["a", "b", "c", "d", "a", "b", "x", "y"])
SCORES = np.array([0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.3, 0.2])
LABELS = np.array([0, 1, 0, 1, 0, 0, 1, 0])


def test_positions_follow_score_then_item_id_within_each_decision():
    shuffled = np.array([3, 0, 7, 5, 1, 6, 2, 4])
    positions = positions_in_decision(DECISIONS[shuffled], ITEMS[shuffled], SCORES[shuffled])
    assert positions.tolist() == [3, 0, 1, 1, 1, 0, 2, 0]
    tied = positions_in_decision(np.array([5, 5, 5]), np.array(["c", "a", "b"]), np.zeros(3))
    assert tied.tolist() == [2, 0, 1]


def test_ndcg_and_recall_by_hand():
    # Decision 1: DCG = 1/log2(3) + 1/log2(5); IDCG (2 positives) = 1 + 1/log2(3).
    ndcg_1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_1 == pytest.approx(0.650921, abs=1e-6)
    at_10 = ranking_metrics(DECISIONS, ITEMS, SCORES, LABELS, k=10)
    assert at_10 == {
        "ndcg": pytest.approx((ndcg_1 + 1.0) / 2),
        "recall": pytest.approx(1.0),
        "decisions": 2,
    }
    # k = 2: decision 1 keeps one positive of two: DCG 1/log2(3), IDCG 1 + 1/log2(3).
    at_2 = ranking_metrics(DECISIONS, ITEMS, SCORES, LABELS, k=2)
    ndcg_1_at_2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert at_2["ndcg"] == pytest.approx((ndcg_1_at_2 + 1.0) / 2)
    assert at_2["recall"] == pytest.approx((0.5 + 1.0) / 2)
    # k = 1: decision 1's first item is a negative.
    at_1 = ranking_metrics(DECISIONS, ITEMS, SCORES, LABELS, k=1)
    assert (at_1["ndcg"], at_1["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))


def test_ideal_dcg_is_capped_at_k_positives():
    # 3 positives, k = 2, the best order: NDCG 1, Recall 2/3.
    scores, labels = np.array([4, 3, 2, 1.0]), np.array([1, 1, 1, 0])
    got = ranking_metrics(np.zeros(4), np.array(list("abcd")), scores, labels, k=2)
    assert got["ndcg"] == pytest.approx(1.0)
    assert got["recall"] == pytest.approx(2 / 3)


def test_equal_scores_are_ordered_by_item_id():
    ids, items, scores = np.array([7, 7]), np.array(["b", "a"]), np.array([0.5, 0.5])
    assert ranking_metrics(ids, items, scores, np.array([0, 1]))["ndcg"] == pytest.approx(1.0)
    assert ranking_metrics(ids, items, scores, np.array([1, 0]))["ndcg"] == pytest.approx(
        1 / math.log2(3)
    )


def test_no_positive_anywhere_gives_none():
    assert ranking_metrics(DECISIONS, ITEMS, SCORES, np.zeros(8)) == {
        "ndcg": None,
        "recall": None,
        "decisions": 0,
    }


def test_auc_by_hand():
    # Positives .35 and .8 against negatives .1 and .4: 3 of 4 pairs in order.
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)  # a tie is half
    # Ties among three: positive .5 ties one negative, beats one: (1 + 0.5) / 2.
    assert auc(np.array([0.2, 0.5, 0.5]), np.array([0, 0, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.3, 0.2]), np.array([1, 1])) is None
    assert auc(np.array([0.3, 0.2]), np.array([0, 0])) is None


def test_calibration_table_by_hand():
    table = calibration_table(
        np.array([0.3, 0.1, 0.3, 0.1]), np.array([1, 0, 0, 0]), bins=2, min_positives=1
    )
    assert table["bins"] == [
        {
            "mean_predicted": pytest.approx(0.1),
            "observed": 0.0,
            "count": 2,
            "positives": 0,
            "relative_error": None,
        },
        {
            "mean_predicted": pytest.approx(0.3),
            "observed": 0.5,
            "count": 2,
            "positives": 1,
            "relative_error": pytest.approx(0.4),
        },
    ]
    assert table["max_relative_error"] == pytest.approx(0.4)
    assert table["predicted_rate"] == pytest.approx(0.2)
    assert table["observed_rate"] == 0.25
    sparse = calibration_table(np.array([0.3, 0.1, 0.3, 0.1]), np.array([1, 0, 0, 0]), 2, 2)
    assert sparse["max_relative_error"] is None
    assert sparse["min_positives"] == 2


def test_calibration_table_bins_are_equal_count_deciles():
    p = np.linspace(0.0, 1.0, 1000)
    table = calibration_table(p, (p > 0.5).astype(int))
    assert [b["count"] for b in table["bins"]] == [100] * 10
    assert [b["positives"] for b in table["bins"]] == [0] * 5 + [100] * 5


def test_gain_shares_by_hand():
    got = gain_shares({"click": np.array([3.0, 1.0]), "cart": np.array([0.0, 2.0])}, ["x", "y"])
    assert got["heads"] == {"click": {"x": 0.75, "y": 0.25}, "cart": {"x": 0.0, "y": 1.0}}
    assert got["combined"] == [
        {"feature": "y", "share": pytest.approx(0.625)},
        {"feature": "x", "share": pytest.approx(0.375)},
    ]
    assert gain_shares({"h": np.zeros(2)}, ["x", "y"])["heads"]["h"] == {"x": 0.0, "y": 0.0}


def test_pool_adjacent_violators_by_hand():
    # y = 1 0 1 0 0 1: (1,0) pool to .5; (.5, 1) in order; 1 then 0 pool to .5, which pools with
    # the .5 before (4 rows, .5); the next 0 pools in: (2 + 0) / 5 = .4; the last 1 stays.
    means, weights, sizes = pool_adjacent_violators(np.array([1, 0, 1, 0, 0, 1]))
    assert means.tolist() == pytest.approx([0.4, 1.0])
    assert weights.tolist() == [5.0, 1.0]
    assert sizes.tolist() == [5, 1]
    assert np.repeat(means, sizes).tolist() == pytest.approx([0.4] * 5 + [1.0])
    # Weighted: .8 (weight 1) then .2 (weight 3) pool to (.8 + .6) / 4 = .35.
    means, weights, sizes = pool_adjacent_violators(np.array([0.8, 0.2]), np.array([1.0, 3.0]))
    assert means.tolist() == pytest.approx([0.35])
    assert weights.tolist() == [4.0]
    # Already increasing: nothing pools; equal neighbours do (block means strictly increase).
    assert pool_adjacent_violators(np.array([0.1, 0.2, 0.3]))[2].tolist() == [1, 1, 1]
    assert pool_adjacent_violators(np.array([0.2, 0.2, 0.3]))[2].tolist() == [2, 1]


def test_isotonic_fit_places_knots_at_block_centres():
    scores = np.array([0.6, 0.1, 0.3, 0.2, 0.5, 0.4])
    labels = np.array([1, 1, 1, 0, 0, 0])  # in score order: 1 0 1 0 0 1, as above
    fitted = fit_isotonic(scores, labels)
    assert fitted.x.tolist() == pytest.approx([0.3, 0.6])  # mean of .1 ... .5, then .6
    assert fitted.y.tolist() == pytest.approx([0.4, 1.0])
    assert (fitted.identity, fitted.rows, fitted.positives) == (False, 6, 3)
    # Between knots: linear; beyond them: flat; then the eps mix with the raw score.
    applied = fitted.apply(np.array([0.45, 0.0, 0.9]))
    expected = (1 - TIE_EPS) * np.array([0.7, 0.4, 1.0]) + TIE_EPS * np.array([0.45, 0.0, 0.9])
    assert applied == pytest.approx(expected, abs=1e-12)


def test_equal_scores_are_pooled_before_fitting():
    fitted = fit_isotonic(np.array([0.2, 0.5, 0.2]), np.array([1, 1, 0]))
    assert fitted.x.tolist() == pytest.approx([0.2, 0.5])
    assert fitted.y.tolist() == pytest.approx([0.5, 1.0])


def test_calibration_keeps_the_order_of_distinct_scores():
    rng = np.random.default_rng(3)
    scores = rng.random(2000)
    fitted = fit_isotonic(scores, rng.random(2000) < scores**2)
    assert np.all(np.diff(fitted.x) > 0)
    assert np.all(np.diff(fitted.y) >= 0)
    grid = np.sort(rng.random(5000))
    calibrated = fitted.apply(grid)
    assert np.all(np.diff(calibrated) > 0)  # strictly, also beyond the end knots
    assert calibrated.min() >= 0
    assert calibrated.max() <= 1
    assert np.max(np.abs(calibrated - np.interp(grid, fitted.x, fitted.y))) <= TIE_EPS


def test_no_positive_or_no_negative_gives_identity_and_says_so():
    none = fit_isotonic(np.array([0.2, 0.7]), np.array([0, 0]))
    assert none.identity
    assert "no positive" in none.note
    assert none.rows == 2
    assert none.apply(np.array([0.2, 1.5, -1.0])).tolist() == [0.2, 1.0, 0.0]
    assert "no negative" in fit_isotonic(np.array([0.2, 0.7]), np.array([1, 1])).note


def test_calibration_round_trips_through_the_manifest_and_refuses_bad_knots():
    fitted = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]))
    again = Calibration.from_manifest(fitted.to_manifest())
    grid = np.linspace(0, 1, 11)
    assert np.array_equal(again.apply(grid), fitted.apply(grid))
    assert again.note == fitted.note
    identity = Calibration.identity_map("why", 3, 0)
    assert Calibration.from_manifest(identity.to_manifest()).identity
    base = fitted.to_manifest()
    assert Calibration.from_manifest({**base, "x": [0.1, 0.2], "y": [0.2, 0.5]}).y.tolist() == [
        0.2,
        0.5,
    ]
    knots = "not increasing in x"
    bad = [
        ({**base, "x": [0.1, 0.2], "y": [0.6, 0.5]}, knots),  # decreasing
        ({**base, "x": [0.3, 0.3], "y": [0.1, 0.2]}, knots),  # not increasing
        ({**base, "x": [0.1, 0.2], "y": [0.5, 1.5]}, knots),  # not a probability
        ({**base, "x": [0.1], "y": [0.1, 0.2]}, r"shapes \(1,\) and \(2,\)"),
        ({**base, "x": [], "y": []}, r"shapes \(0,\) and \(0,\)"),  # no knot
        ({**base, "method": "platt"}, "unknown calibration method 'platt'"),
        ({**base, "tie_eps": 0.1}, "calibration mixes eps 0.1"),
    ]
    for entry, message in bad:
        with pytest.raises(ValueError, match=message):
            Calibration.from_manifest(entry)


def test_summary_lines_show_model_blend_auc_and_calibration_per_objective():
    from ranker.report import summary_lines

    def figures(model: float | None) -> dict:
        return {
            "decisions_with_positive": 1234,
            "ndcg@10": {"model": model, "blend": 0.25},
            "recall@10": {"model": 0.5, "blend": 0.125},
            "auc": {"model": 0.75, "blend": 0.5},
            "calibration": {"max_relative_error": None},
        }

    metrics = {"k": 10, "click": figures(0.6), "cart": figures(0.4), "purchase": figures(None)}
    lines = summary_lines(metrics, indent="")
    assert lines[0].split() == [
        "objective", "NDCG@10", "(blend)", "Recall@10", "(blend)", "AUC", "max", "cal.", "err",
        "decisions",
    ]  # fmt: skip
    assert lines[1].split() == ["click", "0.600", "0.250", "0.500", "0.125", "0.750", "-", "1,234"]
    assert lines[3].split()[:2] == ["purchase", "-"]
    assert len(lines) == 4


def test_the_ndcg_gain_over_the_blend_by_hand_and_when_it_helps():
    from ranker.metrics import helps, ndcg_gain

    # decision 1: x (positive) and y; the model puts x first (NDCG 1), the blend y (1 / log2 3).
    # decision 2: both put the positive z first. Gains 0.3691 and 0: mean 0.1845; a resample of
    # two decisions has mean 0, 0.1845 or 0.3691, so the interval runs from 0 to 0.3691.
    decisions = np.array([1, 1, 2, 2])
    items = np.array(["x", "y", "z", "w"])
    model = np.array([0.9, 0.1, 0.8, 0.2])
    blend = np.array([0.1, 0.9, 0.8, 0.2])
    labels = np.array([1, 0, 1, 0])
    gain = ndcg_gain(decisions, items, model, blend, labels, k=10)
    one = 1 - 1 / math.log2(3)
    assert gain["mean"] == pytest.approx(one / 2)
    assert (gain["low"], gain["high"]) == pytest.approx((0.0, one))
    metrics = {"k": 10, "click": {"ndcg_gain@10": gain}}
    assert helps(metrics, {"click": 1.0})[0] is False  # the interval touches 0
    # forty decisions like the first: every resample gains
    many = np.repeat(np.arange(40), 2)
    gain = ndcg_gain(
        many,
        np.tile(["x", "y"], 40),
        np.tile([0.9, 0.1], 40),
        np.tile([0.1, 0.9], 40),
        np.tile([1, 0], 40),
    )
    assert gain["low"] == pytest.approx(one)
    metrics = {
        "k": 10,
        "click": {"ndcg_gain@10": gain},
        "purchase": {"ndcg_gain@10": {"mean": -0.1, "low": -0.2, "high": 0.0}},
    }
    verdict, why = helps(metrics, {"click": 1.0, "purchase": 0.5})
    assert verdict is True
    assert why.startswith("click NDCG@10 +0.3691 over the blend [+0.3691, +0.3691]")
    assert helps(metrics, {"click": 0.2, "purchase": 0.8})[0] is False  # judged on purchase
