"""The event store's contract, the same assertions against both backends: the embedded SQLite file
and a real PostgreSQL server (started by the tests, tests/helpers_postgres.py). Two store objects
on one database stand for two engine replicas."""

from __future__ import annotations

import time

import pytest

from engine.state import postgres as postgres_module
from engine.state.postgres import PostgresEventStore
from engine.state.store import DeleteIncomplete, SQLiteEventStore, StoredEvent, StoreUnavailable


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path, monkeypatch):
    """A function opening a store on one shared location (call it twice: two replicas)."""
    monkeypatch.setattr(postgres_module, "COUNTS_TTL_S", 0.0)  # counts exact, for the asserts
    opened = []
    if request.param == "sqlite":
        path = tmp_path / "events.sqlite"

        def make():
            opened.append(SQLiteEventStore(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("postgres_url")

        def make():
            opened.append(PostgresEventStore(url))
            return opened[-1]

    yield make
    for store in opened:
        store.close()


def events(user: str, n: int, start: int = 0, prefix: str = "e") -> list[StoredEvent]:
    return [StoredEvent(f"{prefix}{i}", user, f"i{i}", "view", i) for i in range(start, start + n)]


def test_appends_are_idempotent_and_histories_newest_first(open_store):
    store = open_store()
    batch = [*events("k1", 3), StoredEvent("f0", "k2", "i9", "purchase", 5)]
    assert store.append(batch) == (4, 0, 0)
    assert store.append([*batch[:2], StoredEvent("e9", "k1", "i9", "cart", 9)]) == (1, 2, 0)
    assert [e.event_id for e in store.history("k1", 10)] == ["e0", "e1", "e2", "e9"]
    assert [e.event_id for e in store.history("k1", 2)] == ["e2", "e9"]  # newest, oldest first
    assert [e.event_id for e in store.history("k1", 10, since_us=2)] == ["e2", "e9"]
    assert store.history("k2", 10) == [StoredEvent("f0", "k2", "i9", "purchase", 5)]
    assert store.counts() == (2, 5)
    assert store.append([]) == (0, 0, 0)


def test_an_id_reused_with_other_content_is_a_conflict(open_store):
    store = open_store()
    first = StoredEvent("x", "k1", "i1", "view", 10, "s1")
    assert store.append([first]) == (1, 0, 0)
    assert store.append([StoredEvent("x", "k1", "i2", "view", 10, "s1")]) == (0, 0, 1)
    a, b = StoredEvent("y", "k1", "i1", "view", 20), StoredEvent("y", "k1", "i9", "view", 20)
    assert store.append([a, b, a]) == (1, 1, 1)
    assert [(e.event_id, e.item_id) for e in store.history("k1", 10)] == [("x", "i1"), ("y", "i1")]


def test_delete_user_removes_only_that_user(open_store):
    store = open_store()
    store.append(events("k1", 4) + events("k2", 2, prefix="o"))
    assert store.delete_user("k1") == 4
    assert store.history("k1", 10) == []
    assert len(store.history("k2", 10)) == 2
    assert store.delete_user("nobody") == 0
    assert store.counts() == (1, 2)


def test_compaction_removes_what_is_older_in_chunks(open_store):
    store = open_store()
    store.append(events("k1", 7))
    assert store.compact(5, chunk=2) == 5  # i0..i4, two at a time
    assert [e.ts_us for e in store.history("k1", 10)] == [5, 6]
    assert store.counts() == (1, 2)


def test_replicas_on_one_store_see_one_truth(open_store):
    a, b = open_store(), open_store()
    assert a.append(events("k1", 2)) == (2, 0, 0)
    assert [e.event_id for e in b.history("k1", 10)] == ["e0", "e1"]  # written at A, read at B
    assert b.append(events("k1", 2)) == (0, 2, 0)  # a retry sent to the other replica
    assert a.delete_user("k1") == 2
    assert b.history("k1", 10) == []  # deleted at A, gone at B
    a.close()
    c = open_store()  # a restart keeps what was acknowledged
    b.append(events("k2", 1))
    assert len(c.history("k2", 10)) == 1


@pytest.mark.integration
def test_a_postgres_server_that_goes_away_fails_calls_at_once_and_comes_back(
    postgres_url, postgres_cluster, monkeypatch
):
    monkeypatch.setattr(postgres_module, "COUNTS_TTL_S", 0.0)
    store = PostgresEventStore(postgres_url)
    store.append(events("k1", 2))
    assert store.counts() == (1, 2)
    postgres_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"cannot be reached.*nothing of this call"):
            store.append(events("k1", 1, start=5))
        with pytest.raises(StoreUnavailable):
            store.history("k1", 10)
        with pytest.raises(DeleteIncomplete, match="nothing was deleted"):
            store.delete_user("k1")
        assert store.counts() == (1, 2)  # the last counts, not an error
        assert time.monotonic() - started < 30  # bounded by the connect timeouts, never a hang
        assert StoreUnavailable.code.name == "UNAVAILABLE"
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 20
    while True:  # the pool reconnects by itself
        try:
            assert store.append(events("k1", 1, start=5)) == (1, 0, 0)
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert [e.event_id for e in store.history("k1", 10)] == ["e0", "e1", "e5"]
    store.close()
