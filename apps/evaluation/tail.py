"""The tail view: every metric again with the most popular items taken out of the picture.

The head (the ``head_share`` most popular items, 1% by default) is what every method gets right and
what a shop's best-seller shelf already shows; a recommender earns its keep beyond it. So, per
method: the head items are removed from its list (the rest move up, keeping their order: a method's
first 10 beyond the head), head items are removed from the positives, and users left without a
positive are left out. Lists are the method's longest (``max(ks)``) so that removing the head still
leaves K items where the method has them.

Popularity here is the number of distinct training users of an item (ties: lower item code):
training data only, so the head is known before the test.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from apps.evaluation.dataset import PAD, EvalSet, compact
from apps.evaluation.metrics import evaluate_lists, per_user


def head_items(data: EvalSet, share: float) -> np.ndarray:
    """(n_items,) bool: the ``ceil(share * n_items)`` items with most distinct training users
    (items without users are never head); none when ``share`` is 0."""
    head = np.zeros(data.n_items, dtype=bool)
    if share <= 0:
        return head
    users = np.bincount(
        data.train.select("u", "i").unique()["i"].to_numpy(), minlength=data.n_items
    )
    n = min(math.ceil(share * data.n_items), int((users > 0).sum()))
    head[np.lexsort((np.arange(data.n_items), -users))[:n]] = True
    return head


def without_head(m: sp.csr_matrix, head: np.ndarray) -> sp.csr_matrix:
    """``m`` (users, items) with the head columns' entries removed."""
    m = m.tocsr(copy=True)
    m.data = np.where(head[m.indices], 0, m.data).astype(m.dtype)
    m.eliminate_zeros()
    return m


def tail_metrics(
    lists: np.ndarray,
    data: EvalSet,
    head: np.ndarray,
    ks: tuple[int, ...],
    resamples: int,
    seed: int,
) -> dict:
    """:func:`apps.evaluation.metrics.evaluate_lists` of the tail view at every K, plus ``users``
    (those with a positive beyond the head)."""
    positives = without_head(data.positives, head)
    cross = without_head(data.cross_positives, head)
    users = np.flatnonzero(np.diff(positives.indptr) > 0)
    tail_lists = compact(np.where((lists >= 0) & head[np.maximum(lists, 0)], PAD, lists))
    out = evaluate_lists(
        tail_lists[users],
        positives[users],
        cross[users],
        data.item_category,
        ks,
        resamples,
        seed,
    )
    return {"users": len(users), **out}


def tail_per_user(lists: np.ndarray, data: EvalSet, head: np.ndarray, k: int) -> dict:
    """:func:`apps.evaluation.metrics.per_user` of the tail view at ``k``, over the users with a
    positive beyond the head (the same users for every method, so values pair)."""
    positives = without_head(data.positives, head)
    cross = without_head(data.cross_positives, head)
    users = np.flatnonzero(np.diff(positives.indptr) > 0)
    tail_lists = compact(np.where((lists >= 0) & head[np.maximum(lists, 0)], PAD, lists))
    return per_user(tail_lists[users], positives[users], cross[users], data.item_category, k)
