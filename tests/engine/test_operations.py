"""Live operations: retention and deletion of events, version swaps while serving, access
control."""

from __future__ import annotations

import pytest
from helpers_engine import engine_config
from helpers_tiny import NOW, settings

from engine.core import Engine, Served
from engine.retrieval.query import Query
from engine.retrieval.recommend import Recommender
from engine.state.store import SQLiteEventStore, StoredEvent

DAY_US = 86_400 * 1_000_000


def make_engine(tmp_path, tiny_version, **sections) -> Engine:
    store = tmp_path / "events.sqlite"
    engine = Engine(engine_config(store, **sections), SQLiteEventStore(store))
    engine.versions.swap_in(Served(tiny_version, Recommender(tiny_version, settings()), 0.0))
    return engine


def test_the_store_compacts_by_time_and_leaves_no_bytes_of_removed_users(tmp_path):
    store = SQLiteEventStore(tmp_path / "e.sqlite")
    old_user, new_user = "pseudonym-of-an-old-user" * 2, "pseudonym-of-a-new-user" * 2
    store.append(
        [
            StoredEvent(f"o{i}", old_user, f"item{i}", "view", NOW - 40 * DAY_US + i)
            for i in range(30)
        ]
        + [
            StoredEvent("n0", new_user, "item0", "view", NOW - 40 * DAY_US),
            StoredEvent("n1", new_user, "item1", "cart", NOW - DAY_US),
        ]
    )
    assert store.counts() == (2, 32)
    assert [e.event_id for e in store.history(new_user, 10, since_us=NOW - 30 * DAY_US)] == ["n1"]
    assert store.compact(NOW - 30 * DAY_US, chunk=7) == 31  # in chunks of 7: 7+7+7+7+3
    assert store.counts() == (1, 1)
    assert [e.event_id for e in store.history(new_user, 10)] == ["n1"]
    store.close()
    for path in tmp_path.glob("e.sqlite*"):
        assert old_user.encode() not in path.read_bytes(), path


def test_expired_events_stop_counting_at_once_and_maintenance_removes_them(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version, store={"event_retention_days": 30.0})
    key = engine.user_key("u1")
    done = engine.ingest(
        [
            StoredEvent("older", key, "p0", "purchase", NOW - 31 * DAY_US),  # past retention
            StoredEvent("old", key, "p0", "purchase", NOW - 29 * DAY_US),
            StoredEvent("new", key, "t0", "view", NOW - DAY_US),
        ],
        now_us=NOW,
    )
    assert (done.stored, done.expired) == (2, 1)  # an event past retention is not stored
    assert engine.store.counts() == (1, 2)
    profile = engine.profile(engine.served, "u1", [], NOW + 2 * DAY_US)
    assert profile.interest_categories == ["Outdoors > Tents"]  # the old purchase no longer counts
    assert engine.maintain(NOW + 2 * DAY_US) == {"events": 1, "impressions": 0}
    assert engine.store.counts() == (1, 1)
    engine.close()


def test_without_retention_events_are_kept(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version)
    key = engine.user_key("u1")
    engine.ingest([StoredEvent("old", key, "p0", "purchase", NOW - 3_000 * DAY_US)])
    assert engine.maintain(NOW)["events"] == 0
    assert engine.profile(engine.served, "u1", [], NOW).interest_categories == [
        "Home > Kitchen > Pans"
    ]
    engine.close()


def test_a_deleted_user_gets_cold_start_results(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version)
    key = engine.user_key("u1")
    engine.ingest([StoredEvent("a", key, "t0", "purchase", NOW - DAY_US)])
    assert not engine.recommend("u1", [], Query(k=3), now_us=NOW).result.fallback
    assert engine.delete_user("u1") == 1
    after = engine.recommend("u1", [], Query(k=3), now_us=NOW)
    assert after.result.fallback
    cold = engine.recommend("never-seen", [], Query(k=3), now_us=NOW)
    assert after.item_ids == cold.item_ids
    engine.close()


