"""DeleteUser's promise - no byte of the user left in any file - against what a live engine
meets: another reader holding a store's write-ahead log, lists computed while the delete runs,
a file that cannot be written. The call either keeps the promise or says what it did not do;
it never stalls the store, and a retry finishes it."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from helpers_tiny import NOW
from test_feedback_engine import RECENT, log_rows, make_engine

from engine.retrieval.query import Query
from engine.state import store as store_module
from engine.state.store import DeleteIncomplete, SQLiteEventStore, StoredEvent


def held_reader(path) -> sqlite3.Connection:
    """A connection inside a read transaction (a backup, a ``sqlite3`` shell, a long report)."""
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM events").fetchall()
    return reader


def files_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


def canary_store(tmp_path) -> SQLiteEventStore:
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    store.append([StoredEvent(f"c{i}", "canary-key-5f3a", "i1", "view", i) for i in range(20)])
    store.append([StoredEvent(f"o{i}", "other", "i1", "view", i) for i in range(5)])
    return store


def test_a_delete_waiting_for_a_reader_stalls_nothing_and_finishes_when_it_leaves(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(store_module, "WAL_TRUNCATE_WAIT_S", 30.0)
    store = canary_store(tmp_path)
    reader = held_reader(tmp_path / "events.sqlite")
    outcome: list = []
    deleting = threading.Thread(target=lambda: outcome.append(store.delete_user("canary-key-5f3a")))
    deleting.start()
    # While the delete waits on the reader, the store serves reads and writes.
    assert [e.event_id for e in store.history("other", 2)] == ["o3", "o4"]
    assert store.append([StoredEvent("o9", "other", "i1", "cart", 9)]) == (1, 0, 0)
    assert deleting.is_alive()
    reader.execute("COMMIT")
    reader.close()
    deleting.join(timeout=30)
    assert outcome == [20]
    assert (tmp_path / "events.sqlite-wal").stat().st_size == 0
    assert b"canary-key-5f3a" not in files_bytes(tmp_path)
    store.close()


def test_a_delete_the_reader_outlasts_says_so_and_a_retry_finishes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "WAL_TRUNCATE_WAIT_S", 0.2)
    store = canary_store(tmp_path)
    reader = held_reader(tmp_path / "events.sqlite")
    with pytest.raises(DeleteIncomplete, match=r"20 event\(s\) deleted.*write-ahead log.*retry"):
        store.delete_user("canary-key-5f3a")
    assert DeleteIncomplete.code.name == "UNAVAILABLE"  # retryable, as the message says
    assert store.history("canary-key-5f3a", 10) == []  # the rows are gone, only old bytes stay
    assert b"canary-key-5f3a" in files_bytes(tmp_path)  # ... which is why the call said so
    reader.execute("COMMIT")
    reader.close()
    assert store.delete_user("canary-key-5f3a") == 0
    assert b"canary-key-5f3a" not in files_bytes(tmp_path)
    assert store.counts() == (1, 5)
    store.close()


def test_a_delete_that_cannot_write_deletes_nothing_and_says_so(tmp_path):
    store = canary_store(tmp_path)
    store._db.execute("PRAGMA query_only = ON")  # a write refused, as a full disk refuses one
    with pytest.raises(DeleteIncomplete, match="nothing was deleted"):
        store.delete_user("canary-key-5f3a")
    assert len(store.history("canary-key-5f3a", 50)) == 20
    assert store.counts() == (2, 25)
    store._db.execute("PRAGMA query_only = OFF")
    assert store.delete_user("canary-key-5f3a") == 20
    store.close()


def test_lists_computed_while_a_delete_runs_are_never_kept(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version)
    key = engine.user_key("u1")
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW)
    # A list computed before the delete finished whose answer lands after it (a slow request).
    late = []
    real_forget = engine.feedback.forget

    def forget_with_a_list_in_flight(user_key):
        late.append(engine.recommend("u1", RECENT, Query(k=2), now_us=NOW + 1))
        real_forget(user_key)

    engine.feedback.forget = forget_with_a_list_in_flight
    assert engine.delete_user("u1") == 0
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW - 5)  # computed before, answered after
    assert late  # the in-flight list was computed
    assert engine.feedback.impressions.flush()
    lists, _ = log_rows(tmp_path / "events.impressions.sqlite")
    assert [r[1] for r in lists] == []
    assert len(engine.feedback.recent_lists) == 0
    # Lists computed after the delete are the user's new history.
    engine.recommend("u1", RECENT, Query(k=2), now_us=2 * NOW)
    assert engine.feedback.impressions.flush()
    lists, _ = log_rows(tmp_path / "events.impressions.sqlite")
    assert [(r[1], r[2]) for r in lists] == [(key, 2 * NOW)]
    assert engine.feedback.impressions.counts["forgotten"] >= 1
    engine.close()


def test_a_delete_does_not_wait_for_the_impression_queue(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version)
    log = engine.feedback.impressions
    blocked = threading.Event()
    real_write = log.write

    def stuck_write(batch):
        blocked.wait(30)
        real_write(batch)

    log.write = stuck_write
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW)  # queued behind a stuck writer
    assert engine.delete_user("u1") == 0  # returns although the queue has not drained
    blocked.set()
    assert log.flush()
    lists, _ = log_rows(tmp_path / "events.impressions.sqlite")
    assert lists == []  # the queued list was dropped when written, not after the delete
    engine.close()


def test_an_impression_log_that_cannot_be_cleared_fails_the_call_after_the_events(
    tmp_path, tiny_version
):
    engine = make_engine(tmp_path, tiny_version)
    key = engine.user_key("u1")
    engine.store.append([StoredEvent("e1", key, "t0", "view", NOW)])
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW)
    log = engine.feedback.impressions
    assert log.flush()
    log._db.execute("PRAGMA query_only = ON")
    with pytest.raises(DeleteIncomplete, match=r"1 event\(s\) deleted; but the lists shown"):
        engine.delete_user("u1")
    log._db.execute("PRAGMA query_only = OFF")
    assert engine.delete_user("u1") == 0  # the retry finishes the job
    lists, _ = log_rows(tmp_path / "events.impressions.sqlite")
    assert lists == []
    engine.close()
