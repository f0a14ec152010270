"""The engine without the network: one object that routes a user to an arm, builds their profile,
recommends, ingests, deletes, keeps retention and reports status.

It composes the parts that do each job: :mod:`engine.arms` (what each A/B arm serves, live swaps),
:mod:`engine.retrieval.recommend` (the request path on one index version),
:mod:`engine.feedback.loop` (metrics, live attribution, the impression log) and
:mod:`engine.state.store` (events). The gRPC layer (:mod:`engine.api.service`) validates requests,
converts messages and calls this. All methods here are synchronous and thread-safe; the service
runs them in its bounded executor.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version as package_version

from crossrec.vocabulary import US_PER_DAY
from engine.arms import ARM_A, ARM_B, Arms, Served
from engine.config import EngineConfig, ProfileConfig
from engine.errors import NotServing
from engine.feedback.loop import Feedback
from engine.feedback.metrics import Metrics
from engine.pins import Pins
from engine.recommendation import Recommendation, RecommendedItem, recommended_items
from engine.retrieval.query import Query
from engine.retrieval.recommend import Recommender
from engine.state.profile import Profile, ProfileEvent, build_profile
from engine.state.pseudonym import Pseudonyms
from engine.state.store import DeleteIncomplete, EventStore, StoredEvent, StoreUnavailable

__all__ = ["ARM_A", "ARM_B", "Engine", "Recommendation", "RecommendedItem", "Route", "Served"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ingested:
    """What one IngestEvents did with its events (stored + duplicates + conflicts + expired =
    the events given)."""

    stored: int
    duplicates: int
    conflicts: int
    #: Older than the event retention: not stored.
    expired: int
    #: Of those kept, naming items no served version knows (stored all the same).
    unknown_items: int


@dataclass(frozen=True)
class Route:
    """Where one request goes, decided once: the user's pseudonym (``key``, "" anonymous), their
    arm and the pair that arm serves now (validation and the answer use the same pair)."""

    key: str
    arm: str
    served: Served


class Engine:
    def __init__(
        self, config: EngineConfig, store: EventStore, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self.pseudonyms = Pseudonyms(config.store.key(store_has_events=store.counts()[1] > 0))
        self.versions = Arms(
            config.arms,
            config.ranker,
            config.retrieval,
            config.ray,
            Pins(config.pins_path()),
            gpu=config.gpu,
        )
        self.feedback = Feedback(config.feedback, config.impression_log_path(), self.metrics)
        self.started_at = time.time()
        self._unavailable_logged_at = float("-inf")
        self.engine_version = package_version("crossrec")

    # -- versions: ``self.versions`` (engine/arms.py) loads, swaps and follows the roots --------
    @property
    def served(self) -> Served:
        """Arm a's pair (the only one without an A/B split)."""
        served = self.versions.first()
        if served is None:
            raise NotServing("no index version loaded")
        return served

    # -- users -------------------------------------------------------------------------------------
    def user_key(self, user_id: str) -> str:
        """The pseudonym of ``user_id`` (keyed HMAC); "" for an anonymous request."""
        return self.pseudonyms.of(user_id)

    def route(self, user_id: str) -> Route:
        """The user's pseudonym, arm and that arm's pair (:class:`engine.errors.NotServing` before
        any version is loaded)."""
        key = self.user_key(user_id)
        arm, served = self.versions.for_key(key)
        return Route(key, arm, served)

    def profile(
        self, served: Served, user_id: str, recent: list[ProfileEvent], now_us: int
    ) -> Profile:
        """``user_id``'s profile on ``served``'s version at ``now_us``: their stored history (within
        retention) followed by ``recent``."""
        return self._profile_of_key(served, self.user_key(user_id), recent, now_us)

    def _profile_of_key(
        self, served: Served, key: str, recent: list[ProfileEvent], now_us: int
    ) -> Profile:
        events: list[ProfileEvent] = []
        if key:
            try:
                stored = self.store.history(
                    key, self.config.profile.history_events, self._retained_since(now_us)
                )
            except StoreUnavailable as exc:
                # A shared store that is down: answer from the request's own events (or cold
                # start) rather than fail the query; counted, logged at most once a minute.
                self.metrics.store_unavailable.inc()
                self._log_unavailable(exc)
                stored = []
            events = [ProfileEvent(e.item_id, e.action, e.ts_us) for e in stored]
        return profile_of(served.recommender, self.config.profile, events + recent, now_us)

    def _log_unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._unavailable_logged_at >= 60.0:
            self._unavailable_logged_at = now
            log.error("answering without stored histories: %s", exc)

    # -- requests ----------------------------------------------------------------------------------
    def recommend(
        self,
        user_id: str,
        recent: list[ProfileEvent],
        query: Query,
        route: Route | None = None,
        explain_items: bool = False,
        now_us: int | None = None,
        deadline: float | None = None,
    ) -> Recommendation:
        """``route``: the arm and pair the request was validated against (default: the user's,
        :meth:`route`); ``now_us``: the request's time (default: now); past ``deadline``
        (``time.monotonic()``) the work stops at the next stage
        (:class:`engine.errors.DeadlineExceeded`). The list is counted in the online metrics and
        offered to the impression log."""
        route = route or self.route(user_id)
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        explore = self.config.exploration
        if explore.active and route.arm in explore.arm_names:
            query = dataclasses.replace(query, exploration=explore)
        start = time.perf_counter()
        profile = self._profile_of_key(route.served, route.key, recent, now_us)
        profile_s = time.perf_counter() - start
        r = route.served.recommender
        result = r.recommend(profile, query, now_us, deadline, explain=explain_items)
        result.stage_seconds = {"profile": profile_s, **result.stage_seconds}
        rec = Recommendation(
            recommended_items(result, profile, r.items, result.explanations),
            uuid.uuid4().hex,
            route.served.version.version,
            route.served.model_version,
            result,
            route.arm,
        )
        prices = r.items.price[result.rows].astype(float)
        self.feedback.shown(rec, route.key, now_us, prices)
        return rec

    def ingest(self, events: list[StoredEvent], now_us: int | None = None) -> Ingested:
        """Store (already validated, pseudonymised) events, less those already past the event
        retention at ``now_us``; profiles see them on the next request. Events naming items no
        served version knows are stored too, and count toward profiles once a version that
        knows them is served. Outcomes of recent lists are counted once stored."""
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        since = self._retained_since(now_us)
        kept = events if since is None else [e for e in events if e.ts_us >= since]
        appended = self.store.append(kept)
        known = [s.recommender.items.row_of for s in self.versions.current().values()]
        unknown = sum(not any(e.item_id in rows for rows in known) for e in kept) if known else 0
        if unknown:
            self.metrics.unknown_items.inc(unknown)
        self.feedback.attribute(kept)
        return Ingested(*appended, expired=len(events) - len(kept), unknown_items=unknown)

    def delete_user(self, user_id: str) -> int:
        """Remove the user's events, then the lists shown to them (lists computed while this
        runs included); returns the events removed. Raises
        :class:`engine.state.store.DeleteIncomplete` saying what was and was not removed: the
        call is idempotent, so a retry finishes it."""
        key = self.user_key(user_id)
        with self.feedback.forgotten.deleting(key):
            deleted = self.store.delete_user(key)
            try:
                self.feedback.forget(key)
            except DeleteIncomplete as exc:
                raise DeleteIncomplete(f"{deleted} event(s) deleted; but {exc}") from exc
        return deleted

    # -- upkeep ------------------------------------------------------------------------------------
    def _retained_since(self, now_us: int) -> int | None:
        """The oldest event time that still counts at ``now_us`` (None: every event counts)."""
        days = self.config.store.event_retention_days
        return None if days <= 0 else now_us - int(days * US_PER_DAY)

    def maintain(self, now_us: int | None = None) -> dict[str, int]:
        """One maintenance pass: remove events past ``event_retention_days`` and lists past
        ``impression_retention_days``; returns how many of each."""
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        out = {"events": 0, "impressions": 0}
        since = self._retained_since(now_us)
        if since is not None:
            out["events"] = self.store.compact(since)
        out["impressions"] = self.feedback.compact(now_us)
        if any(out.values()):
            log.info("maintenance removed %(events)d events, %(impressions)d lists", out)
        return out

    def close(self) -> None:
        """Write the queued impressions, close the files, and delete remote shard groups."""
        self.feedback.close()
        self.store.close()
        self.versions.close()

    def status(self) -> dict:
        served = self.versions.first()
        users, events = self.store.counts()
        out = {
            "user_count": users,
            "event_count": events,
            "engine_version": self.engine_version,
            "started_at": self.started_at,
            "gpu": self.versions.gpu.shards,
        }
        if served is not None:
            v = served.version
            out.update(
                index_version=v.version,
                model_version=served.model_version,
                item_count=v.item_count,
                category_count=len(v.category_names),
                shard_count=v.shard_total,
                index_loaded_at=served.loaded_at,
            )
        out["arms"] = [
            {
                "arm": arm,
                "index_version": s.version.version,
                "model_version": s.model_version,
                "share": self.versions.share(arm),
            }
            for arm, s in sorted(self.versions.current().items())
        ]
        return out


def profile_of(
    recommender: Recommender, config: ProfileConfig, events: list[ProfileEvent], now_us: int
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
