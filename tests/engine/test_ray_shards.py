"""Shard groups on Ray Serve (engine/retrieval/ray_shards.py): planned by size, identical answers
to the in-process search, late and failed groups reported in the coverage, versions never mixed."""

from __future__ import annotations

import gc
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from engine.errors import DeadlineExceeded
from engine.retrieval.ray_shards import RayShards, plan_groups
from engine.retrieval.shard_search import ShardAsk


def test_groups_balance_items_largest_shard_first():
    counts = {"a": 5, "b": 4, "c": 3, "d": 3, "e": 1}
    # a -> g0 (5); b -> g1 (4); c -> g1 (7); d -> g0 (8); e -> g1 (8).
    assert plan_groups(counts, 2) == [["a", "d"], ["b", "c", "e"]]
    # Ties between groups go to the first; ties between shards by id.
    assert plan_groups({"x": 2, "y": 2, "z": 2}, 2) == [["x", "z"], ["y"]]
    assert plan_groups(counts, 1) == [["a", "b", "c", "d", "e"]]
    # More groups than shards: one shard each, no empty group.
    assert plan_groups({"x": 1, "y": 9}, 5) == [["y"], ["x"]]
    with pytest.raises(ValueError, match="groups must be >= 1"):
        plan_groups(counts, 0)


@pytest.fixture(scope="module")
def version(built_index):
    from indexer.artifact import open_index

    return open_index(built_index.path)


@pytest.fixture(scope="module")
def remote(ray_cluster, version):
    shards = RayShards.deploy(version, groups=2, cpus=0, timeout_s=30.0)
    yield shards
    shards.close()


def _profiles(version, shop_events, n=25):
    from engine.config import ProfileConfig
    from engine.core import profile_of
    from engine.retrieval.recommend import Recommender
    from engine.state.profile import ProfileEvent

    recommender = Recommender(version)
    now_us = int(shop_events["ts"].max().timestamp() * 1e6)
    users = shop_events.group_by("user_id").len().sort(["len", "user_id"], descending=True)
    out = []
    for user in users["user_id"][:n].to_list():
        rows = shop_events.filter(shop_events["user_id"] == user)
        events = [
            ProfileEvent(r["item_id"], r["action"], int(r["ts"].timestamp() * 1e6))
            for r in rows.iter_rows(named=True)
        ]
        out.append(profile_of(recommender, ProfileConfig(), events, now_us))
    return out, now_us


def test_ray_served_shards_answer_exactly_as_in_process(version, remote, shop_events):
    from engine.retrieval.query import Query
    from engine.retrieval.recommend import Recommender

    assert sorted(s for g in remote.groups for s in g) == sorted(version.shards)
    local = Recommender(version)
    served = Recommender(version, searcher=remote)
    profiles, now_us = _profiles(version, shop_events)
    searched = 0
    for profile in profiles:
        for query in (Query(k=10, cross_share=0.4), Query(k=20)):
            a = local.recommend(profile, query, now_us)
            b = served.recommend(profile, query, now_us)
            assert b.rows.tolist() == a.rows.tolist()
            assert b.scores.tolist() == a.scores.tolist()
            assert b.retrieval_scores.tolist() == a.retrieval_scores.tolist()
            assert (b.shards_searched, b.shards_targeted) == (a.shards_searched, a.shards_targeted)
            assert b.late_shards == ()
            searched += b.shards_searched
    assert searched > 0  # the remote groups were really asked


def test_a_request_batches_its_searches_into_one_call_per_group(version, remote):
    asks = [ShardAsk(s, 3, behaviour=True) for g in remote.groups for s in g[:2]]
    queries = np.asarray(version.vectors[:2])
    answers = remote.search(queries, asks)
    from engine.retrieval.shard_search import LocalShards

    local = LocalShards(version, version.items["shard"].to_numpy())
    expected = local.search(queries, asks)
    assert sorted(answers.found) == sorted(a.shard_id for a in asks)
    for shard_id, (scores, rows) in expected.found.items():
        assert answers.found[shard_id][1].tolist() == rows.tolist()
        assert answers.found[shard_id][0].tolist() == scores.tolist()


def test_groups_that_miss_the_deadline_are_named_and_the_rest_still_answers(version, remote):
    asks = [ShardAsk(s, 3, behaviour=False) for g in remote.groups for s in g[:1]]
    queries = np.asarray(version.vectors[:1])
    # The request has no time left: no group can answer within it (a round trip takes ms).
    answers = remote.search(queries, asks, deadline=time.monotonic() - 1.0)
    assert answers.found == {}
    assert sorted(answers.late) == sorted(a.shard_id for a in asks)


def test_a_failed_group_is_reported_late_or_fails_the_request(ray_cluster, version):
    from ray import serve

    shards = RayShards.deploy(version, groups=2, cpus=0, timeout_s=30.0)
    strict = RayShards(
        version, shards.groups, shards.handles, [], 200, timeout_s=30.0, on_late="fail"
    )
    try:
        serve.delete(shards.apps[1])  # group 1 is gone
        asks = [ShardAsk(g[0], 2, behaviour=False) for g in shards.groups]
        queries = np.asarray(version.vectors[:1])
        answers = shards.search(queries, asks)
        assert list(answers.found) == [shards.groups[0][0]]
        assert answers.late == [shards.groups[1][0]]
        with pytest.raises(DeadlineExceeded, match=f"late shards: {shards.groups[1][0]}"):
            strict.search(queries, asks)
    finally:
        shards.close()