def test_the_server_runs_maintenance_at_start(tiny_built, tmp_path):
    from engine.api.server import BackgroundServer

    store = tmp_path / "e.sqlite"
    seed = SQLiteEventStore(store)
    seed.append([StoredEvent("x", "someone", "i00", "view", 1_000_000)])  # 1970
    seed.close()
    # The store holds events: its key must be given (engine_config does).
    config = engine_config(store, tiny_built, store={"event_retention_days": 365.0})
    with BackgroundServer(config) as server:
        import time

        deadline = time.monotonic() + 10
        while server.engine.store.counts()[1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.engine.store.counts() == (0, 0)


def build_v2(root, tiny_built) -> None:
    """A second version of the tiny catalogue in ``root``; LATEST names it afterwards."""
    from indexer.build import BuildConfig, build_index

    catalog = tiny_built.parent / "catalog.parquet"
    build_index(catalog, root, None, BuildConfig(text=False, progress=False, version="v2"))


def root_engine(tmp_path, root) -> Engine:
    store = tmp_path / "s.sqlite"
    engine = Engine(engine_config(store, root), SQLiteEventStore(store))
    engine.versions.load_configured()
    return engine


def test_a_swap_serves_the_new_pair_and_frees_the_old_one(root, tiny_built, tmp_path):
    import gc
    import weakref

    from engine.errors import InvalidRequest, SwapRefused

    engine = root_engine(tmp_path, root)
    assert engine.served.version.version == "v1"
    old = weakref.ref(engine.served)
    build_v2(root, tiny_built)
    served, changed = engine.versions.swap()  # the configured root: its LATEST now names v2
    assert (served.version.version, changed) == ("v2", True)
    assert engine.served is served
    gc.collect()
    assert old() is None  # nothing in flight held it: released
    with pytest.raises(SwapRefused, match="arm a keeps index v2 with retrieval-only"):
        engine.versions.swap(artifact=str(tmp_path / "no-such-index"))
    assert engine.served is served
    with pytest.raises(InvalidRequest):
        engine.versions.swap(arm="b")
    _, changed = engine.versions.swap(artifact=str(root / "v2"))
    assert not changed
    engine.close()


def test_a_moved_latest_is_picked_up_and_a_broken_one_is_not_retried(
    root, tiny_built, tmp_path, monkeypatch
):
    engine = root_engine(tmp_path, root)
    assert engine.versions.refresh() == []  # LATEST still names v1
    build_v2(root, tiny_built)
    assert engine.versions.refresh() == ["a"]
    assert engine.served.version.version == "v2"
    # v3 is published broken: a shard file goes missing after its manifest was written.
    from indexer.build import BuildConfig, build_index

    build_index(
        tiny_built.parent / "catalog.parquet",
        root,
        None,
        BuildConfig(text=False, progress=False, version="v3"),
    )
    next((root / "v3").rglob("*.faiss")).unlink()
    assert engine.versions.refresh() == []
    assert engine.served.version.version == "v2"
    tries = []
    real = engine.versions.swap
    monkeypatch.setattr(engine.versions, "swap", lambda *a, **k: tries.append(a) or real(*a, **k))
    assert engine.versions.refresh() == []
    assert tries == []  # the same broken target is not loaded again every poll
    engine.close()


def test_versions_swap_over_grpc_while_clients_keep_asking(root, tiny_built, tmp_path):
    """Recommend runs steadily while SwapVersion flips v1 and v2: no call fails, each response
    names one of the two versions, and after the last swap every answer comes from it."""
    import threading

    from clients.sdk import CrossrecClient, CrossrecError
    from crossrec.v1 import service_pb2, service_pb2_grpc
    from engine.api.server import BackgroundServer

    build_v2(root, tiny_built)
    config = engine_config(tmp_path / "e.sqlite", root / "v1")
    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=10) as client:
        import grpc

        stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
        stop, seen, errors = threading.Event(), [], []

        def ask() -> None:
            while not stop.is_set():
                try:
                    seen.append(client.recommend(f"u{len(seen) % 7}", k=3).index_version)
                except CrossrecError as exc:
                    errors.append(exc)

        askers = [threading.Thread(target=ask) for _ in range(3)]
        for t in askers:
            t.start()
        answers = []
        for i in range(10):
            target = root / ("v2" if i % 2 == 0 else "v1")
            answers.append(stub.SwapVersion(service_pb2.SwapVersionRequest(artifact=str(target))))
        stop.set()
        for t in askers:
            t.join(10)
        assert errors == []
        assert len(seen) > 20
        assert set(seen) <= {"v1", "v2"}
        assert [a.index_version for a in answers] == ["v2", "v1"] * 5
        assert all(a.changed and a.arm == "a" for a in answers)
        assert {client.recommend("u1", k=3).index_version for _ in range(5)} == {"v1"}
        with pytest.raises(grpc.RpcError) as refused:
            stub.SwapVersion(service_pb2.SwapVersionRequest(artifact=str(tmp_path / "none")))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "keeps index v1" in refused.value.details()
        with pytest.raises(grpc.RpcError) as bad:
            stub.SwapVersion(service_pb2.SwapVersionRequest(arm="c"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.recommend("u1", k=3).index_version == "v1"


def test_a_full_store_refuses_ingestion_fast_and_keeps_serving(tiny_built, tmp_path):
    """A store at its size cap (as a full disk): IngestEvents gets RESOURCE_EXHAUSTED and stores
    nothing of that call, queries keep working, everything acknowledged before is still there."""
    from clients.sdk import CrossrecClient, CrossrecError, Event
    from engine.api.server import BackgroundServer

    config = engine_config(tmp_path / "e.sqlite", tiny_built, store={"max_mb": 0.25})
    acknowledged = []

    def fill(client) -> None:
        """Ingest batches of 100 events until a call is refused."""
        for batch in range(200):
            events = [
                Event(f"user-{i % 9}", f"i{i % 12:02d}", "view", event_id=f"{batch}-{i}")
                for i in range(100)
            ]
            client.ingest(events)
            acknowledged.extend(events)

    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=10) as client:
        with pytest.raises(CrossrecError) as full:
            fill(client)
        assert full.value.code == "RESOURCE_EXHAUSTED"
        assert "store is full" in str(full.value)
        assert 0 < len(acknowledged) < 20_000
        assert client.status().event_count == len(acknowledged)  # nothing of the refused call
        assert len(client.recommend("user-1", k=3).items) == 3  # queries go on
        again = client.ingest(acknowledged[:100])  # a retry of acknowledged events: all present
        assert (again.accepted, again.duplicates) == (0, 100)


def test_bench_compares_latency_with_and_without_swaps(root, tiny_built, tmp_path, capsys):
    import json
    from datetime import UTC, datetime, timedelta

    import polars as pl

    from clients.cli import main
    from engine.api.server import BackgroundServer

    build_v2(root, tiny_built)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    pl.DataFrame(
        {
            "user_id": [f"u{i % 6}" for i in range(60)],
            "item_id": [f"i{i % 12:02d}" for i in range(60)],
            "action": ["view"] * 60,
            "ts": [start + timedelta(minutes=i) for i in range(60)],
        }
    ).write_parquet(tmp_path / "events.parquet")
    admin = "admin-token-for-the-bench-test"
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        metrics_port = free.getsockname()[1]
    config = engine_config(
        tmp_path / "e.sqlite",
        root / "v1",
        auth={"tokens": f"admin:{admin}"},
        server={"metrics_port": metrics_port},
    )
    with BackgroundServer(config) as server:
        code = main(
            [
                "bench",
                "serve",
                "--target",
                server.target,
                "--token",
                admin,
                "--events",
                str(tmp_path / "events.parquet"),
                "--users",
                "6",
                "--requests",
                "300",
                "--concurrency",
                "1,2",
                "--metrics",
                f"http://127.0.0.1:{metrics_port}/metrics",
                "--swap",
                f"{root / 'v2'},{root / 'v1'}",
                "--swap-every",
                "0.05",
                "--json",
                str(tmp_path / "bench.json"),
            ]
        )
    assert code == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    during = result["concurrent_swapping"]
    assert during["swaps"] >= 2
    assert during["swap_errors"] == []
    assert during["requests"] == 300
    assert during["failed"] == {}
    assert during["p99_ratio"] > 0
    # The sweep: one phase per level, each with the engine's own time per stage.
    assert [p["clients"] for p in result["sweep"]] == [1, 2]
    for phase in result["sweep"]:
        engine = phase["engine"]
        assert 0 < engine["recommend_ms"] <= phase["mean_ms"]  # the server's part of the call
        stages = engine["stages_ms"]
        assert {"profile", "candidates", "rank", "respond"} <= set(stages)
        assert stages["retrieve"] <= engine["recommend_ms"]
    printed = capsys.readouterr().out
    assert "p99 with swaps / without" in printed
    assert "engine: Recommend" in printed


def test_a_full_disk_is_reported_as_the_store_being_full(tmp_path):
    """ENOSPC from the file system maps to StoreFull (RESOURCE_EXHAUSTED) like SQLite's own
    'database or disk is full', and the transaction is rolled back."""
    import errno

    from engine.state.store import StoreFull

    store = SQLiteEventStore(tmp_path / "e.sqlite")
    real = store._db

    class FullDisk:
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, *args):
            raise OSError(errno.ENOSPC, "No space left on device")

    store._db = FullDisk()
    with pytest.raises(StoreFull, match="No space left on device"):
        store.append([StoredEvent("a", "k", "i", "view", NOW)])
    store._db = real
    assert store.counts() == (0, 0)
    assert store.append([StoredEvent("a", "k", "i", "view", NOW)]) == (1, 0, 0)
    store.close()


