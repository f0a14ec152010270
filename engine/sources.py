"""Candidate sources: each proposes items for one profile, with a score, independently of the
others.

Each source: what it proposes; score; why.

``neighbours``: co-engagement neighbours of the user's items (same and other categories);
    ``sum_i w_i sim(i, j)`` over the user's items ``i`` (weights: action x recency); items people
    actually take together, the strongest item-level signal where behaviour exists.
``popular``: the most popular items of the categories with the highest affinity;
    ``affinity(category) x item's share of its category's popularity``; where-to-look
    (categories) times what-people-take (items), covers users whose items have few neighbours.
``search``: nearest items to the profile's interest vectors in the target categories' shards;
    cosine in the fused (complement-adapted) space; cold and long-tail items that behaviour has
    not reached yet, content.

The popularity fallback for users without history is the ``popular`` source over the most popular
categories. Sources return at most ``limit`` rows; merging and ranking happen downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.candidates import SourceResult
from engine.items import POPULAR_PER_CATEGORY, ItemTable
from engine.profile import Profile
from indexer.artifact import IndexVersion


@dataclass(frozen=True)
class Context:
    """What sources see of a request. ``affinity``: (categories,) >= 0; ``targets``: category codes
    to search, best first; ``k``: the list length asked for."""

    profile: Profile
    affinity: np.ndarray
    targets: np.ndarray
    k: int


class CandidateSource(Protocol):
    name: str

    def generate(self, context: Context) -> SourceResult: ...


def _top(
    name: str,
    rows: np.ndarray,
    scores: np.ndarray,
    limit: int,
    interest: np.ndarray | None = None,
    searched: int = 0,
) -> SourceResult:
    """The best ``limit`` of (rows, scores), best first (ties: lower row first)."""
    keep = scores > 0
    rows, scores = rows[keep], scores[keep]
    interest = interest[keep] if interest is not None else None
    order = np.lexsort((rows, -scores))[:limit]
    return SourceResult(
        name,
        rows[order],
        scores[order].astype(np.float32),
        None if interest is None else interest[order],
        searched,
    )


class NeighbourSource:
    """Behaviour neighbours of the user's heaviest ``max_seeds`` items (weights normalised to 1)."""

    name = "neighbours"

    def __init__(self, version: IndexVersion, max_seeds: int = 50, limit: int = 300) -> None:
        self.neighbours = getattr(version, "neighbours", None)
        self.max_seeds = max_seeds
        self.limit = limit

    def generate(self, context: Context) -> SourceResult:
        p = context.profile
        if self.neighbours is None or len(p.item_rows) == 0:
            return SourceResult.empty(self.name)
        seeds, weights = p.item_rows[: self.max_seeds], p.item_weights[: self.max_seeds]
        rows, scores = self.neighbours.gather(seeds, weights / weights.sum())
        return _top(self.name, rows, scores, self.limit)


class PopularSource:
    """The ``per_category`` most popular items of the ``categories`` highest-affinity categories."""

    name = "popular"

    def __init__(
        self, items: ItemTable, per_category: int = 50, categories: int = 12, limit: int = 300
    ) -> None:
        self.items = items
        self.per_category = min(per_category, POPULAR_PER_CATEGORY)
        self.categories = categories
        self.limit = limit

    def generate(self, context: Context) -> SourceResult:
        ranked = np.argsort(-context.affinity, kind="stable")[: self.categories]
        ranked = ranked[context.affinity[ranked] > 0]
        if len(ranked) == 0:
            return SourceResult.empty(self.name)
        rows = np.concatenate([self.items.popular[c][: self.per_category] for c in ranked])
        scores = (
            context.affinity[self.items.category_code[rows]] * self.items.popularity_share[rows]
        )
        return _top(self.name, rows, scores, self.limit)


