"""Durable event store. SQLite in WAL mode by default; anything with the same methods can replace it
(a shared database for several engine replicas).

An acknowledged append is on disk: each append is one transaction committed with
``synchronous=FULL``, so it survives ``kill -9`` of the engine (and a power cut, on honest disks).
User ids arrive already pseudonymised (see :mod:`engine.state.pseudonym`); raw ids never reach this
module. Events are deduplicated by ``event_id``, which makes retried ingestion safe.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from crossrec.vocabulary import ACTIONS
from engine.errors import EngineError

# Stored as the position in ACTIONS + 1 (the API enum's numbers).
ACTION_CODES = {a: i + 1 for i, a in enumerate(ACTIONS)}
ACTION_NAMES = {v: k for k, v in ACTION_CODES.items()}


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    user_key: str  # pseudonymised user id
    item_id: str
    action: str  # view | click | cart | purchase
    ts_us: int  # microseconds since the Unix epoch, UTC
    session_id: str = ""
    recommendation_id: str = ""


class StoreFull(EngineError):
    """The disk (or the configured cap) is full: the call stored nothing; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc).lower()
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


class EventStore(Protocol):
    def append(self, events: list[StoredEvent]) -> tuple[int, int]:
        """Store all events atomically; return (stored, already present)."""

    def history(self, user_key: str, limit: int, since_us: int | None = None) -> list[StoredEvent]:
        """The user's newest ``limit`` events (at or after ``since_us`` when given), oldest
        first."""

    def delete_user(self, user_key: str) -> int:
        """Remove every event of the user; return how many there were."""

    def compact(self, before_us: int) -> int:
        """Remove every event older than ``before_us``; return how many."""

    def counts(self) -> tuple[int, int]:
        """(users, events) held."""

    def close(self) -> None: ...


class SQLiteEventStore:
    """The default store: one SQLite file in WAL mode, safe to share across the engine's threads."""

    def __init__(self, path: str | Path, max_bytes: int = 0) -> None:
        """``max_bytes``: cap on the database file (0: none); past it, appends raise
        :class:`StoreFull` and store nothing, as when the disk fills up."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Deleted rows are overwritten with zeros, not left in free pages (DeleteUser must leave
        # no bytes of the user behind).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS events (
                 event_id TEXT PRIMARY KEY,
                 user_key TEXT NOT NULL,
                 item_id TEXT NOT NULL,
                 action INTEGER NOT NULL,
                 ts_us INTEGER NOT NULL,
                 session_id TEXT NOT NULL DEFAULT '',
                 recommendation_id TEXT NOT NULL DEFAULT ''
               ) WITHOUT ROWID"""
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS events_by_user ON events (user_key, ts_us)")
        # Retention removes by time (engine/config/__init__.py, event_retention_days).
        self._db.execute("CREATE INDEX IF NOT EXISTS events_by_time ON events (ts_us)")
        if max_bytes:
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count = {max(int(max_bytes // page), 1)}")
        # Counts kept on write: GetStatus must never scan the table under the lock ingestion and
        # profiles wait on (90 ms at 410k events). One scan here, at open.
        users, events = self._db.execute(
            "SELECT COUNT(DISTINCT user_key), COUNT(*) FROM events"
        ).fetchone()
        self._users, self._events = int(users), int(events)

    def append(self, events: list[StoredEvent]) -> tuple[int, int]:
        rows = [
            (
                e.event_id,
                e.user_key,
                e.item_id,
                ACTION_CODES[e.action],
                e.ts_us,
                e.session_id,
                e.recommendation_id,
            )
            for e in events
        ]
        keys = {e.user_key for e in events}
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new_users = sum(
                    self._db.execute(
                        "SELECT 1 FROM events WHERE user_key = ? LIMIT 1", (key,)
                    ).fetchone()
                    is None
                    for key in keys
                )
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
                stored = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if _is_full(exc):
                    raise StoreFull(
                        f"the event store is full ({exc}); nothing of this call was stored"
                    ) from exc
                raise
            self._events += stored
            # A user without events before this batch has at least one stored now: nothing stored
            # can be a duplicate of theirs.
            self._users += new_users
        return stored, len(rows) - stored

    def history(self, user_key: str, limit: int, since_us: int | None = None) -> list[StoredEvent]:
        since = -(2**63) if since_us is None else since_us
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, user_key, item_id, action, ts_us, session_id, recommendation_id "
                "FROM events "
                "WHERE user_key = ? AND ts_us >= ? ORDER BY ts_us DESC LIMIT ?",
                (user_key, since, limit),
            ).fetchall()
        return [
            StoredEvent(r[0], r[1], r[2], ACTION_NAMES[r[3]], r[4], r[5], r[6])
            for r in reversed(rows)
        ]

    def delete_user(self, user_key: str) -> int:
        """Delete the user's events, then checkpoint and truncate the WAL, whose frames still hold
        the deleted pages' old contents."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM events WHERE user_key = ?", (user_key,))
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            deleted = cursor.rowcount
            self._events -= deleted
            self._users -= deleted > 0
            return deleted

    def compact(self, before_us: int, chunk: int = 10_000) -> int:
        """Remove events older than ``before_us`` in chunks (ingestion and profiles wait on the
        lock for one chunk at a time), then checkpoint and truncate the WAL so the removed rows'
        bytes leave it too (``secure_delete`` zeroes them in the database file)."""
        removed = 0
        while True:
            with self._lock:
                cursor = self._db.execute(
                    "DELETE FROM events WHERE event_id IN "
                    "(SELECT event_id FROM events WHERE ts_us < ? LIMIT ?)",
                    (before_us, chunk),
                )
                n = cursor.rowcount
                self._events -= n
                removed += n
            if n < chunk:
                break
        if removed:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                # Users whose every event expired are gone: one count, once per compaction.
                self._users = self._db.execute(
                    "SELECT COUNT(DISTINCT user_key) FROM events"
                ).fetchone()[0]
        return removed

    def counts(self) -> tuple[int, int]:
        """(users, events), kept on write: no query."""
        return self._users, self._events

    def close(self) -> None:
        with self._lock:
            self._db.close()
