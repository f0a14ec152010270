"""Ranking metrics of recommendation lists against held-out positives, with bootstrap intervals.

Lists are (n_users, k_max) item codes, best first, ``-1`` padded; positives are (n_users, n_items)
CSR booleans (see :mod:`apps.evaluation.dataset`). At a cut-off K, per user:

| metric | definition |
|---|---|
| Recall@K | hits in the first K / number of positives |
| NDCG@K | binary gains: ``sum_hits 1/log2(rank+1)`` / ideal ``sum_{r<=min(P,K)} 1/log2(r+1)`` |
| HitRate@K | 1 when the first K hold a positive |
| cross-category Recall@K | Recall@K on cross-category positives only; users with none left out |
| diversity@K | distinct categories among the first K (an empty list has 0) |

and over all users: coverage@K = distinct items in all first-K lists / catalogue size. Each
per-user metric is averaged over its users; its 95% interval comes from resampling users with
replacement (percentile bootstrap, seeded: every metric with the same user count sees the same
resamples, so intervals of two methods are paired).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from apps.evaluation.dataset import member

#: Per-user metrics (averaged, with intervals) and list-level ones (a single figure).
PER_USER = ("recall", "cross_recall", "ndcg", "hit_rate", "diversity")
LIST_LEVEL = ("coverage",)


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval (``low``, ``high``); ``n`` values were averaged."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def recall(hits: np.ndarray, n_positives: np.ndarray) -> np.ndarray:
    """(n,) hits / positives per user from (n, K) bool hits; users without positives give 0."""
    return hits.sum(axis=1) / np.maximum(n_positives, 1)


def ndcg(hits: np.ndarray, n_positives: np.ndarray) -> np.ndarray:
    """(n,) binary-gain NDCG from (n, K) bool hits (rank 1 = column 0)."""
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(n_positives, k)]
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)


def diversity(lists: np.ndarray, item_category: np.ndarray) -> np.ndarray:
    """(n,) distinct categories per (n, K) list (pads ignored)."""
    # Pads (-1) sort first, so every change of value along a sorted row starts a new category.
    cats = np.sort(np.where(lists >= 0, item_category[np.maximum(lists, 0)], -1), axis=1)
    new = np.concatenate([cats[:, :1] >= 0, cats[:, 1:] != cats[:, :-1]], axis=1)
    return new.sum(axis=1).astype(np.float64)


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Distinct items over all (n, K) lists / ``n_items``."""
    return float(np.unique(lists[lists >= 0]).size / n_items)


def per_user(
    lists: np.ndarray,
    positives: sp.csr_matrix,
    cross: sp.csr_matrix,
    item_category: np.ndarray,
    k: int,
) -> dict[str, np.ndarray]:
    """Per-user values at cut-off ``k``: recall, ndcg, hit_rate, diversity over all users (n,);
    cross_recall over the users with at least one cross-category positive."""
    top = lists[:, :k]
    n_pos = np.diff(positives.indptr)
    n_cross = np.diff(cross.indptr)
    hits = member(top, positives)
    cross_hits = member(top, cross)
    has_cross = n_cross > 0
    return {
        "recall": recall(hits, n_pos),
        "cross_recall": recall(cross_hits[has_cross], n_cross[has_cross]),
        "ndcg": ndcg(hits, n_pos),
        "hit_rate": hits.any(axis=1).astype(np.float64),
        "diversity": diversity(top, item_category),
    }


def bootstrap_interval(
    values: np.ndarray, resamples: int = 1_000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Mean of ``values`` (n,) and its percentile-bootstrap interval over ``resamples`` resamples
    of the n values with replacement. ``resamples=0`` gives the mean as both ends."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if resamples <= 0:
        return Interval(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bounded memory: at most ~2M indices at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean, float(low), float(high), n)


def paired_difference(
    a: np.ndarray, b: np.ndarray, resamples: int = 1_000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Mean of ``a - b`` over the same users (n,) and its paired bootstrap interval: users are
    resampled together, so what both methods find alike cancels and the interval is that of the
    difference itself - the test of "A beats B" that two separate intervals are not."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same users, got {a.shape} and {b.shape}")
    return bootstrap_interval(a - b, resamples, seed, level)


def evaluate_lists(
    lists: np.ndarray,
    positives: sp.csr_matrix,
    cross: sp.csr_matrix,
    item_category: np.ndarray,
    ks: tuple[int, ...],
    resamples: int = 1_000,
    seed: int = 0,
) -> dict[str, dict]:
    """Every metric at every K: ``{"@K": {metric: Interval.as_dict(), ..., "coverage": float}}``."""
    out: dict[str, dict] = {}
    for k in ks:
        values = per_user(lists, positives, cross, item_category, k)
        row: dict = {
            name: bootstrap_interval(values[name], resamples, seed).as_dict() for name in PER_USER
        }
        row["coverage"] = coverage(lists[:, :k], len(item_category))
        out[f"@{k}"] = row
    return out


def mean_list_length(lists: np.ndarray) -> float:
    """Items actually returned per list (lists may come back shorter than asked)."""
    return float((lists >= 0).sum(axis=1).mean()) if len(lists) else 0.0
