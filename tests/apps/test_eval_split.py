"""Splitting events for ``crossrec eval``: a time split worked out by hand, and the holdout
split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from apps.evaluation.split import SplitConfig, split_events
from indexer.events import ACTIONS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CATALOG = pl.DataFrame(
    {
        "item_id": ["i1", "i2", "i3", "i4", "i5", "i6", "i7"],
        "category": ["A", "A", "B", "C", "A", "A", "C"],
    }
)


def _events(rows: list[tuple[str, str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": [T0 + timedelta(days=r[3]) for r in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    ).with_columns(pl.col("action").cast(pl.Enum(ACTIONS)))


# Newest event on day 14; --test-days 4 puts the cut at day 10 (an event at the cut is a test
# event).
EVENTS = _events(
    [
        ("u1", "i1", "view", 1),
        ("u1", "i2", "click", 2),
        ("u1", "i3", "click", 12),  # positive, category B: u1 only touched A -> cross-category
        ("u1", "i1", "purchase", 13),  # touched before the cut: not a positive
        ("u1", "i4", "view", 14),  # view only: not a positive
        ("u2", "i5", "click", 11),  # u2 has no training event: not a test user
        ("u3", "i2", "view", 3),
        ("u3", "i6", "cart", 12),  # positive, category A, which u3 touched: not cross-category
        ("u3", "i7", "view", 10),  # exactly at the cut: test, and view only
    ]
)


def test_time_split_by_hand():
    split = split_events(EVENTS, CATALOG, SplitConfig("time", test_days=4))
    assert split.cut == T0 + timedelta(days=10)
    assert split.train.height == 3  # u1 i1 d1, u1 i2 d2, u3 i2 d3
    assert split.test.height == 6
    assert split.test_users == ["u1", "u3"]
    assert split.positives.select("user_id", "item_id", "category", "cross").rows() == [
        ("u1", "i3", "B", True),
        ("u3", "i6", "A", False),
    ]
    s = split.summary()
    assert (s["train_events"], s["test_users"], s["positives"], s["cross_category_share"]) == (
        3,
        2,
        2,
        0.5,
    )
    assert s["users_with_cross_category_positive"] == 1
    assert s["candidate_users"] == 2


def test_users_are_drawn_seeded_among_candidates():
    a = split_events(EVENTS, CATALOG, SplitConfig("time", test_days=4, users=1, seed=0)).test_users
    assert (
        a
        == split_events(
            EVENTS, CATALOG, SplitConfig("time", test_days=4, users=1, seed=0)
        ).test_users
    )
    assert len(a) == 1
    assert a[0] in ("u1", "u3")


def test_view_only_data_counts_any_action_as_a_positive():
    views = EVENTS.with_columns(pl.lit("view").cast(pl.Enum(ACTIONS)).alias("action"))
    split = split_events(views, CATALOG, SplitConfig("time", test_days=4))
    assert split.positive_actions == ACTIONS
    assert sorted(split.positives.select("user_id", "item_id").rows()) == [
        ("u1", "i3"),
        ("u1", "i4"),
        ("u3", "i6"),
        ("u3", "i7"),
    ]


def _random_events(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 600
    users = [f"u{u:02d}" for u in rng.integers(0, 40, n)]
    items = [f"i{i}" for i in rng.integers(1, 8, n)]
    actions = rng.choice(list(ACTIONS), n).tolist()
    return _events(list(zip(users, items, actions, rng.uniform(0, 30, n).tolist()))).vstack(
        _events([("solo", "i1", "click", 5.0)])
    )


def test_holdout_split_is_deterministic_and_holds_out_a_share_of_each_users_items():
    events = _random_events(1)
    config = SplitConfig("holdout", holdout_share=0.3, seed=7)
    a, b = split_events(events, CATALOG, config), split_events(events, CATALOG, config)
    assert a.train.equals(b.train)
    assert a.test.equals(b.test)
    assert a.positives.equals(b.positives)
    c = split_events(events, CATALOG, SplitConfig("holdout", holdout_share=0.3, seed=8))
    assert not a.test.equals(c.test)
    assert a.train.height + a.test.height == events.height
    train_items = a.train.group_by("user_id").agg(pl.col("item_id").unique())
    test_items = dict(a.test.group_by("user_id").agg(pl.col("item_id").unique()).iter_rows())
    all_items = dict(events.group_by("user_id").agg(pl.col("item_id").n_unique()).iter_rows())
    for user, items in train_items.iter_rows():
        held = set(test_items.get(user, []))
        assert not held & set(items)  # an item is either held out (all its events) or not
        n = all_items[user]
        expected = 0 if n < 2 else min(max(int(np.floor(0.3 * n + 0.5)), 1), n - 1)
        assert len(held) == expected
    assert "solo" not in test_items  # a user with one item keeps it in training
    assert a.cut == a.train["ts"].max()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"method": "random"}, "split must be one of"),
        ({"test_days": 0}, "test_days must be > 0, got 0"),
        ({"holdout_share": 1.0}, r"holdout_share must be in \(0, 1\), got 1\.0"),
        ({"users": 0}, "users must be >= 1, got 0"),
    ],
)
def test_split_config_refuses_nonsense(bad, message):
    with pytest.raises(ValueError, match=message):
        SplitConfig(**bad)


def test_auto_takes_the_time_split_when_the_clock_is_usable_and_says_why():
    split = split_events(EVENTS, CATALOG, SplitConfig(test_days=4))  # auto is the default
    assert split.config.method == "time"
    assert "13 days" in split.config.why
    assert split.summary()["why"] == split.config.why


def test_auto_takes_the_holdout_split_without_a_usable_clock():
    events = _events([(u, i, a, 0.0) for u, i, a, _ in EVENTS.iter_rows()])  # one timestamp
    split = split_events(events, CATALOG, SplitConfig(seed=1))
    assert split.config.method == "holdout"
    assert "under 7 days" in split.config.why


def test_choose_split_thresholds():
    from apps.evaluation.split import choose_split

    week = _events([("u", "i1", "view", d) for d in (0, 1, 2, 3, 7)])  # 7 days, all distinct
    assert choose_split(week)[0] == "time"
    short = _events([("u", "i1", "view", d) for d in (0, 1, 2, 3, 6.9)])
    assert choose_split(short)[0] == "holdout"
    # 2 distinct stamps in 10 events (20%) are enough; 2 in 11 (18%) are not
    assert choose_split(_events([("u", "i1", "view", d) for d in [0] * 5 + [7] * 5]))[0] == "time"
    assert (
        choose_split(_events([("u", "i1", "view", d) for d in [0] * 6 + [7] * 5]))[0] == "holdout"
    )
