"""Where to look: which categories a user is likely to want next.

From the index's session statistics, ``P(B | A)`` is the share of sessions in category ``A`` that
move on to ``B``, smoothed toward ``B``'s overall session share (``smoothing`` pseudo-sessions), so
a category seen in few sessions leans on popularity; the diagonal is zero (staying is not a
transition). For a profile with category weights ``w`` (sum 1), the *transition score* of ``B`` is
``sum_A w_A P(B | A)``; the *affinity* of a category mixes what the user did there with where
shoppers go next::

    affinity(B) = w_B + transition_weight * transition(B) + category_prior * share(B)

where ``share(B)`` is B's share of all sessions: a prior for interests that appear without a
transition leading to them (a shopper's new hobby). The two weights were chosen with
``crossrec eval`` (BENCHMARKS.md, "Item-level quality"); the pipeline in
:mod:`engine.retrieval.recommend` applies it.
"""

from __future__ import annotations

import numpy as np

from crossrec.vocabulary import CATEGORY_SEPARATOR, normalise_category
from engine.state.profile import Profile
from indexer.artifact import IndexVersion


class CategoryModel:
    """Category names, resolution of names/departments to leaves, and the transition matrix."""

    def __init__(
        self, version: IndexVersion, categories: list[str], smoothing: float = 5.0
    ) -> None:
        self.categories = categories
        self.index = {c: i for i, c in enumerate(categories)}
        share = dict(version.categories.select("category", "session_share").iter_rows())
        total = sum(share.values())
        if total <= 0:  # no events at build time: fall back on category sizes
            share = dict(version.categories.select("category", "items").iter_rows())
            total = sum(share.values())
        self.share = np.array([share.get(c, 0.0) / total for c in categories])
        n = len(categories)
        counts = np.zeros((n, n))
        for source, target, sessions in version.transitions.select(
            "source", "target", "sessions"
        ).iter_rows():
            if source in self.index and target in self.index:
                counts[self.index[source], self.index[target]] = sessions
        matrix = (counts + smoothing * self.share[None, :]) / (
            counts.sum(axis=1, keepdims=True) + smoothing
        )
        np.fill_diagonal(matrix, 0.0)
        self.matrix = matrix
        #: Category codes, most sessions first (the fallback's order).
        self.by_popularity = np.argsort(-self.share, kind="stable")

    def resolve(self, name: str) -> frozenset[str]:
        """A category path or a prefix of one (a department) -> the leaf categories it covers."""
        name = normalise_category(name)
        if name in self.index:
            return frozenset([name])
        return frozenset(c for c in self.categories if c.startswith(name + CATEGORY_SEPARATOR))

    def transition(self, source: str, target: str) -> float:
        """Smoothed P(target | source)."""
        return float(self.matrix[self.index[source], self.index[target]])

    def weights(self, profile: Profile) -> np.ndarray:
        """The profile's category weights as a vector over category codes (sum 1, zeros
        elsewhere)."""
        w = np.zeros(len(self.categories))
        for category, weight in profile.category_weights.items():
            if category in self.index:
                w[self.index[category]] = weight
        return w

    def transition_scores(self, weights: np.ndarray) -> np.ndarray:
        """``sum_A w_A P(B | A)`` for every category ``B``."""
        return weights @ self.matrix
