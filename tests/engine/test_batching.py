"""Batched shard searches (engine/retrieval/batching.py): concurrent calls merged into one search
per (shard, k, kind), each call answered as it would be alone; one batch at a time; deadlines,
errors, the window and the engine's ``[gpu]`` settings."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers_engine import engine_config, lists_at_once, recent_events

from engine.retrieval.batching import BatchingShards
from engine.retrieval.shard_search import LocalShards, ShardAnswers, ShardAsk


@pytest.fixture(scope="module")
def version(built_index):
    from indexer.artifact import open_index

    return open_index(built_index.path)


@pytest.fixture(scope="module")
def local(version):
    return LocalShards(version, version.items["shard"].to_numpy())


class Gate:
    """A real searcher (``local``) that records each search's query count and ask, and holds the
    first search until ``release`` is set (so that calls queue behind it)."""

    def __init__(self, local: LocalShards, fail: bool = False) -> None:
        self.local = local
        self.fail = fail
        self.searches: list[tuple[int, ShardAsk]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def has_behaviour(self, shard_id: str) -> bool:
        return self.local.has_behaviour(shard_id)

    def close(self) -> None:
        pass

    def search(self, queries, asks, deadline=None) -> ShardAnswers:
        self.searches += [(len(queries), ask) for ask in asks]
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("shard s000 is gone")
        return self.local.search(queries, asks, deadline)


def _run(fn, n: int) -> list:
    """``fn(i)`` for i < n, each on its own thread; results in order (an exception re-raised)."""
    out: list = [None] * n
    errors: list = []

    def one(i: int) -> None:
        try:
            out[i] = fn(i)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    if errors:
        raise errors[0]
    return out


def _queued(batcher: BatchingShards, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(batcher._pending) < n:
        assert time.monotonic() < deadline, "calls did not queue"
        time.sleep(0.002)


def test_calls_that_queue_behind_a_batch_are_merged_and_each_gets_its_own_answer(version, local):
    shards = sorted(version.shards)
    gate = Gate(local)
    batcher = BatchingShards(gate)
    # Call 0 runs alone and holds its search; calls 1-4 queue meanwhile and form one batch.
    # Calls 1-4 ask two shards in common (same k and kind) and one each of their own.
    asks = {0: [ShardAsk(shards[0], 3, False)]}
    for i in range(1, 5):
        asks[i] = [
            ShardAsk(shards[1], 4, True),
            ShardAsk(shards[2], 4, False),
            ShardAsk(shards[2 + i], 5, False),
        ]
    queries = {i: np.asarray(version.vectors[10 * i : 10 * i + 1 + i % 3]) for i in range(5)}

    def call(i: int) -> ShardAnswers:
        if i > 0:
            assert gate.entered.wait(10)
        return batcher.search(queries[i], asks[i])

    def release() -> None:
        _queued(batcher, 4)
        gate.release.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    answers = _run(call, 5)
    releaser.join()
    assert batcher.stats.batches == 2
    assert batcher.stats.calls == 5
    assert batcher.stats.largest == 4
    # Second batch: one search for each shared ask (queries stacked) and one per own ask.
    second = gate.searches[1:]
    assert sorted((n, a.shard_id) for n, a in second) == sorted(
        [(sum(len(queries[i]) for i in range(1, 5)), shards[1])]
        + [(sum(len(queries[i]) for i in range(1, 5)), shards[2])]
        + [(len(queries[i]), shards[2 + i]) for i in range(1, 5)]
    )
    assert batcher.stats.searches == 1 + 6
    for i in range(5):
        alone = local.search(queries[i], asks[i])
        assert sorted(answers[i].found) == sorted(alone.found)
        assert answers[i].late == []
        for shard_id, (scores, rows) in alone.found.items():
            got_scores, got_rows = answers[i].found[shard_id]
            assert got_rows.tolist() == rows.tolist(), (i, shard_id)
            np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-6)


def test_asks_differing_in_k_or_kind_are_not_merged(version, local):
    shard = sorted(version.shards)[0]
    gate = Gate(local)
    gate.entered.set()  # nothing held
    gate.release.set()
    batcher = BatchingShards(gate, window_s=10.0, max_calls=3)  # the 3rd call starts the batch
    kinds = [ShardAsk(shard, 3, True), ShardAsk(shard, 4, True), ShardAsk(shard, 3, False)]
    q = np.asarray(version.vectors[:1])
    _run(lambda i: batcher.search(q, [kinds[i]]), 3)
    assert batcher.stats.batches == 1
    assert batcher.stats.largest == 3
    assert sorted(gate.searches, key=str) == sorted([(1, k) for k in kinds], key=str)


def test_the_window_waits_for_more_calls_until_the_batch_is_full(version, local):
    shard = sorted(version.shards)[0]
    batcher = BatchingShards(local, window_s=30.0, max_calls=2)
    q = np.asarray(version.vectors[:1])
    started = time.monotonic()
    answers = _run(lambda i: batcher.search(q, [ShardAsk(shard, 2, False)]), 2)
    assert time.monotonic() - started < 25  # ended by the second call, not by the window
    assert batcher.stats.batches == 1
    assert batcher.stats.largest == 2
    assert answers[0].found[shard][1].tolist() == answers[1].found[shard][1].tolist()


def _held(version, local):
    """A batcher over a gated searcher whose first batch (a search of the first shard) is running
    and held: (shards, gate, batcher, one query, the holding thread)."""
    shards = sorted(version.shards)
    gate = Gate(local)
    batcher = BatchingShards(gate)
    q = np.asarray(version.vectors[:1])
    holder = threading.Thread(target=batcher.search, args=(q, [ShardAsk(shards[0], 2, False)]))
    holder.start()
    assert gate.entered.wait(10)
    return shards, gate, batcher, q, holder


def test_a_call_whose_deadline_passes_in_the_queue_leaves_late_and_is_not_searched(version, local):
    shards, gate, batcher, q, holder = _held(version, local)
    asks = [ShardAsk(shards[1], 2, False), ShardAsk(shards[2], 2, False)]
    late = batcher.search(q, asks, deadline=time.monotonic() + 0.05)
    gate.release.set()
    holder.join(10)
    assert late.found == {}
    assert late.late == [shards[1], shards[2]]
    assert batcher.stats.late == 1
    assert batcher._pending == []
    assert [a.shard_id for _, a in gate.searches] == [shards[0]]


def test_a_late_call_leaves_the_queue_while_others_stay_in_it(version, local):
    """Two calls wait behind a held batch; the second's deadline passes: it alone leaves (the
    queue tells calls apart by identity, not by comparing their query arrays), and the first is
    answered by the next batch."""
    shards, gate, batcher, q, holder = _held(version, local)
    answers: list = []
    waiter = threading.Thread(
        target=lambda: answers.append(batcher.search(q, [ShardAsk(shards[1], 2, False)]))
    )
    waiter.start()
    _queued(batcher, 1)
    late = batcher.search(q.copy(), [ShardAsk(shards[2], 2, False)], time.monotonic() + 0.05)
    assert late.late == [shards[2]]
    assert len(batcher._pending) == 1  # the first waiter is still queued
    gate.release.set()
    holder.join(10)
    waiter.join(10)
    assert list(answers[0].found) == [shards[1]]
    assert [a.shard_id for _, a in gate.searches] == [shards[0], shards[1]]


def test_a_failed_search_reaches_every_call_of_its_batch(version, local):
    shard = sorted(version.shards)[0]
    gate = Gate(local, fail=True)
    gate.entered.set()
    gate.release.set()
    batcher = BatchingShards(gate, window_s=10.0, max_calls=2)
    q = np.asarray(version.vectors[:1])
    raised = []

    def call(i: int) -> None:
        with pytest.raises(RuntimeError, match="shard s000 is gone"):
            batcher.search(q, [ShardAsk(shard, 2, False)])
        raised.append(i)

    _run(call, 2)
    assert sorted(raised) == [0, 1]
    # The batcher is free again: the next call runs (and fails) on its own.
    with pytest.raises(RuntimeError):
        batcher.search(q, [ShardAsk(shard, 2, False)])
    assert batcher.stats.batches == 2


def test_batchers_sharing_a_device_lock_never_search_at_once(version, local):
    shard = sorted(version.shards)[0]
    q = np.asarray(version.vectors[:1])
    device = threading.Lock()
    first, second = Gate(local), Gate(local)
    second.release.set()
    a, b = BatchingShards(first, exclusive=device), BatchingShards(second, exclusive=device)
    holder = threading.Thread(target=a.search, args=(q, [ShardAsk(shard, 2, False)]))
    holder.start()
    assert first.entered.wait(10)
    waiter = threading.Thread(target=b.search, args=(q, [ShardAsk(shard, 2, False)]))
    waiter.start()
    assert not second.entered.wait(0.3)  # b's batch waits for the device
    first.release.set()
    holder.join(10)
    waiter.join(10)
    assert second.entered.is_set()
    assert (a.stats.batches, b.stats.batches) == (1, 1)
    # Without a shared lock two batchers do search at once.
    first, second = Gate(local), Gate(local)
    a, b = BatchingShards(first), BatchingShards(second)
    holder = threading.Thread(target=a.search, args=(q, [ShardAsk(shard, 2, False)]))
    holder.start()
    assert first.entered.wait(10)
    second.release.set()
    b.search(q, [ShardAsk(shard, 2, False)])
    first.release.set()
    holder.join(10)


def test_bad_settings_are_refused(local):
    with pytest.raises(ValueError, match="window_s must be >= 0"):
        BatchingShards(local, window_s=-1.0)
    with pytest.raises(ValueError, match="max_calls >= 1"):
        BatchingShards(local, max_calls=0)


def test_an_engine_with_batched_searches_serves_the_same_lists(built_index, shop_events, tmp_path):
    from engine.config import EngineConfig, GpuConfig
    from engine.config.check import ConfigError
    from engine.core import Engine
    from engine.retrieval.query import Query
    from engine.state.store import SQLiteEventStore

    assert GpuConfig() == GpuConfig(
        shards=False, batch_searches=False, batch_window_ms=0.0, batch_max_calls=1024
    )
    with pytest.raises(ConfigError, match=r"gpu\.batch_max_calls must be at least 1"):
        EngineConfig(gpu=GpuConfig(batch_max_calls=0))
    with pytest.raises(ConfigError, match=r"gpu\.batch_window_ms must not be negative"):
        EngineConfig(gpu=GpuConfig(batch_window_ms=-1.0))
    recent = recent_events(shop_events, 12)
    query = Query(k=10, cross_share=1.0)  # every list through the shard search
    lists = []
    for name, batch in (("plain", False), ("batched", True)):
        store = tmp_path / f"{name}.sqlite"
        config = engine_config(store, gpu={"batch_searches": batch})
        engine = Engine(config, SQLiteEventStore(store))
        try:
            engine.versions.load(str(built_index.path))
            lists.append(lists_at_once(engine, recent, query))
            searcher = engine.served.recommender.search.searcher
            assert isinstance(searcher, BatchingShards) is batch
            if batch:
                assert searcher.stats.calls == 12  # every request searched through it
        finally:
            engine.close()
    assert all(len(x) == 10 for x in lists[0])
    assert lists[0] == lists[1]


def test_a_recommend_batch_answers_its_requests_at_once_when_searches_are_batched(
    built_index, shop_events, tmp_path
):
    """Its requests' searches queue together behind the first one held at the gate (answered one
    after another, they could not: the gate would time out), and the answers are those of an
    engine without batching."""
    from crossrec.v1 import events_pb2, recommend_pb2
    from engine.api.service import RecommendService
    from engine.core import Engine
    from engine.feedback.metrics import Metrics
    from engine.state.store import SQLiteEventStore

    recent = recent_events(shop_events, 6)

    def proto(events) -> list:
        return [
            events_pb2.Event(
                item_id=e.item_id, action=getattr(events_pb2, f"ACTION_{e.action.upper()}")
            )
            for e in events
        ]

    request = recommend_pb2.RecommendBatchRequest(
        requests=[
            recommend_pb2.RecommendRequest(
                user_id=user, k=8, cross_category_share=1.0, recent_events=proto(events)
            )
            for user, events in recent.items()
        ]
    )
    answers = {}
    for name, batch in (("plain", False), ("batched", True)):
        store = tmp_path / f"{name}.sqlite"
        engine = Engine(
            engine_config(store, gpu={"batch_searches": batch}), SQLiteEventStore(store)
        )
        try:
            engine.versions.load(str(built_index.path))
            service = RecommendService(engine, Metrics())
            assert (service.fan_out is not None) is batch
            searcher = engine.served.recommender.search.searcher
            if batch:
                gate = Gate(searcher.inner)
                searcher.inner = gate
                queued = []

                def release(searcher=searcher, gate=gate, queued=queued) -> None:
                    assert gate.entered.wait(10)
                    deadline = time.monotonic() + 10
                    while len(searcher._pending) < len(recent) - 1 and time.monotonic() < deadline:
                        time.sleep(0.002)
                    queued.append(len(searcher._pending))
                    gate.release.set()

                releaser = threading.Thread(target=release)
                releaser.start()
            response = service._recommend_batch(request)
            if batch:
                releaser.join(20)
                assert queued == [len(recent) - 1]  # all the others waited together
                assert searcher.stats.batches == 2
            answers[name] = [[i.item_id for i in r.items] for r in response.responses]
        finally:
            engine.close()
    assert all(len(items) == 8 for items in answers["plain"])
    assert answers["batched"] == answers["plain"]
