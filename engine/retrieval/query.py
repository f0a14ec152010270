"""What one Recommend request asks for, after validation (categories resolved to leaves)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import ExplorationConfig


@dataclass(frozen=True)
class Query:
    """``quotas``: (leaf categories, count) groups filled exactly; otherwise ``cross_share`` of the
    ``k`` slots go to categories the user never engaged with (``None``: no split, the ranking alone
    decides). ``include`` (None = all) and ``exclude`` filter categories; the rest filter items."""

    k: int
    quotas: tuple[tuple[frozenset[str], int], ...] = ()
    cross_share: float | None = 1.0
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    in_stock_only: bool = False
    min_price: float | None = None
    max_price: float | None = None
    brands: frozenset[str] = frozenset()
    exclude_items: frozenset[str] = frozenset()
    #: The ranker's objective blend, (objective, weight) pairs; empty: the engine's default.
    objective_weights: tuple[tuple[str, float], ...] = ()
    #: Multiply the blend by the item's price (expected revenue when the weights pick purchase).
    weight_by_price: bool = False
    #: How this list explores (the arm's ``[exploration]``); None: the engine's order.
    exploration: ExplorationConfig | None = None
