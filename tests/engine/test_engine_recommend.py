"""The engine end to end through the SDK: recommendations, ingestion and deletion against a real
gRPC server (the ``server`` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import polars as pl
import pytest
from helpers_engine import busy_user, categories_of, client_target, events_of

from clients.sdk import CrossrecError, Event
from crossrec.v1 import service_pb2, service_pb2_grpc

pytestmark = pytest.mark.integration


def test_status_reports_versions_and_counts(client, built_index):
    s = client.status()
    assert s.index_version == built_index.path.name
    assert s.model_version == "retrieval-only"
    assert s.item_count == 2_000
    assert s.category_count == 64
    assert s.shard_count == 64


def test_cross_category_request_stays_out_of_touched_categories(client, shop_events, catalog):
    user = busy_user(shop_events, 0)
    history = shop_events.filter(pl.col("user_id") == user)
    client.ingest(events_of(history, "xc-"))
    touched = set(categories_of(catalog, history["item_id"]))
    rec = client.recommend("xc-" + user, k=12, cross_category_share=1.0)
    assert len(rec.items) == 12
    assert not rec.fallback
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
    assert info["in_stock"].all()
    assert (info["price"] <= 500).all()
    # A department name covers every category below it.
    dep = client.recommend("q-" + user, k=4, category_quotas={"Pets": 4})
    assert all(i.category.startswith("Pets > ") for i in dep.items)
    assert len(dep.items) == 4
    # A filter that few items pass still fills the quota: the category is searched exhaustively.
    brand, _n = (
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
    assert rec.items
    assert not bought & {i.item_id for i in rec.items}


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
    assert np.mean(hit) > 3 * np.mean(chance)
    assert np.mean(hit) > 0.5


def test_ingested_events_change_the_next_recommendation(client, catalog):
    first = client.recommend("fresh-user", k=5)
    assert first.fallback
    item = catalog.filter(pl.col("category") == "Outdoors > Camping > Tents")["item_id"][0]
    client.ingest([Event("fresh-user", item, "purchase")])
    second = client.recommend("fresh-user", k=5)
    assert not second.fallback
    assert {i.interest_label for i in second.items} == {"Outdoors > Camping > Tents"}
    assert [i.item_id for i in first.items] != [i.item_id for i in second.items]


def test_anonymous_session_from_inline_events(client, catalog):
    item = catalog.filter(pl.col("category") == "Pets > Cats > Cat Food")["item_id"][0]
    before = client.status()
    rec = client.recommend(k=6, recent_events=[Event("", item, "view")], cross_category_share=1.0)
    assert not rec.fallback
    assert all(i.category != "Pets > Cats > Cat Food" for i in rec.items)
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
        assert i.explanation["source_category"] == "Home > Bedroom > Pillows"
        assert 0 < i.explanation["transition_probability"] < 1


def test_retried_ingestion_is_not_double_counted(client, catalog):
    events = [
        Event("retry-user", catalog["item_id"][i], "view", event_id=f"retry-{i}") for i in range(5)
    ]
    assert client.ingest(events).accepted == 5
    again = client.ingest(events)
    assert again.accepted == 0
    assert again.duplicates == 5


def test_delete_user_leaves_no_trace_and_raw_ids_never_reach_disk(client, server, catalog):
    user = "delete-me-7f3a"
    client.ingest([Event(user, catalog["item_id"][i], "click") for i in range(4)])
    db = sqlite3.connect(server.config.store.path)
    key = server.engine.user_key(user)
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (key,)).fetchone()[0] == 4
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (user,)).fetchone()[0] == 0
    assert client.delete_user(user) == 4
    assert db.execute("SELECT COUNT(*) FROM events WHERE user_key = ?", (key,)).fetchone()[0] == 0
    assert client.delete_user(user) == 0  # idempotent
    assert client.recommend(user, k=3).fallback
    db.close()


@pytest.mark.parametrize(
    ("options", "field"),
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
    assert excinfo.value.code == "INVALID_ARGUMENT"
    assert field in excinfo.value.field_violations
    assert client.status().item_count == 2_000  # still serving


def test_event_times_outside_a_sane_window_are_refused(client, catalog):
    future = datetime.now(UTC) + timedelta(days=30)
    with pytest.raises(CrossrecError) as excinfo:
        client.ingest([Event("t-user", catalog["item_id"][0], "view", future)])
    assert excinfo.value.code == "INVALID_ARGUMENT"
    assert "events[0].time" in excinfo.value.field_violations
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(client_target(client)))
    request = service_pb2.IngestEventsRequest()
    e = request.events.add(user_id="t-user", item_id="i", action=1)
    e.time.seconds = 10**13  # far beyond any real clock: must be a clear error, not INTERNAL
    with pytest.raises(grpc.RpcError) as exc2:
        stub.IngestEvents(request, timeout=5)
    assert exc2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].time" in exc2.value.details()


def test_slots_move_to_the_side_that_can_fill_them(client, catalog):
    viewed = catalog.filter(pl.col("category") == "Sports > Fitness > Yoga Mats")["item_id"][0]
    # Only a touched category is allowed while the default asks for untouched ones: still k items.
    rec = client.recommend(
        k=4,
        recent_events=[Event("", viewed, "view")],
        include_categories=["Sports > Fitness > Yoga Mats"],
        explain=True,
    )
    assert len(rec.items) == 4
    assert {i.category for i in rec.items} == {"Sports > Fitness > Yoga Mats"}
    assert all(i.explanation["summary"].startswith("more Yoga Mats") for i in rec.items)
    other = client.recommend(
        k=4,
        recent_events=[Event("", viewed, "view")],
        cross_category_share=0.0,
        include_categories=["Pets"],
    )
    assert len(other.items) == 4
    assert all(i.category.startswith("Pets > ") for i in other.items)
