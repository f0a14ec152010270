"""What the request path reads of one index version's items, as flat numpy arrays.

Built once per served version (:class:`ItemTable`), so a request never touches polars or Python
objects per item: row ``i`` everywhere is item row ``i`` of the index (= faiss id ``i``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from indexer.artifact import IndexVersion

POPULAR_PER_CATEGORY = 500
RATE_COLUMNS = ("click_rate", "cart_rate", "purchase_rate")
RECENT_COLUMNS = ("events_7d", "events_28d")


def _column(items: pl.DataFrame, name: str, fill, dtype) -> np.ndarray:
    if name not in items.columns:
        return np.full(items.height, fill, dtype=dtype)
    return items[name].fill_null(fill).to_numpy().astype(dtype, copy=False)


@dataclass(frozen=True)
class ItemTable:
    """Per-item arrays (length ``n``) and per-category popularity orders.

    ``category_code[i]`` indexes ``categories``; ``popular[c]`` lists category ``c``'s item rows,
    most popular first (all of them; the first ``POPULAR_PER_CATEGORY`` serve the popularity
    source); ``popularity_share[i]`` is item ``i``'s share of its category's decayed popularity (0
    without events).
    """

    item_ids: np.ndarray
    row_of: dict[str, int]
    categories: list[str]
    category_code: np.ndarray
    row_category: np.ndarray  # category name per row (object array)
    shard_of: np.ndarray
    in_stock: np.ndarray
    price: np.ndarray
    brand: np.ndarray
    #: ``brands[brand_code[i]]`` is item ``i``'s brand; -1 for an item without one.
    brand_code: np.ndarray
    brands: list[str]
    popularity: np.ndarray
    popularity_share: np.ndarray
    popular: list[np.ndarray]
    #: (n, 3) smoothed funnel rates: view->click, click->cart, cart->purchase (0 where not built).
    rates: np.ndarray
    #: (n, 2) events in the last 7 and 28 days before the index's newest event (0 where not built).
    recent_events: np.ndarray
    #: Days from the item's first event to the index's newest event (NaN: no events).
    age_days: np.ndarray
    #: Median log price of each category's priced items (NaN: none priced).
    category_log_price: np.ndarray

    @classmethod
    def from_version(cls, version: IndexVersion) -> ItemTable:
        items = version.items
        categories = version.category_names
        index = {c: i for i, c in enumerate(categories)}
        codes = items["category"].replace_strict(index, return_dtype=pl.Int32).to_numpy()
        popularity = _column(items, "popularity", 0.0, np.float64)
        order = np.lexsort((-popularity, codes))
        starts = np.searchsorted(codes[order], np.arange(len(categories) + 1))
        popular = [order[starts[c] : starts[c + 1]] for c in range(len(categories))]
        totals = np.bincount(codes, weights=popularity, minlength=len(categories))
        share = np.divide(
            popularity, totals[codes], out=np.zeros_like(popularity), where=totals[codes] > 0
        )
        ids = items["item_id"].to_numpy()
        brand = _column(items, "brand", "", object)
        brands, brand_code = np.unique(brand.astype(str), return_inverse=True)
        brand_code = brand_code.astype(np.int32)
        if len(brands) and brands[0] == "":  # "" sorts first: no brand
            brands, brand_code = brands[1:], brand_code - 1
        price = _column(items, "price", np.nan, np.float64)
        log_price = np.log(np.where(price > 0, price, np.nan))
        category_log_price = np.full(len(categories), np.nan)
        for c, rows in enumerate(popular):
            priced = log_price[rows][np.isfinite(log_price[rows])]
            if len(priced):
                category_log_price[c] = np.median(priced)
        return cls(
            item_ids=ids,
            row_of={item: i for i, item in enumerate(ids.tolist())},
            categories=categories,
            category_code=codes,
            row_category=np.array(categories, dtype=object)[codes],
            shard_of=items["shard"].to_numpy(),
            in_stock=_column(items, "in_stock", True, bool),
            price=price,
            brand=brand,
            brand_code=brand_code,
            brands=brands.tolist(),
            popularity=popularity,
            popularity_share=share,
            popular=popular,
            rates=np.column_stack([_column(items, c, 0.0, np.float32) for c in RATE_COLUMNS]),
            recent_events=np.column_stack(
                [_column(items, c, 0.0, np.float32) for c in RECENT_COLUMNS]
            ),
            age_days=_column(items, "age_days", np.nan, np.float32),
            category_log_price=category_log_price,
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def brand_index(self) -> dict[str, int]:
        """Brand name -> its code in ``brands`` (built on first use, once per version)."""
        return {b: i for i, b in enumerate(self.brands)}
