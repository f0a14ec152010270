"""The engine's side of the loop on the hand-built tiny version: the impression log (what it
writes, its failures, sampling, retention, deletion), live outcome metrics (A/B arms:
test_arms.py)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading

import numpy as np
import polars as pl
import pytest
from helpers_engine import engine_config
from helpers_tiny import NOW, settings

from engine.core import ARM_A, Engine, Served
from engine.feedback.impressions import ImpressionLog
from engine.feedback.shown import sampled
from engine.retrieval.features import FEATURES
from engine.retrieval.query import Query
from engine.retrieval.recommend import Recommender
from engine.state.profile import ProfileEvent
from engine.state.store import SQLiteEventStore, StoredEvent

DAY_US = 86_400 * 1_000_000
RECENT = [ProfileEvent("t0", "purchase", NOW - 60_000_000)]


def make_engine(tmp_path, tiny_version, arms=(ARM_A,), split=None, **sections) -> Engine:
    """An engine serving ``tiny_version`` on ``arms``; ``split``: the [arms] settings."""
    store = tmp_path / "events.sqlite"
    engine = Engine(engine_config(store, arms=split or {}, **sections), SQLiteEventStore(store))
    for arm in arms:
        engine.versions.swap_in(
            Served(tiny_version, Recommender(tiny_version, settings()), 0.0), arm
        )
    return engine


@pytest.fixture
def engine(tmp_path, tiny_version):
    e = make_engine(tmp_path, tiny_version)
    yield e
    e.close()


def log_rows(path) -> tuple[list[tuple], list[tuple]]:
    db = sqlite3.connect(path)
    try:
        lists = db.execute(
            "SELECT recommendation_id, user_key, ts_us, arm, index_version, model_version "
            "FROM lists ORDER BY ts_us"
        ).fetchall()
        shown = db.execute(
            "SELECT recommendation_id, position, item_id, category, cross_category, sources, "
            "score, price, vector FROM shown ORDER BY recommendation_id, position"
        ).fetchall()
    finally:
        db.close()
    return lists, shown


def sample(engine: Engine, name: str, **labels) -> float:
    value = engine.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_response_is_logged_with_its_items_scores_and_feature_rows(engine, tmp_path):
    rec = engine.recommend("u1", RECENT, Query(k=3), now_us=NOW)
    assert engine.feedback.impressions.flush()
    lists, shown = log_rows(tmp_path / "events.impressions.sqlite")
    assert lists == [
        (rec.recommendation_id, engine.user_key("u1"), NOW, "a", "tiny", "retrieval-only")
    ]
    assert [s[2] for s in shown] == rec.item_ids
    assert [s[1] for s in shown] == list(range(len(rec.item_ids)))
    for row, item, features in zip(shown, rec.items, rec.result.features):
        assert row[3] == item.category
        assert row[4] == int(features[FEATURES.index("cross_category")] > 0.5)
        assert row[5] == ",".join(item.sources)
        assert row[6] == pytest.approx(item.score)
        np.testing.assert_array_equal(np.frombuffer(row[8], np.float32), features)
    prices = {"t0": 100.0, "t1": 50.0, "t2": None, "p0": 20.0, "p1": 30.0, "k0": 10.0}
    assert [s[7] for s in shown] == [
        prices.get(i, 5.0 if i[0] == "g" else 15.0) for i in rec.item_ids
    ]
    # The raw user id is nowhere in the file.
    assert b"u1" not in (tmp_path / "events.impressions.sqlite").read_bytes()
    db = sqlite3.connect(tmp_path / "events.impressions.sqlite")
    names = db.execute("SELECT names FROM feature_lists").fetchall()
    db.close()
    assert [json.loads(n[0]) for n in names] == [list(FEATURES)]


def test_a_failing_log_write_loses_impressions_not_requests(engine, monkeypatch):
    def broken(batch):
        raise OSError("disk full")

    monkeypatch.setattr(engine.feedback.impressions, "write", broken)
    for i in range(3):
        assert engine.recommend("u1", RECENT, Query(k=2), now_us=NOW + i).item_ids
    assert engine.feedback.impressions.flush()
    assert engine.feedback.impressions.counts["write_error"] == 3
    assert sample(engine, "crossrec_impression_log_total", outcome="write_error") == 3
    assert engine.feedback.impressions.counts["written"] == 0
    monkeypatch.undo()
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW + 10)
    assert engine.feedback.impressions.flush()
    assert engine.feedback.impressions.counts["written"] == 1


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    log = ImpressionLog(tmp_path / "imp.sqlite", queue_size=1)
    release = threading.Event()
    entered = threading.Event()
    real = log.write

    def slow(batch):
        entered.set()
        release.wait(10)
        real(batch)

    log.write = slow
    from test_feedback_attribution import impressions

    first, second, third = impressions()
    assert log.offer(first)
    assert entered.wait(5)  # the writer holds the first, the queue is empty again
    assert log.offer(second)  # fills the queue (size 1)
    assert not log.offer(third)  # full: dropped at once
    assert not log.offer(third)
    assert log.counts["queue_full"] == 2
    release.set()
    assert log.flush()
    assert log.counts["written"] == 2
    log.close()


def test_sampling_is_decided_by_the_recommendation_id():
    ids = [f"{i:032x}" for i in range(4000)]
    assert all(sampled(i, 1.0) for i in ids)
    assert not any(sampled(i, 0.0) for i in ids)
    kept = [i for i in ids if sampled(i, 0.25)]
    assert 0.22 < len(kept) / len(ids) < 0.28
    assert kept == [i for i in ids if sampled(i, 0.25)]  # the same id decides alike
    assert set(kept) <= {i for i in ids if sampled(i, 0.5)}  # nested: a higher rate keeps more


def test_sample_rate_counts_what_it_leaves_out(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version, feedback={"impression_sample_rate": 0.5})
    recs = [engine.recommend("u1", RECENT, Query(k=2), now_us=NOW + i) for i in range(40)]
    assert engine.feedback.impressions.flush()
    logged = {r[0] for r in log_rows(tmp_path / "events.impressions.sqlite")[0]}
    assert logged == {r.recommendation_id for r in recs if sampled(r.recommendation_id, 0.5)}
    assert engine.feedback.impressions.counts["sampled_out"] == 40 - len(logged)
    engine.close()
    off = make_engine(tmp_path / "off", tiny_version, feedback={"impression_sample_rate": 0.0})
    assert off.feedback.impressions is None
    assert off.recommend("u1", RECENT, Query(k=2), now_us=NOW).item_ids
    off.close()


def test_retention_removes_old_lists_and_delete_user_leaves_no_trace(engine, tmp_path):
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW - 100 * DAY_US)
    engine.recommend("u1", RECENT, Query(k=2), now_us=NOW)
    engine.recommend("u2", RECENT, Query(k=2), now_us=NOW - DAY_US)
    assert engine.feedback.impressions.flush()
    assert engine.feedback.impressions.compact(NOW) == 1  # 90 days kept by default
    lists, shown = log_rows(tmp_path / "events.impressions.sqlite")
    assert [r[2] for r in lists] == [NOW - DAY_US, NOW]
    assert len({s[0] for s in shown}) == 2
    key = engine.user_key("u1")
    assert (
        len(engine.feedback.recent_lists) == 2
    )  # the 100-day-old list is past the window (u2's is not)
    engine.delete_user("u1")
    assert len(engine.feedback.recent_lists) == 1  # nor kept in memory for live attribution
    lists, shown = log_rows(tmp_path / "events.impressions.sqlite")
    assert [r[1] for r in lists] == [engine.user_key("u2")]
    assert len({s[0] for s in shown}) == 1
    for path in tmp_path.glob("events.impressions.sqlite*"):
        assert key.encode() not in path.read_bytes(), path


def test_outcomes_of_shown_items_are_counted_live(engine):
    rec = engine.recommend("u1", RECENT, Query(k=3), now_us=NOW)
    key, rid = engine.user_key("u1"), rec.recommendation_id
    first, second = rec.items[0], rec.items[1]
    engine.ingest(
        [
            StoredEvent("c1", key, first.item_id, "click", NOW + 5, "", rid),
            StoredEvent("c2", key, first.item_id, "click", NOW + 6, "", rid),  # once per item
            StoredEvent("b1", key, second.item_id, "purchase", NOW + 9, "", rid),
            StoredEvent("x1", engine.user_key("u2"), first.item_id, "cart", NOW + 9, "", rid),
        ]
    )
    labels = {"arm": "a", "model_version": "retrieval-only"}
    assert sample(engine, "crossrec_recommendations_total", **labels) == 1
    shown = sum(
        sample(engine, "crossrec_impressions_total", **labels, cross_category=c)
        for c in ("true", "false")
    )
    assert shown == len(rec.items)
    clicks = sum(
        sample(engine, "crossrec_attributed_total", **labels, action="click", cross_category=c)
        for c in ("true", "false")
    )
    carts = sum(
        sample(engine, "crossrec_attributed_total", **labels, action="cart", cross_category=c)
        for c in ("true", "false")
    )
    assert (clicks, carts) == (1, 0)
    price = engine.served.recommender.items.price[
        engine.served.recommender.items.row_of[second.item_id]
    ]
    assert sample(engine, "crossrec_attributed_revenue_total", **labels) == pytest.approx(
        0.0 if np.isnan(price) else price
    )


def test_a_model_trained_on_logged_impressions_learns_the_position_and_serves(root, tmp_path):
    """crossrec train --impressions on lists the engine logged, with outcomes that favour the top
    position: the rows are the shown items with their outcomes, the model reads the position as a
    feature, and the engine serves it for the same index version (position neutralised).
    (Which feature the model credits is not asserted: without randomised positions, position and
    the engine's own order are collinear in any log, here exactly.)"""
    from apps.training import ImpressionJob, train_from_impressions
    from ranker.model import RankerModel

    store = tmp_path / "events.sqlite"
    engine = Engine(engine_config(store), SQLiteEventStore(store))
    engine.versions.load(str(root / "v1"), model="")
    rng = np.random.default_rng(0)
    ids = [f"i{i:02d}" for i in range(12)]
    sent = 0
    for i in range(600):
        user = f"user{i}"
        # Random exclusions vary which item sits where, so the position is not the item.
        query = Query(k=4, cross_share=None, exclude_items=frozenset(rng.choice(ids, 4)))
        rec = engine.recommend(user, [], query, now_us=NOW + i * 1000)
        key, events = engine.user_key(user), []
        for position, item in enumerate(rec.item_ids):
            if rng.random() < (0.6 if position == 0 else 0.1):
                for j, action in enumerate(("click", "cart", "purchase")):
                    if j and rng.random() > 0.6:
                        break
                    events.append(
                        StoredEvent(
                            f"{user}-{item}-{action}",
                            key,
                            item,
                            action,
                            NOW + i * 1000 + 10 + j,
                            "",
                            rec.recommendation_id,
                        )
                    )
        engine.ingest(events)
        sent += sum(e.action == "click" for e in events)
    assert engine.feedback.impressions.flush()
    engine.close()

    report = train_from_impressions(
        ImpressionJob(
            tmp_path / "events.impressions.sqlite", store, root / "v1", tmp_path / "train"
        )
    )
    assert report["decisions"] == 600
    assert report["row_count"] == 600 * 4
    assert report["index_version"] == "v1"
    model = RankerModel.load(report["model"])
    assert model.features[-1] == "position"
    # Labels: every click sent quotes a list and an item of it, within the window.
    assert report["positives"]["click"] == sent

    serving = Engine(
        engine_config(tmp_path / "s.sqlite"),
        SQLiteEventStore(tmp_path / "s.sqlite"),
    )
    served = serving.versions.load(str(root / "v1"), model=report["model"])
    assert served.model_version == model.version
    assert len(serving.recommend("someone", [], Query(k=3), now_us=NOW).item_ids) == 3
    serving.close()


def test_sample_rates_outside_zero_to_one_are_refused_and_zero_logs_nothing(tmp_path):
    from test_feedback_attribution import impressions

    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"sample rate must be in \[0, 1\], got"):
            ImpressionLog(tmp_path / f"bad{bad}.sqlite", sample_rate=bad)
    log = ImpressionLog(tmp_path / "none.sqlite", sample_rate=0.0)
    assert not log.offer(impressions()[0])
    assert not log.offer(impressions()[1])
    assert log.counts["sampled_out"] == 2
    log.close()


