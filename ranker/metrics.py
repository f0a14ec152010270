"""Ranking and calibration metrics of a model on the ``test`` part of the time split.

Lists are scored per decision (one user's candidates at one time) and averaged over the decisions
with at least one positive for the objective (a decision without one has no order to get right).
Within a decision, items are ordered by score, highest first; equal scores by ``item_id``, so the
figures do not depend on row order. With binary relevance ``rel_i`` at 0-based position ``i``::

    DCG@k    = sum_{i < k} rel_i / log2(i + 2)
    IDCG@k   = sum_{i < min(P, k)} 1 / log2(i + 2)        P = positives in the decision
    NDCG@k   = DCG@k / IDCG@k
    Recall@k = (positives in the first k) / P

AUC is over all test rows of an objective (not per decision): the probability that a random
positive scores above a random negative, ties counting one half (Mann-Whitney, average ranks).

Calibration is read from a table of equal-count bins of predicted probability (deciles by
default): per bin the mean predicted probability, the observed rate, the count and the relative
error ``|pred - obs| / obs``. The summary ``max_relative_error`` only counts bins holding at least
``min_positives`` positives: an observed rate from ``p`` positives has a relative standard error of
about ``1 / sqrt(p)``, so sparser bins measure noise rather than the model.

Whether the model earns its place: ``ndcg_gain@k`` is the model's NDCG@k minus the blend's on the
same held-out decisions with its 95% paired bootstrap interval over decisions, and :func:`helps`
says yes only when that interval, for the objective served with most weight, lies above 0 - what
``crossrec eval`` uses to choose between the ranker and the blend on each shop by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from crossrec.vocabulary import OBJECTIVES

K = 10
BINS = 10
MIN_POSITIVES = 25
#: Bootstrap resamples of the paired NDCG gain over held-out decisions.
GAIN_RESAMPLES = 1000


def positions_in_decision(
    decision_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """(n,) 0-based position of each row in its decision's list (score descending, then
    ``item_id`` ascending)."""
    _, decision = np.unique(decision_ids, return_inverse=True)
    _, item = np.unique(np.asarray(item_ids, dtype=str), return_inverse=True)
    order = np.lexsort((item, -np.asarray(scores, dtype=np.float64), decision))
    sorted_decision = decision[order]
    starts = np.searchsorted(sorted_decision, sorted_decision, side="left")
    positions = np.empty(len(order), dtype=np.int64)
    positions[order] = np.arange(len(order)) - starts
    return positions


def ranking_metrics(
    decision_ids: np.ndarray,
    item_ids: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    k: int = K,
) -> dict:
    """``{"ndcg": NDCG@k, "recall": Recall@k, "decisions": D}``, each mean over the ``D``
    decisions with a positive (``None`` when ``D`` is 0). Inputs are (n,) per row."""
    ndcg, recall = per_decision(decision_ids, item_ids, scores, labels, k)
    if len(ndcg) == 0:
        return {"ndcg": None, "recall": None, "decisions": 0}
    return {"ndcg": float(np.mean(ndcg)), "recall": float(np.mean(recall)), "decisions": len(ndcg)}


def per_decision(
    decision_ids: np.ndarray,
    item_ids: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    k: int = K,
) -> tuple[np.ndarray, np.ndarray]:
    """(NDCG@k, Recall@k) of each decision with a positive, in decision-id order."""
    rel = np.asarray(labels, dtype=np.float64)
    _, decision = np.unique(decision_ids, return_inverse=True)
    position = positions_in_decision(decision_ids, item_ids, scores)
    top = position < k
    dcg = np.bincount(decision, weights=rel * top / np.log2(position + 2.0))
    hits = np.bincount(decision, weights=rel * top)
    positives = np.bincount(decision, weights=rel).astype(np.int64)
    ideal_by_count = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    ideal = ideal_by_count[np.minimum(positives, k)]
    kept = positives > 0
    return dcg[kept] / ideal[kept], hits[kept] / positives[kept]


def ndcg_gain(
    decision_ids: np.ndarray,
    item_ids: np.ndarray,
    model: np.ndarray,
    blend: np.ndarray,
    labels: np.ndarray,
    k: int = K,
    resamples: int = GAIN_RESAMPLES,
    seed: int = 0,
) -> dict:
    """The model's NDCG@k minus the blend's on the same decisions: ``mean`` and the 95% paired
    bootstrap interval over decisions (``low``, ``high``); None figures without a positive."""
    a, _ = per_decision(decision_ids, item_ids, model, labels, k)
    b, _ = per_decision(decision_ids, item_ids, blend, labels, k)
    if len(a) == 0:
        return {"mean": None, "low": None, "high": None}
    diff = a - b
    draws = np.random.default_rng(seed).integers(0, len(diff), (resamples, len(diff)))
    means = diff[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high)}


def helps(metrics: dict, weights: Mapping[str, float]) -> tuple[bool, str]:
    """Whether a model beats the retrieval-only blend on its held-out decisions, judged on the
    objective with the largest serving weight: its NDCG gain's interval must lie above 0. Returns
    (the verdict, why in words). ``metrics`` as :func:`evaluate` returns (a model's report)."""
    objective = max(sorted(weights), key=lambda o: weights[o])
    gain = metrics[objective].get(f"ndcg_gain@{metrics['k']}")
    if gain is None or gain["low"] is None:
        return False, f"no held-out {objective} gain was measured"
    words = (
        f"{objective} NDCG@{metrics['k']} {gain['mean']:+.4f} over the blend "
        f"[{gain['low']:+.4f}, {gain['high']:+.4f}] on held-out decisions"
    )
    return gain["low"] > 0, words


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of (n,) scores against (n,) 0/1 labels; ``None`` without both
    classes."""
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return None
    _, group, counts = np.unique(
        np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True
    )
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct score's first row
    ranks = (first_rank + (counts - 1) / 2.0)[group]
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def calibration_table(
    predicted: np.ndarray,
    labels: np.ndarray,
    bins: int = BINS,
    min_positives: int = MIN_POSITIVES,
) -> dict:
    """Equal-count bins of predicted probability (lowest first) and their agreement with the
    observed rate; see the module docstring."""
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    for part in np.array_split(np.argsort(p, kind="stable"), bins):
        if len(part) == 0:
            continue
        pred, obs, positives = float(p[part].mean()), float(y[part].mean()), int(y[part].sum())
        rows.append(
            {
                "mean_predicted": pred,
                "observed": obs,
                "count": len(part),
                "positives": positives,
                "relative_error": abs(pred - obs) / obs if obs > 0 else None,
            }
        )
    counted = [r["relative_error"] for r in rows if r["positives"] >= min_positives]
    return {
        "bins": rows,
        "min_positives": min_positives,
        "max_relative_error": max(counted) if counted else None,
        "predicted_rate": float(p.mean()) if len(p) else None,
        "observed_rate": float(y.mean()) if len(y) else None,
    }


def gain_shares(gains: Mapping[str, np.ndarray], features: Sequence[str]) -> dict:
    """Feature gain as a share of each head's total (``heads``), and ``combined``: the mean of the
    heads' shares (each head counts alike, whatever its row count), largest first."""
    heads = {}
    for head, gain in gains.items():
        total = float(np.sum(gain))
        share = np.asarray(gain, dtype=np.float64) / total if total > 0 else np.zeros(len(gain))
        heads[head] = {f: float(s) for f, s in zip(features, share)}
    combined = {f: float(np.mean([heads[h][f] for h in heads])) for f in features} if heads else {}
    return {
        "heads": heads,
        "combined": [
            {"feature": f, "share": s}
            for f, s in sorted(combined.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def evaluate(
    test: pl.DataFrame,
    probabilities: Mapping[str, np.ndarray],
    k: int = K,
    bins: int = BINS,
    min_positives: int = MIN_POSITIVES,
) -> dict:
    """Every metric of the module for each objective, the model's calibrated ``probabilities``
    (objective -> (n,) per row of ``test``) against the ``blend_score`` order of the same rows."""
    decisions = test["decision_id"].to_numpy()
    items = test["item_id"].to_numpy()
    blend = test["blend_score"].to_numpy()
    out: dict = {"k": k, "rows": test.height, "decisions": int(test["decision_id"].n_unique())}
    for objective in OBJECTIVES:
        labels = test[objective].to_numpy()
        model = ranking_metrics(decisions, items, probabilities[objective], labels, k)
        baseline = ranking_metrics(decisions, items, blend, labels, k)
        gain = ndcg_gain(decisions, items, probabilities[objective], blend, labels, k)
        out[objective] = {
            "decisions_with_positive": model["decisions"],
            "positives": int(labels.sum()),
            f"ndcg@{k}": {"model": model["ndcg"], "blend": baseline["ndcg"]},
            f"ndcg_gain@{k}": gain,
            f"recall@{k}": {"model": model["recall"], "blend": baseline["recall"]},
            "auc": {"model": auc(probabilities[objective], labels), "blend": auc(blend, labels)},
            "calibration": calibration_table(probabilities[objective], labels, bins, min_positives),
        }
    return out
