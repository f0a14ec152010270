"""Shop families: synthetic shops built to break the assumptions our own generator was written
around, so that a default tuned on one family is judged on the others too.

=============  ==============================================================================
family         what changes, and which assumption it breaks
=============  ==============================================================================
``default``    sessions with a clock, strong popularity skew (log-normal sigma 2), categories
               that say where complements are: the shop the engine was first tuned on
``baskets``    a basket log: no ``session_id``, every event at one timestamp (no clock: a
               time split and time decay mean nothing), flat popularity (sigma 0.5), no
               one-visit users; breaks "popularity and recency carry signal"
``itemitem``   item-level structure dominates: most items have partners and sessions follow
               them (partner share 0.9, take 0.9, complement moves 0.5), and the category
               labels are shuffled across items, so a category says almost nothing about what
               goes with what; breaks "categories decide where to look"
=============  ==============================================================================

Each family is a preset of :class:`~indexer.datagen.config.ShopConfig` plus a pass over the
generated shop (:func:`apply_family`). The ground truth's complement graph is that of the
generator's hidden leaves; for ``itemitem`` the published categories no longer follow it (the
item partners in the item truth file still hold).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

FAMILIES = ("default", "baskets", "itemitem")

#: ShopConfig fields each family sets (anything else stays as asked).
PRESETS: dict[str, dict] = {
    "default": {},
    "baskets": {
        "popularity_sigma": 0.5,
        "single_event_user_rate": 0.0,
        "drift_user_rate": 0.0,
    },
    "itemitem": {
        "partner_share": 0.9,
        "partner_take": 0.9,
        "p_complement": 0.5,
        "p_other_interest": 0.1,
        "p_random": 0.05,
    },
}


def family_config(family: str, **settings):
    """A :class:`ShopConfig` of ``family`` with ``settings`` (items, users, seed, ...) on top."""
    from indexer.datagen.config import ShopConfig

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return ShopConfig(**{**PRESETS[family], **settings, "family": family})


def apply_family(events: pl.DataFrame, catalog: pl.DataFrame, family: str, seed: int, start):
    """(events, catalogue frame) after the family's pass over the generated shop."""
    if family == "baskets":
        events = events.drop("session_id").with_columns(
            pl.lit(start).cast(pl.Datetime("us", "UTC")).alias("ts")
        )
    elif family == "itemitem":
        rng = np.random.default_rng([seed, 7])
        shuffled = catalog["category"].gather(rng.permutation(catalog.height))
        catalog = catalog.with_columns(shuffled.alias("category"))
    return events, catalog


def with_family(shop):
    """``shop`` (indexer.datagen.shop.Shop) with its family's pass applied."""
    cfg = shop.config
    if cfg.family == "default":
        return shop
    events, frame = apply_family(shop.events, shop.catalog.frame, cfg.family, cfg.seed, cfg.start)
    return dataclasses.replace(
        shop, events=events, catalog=dataclasses.replace(shop.catalog, frame=frame)
    )
