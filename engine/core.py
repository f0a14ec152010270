"""The engine without the network: profiles, retrieval, ingestion, deletion, status, version swaps.

The gRPC layer (:mod:`engine.service`) validates requests, converts messages and calls this. All
methods here are synchronous and thread-safe; the service runs them in its bounded executor.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version as package_version

import numpy as np

from engine.config import EngineConfig
from engine.errors import NotServing
from engine.explain import Explanation, explain
from engine.profile import Profile, ProfileEvent, build_profile
from engine.pseudonym import pseudonymise
from engine.query import Query
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
    def load(self, path: str) -> Served:
        """Open and verify an index version, then swap it in. A version that fails verification
        raises and leaves the current one serving."""
        version = open_index(path, verify=True)
        served = Served(
            version, Recommender(version, self.config.recommender_settings()), time.time()
        )
        with self._swap_lock:
            self._served = served
        log.info("serving index %s (%d items)", version.version, version.items.height)
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
        events += recent
        items = served.recommender.items
        return build_profile(
            events,
            items.row_of,
            np.asarray(served.version.vectors),
            items.row_category,
            now_us,
            max_interests=self.config.max_interests,
            half_life_days=self.config.half_life_days,
        )

    def recommend(
        self,
        user_id: str,
        recent: list[ProfileEvent],
        query: Query,
        served: Served | None = None,
        explain_items: bool = False,
    ) -> Recommendation:
        """``served``: the version the request was validated against (default: the current one)."""
        served = served or self.served
        start = time.perf_counter()
        profile = self.profile(served, user_id, recent, int(time.time() * 1e6))
        profile_s = time.perf_counter() - start
        r = served.recommender
        result = r.recommend(profile, query)
        result.stage_seconds = {"profile": profile_s, **result.stage_seconds}
        explanations = (
            explain(result, profile, r.items, r.categories)
            if explain_items
            else [None] * len(result.rows)
        )
        items = []
        for row, score, retrieval, interest, sources, why in zip(
            result.rows.tolist(),
            result.scores.tolist(),
            result.retrieval_scores.tolist(),
            result.interests.tolist(),
            result.sources,
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
