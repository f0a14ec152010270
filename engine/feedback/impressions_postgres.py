"""The impression log on PostgreSQL: one log for every engine replica that shares a database.

Chosen with ``[feedback] impression_log = "postgresql://..."``, and by default when the event store
is a PostgreSQL URL (the log then lives in the same database). Everything else is the SQLite log's
(:class:`engine.feedback.impressions.ImpressionLog`): sampling, the bounded queue and its writer
thread, batches of up to 500 lists per transaction, retention, the size cap, DeleteUser. Tables
``crossrec.lists``, ``crossrec.shown``, ``crossrec.feature_lists`` mirror the SQLite ones
(``crossrec report`` and ``crossrec train --impressions`` read either).

What DeleteUser promises here is what the PostgreSQL event store promises (rows gone at commit,
bytes left to autovacuum; engine/state/postgres.py). Lists a replica computes for a user while
another replica deletes that user are dropped by the replica that computed them only if the
delete went through it: the engine's tombstones are per process.
"""

from __future__ import annotations

import threading

from engine.feedback.impressions import ImpressionLog
from engine.feedback.shown import MIGRATIONS

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS crossrec;
CREATE TABLE IF NOT EXISTS crossrec.lists (
  recommendation_id TEXT PRIMARY KEY,
  user_key TEXT NOT NULL,
  ts_us BIGINT NOT NULL,
  arm TEXT NOT NULL,
  index_version TEXT NOT NULL,
  model_version TEXT NOT NULL,
  features TEXT NOT NULL,
  exploration TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS lists_by_time ON crossrec.lists (ts_us);
CREATE INDEX IF NOT EXISTS lists_by_user ON crossrec.lists (user_key);
CREATE TABLE IF NOT EXISTS crossrec.shown (
  recommendation_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  item_id TEXT NOT NULL,
  category TEXT NOT NULL,
  cross_category INTEGER NOT NULL,
  sources TEXT NOT NULL,
  score DOUBLE PRECISION NOT NULL,
  price DOUBLE PRECISION,
  vector BYTEA,
  propensity DOUBLE PRECISION NOT NULL DEFAULT 1.0,
  PRIMARY KEY (recommendation_id, position)
);
CREATE TABLE IF NOT EXISTS crossrec.feature_lists (
  schema TEXT PRIMARY KEY,
  names TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS crossrec.outcomes (
  recommendation_id TEXT NOT NULL,
  item_id TEXT NOT NULL,
  action TEXT NOT NULL,
  PRIMARY KEY (recommendation_id, item_id, action)
);
"""


class PostgresImpressionLog(ImpressionLog):
    """:class:`ImpressionLog` with its rows in PostgreSQL (one connection, the writer's)."""

    shared = True

    def __init__(self, url: str, *args, **kwargs) -> None:
        import psycopg

        self.url = url
        self.storage_errors = (psycopg.Error, OSError)
        self._lookup = None
        self._lookup_lock = threading.Lock()
        super().__init__(url, *args, **kwargs)

    def _open_storage(self):
        import psycopg

        db = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        db.execute(SCHEMA)
        for table, column, _, declaration in MIGRATIONS:  # a log written by an older engine
            db.execute(
                f"ALTER TABLE crossrec.{table} ADD COLUMN IF NOT EXISTS {column} {declaration}"
            )
        return db

    def _connection(self):
        """The connection, opened again if the server dropped it (called under the lock)."""
        if self._db.closed or self._db.broken:
            self._db = self._open_storage()
        return self._db

    def _write_rows(self, schemas: list, lists: list, shown: list) -> None:
        db = self._connection()
        with db.transaction(), db.cursor() as cur:
            cur.executemany(
                "INSERT INTO crossrec.feature_lists VALUES (%s, %s) ON CONFLICT DO NOTHING",
                schemas,
            )
            cur.executemany(
                "INSERT INTO crossrec.lists VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                lists,
            )
            cur.executemany(
                "INSERT INTO crossrec.shown VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                shown,
            )

    def _delete(self, where: str, value) -> int:
        where = where.replace("?", "%s")
        with self._db_lock:
            db = self._connection()
            with db.transaction():
                db.execute(
                    "DELETE FROM crossrec.outcomes WHERE recommendation_id IN "
                    f"(SELECT recommendation_id FROM crossrec.lists WHERE {where})",
                    (value,),
                )
                db.execute(
                    "DELETE FROM crossrec.shown WHERE recommendation_id IN "
                    f"(SELECT recommendation_id FROM crossrec.lists WHERE {where})",
                    (value,),
                )
                return db.execute(f"DELETE FROM crossrec.lists WHERE {where}", (value,)).rowcount

    # -- live attribution across replicas -------------------------------------------------------
    # On a connection of their own (autocommit: each statement is its transaction), so that an
    # IngestEvents never waits behind the writer thread's batches.
    def _lookup_connection(self):
        """The request path's connection, opened again if the server dropped it (under the
        lookup lock)."""
        if self._lookup is None or self._lookup.closed or self._lookup.broken:
            import psycopg

            self._lookup = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
        return self._lookup

    def lists_by_id(self, recommendation_ids: list[str]) -> list[tuple]:
        """Lists any replica logged, by id: (id, user_key, ts_us, arm, model_version, item ids,
        prices, cross-category flags), for the lists this process did not show itself."""
        with self._lookup_lock:
            rows = (
                self._lookup_connection()
                .execute(
                    "SELECT l.recommendation_id, l.user_key, l.ts_us, l.arm, l.model_version, "
                    "array_agg(s.item_id ORDER BY s.position), "
                    "array_agg(coalesce(s.price, 'NaN') ORDER BY s.position), "
                    "array_agg(s.cross_category ORDER BY s.position) "
                    "FROM crossrec.lists l JOIN crossrec.shown s USING (recommendation_id) "
                    "WHERE l.recommendation_id = ANY(%s) GROUP BY l.recommendation_id",
                    (recommendation_ids,),
                )
                .fetchall()
            )
        return rows

    def claim(self, keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Of (list, item, action) outcome keys, those this replica may count: of lists in the
        log, the ones no replica claimed before (claimed now, so each counts once across the
        replicas); of lists not in the log (sampled out), all - no other replica can look those
        up. Claims live as long as their lists (retention and DeleteUser remove them together)."""
        if not keys:
            return set()
        columns = [list(c) for c in zip(*keys)]
        with self._lookup_lock:
            rows = (
                self._lookup_connection()
                .execute(
                    "WITH k AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) "
                    "AS k(recommendation_id, item_id, action)), "
                    "logged AS (SELECT k.* FROM k WHERE EXISTS (SELECT 1 FROM crossrec.lists l "
                    "WHERE l.recommendation_id = k.recommendation_id)), "
                    "claimed AS (INSERT INTO crossrec.outcomes SELECT * FROM logged "
                    "ON CONFLICT DO NOTHING RETURNING recommendation_id, item_id, action) "
                    "SELECT * FROM claimed UNION ALL SELECT * FROM k WHERE NOT EXISTS "
                    "(SELECT 1 FROM crossrec.lists l "
                    "WHERE l.recommendation_id = k.recommendation_id)",
                    columns,
                )
                .fetchall()
            )
        return {tuple(r) for r in rows}

    def _purge(self, wait_s: float) -> bool:
        return True  # nothing beyond the rows to remove: see the module docstring

    def used_bytes(self) -> int:
        with self._db_lock:
            return int(
                self._connection()
                .execute(
                    "SELECT pg_total_relation_size('crossrec.lists') + "
                    "pg_total_relation_size('crossrec.shown')"
                )
                .fetchone()[0]
            )

    def _oldest_tenth(self) -> int | None:
        with self._db_lock:
            db = self._connection()
            n = db.execute("SELECT count(*) FROM crossrec.lists").fetchone()[0]
            return db.execute(
                "SELECT max(ts_us) FROM (SELECT ts_us FROM crossrec.lists ORDER BY ts_us "
                "LIMIT %s) t",
                (max(n // 10, 1),),
            ).fetchone()[0]

    def close(self) -> None:
        super().close()
        with self._lookup_lock:
            if self._lookup is not None:
                self._lookup.close()
