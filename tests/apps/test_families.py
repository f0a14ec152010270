"""Shop families (indexer/datagen/families.py): each breaks the assumption it says it breaks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from indexer.datagen.families import FAMILIES, PRESETS, family_config
from indexer.datagen.shop import generate_shop


@pytest.fixture(scope="module")
def shops():
    return {f: generate_shop(family_config(f, items=1_000, seed=3)) for f in FAMILIES}


def test_the_family_presets_are_pinned():
    assert FAMILIES == ("default", "baskets", "itemitem")
    cfg = family_config("baskets", items=500)
    assert (cfg.family, cfg.items, cfg.popularity_sigma, cfg.single_event_user_rate) == (
        "baskets",
        500,
        0.5,
        0.0,
    )
    cfg = family_config("itemitem", items=500, partner_take=0.5)  # asked for beats the preset
    assert (cfg.partner_share, cfg.partner_take, cfg.p_complement) == (0.9, 0.5, 0.5)
    assert PRESETS["default"] == {}
    with pytest.raises(ValueError, match="family must be one of"):
        family_config("nope")


def test_a_basket_log_has_no_sessions_and_no_clock(shops):
    events = shops["baskets"].events
    assert "session_id" not in events.columns
    assert events["ts"].n_unique() == 1
    assert "session_id" in shops["default"].events.columns
    assert shops["default"].events["ts"].n_unique() > 0.9 * shops["default"].events.height


def test_a_basket_log_has_flatter_popularity_than_the_default_shop(shops):
    def top_share(events: pl.DataFrame) -> float:
        counts = np.sort(events["item_id"].value_counts()["count"].to_numpy())[::-1]
        return counts[: max(1, len(counts) // 100)].sum() / counts.sum()

    assert top_share(shops["baskets"].events) < 0.6 * top_share(shops["default"].events)


def test_itemitem_shuffles_the_category_labels_but_keeps_their_sizes(shops):
    default, shuffled = shops["default"].catalog.frame, shops["itemitem"].catalog.frame
    assert default["item_id"].to_list() == shuffled["item_id"].to_list()
    assert sorted(default["category"].to_list()) == sorted(shuffled["category"].to_list())
    # few items keep their own label: the label says next to nothing about the item
    assert (default["category"] == shuffled["category"]).mean() < 0.2


def test_itemitem_sessions_follow_partners_more_often(shops):
    def partner_share(shop) -> float:
        pairs = shop.partner_pairs()
        return pairs.height / shop.catalog.frame.height

    assert partner_share(shops["itemitem"]) > 2 * partner_share(shops["default"])