def test_a_swap_names_versions_under_the_configured_root_only(root, tiny_built, tmp_path):
    import shutil

    from engine.errors import SwapRefused

    engine = root_engine(tmp_path, root)
    build_v2(root, tiny_built)
    elsewhere = shutil.copytree(root / "v2", tmp_path / "elsewhere" / "v2")
    (root / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for outside in (elsewhere, root / "escape" / "v2", root / ".." / "elsewhere" / "v2"):
        with pytest.raises(SwapRefused, match="is not under the configured root"):
            engine.versions.swap(artifact=str(outside))
        assert engine.served.version.version == "v1"
    with pytest.raises(SwapRefused, match="no model root is configured"):
        engine.versions.swap(model=str(tmp_path / "models"))
    served, changed = engine.versions.swap(artifact=str(root / "v2"))  # inside: served
    assert changed
    assert served.version.version == "v2"
    engine.close()


def test_ingest_reports_reused_ids_and_events_past_retention(tiny_built, tmp_path):
    """accepted + duplicate + conflict + expired = the events sent; only the accepted are new."""
    from datetime import UTC, datetime, timedelta

    from clients.sdk import CrossrecClient, Event
    from engine.api.server import BackgroundServer

    config = engine_config(tmp_path / "e.sqlite", tiny_built, store={"event_retention_days": 30})
    now = datetime.now(UTC)
    first = Event("u1", "t0", "view", now, event_id="x1")
    reused = Event("u1", "p0", "purchase", now, event_id="x1")  # the same id, another event
    stale = Event("u1", "t1", "view", now - timedelta(days=31), event_id="x2")
    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=10) as client:
        done = client.ingest([first, reused, stale, Event("u1", "t1", "cart", now)])
        assert (done.accepted, done.duplicates, done.conflicts, done.expired) == (2, 0, 1, 1)
        again = client.ingest([first, reused])
        assert (again.accepted, again.duplicates, again.conflicts, again.expired) == (0, 1, 1, 0)
        assert client.status().event_count == 2
