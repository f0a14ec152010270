"""The shopper simulator: what a shopper wants and does by hand on a hand-written shop truth, and a
short simulation on the tiny version whose every event quotes a list the engine logged."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from helpers_engine import engine_config
from helpers_tiny import KNIVES, NOW, PANS, TENTS, TOOLS, settings

from apps.simulate import SimConfig, simulate
from apps.simulate_figures import round_figures
from apps.simulate_truth import FLOOR, ShopTruth
from engine.core import ARM_A, ARM_B, Engine, Served
from engine.retrieval.recommend import Recommender
from engine.state.store import SQLiteEventStore, StoredEvent
from indexer.datagen.behaviour import funnel

START = datetime(2026, 1, 5, tzinfo=UTC)
ITEMS = ["t0", "t1", "t2", "p0", "p1", "k0", "k1", "g0", "g1"]
CATEGORY = [TENTS] * 3 + [PANS] * 2 + [KNIVES] * 2 + [TOOLS] * 2
PRICE = [100.0, 50.0, 40.0, 20.0, 30.0, 10.0, 15.0, 5.0, 5.0]
APPEAL = [0.5, 0.0, -0.5, 1.0, 0.0, 0.2, 0.0, 0.0, 0.3]


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory):
    """The tiny version's items as a shop: categories Tools, Knives, Pans, Tents (codes 0-3);
    complements Tents -> Pans .6, Tents -> Knives .3, Pans -> Knives 1; user s0 wants Tents (.7)
    and Tools (.3), budget 1; s1 wants Pans, s2 Knives, s3 Tools; t0's partner is p1."""
    out = tmp_path_factory.mktemp("truth")
    end = START.timestamp() + 7 * 86_400
    truth = {
        "config": {
            "start": START.isoformat(),
            "weeks": 1,
            "p_complement": 0.3,
            "p_other_interest": 0.12,
            "p_random": 0.04,
            "partner_take": 0.6,
        },
        "categories": [
            {"path": c, "median_price": m}
            for c, m in ((TOOLS, 5.0), (KNIVES, 10.0), (PANS, 25.0), (TENTS, 80.0))
        ],
        "complements": [
            {"source": TENTS, "target": PANS, "weight": 0.6},
            {"source": TENTS, "target": KNIVES, "weight": 0.3},
            {"source": PANS, "target": KNIVES, "weight": 1.0},
        ],
    }
    (out / "ground_truth.json").write_text(json.dumps(truth))
    pl.DataFrame(
        {
            "item_id": ITEMS,
            "category": CATEGORY,
            "price": PRICE,
            "in_stock": [True, True, True, True, False, True, True, True, True],
        }
    ).write_parquet(out / "catalog.parquet")
    pl.DataFrame(
        {
            "item_id": ITEMS,
            "popularity_weight": [6.0, 3.0, 1.0, 9.0, 1.0, 4.0, 0.5, 5.0, 5.0],
            "appeal": APPEAL,
            "partner_ids": [["p1"]] + [[] for _ in ITEMS[1:]],
        }
    ).write_parquet(out / "truth_items.parquet")
    at = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    pl.DataFrame(
        {
            "user_id": ["s0", "s0", "s1", "gone", "once", "s2", "s3"],
            "slot": [0, 1, 0, 0, 0, 0, 0],
            "category": [TENTS, TOOLS, PANS, TENTS, TENTS, KNIVES, TOOLS],
            "weight": [0.7, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0],
            "active_from": [at(START.timestamp())] * 7,
            # "gone" drifted away from Tents before the end; "once" visited once.
            "active_until": [at(end)] * 3 + [at(end - 86_400)] + [at(end)] * 3,
            "budget": [1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
            "single_visit": [False, False, False, False, True, False, False],
        }
    ).write_parquet(out / "truth_users.parquet")
    return out


def test_truth_keeps_returning_users_with_their_current_interests(shop_dir):
    truth = ShopTruth(shop_dir)
    assert truth.user_ids == ["s0", "s1", "s2", "s3"]
    assert [list(i) for i in truth.interests] == [[3, 0], [2], [1], [0]]
    assert truth.end_us == int((START.timestamp() + 7 * 86_400) * 1e6)


def test_what_a_shopper_wants_by_hand(shop_dir):
    truth = ShopTruth(shop_dir)
    # s0 looking at a tent: interests Tents and Tools 1; Tents' complements relative to its
    # strongest edge: Pans .6/.6 = 1, Knives .3/.6 = .5.
    assert truth.attraction(0, 3).tolist() == pytest.approx([1.0, 0.5, 1.0, 1.0])
    # s0 looking at a tool: Tools has no complements; those of the other interest (Tents) count
    # half: Pans .5, Knives .25.
    assert truth.attraction(0, 0).tolist() == pytest.approx([1.0, 0.25, 0.5, 1.0])
    # s1 looking at a pan: Pans 1, its complement Knives 1, the rest the floor.
    assert truth.attraction(1, 2).tolist() == pytest.approx([FLOOR, 1.0, 1.0, FLOOR])


def test_click_cart_and_purchase_probabilities_by_hand(shop_dir):
    truth = ShopTruth(shop_dir)
    rows = np.array([4, 6, 7])  # p1 (t0's partner, out of stock), k1, g0 shown to s0 on t0
    c = truth.choices(0, 0, rows, attention=0.5)
    p_click, p_cart, p_buy = c.click, c.cart, c.purchase
    # Examination 1, 1/log2(3), 1/2; want: p1 is Pans (1, also a partner), k1 Knives .5, g0 an
    # interest (Tools) 1.
    examine = np.array([1.0, 1 / math.log2(3), 0.5])
    want = np.array([1.0, 0.5, 1.0])
    gap = np.log(np.array([30.0 / 25.0, 15.0 / 10.0, 5.0 / 5.0]))
    click, cart, buy = funnel(
        np.array([0.0, 0.0, 0.0]),
        np.array([False, False, True]),
        gap,
        np.array([0.0, 1.0, 1.0]),
    )
    assert p_click == pytest.approx(0.5 * examine * want * click)
    assert p_cart == pytest.approx(cart)
    assert p_cart[0] == 0.0  # out of stock
    assert p_buy == pytest.approx(buy)
    assert c.want.tolist() == pytest.approx(want.tolist())
    assert c.interest.tolist() == [False, False, True]


def test_a_simulation_sends_outcomes_that_quote_logged_lists(shop_dir, tmp_path, tiny_version):
    truth = ShopTruth(shop_dir)
    store = tmp_path / "events.sqlite"
    engine = Engine(
        engine_config(store, arms={"b_share": 0.5}),
        SQLiteEventStore(store),
    )
    engine.versions.swap_in(Served(tiny_version, Recommender(tiny_version, settings()), 0.0), ARM_A)
    engine.versions.swap_in(Served(tiny_version, Recommender(tiny_version, settings()), 0.0), ARM_B)
    engine.ingest([StoredEvent("h", engine.user_key("s1"), "p0", "purchase", NOW, "")])
    start = truth.end_us + 3_600_000_000
    config = SimConfig(visits=80, rounds=1, k=3, attention=1.0, seed=3)
    sent = simulate(engine, truth, config, start)
    assert engine.feedback.impressions.flush()
    log = tmp_path / "events.impressions.sqlite"
    engine.close()

    assert sent[0]["visits"] == 80
    # Four users, nine items: later visits find everything seen (the engine excludes it).
    assert 0 < sent[0]["empty_lists"] < 80
    from apps.impression_log import read_log, read_outcome_events

    lists, shown = read_log(log)
    assert lists.height == 80
    assert set(lists["arm"]) == {ARM_A, ARM_B}
    # Visits spread over one simulated day, in order.
    assert lists["ts_us"].min() >= start
    assert lists["ts_us"].max() < start + 86_400_000_000
    events = read_outcome_events(store)
    assert events.height == sent[0]["click"] + sent[0]["cart"] + sent[0]["purchase"] > 0
    joined = events.join(shown, on=["recommendation_id", "item_id"], how="left")
    assert joined["position"].null_count() == 0  # every outcome names an item of its list
    figures = round_figures(log, store, start, 1)
    assert sorted(figures["arm"]) == [ARM_A, ARM_B]
    assert figures["impressions"].sum() == shown.height > 0
    assert figures["click"].sum() == sent[0]["click"]
    expected = sent[0]["truth_per_arm"]
    assert sum(t["impressions"] for t in expected.values()) == shown.height
    assert all(0 < t["expected_ctr"] <= 1 for t in expected.values())
