"""The engine without the network: profiles, retrieval, ingestion, deletion, status, version swaps,
A/B arms, the impression log and live attribution.

The gRPC layer (:mod:`engine.service`) validates requests, converts messages and calls this. All
methods here are synchronous and thread-safe; the service runs them in its bounded executor.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version as package_version

import numpy as np

from crossrec.vocabulary import US_PER_DAY
from engine.config import EngineConfig
from engine.errors import FieldViolation, InvalidRequest, ModelMismatch, NotServing, SwapRefused
from engine.explain import Explanation, explain
from engine.features import FEATURES
from engine.impressions import Impression, ImpressionLog
from engine.metrics import Metrics
from engine.outcomes import RecentLists
from engine.profile import Profile, ProfileEvent, build_profile
from engine.pseudonym import hash_fraction, pseudonymise
from engine.query import Query
from engine.ranking import RETRIEVAL_ONLY, ModelRanker
from engine.recommend import Recommender, Result
from engine.store import EventStore, StoredEvent
from indexer.artifact import IndexVersion, open_index

log = logging.getLogger(__name__)

#: The arm that answers everyone without an A/B split, and the second arm's name.
ARM_A, ARM_B = "a", "b"
_CROSS_COLUMN = FEATURES.index("cross_category")


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
    arm: str = ARM_A

    @property
    def item_ids(self) -> list[str]:
        """The recommended item ids, in the order served."""
        return [i.item_id for i in self.items]


class Engine:
    def __init__(
        self, config: EngineConfig, store: EventStore, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or Metrics()
        self._key = config.key()
        self._arms: dict[str, Served] = {}
        #: Arm -> the (index, model) targets that last failed to load (not retried until moved).
        self._refused: dict[str, tuple[str, str]] = {}
        self._swap_lock = threading.Lock()
        self._ray_started = False
        self.started_at = time.time()
        self.engine_version = package_version("crossrec")
        self.impressions: ImpressionLog | None = None
        if config.impression_sample_rate > 0:
            self.impressions = ImpressionLog(
                config.impression_log_path(),
                config.impression_sample_rate,
                config.impression_retention_days,
                config.impression_queue,
            )
            self.metrics.watch_impression_log(lambda: dict(self.impressions.counts))
        self.recent_lists = RecentLists(
            int(config.attribution_window_hours * US_PER_DAY / 24), config.attribution_lists
        )

    # -- versions -----------------------------------------------------------------------------
    def load(self, path: str, model: str | None = None, arm: str = ARM_A) -> Served:
        """Open and verify an index version and its ranker model (``model``; default: the
        configured one for ``arm``, none when empty), then swap the pair in for ``arm``. A version
        or model that fails verification, or a model trained for another index version or feature
        list, raises and leaves the arm's current pair serving."""
        if arm not in (ARM_A, ARM_B):
            raise ValueError(f"arm must be {ARM_A!r} or {ARM_B!r}, got {arm!r}")
        remote = self.config.shard_groups > 0
        # With remote shard groups this process loads no faiss shard: the groups search them.
        version = open_index(path, verify=True, shards=() if remote else None)
        model_path = self.configured(arm)[1] if model is None else model
        ranker = load_ranker(model_path, version, self.config) if model_path else None
        searcher = self._remote_shards(version) if remote else None
        recommender = Recommender(version, self.config.recommender_settings(), ranker, searcher)
        served = Served(version, recommender, time.time())
        self.swap_in(served, arm)
        log.info(
            "arm %s: serving index %s (%d items) with ranker %s",
            arm,
            version.version,
            version.items.height,
            served.model_version,
        )
        return served

    def _remote_shards(self, version: IndexVersion):
        """``version``'s shard groups deployed on Ray Serve and ready (engine/ray_shards.py)."""
        from engine.ray_shards import RayShards, connect

        c = self.config
        self._ray_started = connect(c.ray_address) or self._ray_started
        return RayShards.deploy(
            version,
            c.shard_groups,
            c.shard_group_replicas,
            c.shard_group_cpus,
            c.behaviour_rerank,
            c.shard_group_timeout_s,
            c.shard_group_on_late,
        )

    def swap_in(self, served: Served, arm: str = ARM_A) -> None:
        """Make ``served`` (already verified) answer ``arm``'s requests from now on; requests in
        flight finish on the pair they started with."""
        with self._swap_lock:
            self._arms = {**self._arms, arm: served}

    def swap(
        self, arm: str = ARM_A, artifact: str = "", model: str | None = None
    ) -> tuple[Served, bool]:
        """Load and serve a pair for ``arm`` while serving (the admin RPC). ``artifact`` empty:
        the arm's configured one; ``model`` None: the arm's configured model, "" : none. Returns
        the pair and whether it differs from the one it replaced. A pair that fails to load or
        verify raises :class:`SwapRefused` and the arm keeps its pair."""
        if arm not in self._arms:
            raise InvalidRequest(
                [FieldViolation("arm", f"no arm {arm!r} is served (arms: {sorted(self._arms)})")]
            )
        before = self._arms[arm]
        try:
            served = self.load(artifact or self.configured(arm)[0], model, arm)
        except Exception as exc:  # any failure to open, verify or pair: the old pair stays
            raise SwapRefused(
                f"arm {arm} keeps index {before.version.version} with {before.model_version}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        changed = (served.version.version, served.model_version) != (
            before.version.version,
            before.model_version,
        )
        return served, changed

    def configured(self, arm: str) -> tuple[str, str]:
        """The arm's configured (artifact, model) paths."""
        c = self.config
        return (c.artifact, c.model) if arm == ARM_A else (c.arm_b_artifact, c.arm_b_model)

    def configured_targets(self, arm: str) -> tuple[str, str]:
        """(index version name, model version name or "") the arm's configured paths name now
        (a root's ``LATEST`` read afresh)."""
        from crossrec import versions
        from indexer.artifact import resolve_version
        from ranker.model import MODEL_FORMAT

        artifact, model = self.configured(arm)
        index = resolve_version(artifact).name
        return index, versions.resolve_version(model, MODEL_FORMAT).name if model else ""

    def refresh(self) -> list[str]:
        """Serve what each arm's configured roots name now (``LATEST`` moved: a new index version
        and/or model was published). A pair that fails is logged and not retried until the roots
        name another; returns the arms that changed."""
        changed = []
        for arm, served in self.arms.items():
            try:
                targets = self.configured_targets(arm)
            except Exception as exc:
                log.warning("arm %s: cannot resolve the configured versions: %s", arm, exc)
                continue
            model = "" if served.model_version == RETRIEVAL_ONLY else served.model_version
            if targets == (served.version.version, model) or targets == self._refused.get(arm):
                continue
            try:
                self.swap(arm)
                changed.append(arm)
            except SwapRefused as exc:
                self._refused[arm] = targets
                log.error("arm %s: new versions %s not served: %s", arm, targets, exc)
        return changed

    def load_configured(self) -> None:
        """Load arm a from ``artifact``/``model`` and, when configured, arm b from
        ``arm_b_artifact``/``arm_b_model``."""
        self.load(self.config.artifact)
        if self.config.arm_b_artifact:
            if not 0.0 <= self.config.arm_b_share <= 1.0:
                raise ValueError(f"arm_b_share must be in [0, 1], got {self.config.arm_b_share}")
            self.load(self.config.arm_b_artifact, arm=ARM_B)

    @property
    def served(self) -> Served:
        """Arm a's pair (the only one without an A/B split)."""
        served = self._arms.get(ARM_A)
        if served is None:
            raise NotServing("no index version loaded")
        return served

    @property
    def arms(self) -> dict[str, Served]:
        return dict(self._arms)

    def arm_share(self, arm: str) -> float:
        if ARM_B not in self._arms:
            return 1.0 if arm == ARM_A else 0.0
        b = self.config.arm_b_share
        return b if arm == ARM_B else 1.0 - b

    def arm_of(self, user_key: str) -> str:
        """The arm of a user (sticky: a keyed hash of the pseudonym and ``arm_salt``); an
        anonymous request (empty key) draws one at random."""
        if ARM_B not in self._arms:
            return ARM_A
        u = hash_fraction(f"{self.config.arm_salt}:{user_key}") if user_key else random.random()
        return ARM_B if u < self.config.arm_b_share else ARM_A

    def served_for(self, user_id: str) -> tuple[str, Served]:
        """The arm answering ``user_id`` and its pair."""
        arms = self._arms
        if ARM_A not in arms:
            raise NotServing("no index version loaded")
        arm = self.arm_of(self.key_of(user_id))
        return arm, arms.get(arm, arms[ARM_A])

    # -- users ------------------------------------------------------------------------------
    def user_key(self, user_id: str) -> str:
        return pseudonymise(user_id, self._key)

    def key_of(self, user_id: str) -> str:
        """The pseudonym of ``user_id``; "" for an anonymous request."""
        return self.user_key(user_id) if user_id else ""

    def profile(
        self, served: Served, user_id: str, recent: list[ProfileEvent], now_us: int
    ) -> Profile:
        return self._profile(served, self.key_of(user_id), recent, now_us)

    def _profile(
        self, served: Served, key: str, recent: list[ProfileEvent], now_us: int
    ) -> Profile:
        events: list[ProfileEvent] = []
        if key:
            events = [
                ProfileEvent(e.item_id, e.action, e.ts_us)
                for e in self.store.history(
                    key, self.config.history_events, self.retained_since(now_us)
                )
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
        arm: str | None = None,
    ) -> Recommendation:
        """``served`` and ``arm``: the pair and arm the request was validated against (default:
        the user's arm, :meth:`served_for`); ``now_us``: the request's time (default: now); past
        ``deadline`` (``time.monotonic()``) the work stops at the next stage
        (:class:`engine.errors.DeadlineExceeded`). The response is counted in the online metrics
        and offered to the impression log."""
        if served is None:
            arm, served = self.served_for(user_id)
        arm = arm or ARM_A
        key = self.key_of(user_id)  # once: the profile and the impression both need it
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        start = time.perf_counter()
        profile = self._profile(served, key, recent, now_us)
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
        rec = Recommendation(
            items, uuid.uuid4().hex, served.version.version, served.model_version, result, arm
        )
        self._shown(rec, key, now_us, served)
        return rec

    def _shown(self, rec: Recommendation, user_key: str, now_us: int, served: Served) -> None:
        """Count the list in the online metrics, remember it for live attribution, offer it to
        the impression log."""
        result = rec.result
        items = served.recommender.items
        prices = items.price[result.rows].astype(np.float64)
        cross = (
            result.features[:, _CROSS_COLUMN] > 0.5
            if result.features is not None
            else np.zeros(len(result.rows), bool)
        )
        ids = rec.item_ids
        m = self.metrics
        m.recommendations.labels(rec.arm, rec.model_version).inc()
        if result.late_shards:
            m.late_shards.inc(len(result.late_shards))
        n_cross = int(cross.sum())
        if n_cross:
            m.impressions.labels(rec.arm, rec.model_version, "true").inc(n_cross)
        if len(ids) - n_cross:
            m.impressions.labels(rec.arm, rec.model_version, "false").inc(len(ids) - n_cross)
        self.recent_lists.add(
            rec.recommendation_id, user_key, rec.arm, rec.model_version, now_us, ids, prices, cross
        )
        if self.impressions is not None:
            self.impressions.offer(
                Impression(
                    rec.recommendation_id,
                    user_key,
                    now_us,
                    rec.arm,
                    rec.index_version,
                    rec.model_version,
                    ids,
                    [i.category for i in rec.items],
                    cross,
                    result.sources,
                    result.scores,
                    prices,
                    result.features,
                    FEATURES,
                )
            )

    def ingest(self, events: list[StoredEvent]) -> tuple[int, int, int]:
        """Store (already validated, pseudonymised) events; profiles see them on the next
        request. Returns (stored, duplicates, naming items no served version knows): those are
        stored too, and count toward profiles once a version that knows them is served. Outcomes
        of recent lists are counted once stored."""
        stored, duplicates = self.store.append(events)
        known = [s.recommender.items.row_of for s in self._arms.values()]
        unknown = sum(not any(e.item_id in rows for rows in known) for e in events) if known else 0
        m = self.metrics
        if unknown:
            m.unknown_items.inc(unknown)
        for o in self.recent_lists.attribute(events):
            cross = "true" if o.cross_category else "false"
            m.attributed.labels(o.arm, o.model_version, o.action, cross).inc()
            if o.revenue:
                m.revenue.labels(o.arm, o.model_version).inc(o.revenue)
        return stored, duplicates, unknown

    def retained_since(self, now_us: int) -> int | None:
        """The oldest event time that still counts at ``now_us`` (None: every event counts)."""
        days = self.config.event_retention_days
        return None if days <= 0 else now_us - int(days * US_PER_DAY)

    def maintain(self, now_us: int | None = None) -> dict[str, int]:
        """One maintenance pass: remove events past ``event_retention_days`` and lists past
        ``impression_retention_days``; returns how many of each."""
        now_us = int(time.time() * 1e6) if now_us is None else now_us
        out = {"events": 0, "impressions": 0}
        since = self.retained_since(now_us)
        if since is not None:
            out["events"] = self.store.compact(since)
        if self.impressions is not None:
            out["impressions"] = self.impressions.compact(now_us)
        if any(out.values()):
            log.info("maintenance removed %(events)d events, %(impressions)d lists", out)
        return out

    def delete_user(self, user_id: str) -> int:
        """Remove the user's events and the lists shown to them; returns the events removed."""
        key = self.user_key(user_id)
        self.recent_lists.forget(key)
        if self.impressions is not None:
            self.impressions.delete_user(key)
        return self.store.delete_user(key)

    def close(self) -> None:
        """Write the queued impressions, close the files, and delete remote shard groups."""
        if self.impressions is not None:
            self.impressions.close()
        self.store.close()
        for served in self._arms.values():
            served.recommender.search.searcher.close()
        if self._ray_started:  # a local Ray this engine started: stop it with the engine
            from engine.ray_shards import disconnect

            disconnect()

    def status(self) -> dict:
        served = self._arms.get(ARM_A)
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
                shard_count=v.shard_total,
                index_loaded_at=served.loaded_at,
            )
        out["arms"] = [
            {
                "arm": arm,
                "index_version": s.version.version,
                "model_version": s.model_version,
                "share": self.arm_share(arm),
            }
            for arm, s in sorted(self._arms.items())
        ]
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
