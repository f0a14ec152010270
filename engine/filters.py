"""Which candidates may be shown at all: the request's item filters and what the user already
has."""

from __future__ import annotations

import numpy as np

from engine.items import ItemTable
from engine.query import Query


def allowed_rows(
    rows: np.ndarray, query: Query, items: ItemTable, excluded: np.ndarray
) -> np.ndarray:
    """Boolean mask over ``rows``: not in ``excluded`` (rows the user already bought or saw), not an
    excluded item, in stock when asked, within the price range (items without a price fail a price
    filter), of an asked-for brand, in an allowed category."""
    ok = ~np.isin(rows, excluded)
    if query.exclude_items:
        # Rows, not id strings: O(excluded) dictionary lookups, then an integer isin (comparing
        # strings made a 100k-id request take seconds per category).
        ok &= ~np.isin(rows, excluded_item_rows(query, items))
    if query.in_stock_only:
        ok &= items.in_stock[rows]
    if query.min_price is not None:
        ok &= items.price[rows] >= query.min_price
    if query.max_price is not None:
        ok &= items.price[rows] <= query.max_price
    if query.brands:
        ok &= np.isin(items.brand[rows], list(query.brands))
    return ok


def excluded_item_rows(query: Query, items: ItemTable) -> np.ndarray:
    """The item rows of ``query.exclude_items`` (ids the index does not know are skipped)."""
    rows = [items.row_of.get(i) for i in query.exclude_items]
    return np.array([r for r in rows if r is not None], dtype=np.int64)


def allowed_categories(query: Query, categories: list[str]) -> np.ndarray:
    """Boolean mask over category codes after include / exclude."""
    include = set(categories) if query.include is None else query.include
    return np.array([c in include and c not in query.exclude for c in categories], dtype=bool)
