"""Ranking metrics of ``crossrec eval`` on a case computed by hand, and the bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from apps.evaluation.dataset import drop_seen, top_k_unseen
from apps.evaluation.metrics import bootstrap_interval, evaluate_lists

N_ITEMS = 10
# Items 0..9; item i is in category i // 2.
CATEGORY = np.arange(N_ITEMS) // 2


def _csr(rows: list[set[int]]) -> sp.csr_matrix:
    m = sp.lil_matrix((len(rows), N_ITEMS), dtype=bool)
    for r, items in enumerate(rows):
        for i in items:
            m[r, i] = True
    return m.tocsr()


# user 0: positives {1, 5, 4} (cross: {5, 4}); list 2, 1, 5, 0 -> hits at ranks 2 and 3 (of 3)
# user 1: positives {0}; list 3, 4 (two items only) -> no hit; no cross-category positive
# user 2: positives {6}; list 7, 6, 0 -> hit at rank 2; |P| = 1 < K, so the ideal DCG is 1
LISTS = np.array([[2, 1, 5, 0], [3, 4, -1, -1], [7, 6, 0, -1]])
POSITIVES = _csr([{1, 5, 4}, {0}, {6}])
CROSS = _csr([{5, 4}, set(), set()])


def test_metrics_at_3_match_the_hand_computed_case():
    m = evaluate_lists(LISTS, POSITIVES, CROSS, CATEGORY, ks=(3,), resamples=0)["@3"]
    log2_3 = 1.584962500721156  # log2(3)
    ndcg0 = (1 / log2_3 + 1 / 2) / (1 + 1 / log2_3 + 1 / 2)  # hits at ranks 2, 3; ideal: 3 hits
    ndcg2 = (1 / log2_3) / 1.0  # hit at rank 2; ideal: 1 hit at rank 1
    assert ndcg0 == pytest.approx(0.530721, abs=1e-6)
    assert m["recall"]["mean"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert m["ndcg"]["mean"] == pytest.approx((ndcg0 + 0 + ndcg2) / 3)
    assert m["hit_rate"]["mean"] == pytest.approx(2 / 3)
    # only user 0 has cross-category positives: item 5 of {5, 4} is in the first 3
    assert m["cross_recall"]["mean"] == pytest.approx(0.5)
    assert m["cross_recall"]["n"] == 1
    # first-3 lists hold items {2, 1, 5}, {3, 4}, {7, 6, 0}: 8 distinct of 10
    assert m["coverage"] == pytest.approx(0.8)
    # categories: {1, 0, 2} = 3, {1, 2} = 2, {3, 3, 0} = 2
    assert m["diversity"]["mean"] == pytest.approx(7 / 3)


def test_metrics_at_1_use_the_first_item_only():
    m = evaluate_lists(LISTS, POSITIVES, CROSS, CATEGORY, ks=(1,), resamples=0)["@1"]
    assert m["recall"]["mean"] == 0.0  # items 2, 3, 7 are no positives
    assert m["ndcg"]["mean"] == 0.0
    assert m["coverage"] == pytest.approx(0.3)
    assert m["diversity"]["mean"] == pytest.approx(1.0)


def test_a_hit_at_rank_one_of_a_single_positive_is_perfect():
    m = evaluate_lists(
        np.array([[6, 1]]), _csr([{6}]), _csr([{6}]), CATEGORY, ks=(2,), resamples=0
    )["@2"]
    assert (
        m["recall"]["mean"]
        == m["ndcg"]["mean"]
        == m["hit_rate"]["mean"]
        == m["cross_recall"]["mean"]
        == 1.0
    )


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_users():
    rng = np.random.default_rng(3)
    small = bootstrap_interval(rng.binomial(1, 0.3, 250).astype(float), resamples=500, seed=0)
    large = bootstrap_interval(rng.binomial(1, 0.3, 4000).astype(float), resamples=500, seed=0)
    for iv in (small, large):
        assert iv.low < iv.mean < iv.high
    # width ~ 1/sqrt(n): 16x the users, about a quarter of the width
    assert (large.high - large.low) < 0.4 * (small.high - small.low)
    assert bootstrap_interval(np.arange(10.0), 200, seed=1) == bootstrap_interval(
        np.arange(10.0), 200, seed=1
    )


def test_top_k_unseen_drops_seen_items_and_non_finite_scores_and_breaks_ties_by_code():
    scores = np.array([[0.9, 0.5, 0.5, -np.inf, 0.1], [0.0, 0.2, 0.3, 0.4, 0.5]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=bool))
    out = top_k_unseen(scores, seen, 4)
    assert out.tolist() == [[1, 2, 4, -1], [3, 2, 1, 0]]


def test_drop_seen_keeps_the_order_of_the_rest():
    seen = sp.csr_matrix(np.array([[0, 1, 0, 1, 0]], dtype=bool))
    assert drop_seen(np.array([[3, 4, 1, 0, -1]]), seen).tolist() == [[4, 0, -1, -1, -1]]


def test_a_paired_difference_cancels_what_both_methods_share():
    from apps.evaluation.metrics import paired_difference

    # Per-user recall varies a lot between users but B is A minus 0.02 for every one of them: the
    # separate intervals overlap, the paired one is the exact 0.02 at both ends.
    a = np.array([0.9, 0.1, 0.6, 0.3, 0.8, 0.2, 0.7, 0.4] * 25)
    b = a - 0.02
    d = paired_difference(a, b, resamples=500, seed=1)
    assert (d.mean, d.low, d.high, d.n) == pytest.approx((0.02, 0.02, 0.02, 200))
    sa, sb = bootstrap_interval(a, 500, 1), bootstrap_interval(b, 500, 1)
    assert sa.low < sb.high  # the separate intervals overlap
    # a difference that is zero on average holds 0 in its interval
    tie = paired_difference(np.array([1.0, 0.0] * 50), np.array([0.0, 1.0] * 50), 500, 1)
    assert tie.mean == 0.0
    assert tie.low < 0.0 < tie.high
    with pytest.raises(ValueError, match="the same users"):
        paired_difference(a, b[:-1])


def test_every_crossrec_row_is_compared_with_every_baseline_on_the_same_users():
    from apps.evaluation.run import paired_against_baselines

    recalls = {
        "popularity": np.array([0.0, 0.5, 0.0]),
        "ease": np.array([0.5, 0.5, 0.0]),
        "crossrec": np.array([1.0, 0.5, 0.5]),
        "crossrec tuned": np.array([0.5, 0.5, 0.0]),
    }
    values = {name: {"recall": r, "ndcg": r / 2} for name, r in recalls.items()}
    out = paired_against_baselines(values, 10, resamples=0, seed=0)
    assert set(out) == {"crossrec", "crossrec tuned"}
    assert set(out["crossrec"]) == {"k", "recall", "ndcg"}  # no tail view given: none paired
    assert set(out["crossrec"]["recall"]) == {"popularity", "ease"}
    assert out["crossrec"]["k"] == 10
    # (1 - 0 + 0.5 - 0.5 + 0.5 - 0) / 3 = 0.5 against popularity; (0.5 + 0 + 0.5) / 3 against ease
    assert out["crossrec"]["recall"]["popularity"]["mean"] == pytest.approx(0.5)
    assert out["crossrec"]["recall"]["ease"]["mean"] == pytest.approx(1 / 3)
    assert out["crossrec"]["ndcg"]["ease"]["mean"] == pytest.approx(1 / 6)
    tied = {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 3}
    assert out["crossrec tuned"]["recall"]["ease"] == tied


def test_the_report_names_the_best_baseline_and_says_whether_the_lead_is_apart():
    from apps.evaluation.report import paired_lines

    def at10(mean):
        return {"metrics": {"@10": {"recall": {"mean": mean}}}}

    result = {
        "methods": {"als": at10(0.08), "ease": at10(0.06), "crossrec": at10(0.09)},
        "paired": {
            "crossrec": {
                "k": 10,
                "recall": {
                    "als": {"mean": 0.01, "low": 0.002, "high": 0.018, "n": 3},
                    "ease": {"mean": 0.03, "low": -0.01, "high": 0.05, "n": 3},
                },
            }
        },
    }
    assert paired_lines(result) == (
        "crossrec - als (best baseline), Recall@10 on the same users: "
        "+0.010 [+0.002, +0.018] (ahead)"
    )
    result["paired"]["crossrec"]["recall"]["als"]["low"] = -0.001
    assert paired_lines(result).endswith("(not apart)")
    assert paired_lines({"methods": {}, "paired": {}}) == ""
