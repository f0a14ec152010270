"""Behaviour statistics from events (sessions, funnels, popularity) worked out by hand, builds
without or with bad events, and the index CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from clients.cli import main
from indexer.artifact import read_manifest
from indexer.build import BuildConfig, build_index
from indexer.errors import DataValidationError
from indexer.transitions import BehaviourStats, item_behaviour, sessionise

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def event_frame(rows: list[tuple[str, str, str, float]], **extra) -> pl.DataFrame:
    """(user, item, action, days before T0) -> an event frame."""
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": [T0 - timedelta(days=r[3]) for r in rows],
            **extra,
        }
    )


def test_sessionise_codes_and_splits_by_hand():
    catalog = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["Y > Q", "X > P", "X > P"]})
    minute = 1 / 1440
    table = event_frame(
        [
            ("u2", "c", "cart", 100 * minute),
            ("u1", "a", "view", 100 * minute),
            ("u1", "b", "click", 90 * minute),  # 10 minutes later: same session
            ("u1", "c", "view", 50 * minute),  # 40 minutes later: a new session
            ("u2", "a", "purchase", 0),  # 100 minutes later: a new session
        ]
    )
    sessions = sessionise(table, catalog)
    assert sessions.columns == ["session", "user", "row", "category", "action", "ts"]
    assert [str(t) for t in sessions.dtypes[:5]] == [
        "UInt32",
        "UInt32",
        "UInt32",
        "UInt32",
        "UInt8",
    ]
    # Sorted by session then time; u1's first session holds a, b; categories coded in sorted order.
    by_session = sessions.group_by("session", maintain_order=True).agg(
        "row", "action", "category", "user"
    )
    assert sorted(map(tuple, by_session["row"].to_list())) == [(0,), (0, 1), (2,), (2,)]
    pair = by_session.filter(pl.col("row").list.len() == 2)
    assert pair["action"].to_list() == [[0, 1]]
    assert pair["category"].to_list() == [[1, 0]]
    assert sessions["session"].n_unique() == 4
    assert sessions["user"].n_unique() == 2
    assert (sessions["session"].diff().drop_nulls() >= 0).all()
    # A given session_id wins over the 30-minute rule: all of u1's events in one session.
    with_ids = sessionise(
        table.with_columns(pl.Series("session_id", [None, "s1", "s1", "s1", None])), catalog
    )
    assert with_ids["session"].n_unique() == 3


def test_sessions_and_users_are_numbered_by_their_first_event_and_ties_keep_input_order():
    """The numbering decides the order of every stage downstream (pairs, neighbours, adaptation):
    it must follow the input, not the order a categorical cast happened to meet the strings."""
    catalog = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["Y", "X", "X"]})
    table = event_frame(
        [
            ("zed", "c", "view", 0.5),  # zed's only session: the first event of the input
            ("amy", "b", "view", 0.2),  # amy's: the second, a view and a cart in the same second
            ("amy", "a", "cart", 0.2),
            ("amy", "c", "view", 0.21),  # 14 minutes before them: the same session, first
        ]
    )
    for _ in range(5):
        sessions = sessionise(table, catalog)
        assert sessions["session"].to_list() == [0, 1, 1, 1]
        assert sessions["user"].to_list() == [0, 1, 1, 1]
        # Then amy's session in time order: c, and b before a at one time, as in the input.
        assert sessions["row"].to_list() == [2, 2, 1, 0]
    # The same events with the two tied ones swapped: their order follows.
    swapped = sessionise(table[[0, 2, 1, 3]], catalog)
    assert swapped["row"].to_list() == [2, 2, 0, 1]


def test_funnel_rates_window_counts_and_popularity_by_hand():
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["X", "X", "Y", "X"]})
    table = event_frame(
        [
            ("u1", "a", "view", d) for d in (0, 1, 6, 7, 27)
        ]  # exactly 7 days old: not in the last 7 days
        + [("u1", "a", "click", d) for d in (0, 1, 30)]
        + [("u1", "a", "cart", 0), ("u1", "a", "cart", 40), ("u1", "a", "purchase", 0)]
        + [("u2", "b", "view", 14), ("u2", "b", "click", 14)]
        + [("u3", "c", "view", 0), ("u3", "c", "view", 0)]
    )
    items = item_behaviour(sessionise(table, catalog), catalog)
    assert items["item_id"].to_list() == ["a", "b", "c", "d"]
    assert items["views"].to_list() == [5, 1, 2, 0]
    assert items["clicks"].to_list() == [3, 1, 0, 0]
    assert items["carts"].to_list() == [2, 0, 0, 0]
    assert items["purchases"].to_list() == [1, 0, 0, 0]
    assert items["events"].to_list() == [11, 2, 2, 0]
    assert items["events_7d"].to_list() == [7, 0, 2, 0]
    assert items["events_28d"].to_list() == [
        9,
        2,
        2,
        0,
    ]
    # Days from the first event to the newest: a's oldest is the cart 40 days back; d has none.
    assert items["age_days"].to_list() == [40.0, 14.0, 0.0, None]
    # b: a view and a click 14 days back, one half-life: (1 + 2) x 0.5.
    assert items["popularity"][1] == pytest.approx(1.5)
    # Global: views 8, clicks 4, carts 2, purchases 1 -> every global rate 0.5. With a = 10:
    # category X (a, b, d): views 6, clicks 4, carts 2, purchases 1 ->
    #   p_X = (4 + 5) / 16, q_X = (2 + 5) / 14 = 0.5, r_X = (1 + 5) / 12 = 0.5
    # category Y (c): views 2 -> p_Y = (0 + 5) / 12, q_Y = 5 / 10, r_Y = 5 / 10.
    p_x, p_y = 9 / 16, 5 / 12
    assert items["click_rate"].to_list() == pytest.approx(
        [(3 + 10 * p_x) / 15, (1 + 10 * p_x) / 11, 10 * p_y / 12, p_x]
    )
    assert items["cart_rate"].to_list() == pytest.approx([(2 + 5) / 13, 5 / 11, 0.5, 0.5])
    assert items["purchase_rate"].to_list() == pytest.approx([(1 + 5) / 12, 0.5, 0.5, 0.5])


def test_a_build_without_events_has_zero_behaviour():
    catalog = pl.DataFrame({"item_id": ["a", "b"], "category": ["X", "Y"]})
    stats = BehaviourStats.without_events(catalog)
    items = stats.items
    assert items["item_id"].to_list() == ["a", "b"]
    for column in (
        "events",
        "views",
        "clicks",
        "carts",
        "purchases",
        "events_7d",
        "events_28d",
        "popularity",
        "click_rate",
        "cart_rate",
        "purchase_rate",
    ):
        assert items[column].to_list() == [0, 0], column
    assert items["age_days"].to_list() == [None, None]
    assert stats.transitions.height == 0
    assert stats.categories["items"].to_list() == [1, 1]


def test_events_for_unknown_items_stop_the_build(small_shop_dir, tmp_path):
    events = pl.read_parquet(small_shop_dir / "events.parquet").head(5)
    events = events.with_columns(
        pl.when(pl.int_range(5) == 2)
        .then(pl.lit("nope"))
        .otherwise(pl.col("item_id"))
        .alias("item_id")
    )
    events.write_parquet(tmp_path / "events.parquet")
    with pytest.raises(
        DataValidationError, match="row 3, column 'item_id': item 'nope' is not in the catalogue"
    ):
        build_index(
            small_shop_dir / "catalog.parquet",
            tmp_path / "index",
            tmp_path / "events.parquet",
            BuildConfig(text=False, progress=False),
        )
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_cli_build_and_inspect(small_shop_dir, built_index, tmp_path, capsys):
    rows = pl.read_parquet(small_shop_dir / "catalog.parquet").head(400)
    rows.write_csv(tmp_path / "catalog.csv")
    code = main(
        [
            "index",
            "build",
            "--catalog",
            str(tmp_path / "catalog.csv"),
            "--out",
            str(tmp_path / "idx"),
            "--version",
            "v1",
            "--quiet",
            "--exact-max",
            "10",
            "--json",
            str(tmp_path / "report.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "version v1 (format 1): 400 items" in out
    assert "HNSW: " in out
    assert "encode text:" in out
    assert json.loads((tmp_path / "report.json").read_text())["stages"]["write"]["seconds"] >= 0
    assert main(["index", "inspect", str(tmp_path / "idx"), "--verify"]) == 0
    assert "verified: every file matches its sha256" in capsys.readouterr().out
    path, manifest = read_manifest(tmp_path / "idx")
    assert path.name == "v1"
    assert all(s["recall_at_10"] >= 0.95 for s in manifest["shards"])
    # Versions are immutable: building v1 again is refused.
    assert (
        main(
            [
                "index",
                "build",
                "--catalog",
                str(tmp_path / "catalog.csv"),
                "--out",
                str(tmp_path / "idx"),
                "--version",
                "v1",
                "--quiet",
            ]
        )
        == 2
    )
    assert "version already exists" in capsys.readouterr().err
