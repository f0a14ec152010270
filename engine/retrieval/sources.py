"""Candidate sources: each proposes items for one profile, with a score, independently of the
others.

Each source: what it proposes; score; why.

``neighbours``: co-engagement neighbours of the user's items (same and other categories);
    ``sum_i w_i sim(i, j)`` over the user's items ``i`` (weights: action x recency); items people
    actually take together, the strongest item-level signal where behaviour exists.
``ease``: learned item-item neighbours of the same items (:mod:`indexer.ease`), scored the same
    way with EASE's weights; a regression on all the other items discounts what co-occurs with
    everything, so it reaches beyond the best-sellers where the cosine neighbours stay near them.
``factors``: low-rank item-item neighbours of the same items (:mod:`indexer.factors`: ALS item
    factors folded in), scored the same way; the factors link items that never met in one
    basket through the tastes they share, where co-occurrence and EASE see only observed pairs.
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

from engine.retrieval.candidates import SourceResult
from engine.retrieval.items import POPULAR_PER_CATEGORY, ItemTable
from engine.retrieval.shard_search import LocalShards, ShardAnswers, ShardAsk, ShardSearcher
from engine.state.profile import Profile
from indexer.artifact import IndexVersion


@dataclass(frozen=True)
class Context:
    """What sources see of a request. ``affinity``: (categories,) >= 0; ``targets``: category codes
    to search, best first; ``k``: the list length asked for."""

    profile: Profile
    affinity: np.ndarray
    targets: np.ndarray
    k: int
    #: ``time.monotonic()`` seconds by which the request must be answered (None: no limit).
    deadline: float | None = None


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
    late: tuple[str, ...] = (),
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
        late,
    )


class NeighbourSource:
    """Item-item neighbours of the user's heaviest ``max_seeds`` items: the version's
    co-engagement ``neighbours`` table, or its learned ``ease`` or ``factors`` table.

    ``binary_seeds``: each seed counts 1/len(seeds) instead of its profile weight (action x
    recency, normalised to 1). The learned models were fitted on who took what (a 0/1 row per
    user), so that is the input their weights answer; measured on the families' validation splits,
    binary seeds lift the untuned engine 6-9% (BENCHMARKS.md)."""

    def __init__(
        self,
        version: IndexVersion,
        max_seeds: int = 50,
        limit: int = 300,
        name: str = "neighbours",
        binary_seeds: bool = False,
    ) -> None:
        self.name = name
        self.neighbours = getattr(version, name, None)
        self.max_seeds = max_seeds
        self.limit = limit
        self.binary_seeds = binary_seeds

    def generate(self, context: Context) -> SourceResult:
        p = context.profile
        if self.neighbours is None or len(p.item_rows) == 0:
            return SourceResult.empty(self.name)
        seeds, weights = p.item_rows[: self.max_seeds], p.item_weights[: self.max_seeds]
        if self.binary_seeds:
            weights = np.ones(len(seeds))
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
    vectors' behaviour block with re-rank (:mod:`engine.retrieval.shard_search`): measured at 1M
    items, recall@10 1.000 against exact full-vector search at 200 candidates, 0.34 ms instead of
    1.9 ms per query on a 39k-item shard (BENCHMARKS.md).

    The searches go to ``searcher`` (default: this process's :class:`LocalShards`; Ray Serve shard
    groups with :mod:`engine.retrieval.ray_shards`), all of a request's at once; shards that miss
    the request's deadline there are reported in the result's ``late``.
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
        searcher: ShardSearcher | None = None,
    ) -> None:
        self.version = version
        self.items = items
        self.per_shard = per_shard
        self.categories = categories
        self.behaviour_rerank = behaviour_rerank
        self.limit = limit
        self.touched = touched
        self.searcher: ShardSearcher = searcher or LocalShards(
            version, items.shard_of, behaviour_rerank
        )

    def shards_for(self, context: Context) -> list[tuple[str, str]]:
        """(category, shard) pairs this source searches for ``context``: the shards of the first
        ``categories`` targets it covers (untouched ones only unless ``touched``)."""
        p = context.profile
        if p.empty:
            return []
        names = [self.items.categories[c] for c in context.targets]
        covered = [c for c in names if self.touched or c not in p.category_weights]
        return [(c, s) for c in covered[: self.categories] for s in self.version.shards_of(c)]

    def asks(self, context: Context) -> list[ShardAsk]:
        """One ask per non-empty shard of :meth:`shards_for`, in that order."""
        touched = context.profile.category_weights
        out = []
        for category, shard_id in self.shards_for(context):
            count = self.version.shard_count(shard_id)
            if count == 0:
                continue
            behaviour = category not in touched and self.searcher.has_behaviour(shard_id)
            out.append(ShardAsk(shard_id, int(min(count, self.per_shard)), behaviour))
        return out

    def generate(self, context: Context) -> SourceResult:
        p = context.profile
        if p.empty or len(context.targets) == 0:
            return SourceResult.empty(self.name)
        asks = self.asks(context)
        answers = (
            self.searcher.search(p.interests, asks, context.deadline) if asks else ShardAnswers()
        )
        all_scores, all_rows, all_interest = [], [], []
        m = len(p.interests)
        for ask in asks:
            if ask.shard_id not in answers.found:
                continue
            scores, rows = answers.found[ask.shard_id]
            all_scores.append(scores.ravel())
            all_rows.append(rows.ravel())
            all_interest.append(np.repeat(np.arange(m), rows.shape[1]))
        searched = len(all_rows)
        late = tuple(answers.late)
        if not all_rows:
            return SourceResult(
                self.name,
                np.zeros(0, np.int64),
                np.zeros(0, np.float32),
                searched=searched,
                late=late,
            )
        scores, rows, interest = (
            np.concatenate(all_scores),
            np.concatenate(all_rows),
            np.concatenate(all_interest),
        )
        valid = rows >= 0
        return _top(
            self.name, rows[valid], scores[valid], self.limit, interest[valid], searched, late
        )
