"""Which candidates may be shown at all: the request's item filters and what the user already
has."""

from __future__ import annotations

import numpy as np

from engine.retrieval.items import ItemTable
from engine.retrieval.query import Query


class RowFilter:
    """The request's item filters, turned once per request into integer work: excluded ids into
    rows, brand names into a mask over brand codes. Applying it to any number of row arrays (the
    candidates, then each short category's refill) then costs integer lookups only; comparing
    strings per category made a request with 1,000 unknown brands take 150-250 ms."""

    def __init__(self, query: Query, items: ItemTable, excluded: np.ndarray) -> None:
        self.query = query
        self.items = items
        parts = [np.asarray(excluded, np.int64)]
        if query.exclude_items:
            parts.append(excluded_item_rows(query, items))
        self.excluded = np.unique(np.concatenate(parts))
        #: Allowed per brand code + 1 (index 0: items without a brand); None: any brand.
        self.brand_ok: np.ndarray | None = None
        if query.brands:
            index = items.brand_index
            codes = [index[b] for b in query.brands if b in index]
            self.brand_ok = np.zeros(len(items.brands) + 1, bool)
            self.brand_ok[np.asarray(codes, np.int64) + 1] = True

    def allowed(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask over ``rows``: not excluded (rows the user already has, excluded items),
        in stock when asked, within the price range (items without a price fail a price filter),
        of an asked-for brand."""
        q, items = self.query, self.items
        ok = ~np.isin(rows, self.excluded)
        if q.in_stock_only:
            ok &= items.in_stock[rows]
        if q.min_price is not None:
            ok &= items.price[rows] >= q.min_price
        if q.max_price is not None:
            ok &= items.price[rows] <= q.max_price
        if self.brand_ok is not None:
            ok &= self.brand_ok[items.brand_code[rows] + 1]
        return ok


def allowed_rows(
    rows: np.ndarray, query: Query, items: ItemTable, excluded: np.ndarray
) -> np.ndarray:
    """:meth:`RowFilter.allowed` of a filter built for this one call."""
    return RowFilter(query, items, excluded).allowed(rows)


def excluded_item_rows(query: Query, items: ItemTable) -> np.ndarray:
    """The item rows of ``query.exclude_items`` (ids the index does not know are skipped)."""
    rows = [items.row_of.get(i) for i in query.exclude_items]
    return np.array([r for r in rows if r is not None], dtype=np.int64)


def allowed_categories(query: Query, categories: list[str]) -> np.ndarray:
    """Boolean mask over category codes after include / exclude."""
    include = set(categories) if query.include is None else query.include
    return np.array([c in include and c not in query.exclude for c in categories], dtype=bool)
