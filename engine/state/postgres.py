"""The event store on PostgreSQL: one truth for several engine processes and replicas.

Selected by a URL as ``[store] path`` (``postgresql://user@host:5432/db``); needs the
``postgres`` extra (psycopg 3 and its pool). Same contract as the SQLite store
(:class:`engine.state.store.EventStore`):

* an acknowledged append is committed (``synchronous_commit`` as the server has it - on by
  default); events are unique by their stored id across every replica (``ON CONFLICT DO
  NOTHING``), so a retry sent to another replica stores nothing twice;
* a server that cannot be reached makes every call fail at once with
  :class:`engine.state.store.StoreUnavailable` (``UNAVAILABLE``): nothing is acknowledged that is
  not committed, and the pool reconnects by itself when the server is back;
* ``delete_user`` removes the user's rows in one transaction: from its commit no query of any
  replica sees them. What it cannot promise, unlike SQLite's ``secure_delete``: the deleted
  tuples' bytes stay in the table's pages until autovacuum reuses them, in the server's WAL
  segments until they are recycled, and in base backups and replicas' copies. ``VACUUM`` would not
  erase them either (it marks the space free; it does not overwrite it), so none is run per call;
  byte-level erasure is an operator's ``VACUUM FULL`` (a table rewrite under an exclusive lock)
  plus the WAL and backup policy.

The tables live in a schema of their own, ``crossrec`` (``crossrec.events`` here; the impression
log's ``crossrec.lists``, ``crossrec.shown``, ``crossrec.feature_lists``), named as in the SQLite
files so that the offline readers run the same SQL on both.

Counts for GetStatus are one ``count`` query, kept for :data:`COUNTS_TTL_S` seconds (several
replicas write; no process can keep them on write as the SQLite store does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.state.store import (
    Appended,
    DeleteIncomplete,
    StoredEvent,
    StoreUnavailable,
    count_conflicts,
    event_of,
    row_of,
)

#: Seconds GetStatus's counts are reused before they are counted again.
COUNTS_TTL_S = 5.0
#: Seconds a call waits for a connection before it fails with UNAVAILABLE.
CONNECT_TIMEOUT_S = 2.0
#: After a failed connection, calls fail at once for this long (then one tries again): a query
#: answered without a history must not wait out a connect timeout first.
RETRY_AFTER_S = 1.0

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS crossrec;
CREATE TABLE IF NOT EXISTS crossrec.events (
  event_id TEXT PRIMARY KEY,
  user_key TEXT NOT NULL,
  item_id TEXT NOT NULL,
  action SMALLINT NOT NULL,
  ts_us BIGINT NOT NULL,
  session_id TEXT NOT NULL DEFAULT '',
  recommendation_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_user ON crossrec.events (user_key, ts_us);
CREATE INDEX IF NOT EXISTS events_by_time ON crossrec.events (ts_us);
"""

_COLUMNS = "event_id, user_key, item_id, action, ts_us, session_id, recommendation_id"


def redacted(target) -> str:
    """``target`` for a log line: a URL's password replaced by ``***`` (better kept out of the URL:
    libpq reads ``PGPASSWORD`` and ``~/.pgpass``)."""
    text = str(target)
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return text
    userinfo, _, host = rest.partition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def is_url(path: str) -> bool:
    """Whether ``[store] path`` names a PostgreSQL server rather than a SQLite file."""
    return path.startswith(("postgresql://", "postgres://"))


