"""User profiles: several interest vectors per user, weighted by action and decayed by time.

A profile is a pure function of the user's event history and the served index version: each event
on a known item weighs ``ACTION_WEIGHT[action] * 0.5 ** (age / half_life)``; events group by the
item's category; each of the heaviest ``max_interests`` categories gives one interest vector (the
weighted mean of its items' vectors, normalised) labelled with the category. Per-category interest
is the normalised weight of every category touched. Keeping profiles derivable (rather than storing
vectors) means a new index version, with a new vector space, never serves stale profile vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossrec.vocabulary import ACTION_WEIGHT, US_PER_DAY


@dataclass(frozen=True)
class ProfileEvent:
    item_id: str
    action: str
    ts_us: int


@dataclass
class Profile:
    """``interests``: (m, dim) unit vectors; ``interest_categories[i]`` labels interest i;
    ``interest_weights`` sum to 1; ``category_weights`` over every touched category (sum 1);
    ``interest_items[i]``: item rows behind interest i, heaviest first."""

    interests: np.ndarray
    interest_categories: list[str]
    interest_weights: np.ndarray
    category_weights: dict[str, float]
    purchased_rows: set[int] = field(default_factory=set)
    seen_rows: set[int] = field(default_factory=set)
    interest_items: list[list[int]] = field(default_factory=list)
    events_used: int = 0
    #: Every item row the user touched and its decayed, action-weighted weight (heaviest first):
    #: the seeds of the behaviour-neighbour source.
    item_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    item_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: Time (µs) of the user's newest event per touched category.
    category_last_us: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return len(self.interest_categories) == 0

    @property
    def touched_categories(self) -> set[str]:
        return set(self.category_weights)


def build_profile(
    events: list[ProfileEvent],
    row_of: dict[str, int],
    vectors: np.ndarray,
    categories: np.ndarray,
    now_us: int,
    max_interests: int = 4,
    half_life_days: float = 14.0,
) -> Profile:
    """Profile from events (any order). Events on items not in the index are ignored."""
    dim = vectors.shape[1]
    half_life_us = half_life_days * US_PER_DAY
    weight_by_row: dict[int, float] = {}
    purchased: set[int] = set()
    last_us: dict[str, int] = {}
    for e in events:
        row = row_of.get(e.item_id)
        if row is None:
            continue
        category = categories[row]
        last_us[category] = max(last_us.get(category, e.ts_us), e.ts_us)
        age = max(now_us - e.ts_us, 0)
        weight_by_row[row] = weight_by_row.get(row, 0.0) + ACTION_WEIGHT[e.action] * 0.5 ** (
            age / half_life_us
        )
        if e.action == "purchase":
            purchased.add(row)
    if not weight_by_row or sum(weight_by_row.values()) <= 0.0:
        return Profile(np.zeros((0, dim), np.float32), [], np.zeros(0), {}, events_used=0)
    rows = np.fromiter(weight_by_row, dtype=np.int64)
    weights = np.fromiter(weight_by_row.values(), dtype=np.float64)
    cats = categories[rows]
    per_category: dict[str, float] = {}
    for c, w in zip(cats, weights):
        per_category[c] = per_category.get(c, 0.0) + w
    total = sum(per_category.values())
    ranked = sorted(per_category, key=lambda c: (-per_category[c], c))[:max_interests]
    interests, items = [], []
    for c in ranked:
        sel = cats == c
        v = (weights[sel, None] * vectors[rows[sel]]).sum(axis=0)
        interests.append(v / max(np.linalg.norm(v), 1e-12))
        order = np.argsort(-weights[sel], kind="stable")  # ties: first-seen order
        items.append(rows[sel][order].tolist())
    kept = np.array([per_category[c] for c in ranked])
    heaviest = np.argsort(-weights, kind="stable")
    return Profile(
        interests=np.asarray(interests, dtype=np.float32),
        interest_categories=ranked,
        interest_weights=kept / kept.sum(),
        category_weights={c: w / total for c, w in per_category.items()},
        purchased_rows=purchased,
        seen_rows=set(weight_by_row),
        interest_items=items,
        events_used=len(events),
        item_rows=rows[heaviest],
        item_weights=weights[heaviest],
        category_last_us=last_us,
    )
