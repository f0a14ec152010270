"""Assembling a synthetic shop and writing it to disk with its ground truth."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from indexer.datagen.behaviour import Users, draw_users, generate_events, user_ids
from indexer.datagen.catalog import SyntheticCatalog, generate_catalog
from indexer.datagen.complements import ComplementGraph, plant_complements
from indexer.datagen.config import ShopConfig
from indexer.datagen.families import with_family
from indexer.datagen.partners import PartnerPairs, plant_partners
from indexer.datagen.taxonomy import Leaf, leaves

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.parquet"
EVENTS_FILE = "events.parquet"
TRUTH_FILE = "ground_truth.json"
USER_TRUTH_FILE = "truth_users.parquet"
ITEM_TRUTH_FILE = "truth_items.parquet"
TRUTH_FORMAT = 1


@dataclass(frozen=True)
class Shop:
    config: ShopConfig
    leaves: list[Leaf]
    leaf_popularity: np.ndarray
    catalog: SyntheticCatalog
    graph: ComplementGraph
    partners: PartnerPairs
    users: Users
    events: pl.DataFrame
    seconds: dict[str, float]

    @property
    def leaf_of_item(self) -> dict[str, str]:
        return dict(zip(self.catalog.frame["item_id"], self.catalog.frame["category"]))

    def complement_pairs(self) -> set[tuple[str, str]]:
        """Planted edges as (source category path, target category path)."""
        return {
            (self.leaves[s].path, self.leaves[d].path)
            for s, d in zip(self.graph.src, self.graph.dst)
        }

    def partner_pairs(self) -> pl.DataFrame:
        """Planted item partners, one row per pair: ``item_id``, ``partner_id``; sorted by item."""
        ids = self.catalog.frame["item_id"]
        return pl.DataFrame(
            {
                "item_id": ids.gather(self.partners.item),
                "partner_id": ids.gather(self.partners.partner),
            }
        )


def generate_shop(cfg: ShopConfig = ShopConfig()) -> Shop:
    """Generate the whole shop in memory. Deterministic in ``cfg`` (seed included)."""
    cfg.validate()
    # Independent streams per part: the complement graph and category popularity depend on the seed
    # alone, so shops of different sizes with one seed share their planted structure.
    # Partners get a stream of their own (spawned last, so the first four are the same as before).
    rng_structure, rng_catalog, rng_users, rng_events, rng_partners = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(5)
    )
    all_leaves = leaves()
    seconds: dict[str, float] = {}

    # Category popularity: Zipf over a random order of the leaves.
    popularity = 1.0 / np.arange(1, len(all_leaves) + 1) ** 0.8
    popularity = rng_structure.permutation(popularity / popularity.sum())
    graph = plant_complements(cfg, len(all_leaves), rng_structure)

    t = time.perf_counter()
    catalog = generate_catalog(cfg, all_leaves, rng_catalog)
    seconds["catalog"] = time.perf_counter() - t

    t = time.perf_counter()
    partners = plant_partners(cfg, catalog, graph, len(all_leaves), rng_partners)
    seconds["partners"] = time.perf_counter() - t

    t = time.perf_counter()
    users = draw_users(cfg, popularity, rng_users)
    median = np.array([lf.median_price for lf in all_leaves])
    events = generate_events(cfg, catalog, graph, partners, users, median, rng_events)
    seconds["events"] = time.perf_counter() - t
    log.info(
        "generated %d items (%d partner pairs), %d users, %d events",
        cfg.items,
        len(partners),
        cfg.n_users,
        events.height,
    )
    shop = Shop(cfg, all_leaves, popularity, catalog, graph, partners, users, events, seconds)
    return with_family(shop)


def write_shop(shop: Shop, out: str | Path, stats: dict | None = None) -> Path:
    """Write catalogue, events and ground truth into ``out`` (created; an existing folder is
    replaced whole). Files appear only once all are written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the shop from other users
    try:
        t = time.perf_counter()
        shop.catalog.frame.write_parquet(tmp / CATALOG_FILE)
        shop.events.write_parquet(tmp / EVENTS_FILE)
        _user_truth(shop).write_parquet(tmp / USER_TRUTH_FILE)
        _item_truth(shop).write_parquet(tmp / ITEM_TRUTH_FILE)
        (tmp / TRUTH_FILE).write_text(json.dumps(ground_truth(shop, stats), indent=2))
        shop.seconds["write"] = time.perf_counter() - t
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ground_truth(shop: Shop, stats: dict | None = None) -> dict:
    """The machine-readable answers: categories, the complement graph, generator settings. The item
    partners are listed per item in the item truth file (``partner_ids``), summarised here."""
    cfg = asdict(shop.config)
    cfg["start"] = shop.config.start.isoformat()
    return {
        "format_version": TRUTH_FORMAT,
        "config": cfg,
        "categories": [
            {
                "path": lf.path,
                "department": lf.department,
                "median_price": lf.median_price,
                "popularity": float(p),
            }
            for lf, p in zip(shop.leaves, shop.leaf_popularity)
        ],
        "complements": [
            {
                "source": shop.leaves[s].path,
                "target": shop.leaves[d].path,
                "weight": round(float(w), 6),
            }
            for s, d, w in zip(shop.graph.src, shop.graph.dst, shop.graph.weight)
        ],
        "partners": {
            "pairs": len(shop.partners),
            "items_with_partners": len(np.unique(shop.partners.item)),
            "listed_in": f"{ITEM_TRUTH_FILE}:partner_ids",
        },
        "files": {"users": USER_TRUTH_FILE, "items": ITEM_TRUTH_FILE},
        "measured": stats or {},
    }


