"""Diversity of the final list: no wall of one category or one brand.

A ranked list can spend all of its ``k`` slots on near-duplicates: ten tents, or ten items of one
brand. :func:`diversify` re-orders the ranking greedily, best first: an item whose category already
holds ``ceil(category_share * k)`` accepted items, or whose brand holds ``ceil(brand_share * k)``,
is *deferred*: it moves behind every item that fits, keeping its rank among the deferred. The
allocation that follows (:mod:`engine.retrieval.allocate`: quotas, cross-category share) takes
items in this order, so its rules still hold, and a list that cannot be diverse (one category asked
for, one brand in stock) is still filled, from the deferred items.

Caps count within the first ``k`` accepted items only (what the shopper sees); a share of 1
switches a cap off. Items without a brand never count toward a brand cap.
"""

from __future__ import annotations

import math

import numpy as np


def diversify(
    order: np.ndarray,
    categories: np.ndarray,
    brands: np.ndarray,
    k: int,
    category_share: float = 1.0,
    brand_share: float = 1.0,
) -> np.ndarray:
    """``order``: candidate positions, best first; ``categories``/``brands``: per position (codes
    or names; an empty brand is no brand). Returns ``order`` re-ordered as the module docstring
    says."""
    category_cap = math.ceil(category_share * k) if category_share < 1 else None
    brand_cap = math.ceil(brand_share * k) if brand_share < 1 else None
    if (category_cap is None and brand_cap is None) or len(order) <= 1:
        return order
    per_category: dict = {}
    per_brand: dict = {}
    accepted: list[int] = []
    deferred: list[int] = []
    positions = order.tolist()
    walked = 0
    for position in positions:
        if len(accepted) >= k:
            break
        walked += 1
        category, brand = categories[position], brands[position]
        full = (category_cap is not None and per_category.get(category, 0) >= category_cap) or (
            brand_cap is not None and bool(brand) and per_brand.get(brand, 0) >= brand_cap
        )
        if full:
            deferred.append(position)
            continue
        accepted.append(position)
        per_category[category] = per_category.get(category, 0) + 1
        if brand:
            per_brand[brand] = per_brand.get(brand, 0) + 1
    return np.array(accepted + deferred + positions[walked:], dtype=order.dtype)
