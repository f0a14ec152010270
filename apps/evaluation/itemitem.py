"""The strongest simple baselines: EASE and a tuned item-kNN, each with its settings chosen on a
validation split of the training data alone (:mod:`indexer.holdout`), never on the test part.

``ease``: :mod:`indexer.ease` on the binary training user x item matrix, lambda chosen from
    ``EaseConfig.lambdas`` (the items: those with 2+ users, at most ``max_items`` with most users).
``itemknn``: item-item cosine kNN (:func:`apps.evaluation.baselines.item_cosine`) over a grid of
    weightings (``binary``; ``bm25``: BM25-weighted user-item matrix, which discounts heavy users
    and popular items) and neighbour counts; the best pair on validation is refitted on all of
    training.

Both report what they chose in ``chosen`` (shown by ``crossrec eval --json``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from apps.evaluation.baselines import item_cosine, score_in_chunks
from apps.evaluation.dataset import EvalSet
from indexer.ease import EaseConfig, choose_lambda, fit_ease, model_items
from indexer.holdout import holdout

log = logging.getLogger(__name__)

STRONG_BASELINES = ("ease", "itemknn")


@dataclass
class EASE:
    """EASE with lambda chosen on a validation split of the training users."""

    config: EaseConfig = field(default_factory=lambda: EaseConfig(max_items=15_000))
    seed: int = 0
    name: str = "ease"
    progress: bool = True
    chosen: dict = field(default_factory=dict)

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        x = data.user_items("binary")
        lam, table = (
            (self.config.lambda_, {})
            if self.config.lambda_ is not None
            else choose_lambda(x, self.config, self.seed)
        )
        model = fit_ease(x, lam, model_items(x, self.config.min_users, self.config.max_items))
        self.chosen = {"lambda": lam, "items": len(model.items), "validation_recall_at_10": table}
        log.info("ease: %s", self.chosen)
        profile = x[data.test_rows]

        def scores(a: int, b: int) -> np.ndarray:
            s = model.scores(profile[a:b], data.n_items)
            s[s <= 0] = -np.inf
            return s

        return score_in_chunks(data, k, scores, self.name, self.progress)


def bm25_weights(x: sp.csr_matrix, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """BM25 weighting of a (users, items) count matrix, users as documents: each entry becomes
    ``idf(item) * x (k1 + 1) / (x + k1 (1 - b + b len(user) / mean len))``."""
    x = x.tocsr().astype(np.float32)
    n_users = x.shape[0]
    df = np.diff(x.tocsc().indptr)
    idf = np.log1p(n_users / np.maximum(df, 1)).astype(np.float32)
    lengths = np.asarray(x.sum(axis=1)).ravel()
    norm = (1 - b + b * lengths / max(lengths.mean(), 1e-9)).astype(np.float32)
    out = x.copy()
    rows = np.repeat(np.arange(n_users), np.diff(x.indptr))
    out.data = idf[x.indices] * x.data * (k1 + 1) / (x.data + k1 * norm[rows])
    return out


def weighted(x: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    return bm25_weights(x) if weighting == "bm25" else x


@dataclass
class TunedItemKNN:
    """Item-item cosine kNN, weighting and neighbour count chosen on validation."""

    weightings: tuple[str, ...] = ("binary", "bm25")
    neighbour_counts: tuple[int, ...] = (20, 100, 500)
    seed: int = 0
    name: str = "itemknn"
    progress: bool = True
    chosen: dict = field(default_factory=dict)

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        x = data.user_items("binary")
        split = holdout(x, seed=self.seed)
        table: dict[str, float] = {}
        best = (self.weightings[0], self.neighbour_counts[-1])
        if split is not None:
            for weighting in self.weightings:
                wx = weighted(split.train, weighting)
                for n in self.neighbour_counts:
                    sim = item_cosine(wx, n)
                    table[f"{weighting}/{n}"] = split.recall_at(
                        lambda rows, s=sim: (rows @ s).toarray()
                    )
            best = max(
                ((w, n) for w in self.weightings for n in self.neighbour_counts),
                key=lambda wn: table[f"{wn[0]}/{wn[1]}"],
            )
        self.chosen = {
            "weighting": best[0],
            "neighbours": best[1],
            "validation_recall_at_10": table,
        }
        log.info("itemknn: %s", self.chosen)
        sim = item_cosine(weighted(x, best[0]), best[1])
        profile = x[data.test_rows]

        def scores(a: int, b: int) -> np.ndarray:
            s = (profile[a:b] @ sim).toarray()
            s[s <= 0] = -np.inf
            return s

        return score_in_chunks(data, k, scores, self.name, self.progress)