def _user_truth(shop: Shop) -> pl.DataFrame:
    """One row per (user, interest): category, weight, and the time range it is active in."""
    users, cfg = shop.users, shop.config
    n = len(users.single)
    start_us = int(cfg.start.timestamp() * 1e6)
    end_us = start_us + cfg.weeks * 7 * 86_400 * 1_000_000
    uid = np.repeat(np.arange(n), 3)
    slot = np.tile(np.arange(3), n)
    leaf = users.interests.ravel()
    weight = users.weights.ravel()
    drift_us = np.where(np.isfinite(users.drift_s), start_us + users.drift_s * 1e6, end_us).astype(
        np.int64
    )
    drifts = np.isfinite(users.drift_s)[uid] & (users.drift_slot[uid] == slot)
    keep = leaf >= 0
    # The drifted slot appears twice: the old interest until the drift, the new one after.
    rows_old = np.flatnonzero(keep)
    rows_new = np.flatnonzero(keep & drifts)
    paths = pl.Series([lf.path for lf in shop.leaves])
    ids = user_ids(n)

    def frame(
        rows: np.ndarray, leaves_: np.ndarray, active_from: np.ndarray, active_until: np.ndarray
    ) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "user_id": ids.gather(uid[rows]),
                "slot": slot[rows].astype(np.int8),
                "category": paths.gather(leaves_),
                "weight": weight[rows],
                "active_from": pl.Series(active_from).cast(pl.Datetime("us", "UTC")),
                "active_until": pl.Series(active_until).cast(pl.Datetime("us", "UTC")),
                "budget": users.budget[uid[rows]],
                "single_visit": users.single[uid[rows]],
            }
        )

    old_until = np.where(drifts[rows_old], drift_us[uid[rows_old]], end_us)
    old = frame(rows_old, leaf[rows_old], np.full(len(rows_old), start_us), old_until)
    new = frame(
        rows_new,
        users.drift_leaf[uid[rows_new]],
        drift_us[uid[rows_new]],
        np.full(len(rows_new), end_us),
    )
    return pl.concat([old, new]).sort("user_id", "slot", "active_from")


def _item_truth(shop: Shop) -> pl.DataFrame:
    """One row per item: popularity weight, appeal, launch time and its planted partners (item ids,
    an empty list for most items)."""
    c = shop.catalog
    start_us = int(shop.config.start.timestamp() * 1e6)
    ids = c.frame["item_id"]
    pairs = (
        shop.partner_pairs().group_by("item_id", maintain_order=True).agg(partner_ids="partner_id")
    )
    return (
        pl.DataFrame(
            {
                "item_id": ids,
                "popularity_weight": c.weight,
                "appeal": c.appeal,
                "launched_at": pl.Series(start_us + (c.launch_s * 1e6).astype(np.int64)).cast(
                    pl.Datetime("us", "UTC")
                ),
            }
        )
        .join(pairs, on="item_id", how="left", maintain_order="left")
        .with_columns(pl.col("partner_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))))
    )
