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
from engine.profile import Profile, ProfileEvent, build_profile
from engine.pseudonym import pseudonymise
from engine.retrieval import Query, Retrieved, Retriever
from engine.store import EventStore, StoredEvent
from indexer.artifact import IndexVersion, open_index

log = logging.getLogger(__name__)
RETRIEVAL_ONLY = "retrieval-only"


@dataclass(frozen=True)
class Served:
    """One index version and its model, swapped as a unit."""

    version: IndexVersion
    retriever: Retriever
    model_version: str
    loaded_at: float


@dataclass
class Recommendation:
    retrieved: Retrieved
    profile: Profile
    recommendation_id: str
    index_version: str
    model_version: str
    retriever: Retriever

    @property
    def item_ids(self) -> list[str]:
        """The recommended item ids, in the order served."""
        return [str(self.retriever.item_ids[c.row]) for c in self.retrieved.items]


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
        import faiss
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(self.config.faiss_threads)
        # Same reasoning for numpy's BLAS (behaviour-space scans): parallelism comes from requests.
        threadpool_limits(self.config.faiss_threads, user_api="blas")
        version = open_index(path, verify=True)
        retriever = Retriever(
            version,
            smoothing=self.config.transition_smoothing,
            candidates_per_shard=self.config.candidates_per_shard,
            target_categories=self.config.target_categories,
            behaviour_rerank=self.config.behaviour_rerank,
        )
        served = Served(version, retriever, RETRIEVAL_ONLY, time.time())
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

    def profile(self, served: Served, user_id: str, recent: list[ProfileEvent], now_us: int) -> Profile:
        events: list[ProfileEvent] = []
        if user_id:
            events = [ProfileEvent(e.item_id, e.action, e.ts_us) for e in self.store.history(self.user_key(user_id), self.config.history_events)]
        events += recent
        r = served.retriever
        return build_profile(
            events, r.row_of, np.asarray(served.version.vectors), r.categories, now_us,
            max_interests=self.config.max_interests, half_life_days=self.config.half_life_days,
        )

    def recommend(self, user_id: str, recent: list[ProfileEvent], query: Query, served: Served | None = None) -> Recommendation:
        """``served``: the version the request was validated against (default: the current one)."""
        served = served or self.served
        now_us = int(time.time() * 1e6)
        profile = self.profile(served, user_id, recent, now_us)
        retrieved = served.retriever.retrieve(profile, query)
        return Recommendation(retrieved, profile, uuid.uuid4().hex, served.version.version, served.model_version, served.retriever)

    def ingest(self, events: list[StoredEvent]) -> tuple[int, int]:
        """Store (already validated, pseudonymised) events; profiles see them on the next request."""
        return self.store.append(events)

    def delete_user(self, user_id: str) -> int:
        return self.store.delete_user(self.user_key(user_id))

    def status(self) -> dict:
        served = self._served
        users, events = self.store.counts()
        out = {"user_count": users, "event_count": events, "engine_version": self.engine_version, "started_at": self.started_at}
        if served is not None:
            m = served.version.manifest
            out.update(
                index_version=m["version"],
                model_version=served.model_version,
                item_count=int(m["items"]),
                category_count=len(m["category_shards"]),
                shard_count=len(m["shards"]),
                index_loaded_at=served.loaded_at,
            )
        return out
