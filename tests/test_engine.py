"""The engine end to end: a real gRPC server on a free port, called through the SDK."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import polars as pl
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk import AsyncCrossrecClient, CrossrecClient, CrossrecError, Event, RecommendOptions
from crossrec.v1 import recommend_pb2, service_pb2, service_pb2_grpc
from engine.config import EngineConfig
from engine.server import BackgroundServer
from indexer.artifact import ArtifactError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(built_index, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "events.sqlite"
    config = EngineConfig(
        artifact=str(built_index.path),
        port=0,
        store=str(store),
        max_message_bytes=256 * 1024,
        max_k=50,
        candidates_per_shard=10,
    )
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with CrossrecClient(server.target, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def shop_events(small_shop_dir):
    return pl.read_parquet(small_shop_dir / "events.parquet")


@pytest.fixture(scope="module")
def catalog(small_shop_dir):
    return pl.read_parquet(small_shop_dir / "catalog.parquet")


def events_of(frame: pl.DataFrame, user_prefix: str = "") -> list[Event]:
    return [
        Event(
            user_prefix + r["user_id"],
            r["item_id"],
            r["action"],
            r["ts"],
            r["session_id"] or "",
            event_id=f"{user_prefix}{i}-{r['user_id']}",
        )
        for i, r in enumerate(frame.iter_rows(named=True))
    ]


def categories_of(catalog: pl.DataFrame, item_ids) -> list[str]:
    lookup = dict(zip(catalog["item_id"], catalog["category"]))
    return [lookup[i] for i in item_ids]


def client_target(client: CrossrecClient) -> str:
    return client.target


def busy_user(shop_events: pl.DataFrame, rank: int = 0) -> str:
    counts = (
        shop_events.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
    )
    return counts["user_id"][rank]


def test_status_reports_versions_and_counts(client, built_index):
    s = client.status()
    assert s.index_version == built_index.path.name and s.model_version == "retrieval-only"
    assert s.item_count == 2_000 and s.category_count == 64 and s.shard_count == 64


def test_cross_category_request_stays_out_of_touched_categories(client, shop_events, catalog):
    user = busy_user(shop_events, 0)
    history = shop_events.filter(pl.col("user_id") == user)
    client.ingest(events_of(history, "xc-"))
    touched = set(categories_of(catalog, history["item_id"]))
    rec = client.recommend("xc-" + user, k=12, cross_category_share=1.0)
    assert len(rec.items) == 12 and not rec.fallback
    assert not touched & {i.category for i in rec.items}
    assert all(
        i.interest_index >= 0 and i.interest_label in touched and i.shard.startswith("s")
        for i in rec.items
    )
    assert [i.score for i in rec.items] == sorted((i.score for i in rec.items), reverse=True)


def test_quotas_and_filters_are_honoured_exactly(client, shop_events, catalog):
    user = busy_user(shop_events, 1)
    client.ingest(events_of(shop_events.filter(pl.col("user_id") == user), "q-"))
    a, b = "Outdoors > Camping > Tents", "Kitchen > Coffee & Tea > Coffee Beans"
    rec = client.recommend(
        "q-" + user, k=5, category_quotas={a: 2, b: 3}, in_stock_only=True, max_price=500.0
    )
    cats = [i.category for i in rec.items]
    assert sorted(cats) == sorted([a, a, b, b, b])
    info = catalog.filter(pl.col("item_id").is_in([i.item_id for i in rec.items]))
    assert info["in_stock"].all() and (info["price"] <= 500).all()
    # A department name covers every category below it.
    dep = client.recommend("q-" + user, k=4, category_quotas={"Pets": 4})
    assert all(i.category.startswith("Pets > ") for i in dep.items) and len(dep.items) == 4
    # A filter that few items pass still fills the quota: the category is searched exhaustively.
    brand, n = (
        catalog.filter(pl.col("category") == a)
        .group_by("brand")
        .len()
        .sort(["len", "brand"])
        .filter(pl.col("len") >= 3)
        .row(0)
    )
    narrow = client.recommend("q-" + user, k=3, category_quotas={a: 3}, brands=[brand])
    assert [i.category for i in narrow.items] == [a] * 3
    assert set(
        catalog.filter(pl.col("item_id").is_in([i.item_id for i in narrow.items]))["brand"]
    ) == {brand}
    excluded = client.recommend(
        "q-" + user,
        k=10,
        exclude_categories=["Electronics"],
        exclude_item_ids=[i.item_id for i in rec.items],
    )
    assert not any(i.category.startswith("Electronics") for i in excluded.items)
    assert not {i.item_id for i in rec.items} & {i.item_id for i in excluded.items}


def test_already_bought_items_never_come_back(client, shop_events, catalog):
    buyers = (
        shop_events.filter(pl.col("action") == "purchase")
        .group_by("user_id")
        .len()
        .sort("len", descending=True)
    )
    user = buyers["user_id"][0]
    history = shop_events.filter(pl.col("user_id") == user)
    client.ingest(events_of(history, "b-"))
    bought = set(history.filter(pl.col("action") == "purchase")["item_id"])
    bought_categories = set(categories_of(catalog, bought))
    # Ask for every category the purchases came from, so the bought items are in the searched
    # shards.
    quotas = {c: 3 for c in sorted(bought_categories)[:5]}
    rec = client.recommend("b-" + user, k=sum(quotas.values()), category_quotas=quotas)
    assert rec.items and not bought & {i.item_id for i in rec.items}


def test_complement_categories_come_far_above_chance(client, shop_events, catalog, small_shop_dir):
    """For synthetic users: the share of cross-category recommendations that fall in a planted
    complement category of a category the user engaged with, against the share of complement
    categories among all the categories they did not touch (what picking at random would give)."""
    truth = json.loads((small_shop_dir / "ground_truth.json").read_text())
    complements: dict[str, set[str]] = {}
    for e in truth["complements"]:
        complements.setdefault(e["source"], set()).add(e["target"])
    lookup = dict(zip(catalog["item_id"], catalog["category"]))
    all_categories = set(catalog["category"])
    users = (
        shop_events.group_by("user_id")
        .len()
        .filter(pl.col("len") >= 8)
        .sort("user_id")["user_id"][:40]
    )
    hit, chance = [], []
    for user in users:
        history = shop_events.filter(pl.col("user_id") == user)
        client.ingest(events_of(history, "c-"))
        touched = {lookup[i] for i in history["item_id"]}
        planted = set().union(*(complements.get(c, set()) for c in touched)) - touched
        rec = client.recommend("c-" + user, k=10, cross_category_share=1.0)
        hit.append(np.mean([i.category in planted for i in rec.items]))
        chance.append(len(planted) / len(all_categories - touched))
    # crossrec check-complements on a 2,000-item shop: 69.3% in planted complements vs 15.5% by
    # chance.
    assert np.mean(hit) > 3 * np.mean(chance) and np.mean(hit) > 0.5


def test_ingested_events_change_the_next_recommendation(client, catalog):
    first = client.recommend("fresh-user", k=5)
    assert first.fallback
    item = catalog.filter(pl.col("category") == "Outdoors > Camping > Tents")["item_id"][0]
    client.ingest([Event("fresh-user", item, "purchase")])
    second = client.recommend("fresh-user", k=5)
    assert not second.fallback and {i.interest_label for i in second.items} == {
        "Outdoors > Camping > Tents"
    }
    assert [i.item_id for i in first.items] != [i.item_id for i in second.items]


def test_anonymous_session_from_inline_events(client, catalog):
    item = catalog.filter(pl.col("category") == "Pets > Cats > Cat Food")["item_id"][0]
    before = client.status()
    rec = client.recommend(k=6, recent_events=[Event("", item, "view")], cross_category_share=1.0)
    assert not rec.fallback and all(i.category != "Pets > Cats > Cat Food" for i in rec.items)
    assert {i.interest_label for i in rec.items} == {"Pets > Cats > Cat Food"}
    after = client.status()
    assert (after.user_count, after.event_count) == (
        before.user_count,
        before.event_count,
    )  # inline events are not stored


def test_explanations_name_their_source(client, catalog):
    item = catalog.filter(pl.col("category") == "Home > Bedroom > Pillows")["item_id"][0]
    rec = client.recommend(
        k=3, recent_events=[Event("", item, "cart")], explain=True, cross_category_share=1.0
    )
    for i in rec.items:
        assert i.explanation["source_item_ids"] == [item]
        assert (
            i.explanation["source_category"] == "Home > Bedroom > Pillows"
            and 0 < i.explanation["transition_probability"] < 1
        )


def test_retried_ingestion_is_not_double_counted(client, catalog):
    events = [
        Event("retry-user", catalog["item_id"][i], "view", event_id=f"retry-{i}") for i in range(5)
    ]
    assert client.ingest(events).accepted == 5
    again = client.ingest(events)
    assert again.accepted == 0 and again.duplicates == 5


def test_delete_user_leaves_no_trace_and_raw_ids_never_reach_disk(client, server, catalog):
    user = "delete-me-7f3a"
    client.ingest([Event(user, catalog["item_id"][i], "click") for i in range(4)])
    db = sqlite3.connect(server.config.store)
    key = server.engine.user_key(user)
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (key,)).fetchone()[0] == 4
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (user,)).fetchone()[0] == 0
    assert client.delete_user(user) == 4
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (key,)).fetchone()[0] == 0
    assert client.delete_user(user) == 0  # idempotent
    assert client.recommend(user, k=3).fallback
    db.close()


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(user_id="", k=5), "user_id"),
        (dict(user_id="u", k=0), "k"),
        (dict(user_id="u", k=51), "k"),
        (dict(user_id="u", k=5, include_categories=["Nope > Nothing"]), "include_categories[0]"),
        (dict(user_id="u", k=5, category_quotas={"Outdoors": 9}), "category_quotas"),
        (dict(user_id="u", k=5, cross_category_share=1.5), "cross_category_share"),
        (dict(user_id="u", k=5, min_price=10.0, max_price=5.0), "filters.max_price"),
        (dict(user_id="u", k=5, max_price=float("nan")), "filters.max_price"),
        (
            dict(user_id="u", k=5, objective_weights={"click": float("inf")}),
            "objective_weights[0].weight",
        ),
        (
            dict(user_id="u", k=5, category_quotas={"Pets": 2}, exclude_categories=["Pets"]),
            "category_quotas[0].category",
        ),
        (
            dict(user_id="u", k=5, category_quotas={"Pets": 2}, cross_category_share=0.5),
            "cross_category_share",
        ),
        (
            dict(
                user_id="u",
                k=5,
                recent_events=[Event("", "i", "view", datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC))],
            ),
            "recent_events[0].time",
        ),
    ],
)
def test_bad_recommend_requests_name_the_field(client, options, field):
    user = options.pop("user_id")
    with pytest.raises(CrossrecError) as excinfo:
        client.recommend(user, **options)
    assert excinfo.value.code == "INVALID_ARGUMENT" and field in excinfo.value.field_violations
    assert client.status().item_count == 2_000  # still serving


def test_event_times_outside_a_sane_window_are_refused(client, catalog):
    future = datetime.now(UTC) + timedelta(days=30)
    with pytest.raises(CrossrecError) as excinfo:
        client.ingest([Event("t-user", catalog["item_id"][0], "view", future)])
    assert (
        excinfo.value.code == "INVALID_ARGUMENT"
        and "events[0].time" in excinfo.value.field_violations
    )
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(client_target(client)))
    request = service_pb2.IngestEventsRequest()
    e = request.events.add(user_id="t-user", item_id="i", action=1)
    e.time.seconds = 10**13  # far beyond any real clock: must be a clear error, not INTERNAL
    with pytest.raises(grpc.RpcError) as exc2:
        stub.IngestEvents(request, timeout=5)
    assert (
        exc2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "events[0].time" in exc2.value.details()
    )


def test_slots_move_to_the_side_that_can_fill_them(client, catalog):
    viewed = catalog.filter(pl.col("category") == "Sports > Fitness > Yoga Mats")["item_id"][0]
    # Only a touched category is allowed while the default asks for untouched ones: still k items.
    rec = client.recommend(
        k=4,
        recent_events=[Event("", viewed, "view")],
        include_categories=["Sports > Fitness > Yoga Mats"],
        explain=True,
    )
    assert len(rec.items) == 4 and {i.category for i in rec.items} == {
        "Sports > Fitness > Yoga Mats"
    }
    assert all(i.explanation["summary"].startswith("more Yoga Mats") for i in rec.items)
    other = client.recommend(
        k=4,
        recent_events=[Event("", viewed, "view")],
        cross_category_share=0.0,
        include_categories=["Pets"],
    )
    assert len(other.items) == 4 and all(i.category.startswith("Pets > ") for i in other.items)


def test_bad_batch_request_names_its_position(client):
    with pytest.raises(CrossrecError) as excinfo:
        client.recommend_batch([("u", RecommendOptions(k=3)), ("u", RecommendOptions(k=-1))])
    assert set(excinfo.value.field_violations) == {"requests[1].k"}
    ok = client.recommend_batch([("a", RecommendOptions(k=2)), ("b", RecommendOptions(k=3))])
    assert [len(r.items) for r in ok] == [2, 3]


def test_bad_events_are_rejected_whole(client, catalog, server):
    before = client.status().event_count
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
    request = service_pb2.IngestEventsRequest()
    good = request.events.add(user_id="u-bad", item_id=catalog["item_id"][0], action=1)
    good.time.GetCurrentTime()
    request.events.add(user_id="u-bad", item_id="", action=0)  # no item, no action, no time
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.IngestEvents(request, timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "events[1].item_id" in excinfo.value.details()
        and "events[1].action" in excinfo.value.details()
    )
    assert "events[1].time" in excinfo.value.details()
    assert (
        client.status().event_count == before
    )  # the good event of the batch was not stored either


def test_oversized_request_is_refused_and_the_server_keeps_serving(client, server):
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
    huge = recommend_pb2.RecommendRequest(
        user_id="u", k=5, filters=recommend_pb2.Filters(exclude_item_ids=["x" * 1000] * 400)
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Recommend(huge, timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    too_many = [
        Event("u", "i", "view", event_id=str(i)) for i in range(server.config.max_ingest_events + 1)
    ]
    with pytest.raises(CrossrecError) as exc2:
        client.ingest(too_many)
    assert exc2.value.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    assert len(client.recommend("u", k=2).items) == 2


def test_deadline_is_honoured_by_client_and_server(client, server, monkeypatch):
    import time as _time

    real = server.engine.recommend

    def slow(*args, **kwargs):  # a request that takes longer than its deadline
        _time.sleep(0.5)
        return real(*args, **kwargs)

    def expired() -> float:
        value = server.metrics.registry.get_sample_value(
            "crossrec_requests_total", {"method": "Recommend", "code": "DEADLINE_EXCEEDED"}
        )
        return value or 0.0

    before = expired()
    monkeypatch.setattr(server.engine, "recommend", slow)
    with pytest.raises(CrossrecError) as excinfo:
        client.recommend("u", k=5, timeout=0.1)
    assert excinfo.value.code == "DEADLINE_EXCEEDED"
    deadline = _time.time() + 5
    while expired() == before and _time.time() < deadline:  # the server gives up on its side too
        _time.sleep(0.05)
    assert expired() == before + 1
    monkeypatch.setattr(server.engine, "recommend", real)
    assert len(client.recommend("u", k=5).items) == 5


def test_health_service_says_serving(server):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.target))
    for name in ("", "crossrec.v1.RecommendService"):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_async_client(server, catalog):
    async def go():
        async with AsyncCrossrecClient(server.target, timeout=10) as c:
            r = await c.ingest([Event("async-user", catalog["item_id"][3], "purchase")])
            rec = await c.recommend("async-user", k=4)
            batch = await c.recommend_batch(
                [("async-user", RecommendOptions(k=2)), ("x", RecommendOptions(k=1))]
            )
            return r, rec, batch, await c.status()

    result, rec, batch, status = asyncio.run(go())
    assert (
        result.accepted == 1
        and len(rec.items) == 4
        and not rec.fallback
        and status.item_count == 2_000
    )
    assert [len(b.items) for b in batch] == [2, 1] and batch[1].fallback


def test_a_version_that_fails_verification_keeps_the_old_one_serving(server, built_index, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(built_index.path, broken)
    (broken / "vectors.npy").write_bytes(b"garbage")
    before = server.engine.served
    with pytest.raises(ArtifactError):
        server.engine.load(str(broken))
    assert server.engine.served is before


def test_metrics_count_requests_and_stages(server, client):
    from prometheus_client import generate_latest

    def count() -> float:
        value = server.metrics.registry.get_sample_value(
            "crossrec_requests_total", {"method": "GetStatus", "code": "OK"}
        )
        return value or 0.0

    before = count()
    client.status()
    client.status()
    assert count() == before + 2
    client.recommend("metrics-user", k=3)
    text = generate_latest(server.metrics.registry).decode()
    assert 'crossrec_stage_seconds_count{stage="retrieve"}' in text
    assert 'crossrec_candidates_count{stage="returned"}' in text


def test_cli_ingest_and_recommend_against_the_engine(server, small_shop_dir, tmp_path, capsys):
    from clients.cli import main

    events = pl.read_parquet(small_shop_dir / "events.parquet")
    user = busy_user(events, 2)
    events.filter(pl.col("user_id") == user).with_columns(
        pl.lit("cli-" + user).alias("user_id")
    ).write_csv(tmp_path / "e.csv")
    assert main(["ingest", str(tmp_path / "e.csv"), "--target", server.target, "--batch", "7"]) == 0
    assert "stored" in capsys.readouterr().out
    assert (
        main(
            [
                "recommend",
                "--target",
                server.target,
                "--user",
                "cli-" + user,
                "-k",
                "4",
                "--explain",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("<- ") == 4 and "goes with your interest in" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "user_id,item_id,action,ts\nu,i,view,2026-01-01T00:00:00Z\n,i,view,2026-01-01T00:00:00Z\n"
    )
    assert main(["ingest", str(bad), "--target", server.target]) == 2
    assert "row 2, column 'user_id': must not be empty" in capsys.readouterr().err
    # Rows the client can check itself are reported before anything is sent.
    before = server.engine.status()["event_count"]
    bad.write_text(
        "user_id,item_id,action,ts\n"
        "u,i,look,2026-01-05 10:00\n"
        "u,i,view,\n"
        "u,i,view,2026-01-05T10:00+02:00\n"
    )
    assert main(["ingest", str(bad), "--target", server.target]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'action'" in err and "row 2, column 'ts'" in err and "nothing sent" in err
    assert server.engine.status()["event_count"] == before


def test_bench_command_measures_the_engine(server, small_shop_dir, tmp_path, capsys):
    from clients.cli import main

    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--target",
            server.target,
            "--events",
            str(small_shop_dir / "events.parquet"),
            "--users",
            "20",
            "--requests",
            "40",
            "--concurrency",
            "4",
            "--json",
            str(out),
            "--png",
            str(tmp_path / "bench.png"),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert (
        result["users"] == 20
        and result["ingest"]["events"] > 0
        and result["ingest"]["events_per_s"] > 0
    )
    assert (
        result["one_client"]["requests"] == 40
        and result["concurrent"]["requests"] == 40
        and result["concurrent"]["qps"] > 0
    )
    assert 0 < result["one_client"]["p50_ms"] <= result["one_client"]["p99_ms"]
    assert (tmp_path / "bench.png").stat().st_size > 1000