def test_a_list_without_feature_rows_is_logged_without_them(tmp_path):
    from test_feedback_attribution import impressions

    log = ImpressionLog(tmp_path / "imp.sqlite")
    log.offer(dataclasses.replace(impressions()[1], features=None))
    assert log.flush()
    log.close()
    _, shown = log_rows(tmp_path / "imp.sqlite")
    assert [(s[2], s[8]) for s in shown] == [("x", None), ("z", None)]


def test_compaction_keeps_the_retention_by_the_clock(tmp_path):
    from test_feedback_attribution import impressions

    now_s = 10_000 * 86_400.0
    log = ImpressionLog(tmp_path / "imp.sqlite", retention_days=2.5, clock=lambda: now_s)
    day = 86_400_000_000
    for imp, age_days in zip(impressions(), (3, 2, 0)):
        log.offer(dataclasses.replace(imp, ts_us=int(now_s * 1e6) - age_days * day))
    assert log.flush()
    assert log.compact() == 1  # the 3-day-old list; 2.5 days kept
    assert [r[0] for r in log_rows(tmp_path / "imp.sqlite")[0]] == ["r2", "r3"]
    log.close()


def test_events_naming_unknown_items_are_stored_counted_and_used_once_known(tmp_path, tiny_version):
    """The catalogue may be newer than the index: such events are kept and reported, and a
    version that knows the item uses them."""
    engine = make_engine(tmp_path, tiny_version)
    key = engine.user_key("u1")
    done = engine.ingest(
        [
            StoredEvent("e1", key, "t0", "view", NOW - 10),
            StoredEvent("e2", key, "new-item", "purchase", NOW - 5),
            StoredEvent("e3", key, "newer-item", "view", NOW - 4),
        ]
    )
    assert (done.stored, done.duplicates, done.unknown_items) == (3, 0, 2)
    assert sample(engine, "crossrec_ingested_unknown_items_total") == 2
    again = engine.ingest([StoredEvent("e2", key, "new-item", "purchase", NOW - 5)])
    assert (again.stored, again.duplicates, again.unknown_items) == (0, 1, 1)
    before = engine.profile(engine.served, "u1", [], NOW)
    assert before.interest_categories == ["Outdoors > Tents"]  # the unknown purchase is ignored
    # A version that knows "new-item" (as a pan) serves now: the stored purchase counts.
    items = tiny_version.items.with_columns(
        item_id=pl.when(pl.col("item_id") == "p1").then(pl.lit("new-item")).otherwise("item_id")
    )
    newer = dataclasses.replace(tiny_version, items=items)
    engine.versions.swap_in(Served(newer, Recommender(newer, settings()), 0.0))
    after = engine.profile(engine.served, "u1", [], NOW)
    assert after.interest_categories[0] == "Home > Kitchen > Pans"  # a purchase outweighs a view
    engine.close()


