"""``crossrec recommend-all``: every listed shopper's list is the one Recommend gives them, from the
engine's own store and configured version, written as one row per position."""

from __future__ import annotations

import polars as pl
import pytest

from engine.config import EngineConfig
from engine.core import Engine
from engine.retrieval.query import Query
from engine.state.store import SQLiteEventStore, StoredEvent

NOW_US = 1_760_000_000 * 1_000_000


def test_recommend_all_writes_each_shoppers_recommend_list(tiny_built, tmp_path):
    from clients.cli import main

    store = tmp_path / "events.sqlite"
    config_file = tmp_path / "engine.toml"
    config_file.write_text(
        f'[store]\npath = "{store}"\npseudonym_key = "{"k" * 32}"\n'
        f'[arms]\nartifact = "{tiny_built}"\n'
    )
    config = EngineConfig.load(config_file)
    engine = Engine(config, SQLiteEventStore(store))
    try:
        engine.versions.load_configured()
        key = engine.user_key("u1")
        engine.ingest(
            [
                StoredEvent("e1", key, "i00", "purchase", NOW_US, "s"),
                StoredEvent("e2", key, "i05", "view", NOW_US + 1, "s"),
            ]
        )
        expected = {u: engine.recommend(u, [], Query(k=3)).item_ids for u in ("u1", "u2")}
    finally:
        engine.close()
    users = tmp_path / "users.txt"
    users.write_text("u1\n\nu2\nu1\n")  # a blank line and a repeat
    out = tmp_path / "lists.parquet"
    args = ["recommend-all", "--config", str(config_file), "--users", str(users)]
    assert main([*args, "--out", str(out), "--k", "3", "--threads", "2"]) == 0
    lists = pl.read_parquet(out)
    assert lists.columns == [
        "user_id",
        "position",
        "item_id",
        "score",
        "arm",
        "index_version",
        "model_version",
    ]
    for user, items in expected.items():
        mine = lists.filter(pl.col("user_id") == user).sort("position")
        assert mine["item_id"].to_list() == items
        assert mine["position"].to_list() == list(range(len(items)))
    assert expected["u1"] != expected["u2"]  # u1's purchase moved its list
    assert set(lists["index_version"]) == {"v1"}


def test_the_users_file_needs_a_user_id_column(tmp_path):
    from apps.recommend_all import read_users

    bad = tmp_path / "users.csv"
    bad.write_text("id\nu1\n")
    with pytest.raises(ValueError, match="needs a user_id column"):
        read_users(bad)
    good = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": ["b", "a", "b"]}).write_parquet(good)
    assert read_users(good) == ["b", "a"]