class PostgresEventStore:
    """Events in one PostgreSQL table, shared by every engine process that names the same URL."""

    def __init__(self, url: str, pool_size: int = 8) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError as exc:  # the extra is not installed
            raise ValueError(
                "a postgresql:// store needs psycopg: pip install 'crossrec[postgres]'"
            ) from exc
        self._errors: tuple[type[Exception], ...] = (psycopg.OperationalError, PoolTimeout)
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=CONNECT_TIMEOUT_S,
            kwargs={"connect_timeout": max(int(CONNECT_TIMEOUT_S), 1)},
            open=False,
        )
        self._counts: tuple[int, int] = (0, 0)
        self._counted_at = float("-inf")
        self._counts_lock = threading.Lock()
        self._down_until = float("-inf")
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            with self._connection() as conn:
                conn.execute(SCHEMA)
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _connection(self) -> Iterator:
        """A pooled connection inside one transaction; an unreachable server becomes
        :class:`StoreUnavailable` (at once for :data:`RETRY_AFTER_S` after a failure)."""
        if time.monotonic() < self._down_until:
            raise StoreUnavailable(
                "the event store (PostgreSQL) could not be reached a moment ago; nothing of "
                "this call was stored - retry"
            )
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._errors as exc:
            self._down_until = time.monotonic() + RETRY_AFTER_S
            raise StoreUnavailable(
                f"the event store (PostgreSQL) cannot be reached: {exc}; nothing of this call "
                "was stored - retry"
            ) from exc

    def append(self, events: list[StoredEvent]) -> Appended:
        rows = [row_of(e) for e in events]
        if not rows:
            return Appended(0, 0, 0)
        columns = list(zip(*rows))
        with self._connection() as conn:
            found = conn.execute(
                f"SELECT {_COLUMNS} FROM crossrec.events WHERE event_id = ANY(%s)",
                (list(set(columns[0])),),
            ).fetchall()
            conflicts = count_conflicts(rows, {r[0]: tuple(r) for r in found})
            stored = conn.execute(
                f"INSERT INTO crossrec.events ({_COLUMNS}) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::smallint[], "
                "%s::bigint[], %s::text[], %s::text[]) "
                "ON CONFLICT (event_id) DO NOTHING",
                [list(c) for c in columns],
            ).rowcount
        return Appended(stored, len(rows) - stored - conflicts, conflicts)

    def history(self, user_key: str, limit: int, since_us: int | None = None) -> list[StoredEvent]:
        since = -(2**63) if since_us is None else since_us
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM crossrec.events WHERE user_key = %s AND ts_us >= %s "
                "ORDER BY ts_us DESC LIMIT %s",
                (user_key, since, limit),
            ).fetchall()
        return [event_of(r) for r in reversed(rows)]

    def delete_user(self, user_key: str) -> int:
        """Delete the user's rows in one transaction (see the module docstring for what stays)."""
        try:
            with self._connection() as conn:
                deleted = conn.execute(
                    "DELETE FROM crossrec.events WHERE user_key = %s", (user_key,)
                ).rowcount
        except StoreUnavailable as exc:
            raise DeleteIncomplete(f"nothing was deleted: {exc}") from exc
        self._counted_at = float("-inf")
        return deleted

    def compact(self, before_us: int, chunk: int = 10_000) -> int:
        """Remove events older than ``before_us``, ``chunk`` rows per transaction."""
        removed = 0
        while True:
            with self._connection() as conn:
                n = conn.execute(
                    "DELETE FROM crossrec.events WHERE event_id IN (SELECT event_id FROM "
                    "crossrec.events WHERE ts_us < %s LIMIT %s)",
                    (before_us, chunk),
                ).rowcount
            removed += n
            if n < chunk:
                break
        if removed:
            self._counted_at = float("-inf")
        return removed

    def counts(self) -> tuple[int, int]:
        """(users, events), counted at most every :data:`COUNTS_TTL_S` seconds; the last counts
        while the server cannot be reached."""
        with self._counts_lock:
            if time.monotonic() - self._counted_at >= COUNTS_TTL_S:
                try:
                    with self._connection() as conn:
                        users, events = conn.execute(
                            "SELECT count(DISTINCT user_key), count(*) FROM crossrec.events"
                        ).fetchone()
                    self._counts = (int(users), int(events))
                    self._counted_at = time.monotonic()
                except StoreUnavailable:
                    pass
            return self._counts

    def close(self) -> None:
        self._pool.close()
