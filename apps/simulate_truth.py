"""What ``crossrec simulate``'s shoppers want (:mod:`apps.simulate` describes the visit): the
shop's ground truth read once, and for each shown item the probabilities of click, cart and
purchase."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from crossrec.vocabulary import US_PER_DAY

#: How much a shopper wants items of categories unrelated to them.
FLOOR = 0.02


@dataclass(frozen=True)
class Choices:
    """Per shown item: P(click), P(cart | click), P(purchase | cart), the user's want of its
    category and whether it is one of their interest categories."""

    click: np.ndarray
    cart: np.ndarray
    purchase: np.ndarray
    want: np.ndarray
    interest: np.ndarray


class ShopTruth:
    """What the simulator reads of a shop folder: items (category, price, stock, appeal,
    popularity, partners), categories (median price, complement edges) and users (interests at
    the end of the window, budget)."""

    def __init__(self, shop: str | Path) -> None:
        from indexer.datagen.shop import CATALOG_FILE, ITEM_TRUTH_FILE, TRUTH_FILE, USER_TRUTH_FILE

        shop = Path(shop)
        truth = json.loads((shop / TRUTH_FILE).read_text())
        self.settings = truth["config"]
        self.categories = [c["path"] for c in truth["categories"]]
        code = {c: j for j, c in enumerate(self.categories)}
        self.median_price = np.array([c["median_price"] for c in truth["categories"]])
        items = pl.read_parquet(shop / CATALOG_FILE).join(
            pl.read_parquet(shop / ITEM_TRUTH_FILE), on="item_id", how="left", maintain_order="left"
        )
        self.item_ids = items["item_id"].to_list()
        self.row_of = {item: j for j, item in enumerate(self.item_ids)}
        self.leaf = np.array([code[c] for c in items["category"].to_list()])
        self.price = items["price"].to_numpy().astype(np.float64)
        self.in_stock = items["in_stock"].to_numpy().astype(np.float64)
        self.appeal = items["appeal"].fill_null(0.0).to_numpy()
        self.weight = items["popularity_weight"].fill_null(0.0).to_numpy()
        self.partners = [set(p) for p in items["partner_ids"].to_list()]
        n = len(self.categories)
        self.complement = np.zeros((n, n))
        for e in truth["complements"]:
            self.complement[code[e["source"]], code[e["target"]]] = e["weight"]
        start_us = int(pl.Series([self.settings["start"]]).str.to_datetime().dt.epoch("us")[0])
        self.end_us = start_us + self.settings["weeks"] * 7 * int(US_PER_DAY)
        users = pl.read_parquet(shop / USER_TRUTH_FILE).filter(
            ~pl.col("single_visit") & (pl.col("active_until").dt.epoch("us") >= self.end_us)
        )
        grouped = users.group_by("user_id", maintain_order=True).agg("category", "weight", "budget")
        self.user_ids = grouped["user_id"].to_list()
        self.interests = [np.array([code[c] for c in cs]) for cs in grouped["category"].to_list()]
        self.interest_weights = [np.asarray(w) for w in grouped["weight"].to_list()]
        self.budget = np.array([b[0] for b in grouped["budget"].to_list()])
        self.by_leaf = [np.flatnonzero(self.leaf == c) for c in range(n)]

    def attraction(self, user: int, opened_leaf: int) -> np.ndarray:
        """(categories,) how much the user wants an item of each category while looking at one of
        ``opened_leaf``: 1 for their interest categories (the opened one among them); for the
        complement categories of the opened one, the edge weight relative to its strongest edge;
        half that for complements of their other interests; ``FLOOR`` elsewhere."""
        n = len(self.categories)
        want = np.full(n, FLOOR)
        for leaf in self.interests[user]:
            if leaf != opened_leaf:
                edges = self.complement[leaf]
                want = np.maximum(want, 0.5 * edges / max(edges.max(), 1e-12))
        edges = self.complement[opened_leaf]
        want = np.maximum(want, edges / max(edges.max(), 1e-12))
        want[self.interests[user]] = 1.0
        want[opened_leaf] = 1.0
        return want

    def choices(self, user: int, opened: int, rows: np.ndarray, attention: float) -> Choices:
        """For a list of item ``rows`` (best first) shown to ``user`` looking at item ``opened``:
        P(click) per position (examination x want x the funnel's click, scaled by ``attention``),
        then P(cart | click) and P(purchase | cart) of the funnel, and what went into them."""
        from indexer.datagen.behaviour import funnel

        leaf = self.leaf[rows]
        want = self.attraction(user, int(self.leaf[opened]))[leaf]
        partners = self.partners[opened]
        is_partner = np.array([self.item_ids[j] in partners for j in rows.tolist()], bool)
        want = np.where(is_partner, np.maximum(want, self.settings["partner_take"]), want)
        examine = 1.0 / np.log2(np.arange(len(rows)) + 2.0)
        is_interest = np.isin(leaf, self.interests[user])
        gap = np.log(self.price[rows] / (self.median_price[leaf] * self.budget[user]))
        p_click, p_cart, p_buy = funnel(self.appeal[rows], is_interest, gap, self.in_stock[rows])
        return Choices(
            np.minimum(attention * examine * want * p_click, 1.0), p_cart, p_buy, want, is_interest
        )
