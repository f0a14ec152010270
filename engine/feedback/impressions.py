"""The impression log: what each Recommend response showed, for attribution, online metrics and
exposure-aware training.

A request never waits on it. :meth:`ImpressionLog.offer` keeps a response with probability
``sample_rate`` (decided by the recommendation id, so a replayed id decides alike), puts it on a
bounded queue and returns; one writer thread drains the queue in batches (up to 500, waiting at
most 50 ms for a batch to fill), one SQLite transaction per batch, into a file of its own (the
event store's lock is never taken). When the queue is full the impression is dropped and counted,
so under overload the log degrades to a sample instead of slowing requests; a batch whose write
fails is dropped, counted and logged (once a minute at most). With ``max_mb`` set, the log keeps
within it by dropping its oldest lists first (SQLite reuses the freed pages, so the file stops
growing). Counts: :attr:`ImpressionLog.counts` (``written``, ``sampled_out``, ``queue_full``,
``write_error``, ``dropped_for_size``, ``forgotten``), also exported as
``crossrec_impression_log_total{outcome}`` by the engine. Tables and rows:
engine/feedback/shown.py.

Lists older than ``retention_days`` are removed by :meth:`ImpressionLog.compact`, which
the engine's maintenance pass runs at start and hourly (:meth:`engine.core.Engine.maintain`);
:meth:`ImpressionLog.delete_user` removes a user's lists and leaves no bytes behind
(``secure_delete`` and a truncated WAL), as the event store does.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from crossrec.vocabulary import US_PER_DAY
from engine.feedback.shown import LOG_VERSION, MIGRATIONS, SCHEMA, Impression, rows_of, sampled
from engine.state import store
from engine.state.store import DeleteIncomplete, truncate_wal

log = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0
#: How long a retention pass waits to truncate the log's WAL (it tries again next pass).
WAL_WAIT_COMPACT_S = 1.0


class ImpressionLog:
    """Append-only, batched, off the request path (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: float = 1.0,
        retention_days: float = 90.0,
        queue_size: int = 10_000,
        batch_size: int = 500,
        clock=time.time,
        linger_s: float = 0.05,
        max_mb: float = 0.0,
        hidden: Callable[[str, int], bool] = lambda user_key, ts_us: False,
    ) -> None:
        """``hidden(user_key, ts_us)``: True for a list that must not be written (computed for a
        user before their deletion finished); checked under the file's lock, so a list is either
        dropped or written before the deletion removes it."""
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"impression sample rate must be in [0, 1], got {sample_rate}")
        self.path = Path(path)
        #: Cap on the bytes the log's rows use (0: none); past it the oldest lists are dropped.
        self.max_bytes = int(max_mb * 2**20)
        self.sample_rate = sample_rate
        self.retention_days = retention_days
        self.batch_size = batch_size
        self.linger_s = linger_s
        self._hidden = hidden
        self.counts: Counter[str] = Counter()
        #: CPU time the writer thread spent writing (its cost to the machine, off the request
        #: path).
        self.write_seconds = 0.0
        self._clock = clock
        self._queue: queue.Queue[Impression | None] = queue.Queue(maxsize=queue_size)
        self._db_lock = threading.Lock()
        self._db = self._open_storage()
        self._schemas: set[str] = set()
        self._last_error_log = 0.0
        # Impressions queued and not yet written or dropped (flush waits for 0).
        self._pending = 0
        self._settled = threading.Condition()
        self._thread = threading.Thread(
            target=self._drain, name="crossrec-impressions", daemon=True
        )
        self._thread.start()

    #: Errors the storage raises (a delete that fails with one says DeleteUser is incomplete).
    storage_errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)

    #: Whether other engine processes write this log too (PostgreSQL): then the lists they showed
    #: can be looked up (:meth:`lists_by_id`) and outcomes are claimed once across them
    #: (:meth:`claim`).
    shared = False

    def _open_storage(self):
        return _open(self.path)

    def lists_by_id(self, recommendation_ids: list[str]) -> list[tuple]:
        """Lists other processes logged (none here: only a shared log has them)."""
        return []

    def claim(self, keys: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Outcome keys this process may count: all of them, with no other process counting."""
        return set(keys)

    # -- request path ---------------------------------------------------------------------------
    def offer(self, impression: Impression) -> bool:
        """Queue ``impression`` if sampled and there is room; never blocks. True when queued."""
        if not sampled(impression.recommendation_id, self.sample_rate):
            self.counts["sampled_out"] += 1
            return False
        with self._settled:
            try:
                self._queue.put_nowait(impression)
            except queue.Full:
                self.counts["queue_full"] += 1
                return False
            self._pending += 1
        return True

    # -- writer thread ----------------------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            # Linger a moment so that a trickle of responses still shares a transaction (one
            # commit per impression costs ~10x the CPU of a batch of hundreds).
            batch = [first]
            until = time.monotonic() + self.linger_s
            while len(batch) < self.batch_size and first is not None:
                try:
                    item = self._queue.get(timeout=max(until - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                batch.append(item)
                if item is None:
                    break
            stop = None in batch
            lists = [b for b in batch if b is not None]
            if lists:
                try:
                    started = time.thread_time()
                    if self.max_bytes:
                        self._make_room()
                    self.write(lists)
                    self.write_seconds += time.thread_time() - started
                    self.counts["written"] += len(lists)
                except Exception as exc:  # a failed write loses its batch, never a request
                    self.counts["write_error"] += len(lists)
                    self._log_error(exc, len(lists))
            with self._settled:
                self._pending -= len(lists)
                self._settled.notify_all()
            if stop:
                return

    def write(self, batch: list[Impression]) -> None:
        """Write ``batch`` in one transaction (the writer thread's; tests inject failures here),
        less the lists of users deleted meanwhile."""
        with self._db_lock:
            kept = [imp for imp in batch if not self._hidden(imp.user_key, imp.ts_us)]
            if len(kept) < len(batch):
                self.counts["forgotten"] += len(batch) - len(kept)
            self._insert(kept)

    def _insert(self, batch: list[Impression]) -> None:
        schemas, lists, shown = rows_of(batch, self._schemas)
        self._write_rows(schemas, lists, shown)
        self._schemas.update(s for s, _ in schemas)

    def _write_rows(self, schemas: list, lists: list, shown: list) -> None:
        """Store the rows in one transaction (the storage's part: SQLite here)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO feature_lists VALUES (?, ?)", schemas)
            db.executemany("INSERT OR IGNORE INTO lists VALUES (?, ?, ?, ?, ?, ?, ?, ?)", lists)
            db.executemany(
                "INSERT OR IGNORE INTO shown VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", shown
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _log_error(self, exc: Exception, n: int) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _LOG_EVERY_S:
            self._last_error_log = now
            log.error(
                "impression log: a write failed, %d impressions lost (%s; %d lost so far)",
                n,
                exc,
                self.counts["write_error"],
            )

    def used_bytes(self) -> int:
        """Bytes the log's pages hold (free pages left by deletions excluded: they are reused)."""
        with self._db_lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _make_room(self) -> None:
        """Past ``max_bytes``, drop the oldest tenth of the lists (at least one), counted as
        ``dropped_for_size``: the log keeps the newest lists within its cap."""
        if self.used_bytes() < self.max_bytes:
            return
        oldest = self._oldest_tenth()
        if oldest is not None:
            self.counts["dropped_for_size"] += self._delete("ts_us <= ?", oldest)

    def _oldest_tenth(self) -> int | None:
        """The time of the newest list among the oldest tenth (None: no lists)."""
        with self._db_lock:
            n = self._db.execute("SELECT count(*) FROM lists").fetchone()[0]
            return self._db.execute(
                "SELECT max(ts_us) FROM (SELECT ts_us FROM lists ORDER BY ts_us LIMIT ?)",
                (max(n // 10, 1),),
            ).fetchone()[0]

    # -- maintenance ------------------------------------------------------------------------------
    def compact(self, now_us: int | None = None) -> int:
        """Remove lists older than the retention; returns how many."""
        now_us = int(self._clock() * 1e6) if now_us is None else now_us
        cutoff = now_us - int(self.retention_days * US_PER_DAY)
        n = self._delete("ts_us < ?", cutoff)
        if n and not self._purge(WAL_WAIT_COMPACT_S):
            log.warning("impression log: a reader kept the write-ahead log busy; not truncated")
        return n

    def _purge(self, wait_s: float) -> bool:
        """Leave no copy of deleted rows in the storage's side files (SQLite: truncate the WAL);
        False when that could not be done within ``wait_s``."""
        return truncate_wal(self.path, wait_s)

    def delete_user(self, user_key: str) -> int:
        """Remove every list shown to the user, leaving no copy behind; returns how many. Lists
        still queued are dropped by :meth:`write` through ``hidden`` (nothing waits for the
        queue). Raises :class:`DeleteIncomplete` when the file could not be written or its
        write-ahead log truncated (idempotent: a retry finishes it)."""
        try:
            n = self._delete("user_key = ?", user_key)
        except self.storage_errors as exc:
            raise DeleteIncomplete(
                f"the lists shown to the user could not be removed from the impression log "
                f"({exc}); retry DeleteUser once that is mended"
            ) from exc
        if not self._purge(store.WAL_TRUNCATE_WAIT_S):
            raise DeleteIncomplete(
                f"{n} list(s) shown to the user removed, but their old bytes remain in the "
                "impression log's write-ahead log: another reader kept it busy; retry DeleteUser "
                "(idempotent) once that reader is done"
            )
        return n

    def _delete(self, where: str, value) -> int:
        with self._db_lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "DELETE FROM shown WHERE recommendation_id IN "
                    f"(SELECT recommendation_id FROM lists WHERE {where})",
                    (value,),
                )
                n = db.execute(f"DELETE FROM lists WHERE {where}", (value,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return n

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or dropped); False on timeout."""
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Write what is queued, stop the writer, close the file."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        with self._db_lock:
            self._db.close()


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # A log, batched: NORMAL keeps it consistent across crashes; the last batch may be lost on a
    # power cut, which sampling already tolerates.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA secure_delete=ON")
    db.executescript(SCHEMA)
    for table, column, declaration, _ in MIGRATIONS:  # a log written by an older engine
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    db.execute(f"PRAGMA user_version = {LOG_VERSION}")
    return db
