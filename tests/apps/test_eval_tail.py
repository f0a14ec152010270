"""The tail view of ``crossrec eval`` and the tuned baselines' weighting, on a tiny shop whose
answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_eval_baselines import _eval_set

from apps.evaluation.itemitem import bm25_weights
from apps.evaluation.tail import head_items, tail_metrics, tail_per_user, without_head

ITEMS = [f"i{n}" for n in range(10)]


def _shop():
    """Training users per item: i0 5, i1 4, i2 2, i3 1, others 0. Tested: t1 (positives i0, i5),
    t2 (positive i0 only: nothing beyond the head), t3 (positives i6, i7)."""
    train = [(f"u{n}", "i0", "view", 2.0) for n in range(4)]
    train += [(f"u{n}", "i1", "view", 2.0) for n in range(4)]
    train += [("u0", "i2", "view", 2.0), ("u1", "i2", "view", 2.0), ("u2", "i3", "view", 2.0)]
    train += [("t1", "i9", "view", 1.0), ("t2", "i9", "view", 1.0), ("t3", "i0", "view", 1.0)]
    test = [("t1", "i0"), ("t1", "i5"), ("t2", "i0"), ("t3", "i6"), ("t3", "i7")]
    return _eval_set(ITEMS, train, test)


def test_the_head_is_the_share_of_items_with_most_training_users():
    data = _shop()
    assert np.flatnonzero(head_items(data, 0.1)).tolist() == [0]  # ceil(0.1 x 10) = 1: i0 (5)
    assert np.flatnonzero(head_items(data, 0.2)).tolist() == [0, 1]
    # items nobody touched are never head, however large the share
    assert np.flatnonzero(head_items(data, 0.9)).tolist() == [0, 1, 2, 3, 9]
    assert not head_items(data, 0.0).any()


def test_the_tail_view_drops_head_items_from_lists_and_positives_and_users_left_with_none():
    data = _shop()
    head = head_items(data, 0.1)  # i0
    order = [data.split.test_users.index(u) for u in ("t1", "t2", "t3")]
    lists = np.full((3, 3), -1)
    lists[order[0]] = [0, 5, 4]  # head first, then the positive i5: rank 1 of the tail list
    lists[order[1]] = [0, 1, 2]
    lists[order[2]] = [4, 7, 0]  # i7 at rank 2
    result = tail_metrics(lists, data, head, (1, 2), resamples=0, seed=0)
    assert result["users"] == 2  # t2's only positive was head
    # t1: tail list [i5, i4], 1 of 1 positive at rank 1; t3: [i4, i7], 1 of 2 at rank 2
    assert result["@1"]["recall"]["mean"] == pytest.approx((1.0 + 0.0) / 2)
    assert result["@2"]["recall"]["mean"] == pytest.approx((1.0 + 0.5) / 2)
    ndcg_t3 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert result["@2"]["ndcg"]["mean"] == pytest.approx((1.0 + ndcg_t3) / 2)
    # per user, for pairing methods on the same users: t1 then t3 (t2 has no tail positive)
    per_user = tail_per_user(lists, data, head, 2)
    users = sorted(order[i] for i in (0, 2))
    expected = {order[0]: (1.0, 1.0), order[2]: (0.5, ndcg_t3)}
    assert per_user["recall"].tolist() == pytest.approx([expected[u][0] for u in users])
    assert per_user["ndcg"].tolist() == pytest.approx([expected[u][1] for u in users])


def test_paired_lines_name_the_best_baseline_per_metric_and_the_verdict():
    from apps.evaluation.report import paired_lines

    def table(recall: float, ndcg: float) -> dict:
        return {"@10": {"recall": {"mean": recall}, "ndcg": {"mean": ndcg}}}

    methods = {
        "ease": {"metrics": table(0.20, 0.10), "tail": table(0.05, 0.02)},
        "als": {"metrics": table(0.18, 0.12), "tail": table(0.07, 0.03)},
    }
    interval = {"mean": 0.01, "low": 0.004, "high": 0.02}
    behind = {"mean": -0.01, "low": -0.02, "high": -0.001}
    tie = {"mean": 0.0, "low": -0.01, "high": 0.01}
    result = {
        "methods": methods,
        "paired": {
            "crossrec": {
                "k": 10,
                "recall": {"ease": interval, "als": behind},
                "ndcg": {"ease": interval, "als": behind},
                "tail_recall": {"ease": interval, "als": tie},
            }
        },
    }
    assert paired_lines(result).splitlines() == [
        "crossrec - ease (best baseline), Recall@10 on the same users: +0.010 [+0.004, +0.020] "
        "(ahead)",
        "crossrec - als (best baseline), NDCG@10 on the same users: -0.010 [-0.020, -0.001] "
        "(behind)",
        "crossrec - als (best baseline), Recall@10 tail on the same users: +0.000 [-0.010, "
        "+0.010] (not apart)",
    ]


def test_without_head_keeps_every_other_entry():
    m = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=bool))
    assert without_head(m, np.array([False, True, False])).toarray().tolist() == [
        [True, False, False],
        [False, False, True],
    ]


def test_bm25_weights_discount_popular_items_and_long_histories():
    # 3 users; item 0 taken by all, item 1 by one. lengths 2, 1, 1 (mean 4/3).
    x = sp.csr_matrix(np.array([[1, 1], [1, 0], [1, 0]], dtype=np.float32))
    w = bm25_weights(x, k1=1.2, b=0.75).toarray()
    idf0, idf1 = np.log1p(3 / 3), np.log1p(3 / 1)
    norm_long, norm_short = 1 - 0.75 + 0.75 * 2 / (4 / 3), 1 - 0.75 + 0.75 * 1 / (4 / 3)
    assert w[0, 0] == pytest.approx(idf0 * 2.2 / (1 + 1.2 * norm_long))
    assert w[0, 1] == pytest.approx(idf1 * 2.2 / (1 + 1.2 * norm_long))
    assert w[1, 0] == pytest.approx(idf0 * 2.2 / (1 + 1.2 * norm_short))
    assert w[2, 1] == 0.0


def test_the_head_is_counted_in_distinct_users_not_events_and_not_by_code():
    # i3: 3 users once each; i1: one user 5 times; i0: nobody. The head of one is i3.
    train = [(f"u{n}", "i3", "view", 2.0) for n in range(3)]
    train += [("u9", "i1", "view", float(d)) for d in range(2, 7)]
    data = _eval_set(ITEMS, [*train, ("t1", "i2", "view", 1.0)], [("t1", "i5")])
    assert np.flatnonzero(head_items(data, 0.1)).tolist() == [3]


def test_without_head_leaves_its_input_alone():
    m = sp.csr_matrix(np.array([[1, 1, 0]], dtype=bool))
    without_head(m, np.array([True, False, False]))
    assert m.toarray().tolist() == [[True, True, False]]
