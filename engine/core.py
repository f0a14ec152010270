"""The engine without the network: profiles, retrieval, ingestion, deletion, status, version swaps.

The gRPC layer (:mod:`engine.service`) validates requests, converts messages and calls this. All
methods here are synchronous and thread-safe; the service runs them in its bounded executor.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version as package_version

from engine.config import EngineConfig
from engine.errors import ModelMismatch, NotServing
from engine.explain import Explanation, explain
from engine.profile import Profile, ProfileEvent, build_profile
from engine.pseudonym import pseudonymise
from engine.query import Query
from engine.ranking import ModelRanker
from engine.recommend import Recommender, Result
from engine.store import EventStore, StoredEvent
from indexer.artifact import IndexVersion, open_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One index version and its ranker, swapped as a unit."""

    version: IndexVersion
    recommender: Recommender
    loaded_at: float

    @property
    def model_version(self) -> str:
        return self.recommender.model_version


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    category: str
    score: float
    interest_index: int  # -1 for the popularity fallback
    interest_label: str
    shard: str
    retrieval_score: float
    sources: tuple[str, ...]
    #: Objective -> calibrated probability (empty without a ranker model).
    objective_scores: dict[str, float] = field(default_factory=dict)
    explanation: Explanation | None = None


@dataclass
class Recommendation:
    items: list[RecommendedItem]
    recommendation_id: str
    index_version: str
    model_version: str
    result: Result

    @property
    def item_ids(self) -> list[str]:
        """The recommended item ids, in the order served."""
        return [i.item_id for i in self.items]


class Engine:
    def __init__(self, config: EngineConfig, store: EventStore) -> None:
        self.config = config
        self.store = store
        self._key = config.key()
        self._served: Served | None = None
        self._swap_lock = threading.Lock()
        self.started_at = time.time()
        self.engine_version = package_version("crossrec")

    # -- versions -----------------------------------------------------------------------------
    def load(self, path: str, model: str | None = None) -> Served:
        """Open and verify an index version and its ranker model (``model``; default: the
        configured one, none when empty), then swap the pair in. A version or model that fails
        verification, or a model trained for another index version or feature list, raises and
        leaves the current pair serving."""
        version = open_index(path, verify=True)
        model_path = self.config.model if model is None else model
        ranker = load_ranker(model_path, version, self.config) if model_path else None
        served = Served(
            version, Recommender(version, self.config.recommender_settings(), ranker), time.time()
        )
        with self._swap_lock:
            self._served = served
        log.info(
            "serving index %s (%d items) with ranker %s",
            version.version,
            version.items.height,
            served.model_version,
        )
        return served

    @property
    def served(self) -> Served:
        served = self._served
        if served is None:
            raise NotServing("no index version loaded")
        return served

    # -- users ------------------------------------------------------------------------------
    def user_key(self, user_id: str) -> str:
        return pseudonymise(user_id, self._key)

    def profile(
        self, served: Served, user_id: str, recent: list[ProfileEvent], now_us: int
    ) -> Profile:
        events: list[ProfileEvent] = []
        if user_id:
            events = [
                ProfileEvent(e.item_id, e.action, e.ts_us)
                for e in self.store.history(self.user_key(user_id), self.config.history_events)
            ]
        return profile_of(served.recommender, self.config, events + recent, now_us)

    def recommend(
        self,
        user_id: str,
        recent: list[ProfileEvent],
        query: Query,
        served: Served | None = None,
        explain_items: bool = False,
        now_us: int | None = None,
        deadline: float | None = None,
    ) -> Recommendation:
        """``served``: the version the request was validated against (default: the current one);
        ``now_us``: the request's time (default: now); past ``deadline`` (``time.monotonic()``)
        the work stops at the next stage (:class:`engine.errors.DeadlineExceeded`)."""
        served = served or self.served
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        start = time.perf_counter()
        profile = self.profile(served, user_id, recent, now_us)
        profile_s = time.perf_counter() - start
        r = served.recommender
        result = r.recommend(profile, query, now_us, deadline)
        result.stage_seconds = {"profile": profile_s, **result.stage_seconds}
        if explain_items:
            start = time.perf_counter()
            explanations: list = explain(result, profile, r.items, r.categories, r.ranker, query)
            result.stage_seconds["explain"] = time.perf_counter() - start
        else:
            explanations = [None] * len(result.rows)
        objective_scores = [
            {o: float(v[i]) for o, v in result.objective_scores.items()}
            for i in range(len(result.rows))
        ]
        items = []
        for row, score, retrieval, interest, sources, objectives, why in zip(
            result.rows.tolist(),
            result.scores.tolist(),
            result.retrieval_scores.tolist(),
            result.interests.tolist(),
            result.sources,
            objective_scores,
            explanations,
        ):
            items.append(
                RecommendedItem(
                    item_id=str(r.items.item_ids[row]),
                    category=r.items.row_category[row],
                    score=score,
                    interest_index=interest,
                    interest_label=profile.interest_categories[interest]
                    if interest >= 0
                    else "popular",
                    shard=str(r.items.shard_of[row]),
                    retrieval_score=retrieval,
                    sources=sources,
                    objective_scores=objectives,
                    explanation=why,
                )
            )
        return Recommendation(
            items, uuid.uuid4().hex, served.version.version, served.model_version, result
        )

    def ingest(self, events: list[StoredEvent]) -> tuple[int, int]:
        """Store (already validated, pseudonymised) events; profiles see them on the next
        request."""
        return self.store.append(events)

    def delete_user(self, user_id: str) -> int:
        return self.store.delete_user(self.user_key(user_id))

    def status(self) -> dict:
        served = self._served
        users, events = self.store.counts()
        out = {
            "user_count": users,
            "event_count": events,
            "engine_version": self.engine_version,
            "started_at": self.started_at,
        }
        if served is not None:
            v = served.version
            out.update(
                index_version=v.version,
                model_version=served.model_version,
                item_count=v.item_count,
                category_count=len(v.category_names),
                shard_count=len(v.shards),
                index_loaded_at=served.loaded_at,
            )
        return out


def profile_of(
    recommender: Recommender, config: EngineConfig, events: list[ProfileEvent], now_us: int
) -> Profile:
    """The profile of ``events`` at ``now_us`` on ``recommender``'s version, as every request builds
    it (and the ranker's replay, so its rows match what serving computes)."""
    items = recommender.items
    return build_profile(
        events,
        items.row_of,
        recommender.vectors,
        items.row_category,
        now_us,
        max_interests=config.max_interests,
        half_life_days=config.half_life_days,
    )


def load_ranker(path: str, version: IndexVersion, config: EngineConfig) -> ModelRanker:
    """Load and verify the ranker model at ``path`` for ``version``; :class:`ModelMismatch` when it
    was trained for another index version or on other features."""
    from ranker.model import RankerModel

    model = RankerModel.load(path, num_threads=config.ranker_threads)
    paired = model.trained_on.get("index_version")
    if paired != version.version:
        raise ModelMismatch(
            f"ranker model {model.version} was trained for index version {paired!r}, "
            f"not {version.version!r}: train one for this index (crossrec train --index ...)"
        )
    try:
        return ModelRanker(model, config.objective_weights())
    except ValueError as exc:
        raise ModelMismatch(str(exc)) from exc