def test_a_capped_log_drops_its_oldest_lists_first_and_stops_growing(tmp_path):
    from test_feedback_attribution import impressions

    template = impressions()[0]
    log = ImpressionLog(tmp_path / "capped.sqlite", max_mb=0.25, batch_size=50)
    for i in range(3_000):
        log.offer(dataclasses.replace(template, recommendation_id=f"r{i:05d}", ts_us=i))
        if i % 500 == 499:
            assert log.flush()
    assert log.flush()
    assert log.counts["dropped_for_size"] > 0
    assert log.counts["written"] == 3_000
    assert log.used_bytes() <= 0.25 * 2**20 + 64 * 1024  # the cap, plus at most one batch
    db = sqlite3.connect(tmp_path / "capped.sqlite")
    kept = [r[0] for r in db.execute("SELECT ts_us FROM lists ORDER BY ts_us")]
    db.close()
    assert kept[-1] == 2_999
    assert kept == list(range(kept[0], 3_000))
    assert len(kept) == 3_000 - log.counts["dropped_for_size"]
    log.close()


def test_the_engine_serves_without_an_impression_log_it_cannot_open(tmp_path, tiny_version):
    garbage = tmp_path / "events.impressions.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    store = tmp_path / "events.sqlite"
    engine = Engine(engine_config(store), SQLiteEventStore(store))
    assert engine.feedback.impressions is None
    assert engine.metrics.impression_log_unavailable._value.get() == 1
    served = Served(tiny_version, Recommender(tiny_version, settings()), 0.0)
    engine.versions.swap_in(served)
    assert len(engine.recommend("u1", [], Query(k=3)).items) == 3
    engine.delete_user("u1")
    engine.close()
