"""Engine pieces without the network: configuration, pseudonyms, profiles, the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import EngineConfig, StoreConfig
from engine.state.profile import ProfileEvent, build_profile
from engine.state.pseudonym import pseudonymise
from engine.state.store import SQLiteEventStore, StoredEvent

DAY_US = 86_400 * 1_000_000


def test_pseudonym_key_is_created_once_and_kept_private(tmp_path):
    config = StoreConfig(path=str(tmp_path / "events.sqlite"))
    key = config.key()
    assert key == config.key()
    assert len(key) == 64
    assert (tmp_path / "events.key").stat().st_mode & 0o777 == 0o600
    a, b = pseudonymise("alice", key), pseudonymise("alice", b"other key")
    assert a == pseudonymise("alice", key)
    assert a != b
    assert "alice" not in a


def test_profile_has_one_interest_per_heavy_category_weighted_by_action_and_age():
    vectors = np.eye(4, dtype=np.float32)
    categories = np.array(["tents", "tents", "boots", "pans"])
    row_of = {"t1": 0, "t2": 1, "b1": 2, "p1": 3}
    now = 100 * DAY_US
    events = [
        ProfileEvent("t1", "view", now),
        ProfileEvent("t2", "purchase", now),
        ProfileEvent("b1", "cart", now - 14 * DAY_US),  # one half-life ago: 4 -> 2
        ProfileEvent("p1", "view", now - 28 * DAY_US),  # two half-lives: 1 -> 0.25
        ProfileEvent("unknown", "purchase", now),
    ]
    p = build_profile(events, row_of, vectors, categories, now, max_interests=2, half_life_days=14)
    assert p.interest_categories == ["tents", "boots"]
    assert p.interest_weights == pytest.approx([9 / 11, 2 / 11])
    assert p.category_weights == pytest.approx(
        {"tents": 9 / 11.25, "boots": 2 / 11.25, "pans": 0.25 / 11.25}
    )
    # The tents interest leans toward the bought tent (weight 8) over the viewed one (weight 1).
    assert p.interests[0] == pytest.approx(np.array([1, 8, 0, 0]) / np.sqrt(65), abs=1e-6)
    assert p.purchased_rows == {1}
    assert p.interest_items[0] == [1, 0]


def test_store_is_idempotent_and_deletes(tmp_path):
    store = SQLiteEventStore(tmp_path / "s.sqlite")
    events = [StoredEvent(f"e{i}", "k1" if i < 3 else "k2", f"i{i}", "view", i) for i in range(5)]
    assert store.append(events) == (5, 0, 0)
    assert store.append([*events[:2], StoredEvent("e9", "k1", "i9", "purchase", 9)]) == (1, 2, 0)
    assert [e.event_id for e in store.history("k1", 10)] == ["e0", "e1", "e2", "e9"]
    assert [e.event_id for e in store.history("k1", 2)] == ["e2", "e9"]  # newest, oldest first
    assert store.counts() == (2, 6)
    assert store.delete_user("k1") == 4
    assert store.history("k1", 10) == []
    assert store.counts() == (1, 2)
    store.close()


@pytest.mark.integration
def test_check_complements_finds_the_planted_graph(built_index, small_shop_dir):
    from apps.complements import complement_hit_rate

    result = complement_hit_rate(
        str(built_index.path), small_shop_dir, users=60, min_events=8, k=10
    )
    # Measured at 2,000 items: ~0.7 of items in planted complements vs ~0.15 by chance.
    assert result["users"] == 60
    assert result["complement_share"] > 3 * result["chance"]
    assert result["complement_share"] > 0.5


def test_behaviour_space_search_agrees_with_exact_shard_search(built_index):
    """Cross-category queries through the behaviour block + re-rank find what exact search finds."""
    from engine.retrieval.items import ItemTable
    from engine.retrieval.sources import ShardSearchSource
    from indexer.artifact import open_index

    version = open_index(built_index.path)
    items = ItemTable.from_version(version)
    search = ShardSearchSource(
        version, items, behaviour_rerank=20
    )  # few candidates: a real test of the re-rank
    rng = np.random.default_rng(0)
    agree = []
    for shard_id in sorted(version.shards)[:20]:
        rows, _ = search.searcher.behaviour[shard_id]
        outside = np.flatnonzero(items.shard_of != shard_id)
        queries = np.asarray(version.vectors[rng.choice(outside, 8, replace=False)])
        k = min(5, len(rows))
        _, exact = version.search(shard_id, queries, k)
        scores, found = search.searcher.behaviour_search(shard_id, queries, k)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
        agree += [len(set(f) & set(e)) / k for f, e in zip(found.tolist(), exact.tolist())]
    assert np.mean(agree) >= 0.95


def test_latency_command_reports_every_setting_and_stage(built_index, small_shop_dir, tmp_path):
    from clients.cli import main

    out = tmp_path / "latency.json"
    args = ["latency", "--artifact", str(built_index.path), "--events"]
    args += [str(small_shop_dir / "events.parquet"), "--users", "20", "--warmup", "2"]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["users"] == 20
    assert set(result) == {
        "users",
        "setup_s",
        "model_version",
        "k=10",
        "k=10 cross",
        "k=100",
        "k=200",
    }
    assert result["model_version"] == "retrieval-only"
    for label in ("k=10", "k=10 cross", "k=100", "k=200"):
        r = result[label]
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["candidates_median"] >= 10  # every request scores a candidate set, not k items
        assert set(r["stages_p50_ms"]) == {"profile", "candidates", "features", "rank", "allocate"}


def test_latency_command_measures_the_irreducible_work_and_the_log_cost(
    built_index, small_shop_dir, tmp_path
):
    from clients.cli import main

    out = tmp_path / "latency.json"
    args = ["latency", "--artifact", str(built_index.path), "--events"]
    args += [str(small_shop_dir / "events.parquet"), "--users", "20", "--warmup", "2"]
    assert main([*args, "--irreducible", "--impression-log", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    work = result["irreducible"]
    assert work["requests"] == 20
    assert 0 < work["search_p50_ms"] < work["full_p50_ms"]
    assert work["ratio_p50"] > 1  # the full call does more than its searches and ranking
    log = result["impression_log"]
    assert log["on"]["requests"] == log["off"]["requests"] == 30  # 20 users x 3, alternating
    # Everything before the alternation is logged: 4 settings x (2 warm-up + 20), its own
    # warm-up (2) and the "on" half (30).
    assert log["log_counts"]["written"] == 4 * 22 + 2 + 30


def test_a_short_or_empty_key_is_refused_without_echoing_it(tmp_path):
    from engine.state.pseudonym import MIN_KEY_BYTES, PseudonymKeyError

    assert MIN_KEY_BYTES == 32
    secret = "s" * 31
    with pytest.raises(PseudonymKeyError, match="31 bytes; at least 32") as err:
        StoreConfig(path=str(tmp_path / "e.sqlite"), pseudonym_key=secret).key()
    assert secret not in str(err.value)
    assert StoreConfig(path=str(tmp_path / "e.sqlite"), pseudonym_key="s" * 32).key() == b"s" * 32
    empty = tmp_path / "empty.key"
    empty.write_text("\n")  # what a crash between creating and writing the file leaves
    with pytest.raises(PseudonymKeyError, match=r"empty\.key holds 0 bytes"):
        StoreConfig(path=str(tmp_path / "e.sqlite"), pseudonym_key_file=str(empty)).key()


def test_a_missing_key_next_to_a_store_with_events_is_refused_not_replaced(tmp_path):
    from engine.core import Engine
    from engine.state.pseudonym import PseudonymKeyError
    from engine.state.store import SQLiteEventStore, StoredEvent

    config = EngineConfig(store=StoreConfig(path=str(tmp_path / "events.sqlite")))
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    engine = Engine(config, store)  # an empty store: the key is created
    key_file = tmp_path / "events.key"
    assert len(key_file.read_text()) == 64
    store.append([StoredEvent("e1", engine.user_key("alice"), "i1", "view", 1)])
    engine.close()
    key_file.unlink()
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    with pytest.raises(PseudonymKeyError, match="is missing but the event store already holds"):
        Engine(config, store)
    assert not key_file.exists()  # nothing created in its place
    store.close()


def test_a_created_key_leaves_no_temporary_file_and_an_existing_one_is_kept(tmp_path):
    path = tmp_path / "deep" / "sub" / "k.key"  # folders created as needed
    config = StoreConfig(path=str(tmp_path / "e.sqlite"), pseudonym_key_file=str(path))
    assert len(config.key()) == 64
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.key"]
    path.write_text("x" * 40 + "\n")
    assert config.key() == b"x" * 40  # read, stripped, never overwritten


def test_pseudonyms_of_the_anonymous_id_stay_empty():
    from engine.state.pseudonym import Pseudonyms, pseudonymise

    p = Pseudonyms(b"k" * 32)
    assert p.of("") == ""
    assert p.of("alice") == pseudonymise("alice", b"k" * 32)


def test_an_event_id_reused_with_other_content_is_a_conflict_not_a_duplicate(tmp_path):
    from engine.state.store import SQLiteEventStore, StoredEvent

    store = SQLiteEventStore(tmp_path / "events.sqlite")
    first = StoredEvent("e1", "k1", "i1", "view", 10, "s1")
    assert store.append([first]) == (1, 0, 0)
    assert store.append([first]) == (0, 1, 0)  # a retry: a duplicate
    for other in (
        StoredEvent("e1", "k1", "i2", "view", 10, "s1"),  # another item
        StoredEvent("e1", "k1", "i1", "cart", 10, "s1"),  # another action
        StoredEvent("e1", "k1", "i1", "view", 11, "s1"),  # another time
        StoredEvent("e1", "k1", "i1", "view", 10, "s2"),  # another session
        StoredEvent("e1", "k1", "i1", "view", 10, "s1", "r1"),  # another recommendation
    ):
        assert store.append([other]) == (0, 0, 1), other
    # Within one call: the first of an id is stored, a later copy with other content conflicts,
    # a later identical copy is a duplicate.
    a = StoredEvent("e2", "k1", "i1", "view", 20)
    b = StoredEvent("e2", "k1", "i9", "view", 20)
    assert store.append([a, b, a]) == (1, 1, 1)
    assert [(e.event_id, e.item_id) for e in store.history("k1", 10)] == [
        ("e1", "i1"),
        ("e2", "i1"),
    ]
    store.close()
