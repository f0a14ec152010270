"""The synthetic shop: deterministic, realistic in the proportions it promises, and carrying a
complement graph that behaviour reveals and text does not."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from indexer import read_catalog, read_events
from indexer.datagen.cli import make_shop
from indexer.datagen.config import ShopConfig
from indexer.datagen.shop import TRUTH_FILE, USER_TRUTH_FILE, generate_shop
from indexer.datagen.stats import edge_auc, popularity_skew


def test_same_seed_same_shop_other_seed_other_shop(shop):
    again = generate_shop(ShopConfig())
    assert again.catalog.frame.equals(shop.catalog.frame)
    assert again.events.equals(shop.events)
    other = generate_shop(ShopConfig(seed=1))
    assert not other.events.equals(shop.events)
    assert other.complement_pairs() != shop.complement_pairs()


def test_planted_structure_does_not_depend_on_shop_size(shop):
    bigger = generate_shop(ShopConfig(items=8_000, users=1_000))
    assert bigger.complement_pairs() == shop.complement_pairs()


def test_catalogue_shape(shop):
    catalog = shop.catalog.frame
    leaves = catalog["category"].unique()
    assert catalog.height == 5_000 and len(leaves) == 64
    assert catalog["category"].str.split(" > ").list.first().n_unique() == 8
    assert catalog["item_id"].is_unique().all()
    # Prices follow the category: tents cost more than tent-free accessories.
    by_leaf = catalog.group_by("category").agg(pl.col("price").median()).to_dict(as_series=False)
    median = dict(zip(by_leaf["category"], by_leaf["price"]))
    assert median["Electronics > Audio & Computing > Laptops"] > 10 * median["Electronics > Phones > Screen Protectors"]
    assert 0.85 < catalog["in_stock"].mean() < 0.97


def test_realistic_proportions(shop_stats):
    assert 0.30 <= shop_stats["top1pct_item_share"] <= 0.50
    assert 0.40 <= shop_stats["outside_first_category_share"] <= 0.65
    assert 3 <= shop_stats["median_basket"] <= 7
    assert 0.15 <= shop_stats["single_event_user_share"] <= 0.35
    f = shop_stats["funnel"]
    assert 0.2 < f["click_per_view"] < 0.5 and 0.2 < f["cart_per_click"] < 0.5 and 0.3 < f["purchase_per_cart"] < 0.7


def test_complements_are_visible_in_behaviour_but_not_in_titles(shop_stats):
    # Co-engagement in sessions: planted pairs far above chance, everything else at or below it.
    assert shop_stats["complement_lift_mean"] > 4.0
    assert shop_stats["non_complement_lift_mean"] < 1.0
    assert shop_stats["complement_auc_by_coengagement"] > 0.9
    # Titles do carry category signal ...
    assert shop_stats["titles_nearest_own_category"] > 0.95
    # ... but say nothing about which categories complement each other.
    assert 0.4 < shop_stats["complement_auc_by_title_similarity"] < 0.6


def test_funnel_order_holds_per_item_and_session(shop):
    ev = shop.events.with_columns(pl.col("action").cast(pl.String))
    first = ev.group_by("session_id", "item_id", "action").agg(pl.col("ts").min()).pivot(
        on="action", index=["session_id", "item_id"], values="ts"
    )
    purchases = first.filter(pl.col("purchase").is_not_null())
    assert purchases.height > 0
    assert purchases["cart"].is_not_null().all() and (purchases["cart"] <= purchases["purchase"]).all()
    carts = first.filter(pl.col("cart").is_not_null())
    assert (carts["click"].is_not_null() & (carts["click"] <= carts["cart"])).all()


def test_out_of_stock_items_are_never_carted(shop):
    out_of_stock = shop.catalog.frame.filter(~pl.col("in_stock"))["item_id"].implode()
    carted = shop.events.filter(pl.col("action").is_in(["cart", "purchase"]))
    assert carted.height > 0 and not carted["item_id"].is_in(out_of_stock).any()


def test_no_event_before_an_item_launches(shop):
    launched = pl.DataFrame(
        {"item_id": shop.catalog.frame["item_id"], "launch_s": shop.catalog.launch_s}
    )
    ev = shop.events.join(launched, on="item_id").with_columns(
        seconds=(pl.col("ts") - pl.lit(shop.config.start)).dt.total_microseconds() / 1e6
    )
    assert (ev["seconds"] >= ev["launch_s"]).all()
    assert (shop.catalog.launch_s > 0).mean() > 0.1  # some items really do launch late


def test_interest_drift_shows_in_events(shop):
    users = shop.users
    drifting = np.flatnonzero(np.isfinite(users.drift_s))
    assert len(drifting) > 100
    paths = np.array([lf.path for lf in shop.leaves])
    new_interest = pl.DataFrame(
        {
            "user_id": [f"u{u:06d}" for u in drifting],
            "new_category": paths[users.drift_leaf[drifting]],
            "drift_s": users.drift_s[drifting],
        }
    )
    ev = (
        shop.events.join(new_interest, on="user_id")
        .join(shop.catalog.frame.select("item_id", "category"), on="item_id")
        .with_columns(after=((pl.col("ts") - pl.lit(shop.config.start)).dt.total_microseconds() / 1e6) >= pl.col("drift_s"))
    )
    share = ev.group_by("after").agg((pl.col("category") == pl.col("new_category")).mean().alias("share"))
    share = dict(share.iter_rows())
    assert share[True] > 3 * share[False]


def test_files_pass_the_readers_and_carry_ground_truth(tmp_path):
    shop, stats = make_shop(ShopConfig(items=1_000, seed=3), tmp_path / "shop", fmt="csv", echo=lambda _: None)
    out = tmp_path / "shop"
    catalog = read_catalog(out / "catalog.csv")
    events = read_events(out / "events.csv")
    assert catalog.height == 1_000 and events.height == shop.events.height
    assert read_events(out / "events.parquet").height == events.height
    truth = json.loads((out / TRUTH_FILE).read_text())
    assert {(e["source"], e["target"]) for e in truth["complements"]} == shop.complement_pairs()
    assert len(truth["categories"]) == 64 and truth["measured"]["events"] == events.height
    interests = pl.read_parquet(out / USER_TRUTH_FILE)
    assert interests["user_id"].n_unique() == shop.config.n_users
    assert interests.group_by("user_id").len()["len"].max() <= 4  # three interests + one drift


def test_stat_helpers_on_hand_computed_cases():
    score = np.array([[0, 3, 1], [2, 0, 0], [1, 5, 0]], dtype=float)
    # Edge (0,1)=3 against non-edges 1,2,0,1,5: beats 1,2,0,1, loses to 5 -> 4/5.
    assert edge_auc(score, [(0, 1)]) == pytest.approx(0.8)
    events = pl.DataFrame({"item_id": ["a"] * 6 + ["b"] * 3 + ["c"]})
    assert popularity_skew(events, n_items=100, top=0.01) == pytest.approx(0.6)


def test_too_small_a_shop_is_refused():
    with pytest.raises(ValueError, match="items must be >= 200"):
        generate_shop(ShopConfig(items=50))