class ShardSearchSource:
    """Every interest vector searches the shards of the target categories.

    By default only categories the user never touched are searched: there the popular and neighbour
    sources know least about the user, and content finds cold and long-tail items. Categories the
    user touched (``touched=True``) are searched in the faiss shards: exact scans of full vectors,
    which at 1M items took k=10 from 2.7 to 19.3 ms p50 for no measurable gain in Recall@10 on the
    synthetic shop (BENCHMARKS.md). Categories the user never touched are searched in the adapted
    vectors' behaviour block, the best ``behaviour_rerank`` re-ranked with the full vectors: such
    queries are out of distribution for a category shard's graph or IVF index (they miss most
    neighbours), while in the behaviour space, trained to put complements together, the true
    neighbours are near the top, and the scan reads ~9x less than an exact one. Measured at
    1M items: recall@10 1.000 against exact full-vector search at 200 candidates, 0.34 ms instead of
    1.9 ms per query on a 39k-item shard (BENCHMARKS.md).
    """

    name = "search"

    def __init__(
        self,
        version: IndexVersion,
        items: ItemTable,
        per_shard: int = 50,
        categories: int = 6,
        behaviour_rerank: int = 200,
        limit: int = 300,
        touched: bool = False,
    ) -> None:
        self.version = version
        self.items = items
        self.per_shard = per_shard
        self.categories = categories
        self.behaviour_rerank = behaviour_rerank
        self.limit = limit
        self.touched = touched
        self.behaviour_dim = version.behaviour_dim if behaviour_rerank > 0 else 0
        # A plain array over the same memory: fancy indexing a np.memmap costs ~0.07 ms of
        # Python per call in its subclass wrapping, several calls a request.
        self.vectors = np.asarray(version.vectors)
        self.behaviour: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.behaviour_dim:
            block = np.asarray(version.vectors[:, -self.behaviour_dim :])
            # Group rows by shard with one sort (not one full scan of the items per shard).
            names, codes = np.unique(items.shard_of.astype(str), return_inverse=True)
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            for i, shard_id in enumerate(names.tolist()):
                if shard_id in version.shards:
                    rows = order[bounds[i] : bounds[i + 1]]
                    self.behaviour[shard_id] = (rows, np.ascontiguousarray(block[rows]))

    def shards_for(self, context: Context) -> list[tuple[str, str]]:
        """(category, shard) pairs this source searches for ``context``: the shards of the first
        ``categories`` targets it covers (untouched ones only unless ``touched``)."""
        p = context.profile
        if p.empty:
            return []
        names = [self.items.categories[c] for c in context.targets]
        covered = [c for c in names if self.touched or c not in p.category_weights]
        return [(c, s) for c in covered[: self.categories] for s in self.version.shards_of(c)]

    def generate(self, context: Context) -> SourceResult:
        p = context.profile
        if p.empty or len(context.targets) == 0:
            return SourceResult.empty(self.name)
        touched = set(p.category_weights)
        all_scores, all_rows, all_interest = [], [], []
        searched = 0
        m = len(p.interests)
        for category, shard_id in self.shards_for(context):
            count = self.version.shards[shard_id].ntotal
            if count == 0:
                continue
            k = int(min(count, self.per_shard))
            if shard_id in self.behaviour and category not in touched:
                scores, rows = self.behaviour_search(shard_id, p.interests, k)
            else:
                scores, rows = self.version.search(shard_id, p.interests, k)
            searched += 1
            all_scores.append(scores.ravel())
            all_rows.append(rows.ravel())
            all_interest.append(np.repeat(np.arange(m), k))
        if not all_rows:
            return SourceResult(
                self.name, np.zeros(0, np.int64), np.zeros(0, np.float32), searched=searched
            )
        scores, rows, interest = (
            np.concatenate(all_scores),
            np.concatenate(all_rows),
            np.concatenate(all_interest),
        )
        valid = rows >= 0
        return _top(self.name, rows[valid], scores[valid], self.limit, interest[valid], searched)

    def behaviour_search(
        self, shard_id: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, item rows), each ``(len(queries), k)``, of a shard for queries from
        other categories: scan the behaviour block, re-rank the best ``behaviour_rerank`` (at least
        4k)."""
        rows, block = self.behaviour[shard_id]
        k = min(k, len(rows))
        n_candidates = min(len(rows), max(self.behaviour_rerank, 4 * k))
        coarse = block @ queries[:, -self.behaviour_dim :].T  # (n, m)
        if n_candidates < len(rows):
            candidates = np.argpartition(-coarse, n_candidates - 1, axis=0)[
                :n_candidates
            ].T  # (m, c)
        else:
            candidates = np.broadcast_to(np.arange(len(rows)), (len(queries), len(rows)))
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_rows = np.empty((len(queries), k), dtype=np.int64)
        for j, cand in enumerate(candidates):
            exact = self.vectors[rows[cand]] @ queries[j]
            best = np.argsort(-exact, kind="stable")[:k]
            out_scores[j], out_rows[j] = exact[best], rows[cand[best]]
        return out_scores, out_rows
