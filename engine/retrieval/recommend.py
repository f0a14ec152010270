"""The request path for one profile, top to bottom:

    targets -> candidates (every source) -> filter -> features -> rank -> diversify -> allocate
    -> interests

:class:`Recommender` holds what one index version needs (item arrays, the category model, the
sources, the ranker) and is built once per served version. A profile without events gets the
popularity fallback: the ``popular`` source over the categories with the largest session share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from engine.config import RetrievalConfig
from engine.errors import check_deadline
from engine.retrieval.allocate import Plan, allocate, plan_slots, shortfall
from engine.retrieval.candidates import Candidates, SourceResult, merge
from engine.retrieval.diversify import diversify
from engine.retrieval.explain import Explanation
from engine.retrieval.explain import explain as explain_result
from engine.retrieval.explore import exploration_pool, explore
from engine.retrieval.features import FEATURES, SOURCES, UserView, candidate_features
from engine.retrieval.filters import RowFilter, allowed_categories
from engine.retrieval.items import ItemTable
from engine.retrieval.query import Query
from engine.retrieval.ranking import BlendRanker, Ranker
from engine.retrieval.shard_search import ShardSearcher
from engine.retrieval.sources import (
    CandidateSource,
    Context,
    NeighbourSource,
    PopularSource,
    ShardSearchSource,
)
from engine.retrieval.targets import CategoryModel
from engine.state.profile import Profile
from indexer.artifact import IndexVersion

#: The feature column that says the shopper never touched the candidate's category.
_NEW_CATEGORY = FEATURES.index("cross_category")


@dataclass
class Result:
    """The chosen items (length <= k), best first, and how they were found."""

    rows: np.ndarray
    scores: np.ndarray
    retrieval_scores: np.ndarray
    interests: np.ndarray  # profile interest per item, -1 for the fallback
    sources: list[tuple[str, ...]]  # names of the sources that proposed each item
    targets: list[str]
    fallback: bool
    shards_searched: int
    shards_targeted: int
    #: Shards that missed the request's deadline (remote shard groups only).
    late_shards: tuple[str, ...] = ()
    #: Objective -> (len(rows),) calibrated score; empty without a ranker model.
    objective_scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: (len(rows), len(FEATURES)) the chosen items' feature rows (for explanations).
    features: np.ndarray | None = None
    stage_counts: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Why each item was chosen (``recommend(..., explain=True)``), else None.
    explanations: list[Explanation] | None = None
    #: (len(rows),) probability of each shown item at its position (engine/retrieval/explore.py);
    #: None: the engine's order, every item at probability 1.
    propensities: np.ndarray | None = None
    #: How the list was drawn (engine/retrieval/explore.py ``Draw``, JSON); "" for an arm that
    #: does not explore.
    exploration: str = ""


@dataclass(frozen=True)
class Gathered:
    """One request's candidates before ranking: ``features`` (len(candidates), len(FEATURES)),
    the slot ``plan`` and the ``targets`` (category codes, best first)."""

    candidates: Candidates
    features: np.ndarray
    plan: Plan
    targets: np.ndarray
    fallback: bool
    shards_searched: int
    shards_targeted: int
    stage_seconds: dict[str, float]
    late_shards: tuple[str, ...] = ()
    #: What the sources saw (profile, affinity over the targets, targets, k): benchmarks rerun
    #: one source alone on exactly this.
    context: Context | None = None
    #: Each source's best score before filtering: the blend's scale (engine/retrieval/ranking.py).
    tops: dict[str, float] = field(default_factory=dict)


class Recommender:
    """Everything the request path needs from one index version, built once per version."""

    def __init__(
        self,
        version: IndexVersion,
        settings: RetrievalConfig = RetrievalConfig(),
        ranker: Ranker | None = None,
        searcher: ShardSearcher | None = None,
    ) -> None:
        """``searcher`` answers the shard searches (default: in this process)."""
        self.version = version
        self.settings = settings
        self.items = ItemTable.from_version(version)
        self.categories = CategoryModel(
            version, self.items.categories, settings.transition_smoothing
        )
        self.neighbours = NeighbourSource(version, settings.neighbour_seeds, settings.source_limit)
        # The learned models answer 0/1 rows (who took what): their seeds count alike.
        self.ease, self.factors = (
            NeighbourSource(
                version, settings.neighbour_seeds, settings.source_limit, name, binary_seeds=True
            )
            for name in ("ease", "factors")
        )
        self.popular = PopularSource(
            self.items,
            settings.popular_per_category,
            2 * settings.target_categories,
            limit=10 * settings.source_limit,
        )
        self.search = ShardSearchSource(
            version,
            self.items,
            settings.candidates_per_shard,
            settings.search_categories,
            settings.behaviour_rerank,
            settings.source_limit,
            settings.search_touched,
            searcher,
        )
        #: Every source answers the same request context; a new source joins here (and in
        #: ``engine.retrieval.features.SOURCES``, which gives it its score and rank columns).
        self.sources: tuple[CandidateSource, ...] = (
            self.popular,
            self.neighbours,
            self.search,
            self.ease,
            self.factors,
        )
        self.vectors = np.asarray(version.vectors)
        #: The exploration draws' generator; None (serving): a fresh one per request, as a
        #: generator is not safe to share between threads. A seeded one makes a run repeatable.
        self.explore_rng: np.random.Generator | None = None
        # A zero weight leaves its source out of the blend.
        self.blend = BlendRanker({s: w for s, w in settings.blend.as_dict().items() if w})
        self.ranker: Ranker = ranker or self.blend

    @property
    def model_version(self) -> str:
        return self.ranker.model_version

    def gather(
        self,
        profile: Profile,
        query: Query,
        now_us: int | None = None,
        deadline: float | None = None,
    ) -> Gathered:
        """Everything before ranking: targets, every source's candidates, filters, features, at
        time ``now_us`` (µs since the epoch; default: now). Past ``deadline`` (``time.monotonic()``
        seconds) the work stops at the next stage with :class:`engine.errors.DeadlineExceeded`.

        The ranker's training rows are this method's output on replayed history
        (:mod:`engine.replay`), so what a model learns from is what it scores when serving."""
        clock = _Clock()
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        check_deadline(deadline, "targets")
        c = self.categories
        n_categories = len(c.categories)
        fallback = profile.empty
        if fallback:
            weights = np.zeros(n_categories)
            transition = c.share.copy()
        else:
            weights = c.weights(profile)
            transition = c.transition_scores(weights)
        touched = weights > 0
        allowed = allowed_categories(query, c.categories)
        plan = plan_slots(query, allowed, touched, c.index.__getitem__)
        s = self.settings
        affinity = np.where(
            plan.categories,
            weights + s.transition_weight * transition + s.category_prior * c.share,
            0.0,
        )
        targets = self._targets(plan, affinity)
        on_target = np.zeros_like(affinity)
        on_target[targets] = affinity[targets]
        context = Context(profile, on_target, targets, query.k, deadline)
        # The fallback profile has no items or interests: the neighbour and search sources answer
        # empty for it.
        results = []
        for source in self.sources:
            check_deadline(deadline, f"the {source.name} source")
            results.append(source.generate(context))
        clock.lap("candidates")
        excluded = (
            profile.item_rows
            if self.settings.exclude_seen
            else np.fromiter(profile.purchased_rows, np.int64)
        )
        # Each source's best score before any filter: the blend's scale (retrieval/ranking.py).
        tops = {r.name: float(r.scores.max()) for r in results if len(r.scores)}
        rows_ok = RowFilter(query, self.items, excluded)  # once: each filter pass reuses it
        candidates = self._filter(merge(SOURCES, results), rows_ok, plan)
        short = shortfall(plan, self.items.category_code[candidates.rows])
        if short.any():  # filters left a group short: walk its categories' items by popularity
            results.append(self._refill(short, affinity, query.k, rows_ok, deadline))
            candidates = self._filter(merge(SOURCES, results), rows_ok, plan)
        check_deadline(deadline, "features")
        user = UserView.of(profile, self.items, weights, transition, affinity, now_us)
        features = candidate_features(
            candidates, self.items, user, self.vectors, self.blend.blend(candidates, tops)
        )
        clock.lap("features")
        return Gathered(
            candidates,
            features,
            plan,
            targets,
            fallback,
            sum(r.searched for r in results),
            len(self.search.shards_for(context)),
            clock.laps,
            tuple(s for r in results for s in r.late),
            context,
            tops,
        )

    def recommend(
        self,
        profile: Profile,
        query: Query,
        now_us: int | None = None,
        deadline: float | None = None,
        explain: bool = False,
    ) -> Result:
        """The top ``query.k`` for ``profile`` at time ``now_us`` (µs since the epoch; default:
        now); ``deadline`` as for :meth:`gather`; ``explain``: also say why each item was chosen
        (``Result.explanations``)."""
        g = self.gather(profile, query, now_us, deadline)
        result = self.finish(profile, g, query, deadline)
        if explain:
            start = time.perf_counter()
            result.explanations = explain_result(
                result, profile, self.items, self.categories, self.ranker, query
            )
            result.stage_seconds["explain"] = time.perf_counter() - start
        return result

    def finish(
        self,
        profile: Profile,
        g: Gathered,
        query: Query,
        deadline: float | None = None,
        ranker: Ranker | None = None,
    ) -> Result:
        """Rank, diversify and allocate what :meth:`gather` found for ``profile`` (``ranker``:
        default the recommender's own; tuning passes others over the same gathered candidates)."""
        check_deadline(deadline, "ranking")
        clock = _Clock()
        candidates = g.candidates
        ranker = self.ranker if ranker is None else ranker
        scores = ranker.rank(g.features, self.items.price[candidates.rows], query)
        order = np.lexsort((candidates.rows, -scores))
        s = self.settings
        order = diversify(
            order,
            self.items.category_code[candidates.rows],
            self.items.brand[candidates.rows],
            query.k,
            s.max_category_share,
            s.max_brand_share,
        )
        clock.lap("rank")
        chosen = order[allocate(g.plan, self.items.category_code[candidates.rows[order]], query.k)]
        explored = None
        if query.exploration is not None and query.exploration.active and len(chosen):
            codes = self.items.category_code[candidates.rows]
            new_to_user = g.features[:, _NEW_CATEGORY] > 0.5
            pool = exploration_pool(order, chosen, codes, query.exploration.slot_pool, new_to_user)
            rng = self.explore_rng or np.random.default_rng()
            explored = explore(chosen, pool, query.exploration, rng)
            chosen = explored.order
        picked = candidates.take(chosen)
        interests = (
            self._interests(profile, picked)
            if not g.fallback
            else np.full(len(chosen), -1, np.int64)
        )
        objective_scores = ranker.objectives(g.features[chosen])
        clock.lap("allocate")
        return Result(
            rows=picked.rows,
            scores=scores[chosen],
            retrieval_scores=picked.score("search").astype(np.float64),
            interests=interests,
            sources=[
                tuple(s for s, v in zip(SOURCES, row) if v > 0) for row in picked.scores.tolist()
            ],
            targets=[self.categories.categories[t] for t in g.targets],
            fallback=g.fallback,
            shards_searched=g.shards_searched,
            shards_targeted=g.shards_targeted,
            late_shards=g.late_shards,
            objective_scores=objective_scores,
            features=g.features[chosen],
            stage_counts={
                "targets": len(g.targets),
                "candidates": len(candidates),
                "returned": len(chosen),
            },
            stage_seconds={**g.stage_seconds, **clock.laps},
            propensities=None if explored is None else explored.propensities,
            exploration="" if explored is None else explored.draw.to_json(),
        )

    def _targets(self, plan: Plan, affinity: np.ndarray) -> np.ndarray:
        """Each group's ``target_categories`` best categories by affinity, best first overall."""
        picked = np.zeros(len(affinity), dtype=bool)
        for group in plan.groups:
            codes = np.flatnonzero(group.categories)
            best = codes[np.argsort(-affinity[codes], kind="stable")][
                : max(self.settings.target_categories, 1)
            ]
            picked[best] = True
        codes = np.flatnonzero(picked)
        return codes[np.argsort(-affinity[codes], kind="stable")]

    def _filter(self, candidates: Candidates, allowed: RowFilter, plan: Plan) -> Candidates:
        ok = allowed.allowed(candidates.rows)
        ok &= plan.categories[self.items.category_code[candidates.rows]]
        return candidates.take(np.flatnonzero(ok))

    def _refill(
        self,
        short: np.ndarray,
        affinity: np.ndarray,
        k: int,
        allowed: RowFilter,
        deadline: float | None = None,
    ) -> SourceResult:
        """Each short category's best ``max(4k, 100)`` allowed items in popularity order (per
        category, so a large short category cannot crowd a small one out), scored like the popular
        source (a floor keeps categories without affinity or events in play)."""
        per_category = max(4 * k, 100)
        picked = []
        for code in np.flatnonzero(short):
            check_deadline(deadline, "the refill")
            rows = self.items.popular[code]
            picked.append(rows[allowed.allowed(rows)][:per_category])
        rows = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        scores = (affinity[self.items.category_code[rows]] + 1e-9) * (
            self.items.popularity_share[rows] + 1e-9
        )
        return SourceResult("popular", rows, scores.astype(np.float32))

    def _interests(self, profile: Profile, picked: Candidates) -> np.ndarray:
        """The interest behind each item: the one whose search found it, else the interest whose
        category it belongs to, else the interest whose category leads most often to it."""
        c = self.categories
        codes = self.items.category_code[picked.rows]
        sources = np.array([c.index[name] for name in profile.interest_categories])
        lead = c.matrix[sources][:, codes]  # (m, n): P(item's category | interest's category)
        lead[sources[:, None] == codes[None, :]] = 2.0  # its own category beats any transition
        return np.where(picked.interest >= 0, picked.interest, np.argmax(lead, axis=0))


class _Clock:
    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now
