"""Training rows by replay: labels by hand, no future in a row, and the same rows as serving."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from helpers_engine import engine_config
from helpers_tiny import NOW, settings

from engine.config import EngineConfig, ProfileConfig
from engine.core import Engine, Served
from engine.replay import ReplayConfig, ReplayError, replay
from engine.retrieval.features import FEATURES
from engine.retrieval.query import Query
from engine.retrieval.recommend import Recommender
from engine.state.store import SQLiteEventStore, StoredEvent

DAY = 86_400 * 1_000_000
T = NOW  # the decision time
CONFIG = EngineConfig()


def frame(events) -> pl.DataFrame:
    return pl.DataFrame(
        events, schema=["user_id", "item_id", "action", "ts_us"], orient="row"
    ).with_columns(pl.col("ts_us").cast(pl.Int64))


#: u1 bought t0 and viewed p0 before T; after T clicked k0, carted g0 (no click logged), bought
#: p1 (cart and purchase), viewed g1. u2 viewed t1 before T and came back (a view only). u3 has no
#: history before T; u4 did not come back in the label window.
EVENTS = [
    ("u1", "t0", "purchase", T - 2 * DAY),
    ("u1", "p0", "view", T - DAY),
    ("u2", "t1", "view", T - 3 * DAY),
    ("u4", "k1", "view", T - DAY),
    ("u1", "k0", "click", T),  # exactly at T: a label, not history
    ("u1", "g0", "cart", T + DAY),
    ("u1", "p1", "cart", T + 2 * DAY),
    ("u1", "p1", "purchase", T + 2 * DAY + 1),
    ("u1", "g1", "view", T + 3 * DAY),
    ("u2", "g1", "view", T + DAY),
    ("u3", "k1", "click", T + DAY),
    ("u4", "g0", "click", T + 20 * DAY),  # after the 14-day window
]


@pytest.fixture(scope="module")
def recommender(tiny_version):
    return Recommender(tiny_version, settings(exclude_seen=True))


def rows_of(recommender, events, **config) -> pl.DataFrame:
    return replay(recommender, CONFIG, frame(events), [T], ReplayConfig(**config))


def test_labels_follow_the_funnel_within_the_window_and_only_users_who_came_back(recommender):
    rows = rows_of(recommender, EVENTS)
    assert rows["decision_ts_us"].unique().to_list() == [T]
    # u1 and u2 had history and came back; u3 had none, u4 came back too late.
    assert rows["decision_id"].unique().sort().to_list() == [0, 1]
    u1 = rows.filter(pl.col("decision_id") == 0)
    labels = {
        i: (c, k, p) for i, c, k, p in u1.select("item_id", *("click", "cart", "purchase")).rows()
    }
    assert labels["k0"] == (1, 0, 0)
    assert labels["g0"] == (1, 1, 0)  # a cart implies the click
    assert labels["p1"] == (1, 1, 1)
    assert labels["g1"] == (0, 0, 0)  # a view is no label
    # The items u1 touched before T are no candidates (exclude_seen); k0, touched at T, is one.
    assert {"t0", "p0"}.isdisjoint(labels)
    assert "k0" in labels
    u2 = rows.filter(pl.col("decision_id") == 1)
    assert u2["click"].sum() == 0
    assert "t1" not in u2["item_id"].to_list()
    assert rows.columns[-len(FEATURES) :] == list(FEATURES)
    assert dict(zip(u1["item_id"], u1["price"]))["k0"] == 10.0
    assert u1["blend_score"].to_list() == u1["blend"].cast(pl.Float64).to_list()


def test_no_event_from_t_on_changes_a_feature(recommender):
    before = rows_of(recommender, EVENTS)
    # Rewrite every event from T on: other items, other actions, and more of them.
    future = [
        ("u1", "t2", "purchase", T),
        ("u1", "k1", "view", T + DAY),
        ("u2", "k0", "purchase", T + 2 * DAY),
        ("u1", "t1", "cart", T + 5 * DAY),
    ]
    after = rows_of(recommender, [e for e in EVENTS if e[3] < T] + future)
    keys = ["decision_id", "item_id"]
    assert before.select(keys).equals(after.select(keys))
    assert before.select(FEATURES).equals(after.select(FEATURES))
    u1 = after.filter(pl.col("decision_id") == 0)
    assert dict(zip(u1["item_id"], u1["purchase"]))["t2"] == 1
    k0 = after.filter(pl.col("item_id") == "k0")
    assert k0["purchase"].to_list() == [0, 1]  # u2 bought it now, u1 no longer clicks it


def test_an_index_that_knows_events_after_the_decision_is_refused(tiny_version):
    last = datetime.fromtimestamp((T + DAY) / 1e6, UTC).isoformat()
    manifest = {**tiny_version.manifest, "sources": {"events_window": {"last": last}}}
    leaky = Recommender(dataclasses.replace(tiny_version, manifest=manifest), settings())
    with pytest.raises(ReplayError, match="statistics would leak"):
        replay(leaky, CONFIG, frame(EVENTS), [T])
    # Knowing events up to just before T is fine.
    before = datetime.fromtimestamp((T - 1) / 1e6, UTC).isoformat()
    manifest = {**tiny_version.manifest, "sources": {"events_window": {"last": before}}}
    ok = Recommender(dataclasses.replace(tiny_version, manifest=manifest), settings())
    assert replay(ok, CONFIG, frame(EVENTS), [T]).height > 0


def test_serving_at_the_decision_time_computes_the_replayed_rows(recommender, tmp_path):
    """The engine, with u1's events in its store and asked at T, scores exactly the rows replay
    wrote for u1 at T (through the Parquet file the ranker reads)."""
    from engine.retrieval.features import FEATURES as names
    from ranker.row_files import read_rows, write_rows

    path = tmp_path / "rows.parquet"
    write_rows(path, rows_of(recommender, EVENTS), names, {"index_version": "tiny"})
    replayed = read_rows(path).frame.filter(pl.col("decision_id") == 0)

    engine = Engine(
        engine_config(tmp_path / "e.sqlite"),
        SQLiteEventStore(tmp_path / "e.sqlite"),
    )
    engine.versions.swap_in(Served(recommender.version, recommender, 0.0))
    key = engine.user_key("u1")
    engine.ingest(
        [
            StoredEvent(f"e{i}", key, item, action, ts, "")
            for i, (user, item, action, ts) in enumerate(EVENTS)
            if user == "u1" and ts < T
        ]
    )
    served = engine.recommend("u1", [], Query(k=9, cross_share=None), now_us=T)
    engine.close()
    assert sorted(served.item_ids) == sorted(replayed["item_id"].to_list())
    by_item = {i: r for i, r in zip(served.item_ids, served.result.features)}
    expected = replayed.select(names).to_numpy()
    actual = np.stack([by_item[i] for i in replayed["item_id"].to_list()])
    np.testing.assert_array_equal(actual, expected)


def test_replay_without_any_decision_user_says_so(recommender):
    with pytest.raises(ReplayError, match="no decision had candidates"):
        rows_of(recommender, [e for e in EVENTS if e[3] < T])


def test_boundaries_sampling_history_and_ids_across_decisions(recommender, tiny_version):
    end = T + 14 * DAY
    events = [
        *EVENTS,
        ("u2", "k1", "click", end - 1),  # the window's last microsecond: a label
        ("u2", "p1", "click", end),  # the next one: not
        ("u5", "g0", "view", T - DAY),  # a third user who comes back
        ("u5", "t1", "view", T + DAY),
    ]
    rows = rows_of(recommender, events)
    assert rows["decision_id"].unique().sort().to_list() == [0, 1, 2]  # u1, u2, u5
    u2 = dict(zip(*rows.filter(pl.col("decision_id") == 1).select("item_id", "click")))
    assert u2["k1"] == 1
    assert u2["p1"] == 0
    # At most `users` decision users per time, drawn (seeded) without replacement.
    one = rows_of(recommender, events, users=1)
    again = rows_of(recommender, events, users=1)
    assert one["decision_id"].unique().to_list() == [0]
    assert one.equals(again)
    # Two decision times: ids run on; a datetime `ts` column reads like `ts_us`.
    frame_ts = (
        frame(events)
        .with_columns(
            pl.from_epoch("ts_us", time_unit="us").dt.replace_time_zone("UTC").alias("ts")
        )
        .drop("ts_us")
    )
    both = replay(recommender, CONFIG, frame_ts, [T - 2 * DAY, T], ReplayConfig())
    times = both.group_by("decision_ts_us").agg(pl.col("decision_id").unique().sort())
    by_time = dict(zip(times["decision_ts_us"], times["decision_id"].to_list()))
    # Before T - 2 d only u2 (t1, three days before T) had history and came back; at T, u1, u2
    # and u5.
    assert by_time[T - 2 * DAY] == [0]
    assert by_time[T] == [1, 2, 3]
    assert both.filter(pl.col("decision_ts_us") == T).select(FEATURES).equals(rows.select(FEATURES))


def test_replay_hands_out_whole_decisions_in_parts_of_the_set_size(recommender):
    from engine.replay import replay_holdout, replay_holdout_parts, replay_parts

    events = [*EVENTS, ("u5", "g0", "view", T - DAY), ("u5", "t1", "view", T + DAY)]
    whole = rows_of(recommender, events)  # three decisions: u1, u2, u5
    parts = list(
        replay_parts(recommender, CONFIG, frame(events), [T], ReplayConfig(part_decisions=2))
    )
    assert [p["decision_id"].unique().sort().to_list() for p in parts] == [[0, 1], [2]]
    assert pl.concat(parts).equals(whole)
    # ids run on from first_id, across parts
    later = list(
        replay_parts(
            recommender, CONFIG, frame(events), [T], ReplayConfig(part_decisions=1), first_id=7
        )
    )
    assert [p["decision_id"].unique().to_list() for p in later] == [[7], [8], [9]]
    held = list(
        replay_holdout_parts(
            recommender, CONFIG, frame(VISIBLE), frame(HIDDEN), ReplayConfig(part_decisions=1)
        )
    )
    assert len(held) == 2  # u1 and u2, one each
    assert pl.concat(held).equals(
        replay_holdout(recommender, CONFIG, frame(VISIBLE), frame(HIDDEN))
    )
    with pytest.raises(ValueError, match="must be positive"):
        ReplayConfig(part_decisions=0)
    assert ReplayConfig().part_decisions == 2_000


def test_the_profile_sees_only_the_newest_history_events(recommender):
    # With one event of history, u1's profile is the p0 view alone: t0 (bought earlier) is no
    # longer seen, so it comes back as a candidate.
    short = replay(
        recommender,
        EngineConfig(profile=ProfileConfig(history_events=1)),
        frame(EVENTS),
        [T],
        ReplayConfig(),
    )
    u1 = short.filter(pl.col("decision_id") == 0)["item_id"].to_list()
    assert "t0" in u1
    assert "p0" not in u1


def test_replay_settings_and_the_exact_boundary_of_a_leak(tiny_version):
    for bad in ({"label_days": 0}, {"users": 0}, {"k": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            ReplayConfig(**bad)
    at_t = datetime.fromtimestamp(T / 1e6, UTC).isoformat()
    manifest = {**tiny_version.manifest, "sources": {"events_window": {"last": at_t}}}
    knows_t = Recommender(dataclasses.replace(tiny_version, manifest=manifest), settings())
    with pytest.raises(ReplayError):  # an event at the decision time is a label, not history
        replay(knows_t, CONFIG, frame(EVENTS), [T])


#: A basket log: every event at one time, so no decision time can split it. u1 took t0 (bought)
#: and p0; hidden from u1: k0 (clicked), g0 (carted), g1 (viewed). u2 took t1; hidden: p1 bought.
#: u3 has hidden events only; u4 visible only.
STAMP = T - DAY
VISIBLE = [
    ("u1", "t0", "purchase", STAMP),
    ("u1", "p0", "view", STAMP),
    ("u2", "t1", "view", STAMP),
    ("u4", "k1", "view", STAMP),
]
HIDDEN = [
    ("u1", "k0", "click", STAMP),
    ("u1", "g0", "cart", STAMP),
    ("u1", "g1", "view", STAMP),
    ("u2", "p1", "purchase", STAMP),
    ("u3", "k1", "click", STAMP),
]


def test_holdout_rows_label_the_hidden_items_of_users_with_both_parts(recommender):
    from engine.replay import replay_holdout

    rows = replay_holdout(recommender, CONFIG, frame(VISIBLE), frame(HIDDEN))
    # one decision per user with visible and hidden events (u1, u2), just after the newest event
    assert rows["decision_id"].unique().sort().to_list() == [0, 1]
    assert rows["decision_ts_us"].unique().to_list() == [STAMP + 1]
    u1 = rows.filter(pl.col("decision_id") == 0)
    labels = {
        i: (c, k, p) for i, c, k, p in u1.select("item_id", "click", "cart", "purchase").rows()
    }
    assert labels["k0"] == (1, 0, 0)
    assert labels["g0"] == (1, 1, 0)
    assert labels.get("g1", (0, 0, 0)) == (0, 0, 0)  # a view is no label
    assert {"t0", "p0"}.isdisjoint(labels)  # visible items are history, never candidates
    u2 = rows.filter(pl.col("decision_id") == 1)
    assert dict(zip(u2["item_id"], u2["purchase"])).get("p1") == 1
    # the features are those of a request at the decision time from the visible events alone
    again = replay_holdout(recommender, CONFIG, frame(VISIBLE), frame(HIDDEN[:1]))
    u1_again = again.filter(pl.col("decision_id") == 0)
    assert u1_again.select(FEATURES).equals(u1.select(FEATURES))


def test_holdout_rows_refuse_an_index_that_saw_past_the_visible_events(tiny_version):
    from engine.replay import replay_holdout

    last = datetime.fromtimestamp((STAMP + DAY) / 1e6, UTC).isoformat()
    manifest = {**tiny_version.manifest, "sources": {"events_window": {"last": last}}}
    leaky = Recommender(dataclasses.replace(tiny_version, manifest=manifest), settings())
    with pytest.raises(ReplayError, match="visible events only"):
        replay_holdout(leaky, CONFIG, frame(VISIBLE), frame(HIDDEN))
    with pytest.raises(ReplayError, match="no visible events"):
        replay_holdout(leaky, CONFIG, frame(VISIBLE)[:0], frame(HIDDEN))
