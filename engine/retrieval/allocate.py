"""Who gets the k slots: quotas, the cross-category share, and slots a group cannot fill.

A *plan* is a list of groups (categories allowed in the group, slots). Each group takes its best
ranked candidates in order; with quotas the groups are exact (a quota is never exceeded, a short one
stays short); otherwise slots a group could not fill go to the best remaining candidates of any
group. The chosen items come back in ranking order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.retrieval.query import Query


@dataclass(frozen=True)
class Group:
    """``categories``: boolean mask over category codes; ``slots``: how many items it gets."""

    categories: np.ndarray
    slots: int


@dataclass(frozen=True)
class Plan:
    groups: tuple[Group, ...]
    exact: bool  # quotas: never move slots between groups

    @property
    def categories(self) -> np.ndarray:
        """Every category some group may fill (mask over category codes)."""
        return np.logical_or.reduce([g.categories for g in self.groups])


def plan_slots(query: Query, allowed: np.ndarray, touched: np.ndarray, resolve_code) -> Plan:
    """The plan for a request. ``allowed`` / ``touched``: masks over category codes;
    ``resolve_code(name) -> code`` maps a leaf category name to its code."""
    if query.quotas:
        groups = []
        quota_cats = np.zeros_like(allowed)
        for cats, n in query.quotas:
            mask = np.zeros_like(allowed)
            mask[[resolve_code(c) for c in cats]] = True
            quota_cats |= mask
            groups.append(Group(mask & allowed, n))
        rest = query.k - sum(n for _, n in query.quotas)
        if rest > 0:
            groups.append(Group(allowed & ~quota_cats, rest))
        return Plan(tuple(groups), exact=True)
    if query.cross_share is None:
        return Plan((Group(allowed, query.k),), exact=False)
    cross, same = allowed & ~touched, allowed & touched
    # When the allowed categories leave one side empty, the other side takes all k slots.
    if not cross.any():
        return Plan((Group(same, query.k),), exact=False)
    if not same.any():
        return Plan((Group(cross, query.k),), exact=False)
    n_cross = round(query.cross_share * query.k)
    groups = [Group(cross, n_cross), Group(same, query.k - n_cross)]
    return Plan(tuple(g for g in groups if g.slots > 0), exact=False)


def allocate(plan: Plan, codes: np.ndarray, k: int) -> np.ndarray:
    """Positions (into ``codes``, which is in ranking order: best first) of the chosen items, in
    ranking order. ``codes``: category code of each ranked candidate."""
    used = np.zeros(len(codes), dtype=bool)
    for group in plan.groups:
        free = np.flatnonzero(group.categories[codes] & ~used)[: group.slots]
        used[free] = True
    short = k - int(used.sum())
    if short > 0 and not plan.exact:
        used[np.flatnonzero(plan.categories[codes] & ~used)[:short]] = True
    return np.flatnonzero(used)


def shortfall(plan: Plan, codes: np.ndarray) -> np.ndarray:
    """Mask over category codes of the groups that cannot fill their slots from ``codes``."""
    short = np.zeros_like(plan.categories)
    for group in plan.groups:
        if int(group.categories[codes].sum()) < group.slots:
            short |= group.categories
    return short
