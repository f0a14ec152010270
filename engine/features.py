"""The features of each candidate: one matrix, the same code for serving and for the ranker's rows.

Columns (``FEATURES``, in order): each source's score and rank (rank ``NOT_RANKED`` when the source
did not propose the item), the item's decayed popularity (log1p) and its share of its category's,
the category's weight in the profile, its transition score, the affinity that mixes the two, whether
the category is new to the user, and the item's smoothed funnel rates (view->click, click->cart,
cart->purchase; 0 when the index has none).
"""

from __future__ import annotations

import numpy as np

from engine.candidates import Candidates
from engine.items import ItemTable

SOURCES = ("neighbours", "popular", "search")
FEATURES = (
    *(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank")),
    "log_popularity",
    "popularity_share",
    "category_weight",
    "transition_score",
    "affinity",
    "cross_category",
    "click_rate",
    "cart_rate",
    "purchase_rate",
)


def candidate_features(
    candidates: Candidates,
    items: ItemTable,
    weights: np.ndarray,
    transition: np.ndarray,
    affinity: np.ndarray,
) -> np.ndarray:
    """(n, len(FEATURES)) float32. ``weights``, ``transition``, ``affinity``: per category code."""
    rows = candidates.rows
    codes = items.category_code[rows]
    columns = []
    for s in SOURCES:
        j = candidates.sources.index(s)
        columns += [candidates.scores[:, j], candidates.ranks[:, j]]
    columns += [
        np.log1p(items.popularity[rows]),
        items.popularity_share[rows],
        weights[codes],
        transition[codes],
        affinity[codes],
        weights[codes] == 0,
    ]
    columns += [items.rates[rows, i] for i in range(3)]
    return (
        np.column_stack(columns).astype(np.float32)
        if len(rows)
        else np.zeros((0, len(FEATURES)), np.float32)
    )
