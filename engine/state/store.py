"""Durable event store. SQLite in WAL mode by default; anything with the same methods can replace it
(a shared database for several engine replicas).

An acknowledged append is on disk: each append is one transaction committed with
``synchronous=FULL``, so it survives ``kill -9`` of the engine (and a power cut, on honest disks).
User ids arrive already pseudonymised (see :mod:`engine.state.pseudonym`); raw ids never reach this
module. Events are deduplicated by ``event_id``, which makes retried ingestion safe.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import grpc

from crossrec.vocabulary import ACTIONS
from engine.errors import EngineError

log = logging.getLogger(__name__)

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


class StoreUnavailable(EngineError):
    """The store cannot be reached (a shared database that is down): the call stored nothing;
    retry. Queries go on without stored histories meanwhile."""

    code = grpc.StatusCode.UNAVAILABLE


class DeleteIncomplete(EngineError):
    """A DeleteUser could not finish (a full disk, a reader holding a write-ahead log): the
    message says what was and was not removed. Deleting is idempotent: a retry finishes it."""

    code = grpc.StatusCode.UNAVAILABLE


#: How long a delete waits for other readers of a SQLite file (a backup, a ``sqlite3`` shell, a
#: report) to let its write-ahead log be truncated. Nothing waits on the store meanwhile.
WAL_TRUNCATE_WAIT_S = 1.0


def truncate_wal(path: Path, wait_s: float = WAL_TRUNCATE_WAIT_S) -> bool:
    """Checkpoint ``path``'s write-ahead log and truncate it to zero bytes, so that the old page
    images it holds (deleted rows' bytes) are gone. Runs on a connection of its own that never
    waits inside SQLite (busy timeout 0: a pending TRUNCATE checkpoint blocks every writer of the
    file while it waits for readers), retried until ``wait_s`` has passed. True when the log was
    truncated; False when some reader kept it busy the whole time."""
    until = time.monotonic() + wait_s
    pause = 0.005
    try:
        db = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return False
    try:
        while True:
            try:
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
            except sqlite3.OperationalError:  # "database is locked": a writer, right now
                busy = 1
            if not busy:
                return True
            if time.monotonic() >= until:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
    finally:
        db.close()


class Appended(NamedTuple):
    """What one append did with its events (the three add up to the events given)."""

    stored: int
    #: Already stored under the same id with the same content (a retry).
    duplicates: int
    #: Already stored (or earlier in the same call) under the same id with other content: not
    #: stored; the first one is kept.
    conflicts: int


def row_of(e: StoredEvent) -> tuple:
    """The event as a row of the events table (column order; the action as its code)."""
    return (
        e.event_id,
        e.user_key,
        e.item_id,
        ACTION_CODES[e.action],
        e.ts_us,
        e.session_id,
        e.recommendation_id,
    )


def event_of(row) -> StoredEvent:
    """A row of the events table (:func:`row_of`'s order) as an event."""
    return StoredEvent(row[0], row[1], row[2], ACTION_NAMES[row[3]], row[4], row[5], row[6])


def count_conflicts(rows: list[tuple], stored: dict[str, tuple]) -> int:
    """How many of ``rows`` (event_id first) reuse an id that ``stored`` (id -> row) or an earlier
    row holds with other content."""
    first = dict(stored)
    conflicts = 0
    for row in rows:
        conflicts += first.setdefault(row[0], row) != row
    return conflicts


def open_store(path: str, max_mb: float = 0.0, shared: bool = False) -> EventStore:
    """The store ``[store] path`` names: a ``postgresql://`` URL (shared by every replica) or a
    SQLite file (``shared``: other processes of this engine write it too)."""
    from engine.state.postgres import PostgresEventStore, is_url

    if is_url(path):
        return PostgresEventStore(path)
    return SQLiteEventStore(path, int(max_mb * 1024 * 1024), shared)


class EventStore(Protocol):
    def append(self, events: list[StoredEvent]) -> Appended:
        """Store all events atomically; say how many were new, repeated and conflicting."""

    def history(self, user_key: str, limit: int, since_us: int | None = None) -> list[StoredEvent]:
        """The user's newest ``limit`` events (at or after ``since_us`` when given), oldest
        first."""

    def delete_user(self, user_key: str) -> int:
        """Remove every event of the user, leaving no copy of them behind; return how many there
        were. Raises :class:`DeleteIncomplete` when that could not be done (idempotent: a retry
        finishes it)."""

    def compact(self, before_us: int) -> int:
        """Remove every event older than ``before_us``; return how many."""

    def counts(self) -> tuple[int, int]:
        """(users, events) held."""

    def close(self) -> None: ...


class SQLiteEventStore:
    """The default store: one SQLite file in WAL mode, safe to share across the engine's threads."""

    def __init__(self, path: str | Path, max_bytes: int = 0, shared: bool = False) -> None:
        """``max_bytes``: cap on the database file (0: none); past it, appends raise
        :class:`StoreFull` and store nothing, as when the disk fills up. ``shared``: other
        processes write the file too, so counts are read from it (every 5 s at most) instead of
        kept on write."""
        self.shared = shared
        self._counted_at = float("-inf")
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
        #: A retention pass could not truncate the WAL (a reader held it): the next pass tries.
        self._wal_untruncated = False

    def append(self, events: list[StoredEvent]) -> Appended:
        rows = [row_of(e) for e in events]
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
                conflicts = self._conflicts(rows)
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
        return Appended(stored, len(rows) - stored - conflicts, conflicts)

    def _conflicts(self, rows: list[tuple], chunk: int = 500) -> int:
        """How many of ``rows`` reuse an id stored (or earlier in ``rows``) with other content
        (inside the append's transaction)."""
        first: dict[str, tuple] = {}
        ids = list({r[0] for r in rows})
        for at in range(0, len(ids), chunk):
            part = ids[at : at + chunk]
            found = self._db.execute(
                "SELECT event_id, user_key, item_id, action, ts_us, session_id, "
                f"recommendation_id FROM events WHERE event_id IN ({','.join('?' * len(part))})",
                part,
            ).fetchall()
            first.update((r[0], tuple(r)) for r in found)
        return count_conflicts(rows, first)

    def history(self, user_key: str, limit: int, since_us: int | None = None) -> list[StoredEvent]:
        since = -(2**63) if since_us is None else since_us
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, user_key, item_id, action, ts_us, session_id, recommendation_id "
                "FROM events "
                "WHERE user_key = ? AND ts_us >= ? ORDER BY ts_us DESC LIMIT ?",
                (user_key, since, limit),
            ).fetchall()
        return [event_of(r) for r in reversed(rows)]

    def delete_user(self, user_key: str) -> int:
        """Delete the user's events (one transaction, under the store's lock), then - with the
        lock released - truncate the WAL, whose frames still hold the deleted pages' old
        contents. Readers and writers of the store never wait on the truncation."""
        with self._lock:
            try:
                deleted = self._db.execute(
                    "DELETE FROM events WHERE user_key = ?", (user_key,)
                ).rowcount
            except sqlite3.Error as exc:
                raise DeleteIncomplete(
                    f"nothing was deleted: the event store could not be written ({exc}); "
                    "retry DeleteUser once that is mended"
                ) from exc
            self._events -= deleted
            self._users -= deleted > 0
        if not truncate_wal(self.path, WAL_TRUNCATE_WAIT_S):
            raise DeleteIncomplete(
                f"{deleted} event(s) deleted, but their old bytes remain in the event store's "
                f"write-ahead log: another reader of {self.path.name} kept it busy for "
                f"{WAL_TRUNCATE_WAIT_S:g} s; retry DeleteUser (idempotent) once that reader is done"
            )
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
                # Users whose every event expired are gone: one count, once per compaction.
                self._users = self._db.execute(
                    "SELECT COUNT(DISTINCT user_key) FROM events"
                ).fetchone()[0]
        if removed or self._wal_untruncated:
            self._wal_untruncated = not truncate_wal(self.path)
            if self._wal_untruncated:
                log.warning(
                    "retention: %d expired events removed; a reader kept the write-ahead log "
                    "busy, so it is truncated on the next pass",
                    removed,
                )
        return removed

    def counts(self) -> tuple[int, int]:
        """(users, events), kept on write: no query - unless other processes write the file too
        (``shared``): then counted, at most every 5 s."""
        if self.shared and time.monotonic() - self._counted_at >= 5.0:
            with self._lock:
                users, events = self._db.execute(
                    "SELECT COUNT(DISTINCT user_key), COUNT(*) FROM events"
                ).fetchone()
            self._users, self._events = int(users), int(events)
            self._counted_at = time.monotonic()
        return self._users, self._events

    def close(self) -> None:
        with self._lock:
            self._db.close()