def test_on_late_must_be_partial_or_fail(ray_cluster, version):
    from ray import serve

    with pytest.raises(ValueError, match=r"ray\.on_late must be one of"):
        RayShards(version, [], [], [], 200, 0.1, on_late="ignore")
    before = _apps(serve)
    with pytest.raises(ValueError, match=r"ray\.on_late must be one of"):
        RayShards.deploy(version, groups=2, cpus=0, on_late="ignore")
    assert _apps(serve) == before  # refused before anything was deployed


def _apps(serve) -> set[str]:
    return set(serve.status().applications)


def test_each_version_gets_its_own_groups_freed_after_its_last_request(ray_cluster, version):
    from ray import serve

    shards = RayShards.deploy(version, groups=2, cpus=0)
    apps = list(shards.apps)
    assert [a.rsplit("-", 2)[0] for a in apps] == [f"crossrec-{version.version}"] * 2
    assert [a.rsplit("-", 1)[1] for a in apps] == ["g0", "g1"]
    assert set(apps) <= _apps(serve)
    del shards
    gc.collect()
    deadline = time.monotonic() + 60
    while set(apps) & _apps(serve) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(apps) & _apps(serve)


def test_an_engine_with_shard_groups_answers_as_one_without_and_swaps_group_by_version(
    ray_cluster, built_index, shop_events, tmp_path
):
    """Over gRPC: the same lists as the in-process engine; a swap deploys the new pair's groups
    and deletes the old ones; a lost group shows in the response's coverage."""
    from helpers_engine import engine_config
    from ray import serve

    from clients.sdk import CrossrecClient, Event
    from engine.api.server import BackgroundServer

    def config(name, **ray):
        return engine_config(
            tmp_path / f"{name}.sqlite",
            built_index.path,
            feedback={"impression_sample_rate": 0.0},
            ray=ray,
        )

    users = shop_events.group_by("user_id").len().sort(["len", "user_id"], descending=True)
    requests = []
    for user in users["user_id"][:8].to_list():
        rows = shop_events.filter(shop_events["user_id"] == user).sort("ts").tail(50)
        requests.append(
            [Event(user, r["item_id"], r["action"], r["ts"]) for r in rows.iter_rows(named=True)]
        )
    remote_config = config("remote", shard_groups=2, group_cpus=0.0, group_timeout_s=30.0)
    with (
        BackgroundServer(config("local")) as local,
        BackgroundServer(remote_config) as remote,
        CrossrecClient(local.target, timeout=60) as a,
        CrossrecClient(remote.target, timeout=60) as b,
    ):
        for recent in requests:
            expected = a.recommend(k=10, recent_events=recent)
            got = b.recommend(k=10, recent_events=recent)
            assert [i.item_id for i in got.items] == [i.item_id for i in expected.items]
            assert [i.score for i in got.items] == [i.score for i in expected.items]
            assert (got.shards_searched, got.shards_targeted) == (
                expected.shards_searched,
                expected.shards_targeted,
            )
            assert got.late_shards == []
        assert got.shards_searched > 0
        # Many requests at once (the engine's worker threads share the groups' handles).
        expected = [[i.item_id for i in a.recommend(k=10, recent_events=r).items] for r in requests]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda i: b.recommend(k=10, recent_events=requests[i % 8]), range(48))
            )
        assert [[x.item_id for x in r.items] for r in answers] == [
            expected[i % 8] for i in range(48)
        ]
        assert not any(r.late_shards for r in answers)
        # The engine loaded no shard itself, and still reports the version's.
        assert (
            b.status().shard_count == a.status().shard_count == len(built_index.manifest["shards"])
        )

        before = remote.engine.served.recommender.search.searcher
        old_apps = list(before.apps)
        del before
        b.swap_version(str(built_index.path))
        now = remote.engine.served.recommender.search.searcher
        assert set(now.apps).isdisjoint(old_apps)
        assert set(now.apps) <= _apps(serve)
        gc.collect()
        deadline = time.monotonic() + 60
        while set(old_apps) & _apps(serve) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not set(old_apps) & _apps(serve)
        assert [i.item_id for i in b.recommend(k=10, recent_events=requests[0]).items] == [
            i.item_id for i in a.recommend(k=10, recent_events=requests[0]).items
        ]

        serve.delete(now.apps[1])
        lost = set(now.groups[1])
        got = b.recommend(k=10, recent_events=requests[0])
        assert got.late_shards
        assert set(got.late_shards) <= lost
        assert got.shards_searched + len(got.late_shards) == got.shards_targeted
        assert len(got.items) == 10
        late = remote.metrics.registry.get_sample_value("crossrec_late_shards_total")
        assert late == len(got.late_shards)
