"""What was shown and what came of it: the online metrics of every list, the recent lists that
live attribution matches events against, and the (optional, sampled) impression log.

The engine hands each answered list to :meth:`Feedback.shown` and each batch of stored events to
:meth:`Feedback.attribute`; deletion and retention reach the lists through :meth:`forget` and
:meth:`compact`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from crossrec.vocabulary import US_PER_DAY
from engine.config import FeedbackConfig
from engine.feedback.impressions import ImpressionLog
from engine.feedback.metrics import Metrics
from engine.feedback.outcomes import OUTCOMES, RecentLists
from engine.feedback.shown import Impression
from engine.recommendation import Recommendation
from engine.retrieval.features import FEATURES
from engine.state.postgres import redacted
from engine.state.store import StoredEvent

log = logging.getLogger(__name__)

_CROSS_COLUMN = FEATURES.index("cross_category")


class Forgotten:
    """Users being deleted, or deleted a moment ago. A list computed for such a user before
    their deletion finished (computed, perhaps, from the deleted history) is neither remembered
    for attribution nor logged, however late it arrives; lists computed afterwards are."""

    #: How long a finished deletion is remembered: far longer than any call may run
    #: (``[limits] max_deadline_s``).
    KEEP_S = 600.0

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._until: dict[str, float] = {}  # user key -> when its deletion finished (us)

    @contextlib.contextmanager
    def deleting(self, user_key: str) -> Iterator[None]:
        """While the block runs every list of ``user_key`` is hidden; afterwards those computed
        before it ended."""
        with self._lock:
            now_us = self._clock() * 1e6
            for key in [k for k, t in self._until.items() if t < now_us - self.KEEP_S * 1e6]:
                del self._until[key]
            self._running[user_key] += 1
            self._until[user_key] = float("inf")
        try:
            yield
        finally:
            with self._lock:
                self._running[user_key] -= 1
                if not self._running[user_key]:
                    del self._running[user_key]
                    self._until[user_key] = self._clock() * 1e6

    def hides(self, user_key: str, ts_us: int) -> bool:
        """Whether a list computed for ``user_key`` at ``ts_us`` must be dropped."""
        until = self._until.get(user_key)
        return until is not None and ts_us < until


class Feedback:
    """The metrics, recent lists and impression log of one engine."""

    def __init__(self, config: FeedbackConfig, log_path: str | Path, metrics: Metrics) -> None:
        """``log_path``: the impression log's file or ``postgresql://`` URL
        (``EngineConfig.impression_log_path``)."""
        self.metrics = metrics
        self.forgotten = Forgotten()
        self.impressions: ImpressionLog | None = None
        if config.impression_sample_rate > 0:
            path = log_path
            kind: type[ImpressionLog] = ImpressionLog
            if str(path).startswith(("postgresql://", "postgres://")):
                from engine.feedback.impressions_postgres import PostgresImpressionLog

                kind = PostgresImpressionLog
            try:
                self.impressions = kind(
                    path,
                    config.impression_sample_rate,
                    config.impression_retention_days,
                    config.impression_queue,
                    max_mb=config.impression_log_max_mb,
                    hidden=self.forgotten.hides,
                )
            except Exception as exc:  # sqlite3, OS or psycopg errors alike
                # The log is optional: a damaged or unwritable file, a full disk or a database that
                # cannot be reached must not stop the engine from serving. Said once here; the
                # metric stays at "unavailable".
                log.error(
                    "impression log %s unavailable, serving without it: %s", redacted(path), exc
                )
                self.metrics.impression_log_unavailable.set(1)
            else:
                opened = self.impressions
                self.metrics.watch_impression_log(lambda: dict(opened.counts))
        self.recent_lists = RecentLists(
            int(config.attribution_window_hours * US_PER_DAY / 24), config.attribution_lists
        )

    def shown(self, rec: Recommendation, user_key: str, now_us: int, prices: np.ndarray) -> None:
        """Count the list in the online metrics, remember it for live attribution, offer it to
        the impression log. ``prices``: (len(rec.items),) float64, the items' prices."""
        result = rec.result
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
        if self.forgotten.hides(user_key, now_us):
            return
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
                    result.propensities,
                    result.exploration,
                )
            )

    def attribute(self, events: list[StoredEvent]) -> None:
        """Count the outcomes of recent lists that stored ``events`` complete. With a shared
        (PostgreSQL) impression log, lists other replicas showed are looked up there, and each
        outcome is claimed there so that it counts once across the replicas."""
        m = self.metrics
        imp = self.impressions
        shared = imp if imp is not None and imp.shared else None
        try:
            if shared is not None:
                self._fetch_lists(shared, events)
            outcomes = self.recent_lists.attribute(events)
            if shared is not None and outcomes:
                keys = [(o.recommendation_id, o.item_id, o.action) for o in outcomes]
                claimed = shared.claim(keys)
                outcomes = [o for o, key in zip(outcomes, keys) if key in claimed]
        except Exception as exc:  # the events are stored: the metrics must not fail the call
            m.attribution_failed.inc()
            log.warning("live attribution skipped for %d events: %s", len(events), exc)
            return
        for o in outcomes:
            cross = "true" if o.cross_category else "false"
            m.attributed.labels(o.arm, o.model_version, o.action, cross).inc()
            if o.revenue:
                m.revenue.labels(o.arm, o.model_version).inc(o.revenue)

    def _fetch_lists(self, shared: ImpressionLog, events: list[StoredEvent]) -> None:
        """Lists quoted by ``events`` that this process did not show, from the shared log."""
        wanted = sorted(
            {
                e.recommendation_id
                for e in events
                if e.recommendation_id
                and e.action in OUTCOMES
                and e.recommendation_id not in self.recent_lists
            }
        )
        if not wanted:
            return
        for rid, user_key, ts_us, arm, model, items, prices, cross in shared.lists_by_id(wanted):
            prices, cross = np.asarray(prices, float), np.asarray(cross, bool)
            self.recent_lists.add(rid, user_key, arm, model, ts_us, items, prices, cross)

    def forget(self, user_key: str) -> None:
        """Drop every list shown to the user (recent lists and the impression log); call it
        inside ``self.forgotten.deleting(user_key)`` so that lists still in flight are dropped
        too. Raises :class:`engine.state.store.DeleteIncomplete` when the log could not be
        cleared."""
        self.recent_lists.forget(user_key)
        if self.impressions is not None:
            self.impressions.delete_user(user_key)

    def compact(self, now_us: int) -> int:
        """Remove logged lists past retention; returns how many."""
        return 0 if self.impressions is None else self.impressions.compact(now_us)

    def close(self) -> None:
        """Write the queued impressions and close the log."""
        if self.impressions is not None:
            self.impressions.close()
