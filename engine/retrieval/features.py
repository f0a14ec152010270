"""The features of each candidate: one matrix, the same code for serving and for the ranker's rows.

The ranker's training rows are written by replaying history through this function
(:mod:`engine.replay`), and requests are scored on its output, so the two cannot drift apart.

Columns (``FEATURES``, in order); NaN where a value does not exist (LightGBM learns a direction for
missing values):

=========================== ===================================================================
``{source}_score/_rank``    each source's score and 0-based rank (``NOT_RANKED`` when the source
                            did not propose the item), for ``neighbours``, ``popular``,
                            ``search``, ``ease`` and ``factors``
``blend``                   the retrieval-only order's score (:class:`.ranking.BlendRanker`)
``log_popularity``          log1p of the item's decayed popularity
``popularity_share``        its share of its category's popularity
``log_events_7d/_28d``      log1p of its events in the last 7 / 28 days of the index's data
``click/cart/purchase_rate`` its smoothed funnel rates (0 when the index has none)
``age_days``                days since its first event, at most ``AGE_CAP_DAYS`` (NaN: never
                            seen)
``category_weight``         the category's weight in the profile (0: untouched)
``transition_score``        ``sum_A w_A P(category | A)``
``affinity``                the mix of the two and the category's session share
``cross_category``          1 when the user never touched the category
``category_recency_days``   days since the user's newest event in the category (NaN: untouched)
``interest_similarity``     largest cosine between the item and the profile's interest vectors
``weighted_similarity``     the same cosines weighted by each interest's weight
``brand_affinity``          the user's weight share on the item's brand (0: none, or no brand)
``log_price``               log of the price (NaN: no price)
``price_vs_user``           log price minus the user's weighted mean log price
``price_vs_category``       log price minus the category's median log price
=========================== ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossrec.vocabulary import US_PER_DAY
from engine.retrieval.candidates import Candidates
from engine.retrieval.items import ItemTable
from engine.state.profile import Profile

SOURCES = ("neighbours", "popular", "search", "ease", "factors")
FEATURES = (
    *(f"{s}_{kind}" for s in SOURCES for kind in ("score", "rank")),
    "blend",
    "log_popularity",
    "popularity_share",
    "log_events_7d",
    "log_events_28d",
    "click_rate",
    "cart_rate",
    "purchase_rate",
    "age_days",
    "category_weight",
    "transition_score",
    "affinity",
    "cross_category",
    "category_recency_days",
    "interest_similarity",
    "weighted_similarity",
    "brand_affinity",
    "log_price",
    "price_vs_user",
    "price_vs_category",
)
#: Item age is measured from the first event an index version knows, so it cannot exceed the
#: version's span of events; capped, it means the same in every version spanning at least this
#: many days (the ranker's replay versions span less than the serving one).
AGE_CAP_DAYS = 28.0


@dataclass(frozen=True)
class UserView:
    """What the features read of one profile at one time, computed once per request.

    ``category_weights``, ``transition``, ``affinity``, ``recency_days``: per category code.
    ``interests``: (m, dim) unit vectors with ``interest_weights`` (m,). ``brand_share``: brand ->
    share of the user's item weight. ``mean_log_price``: the user's weighted mean log price (NaN:
    no priced item)."""

    category_weights: np.ndarray
    transition: np.ndarray
    affinity: np.ndarray
    recency_days: np.ndarray
    interests: np.ndarray
    interest_weights: np.ndarray
    brand_share: dict[str, float]
    mean_log_price: float
    #: ``brand_share`` by brand code (``ItemTable.brand_code``), one slot more for "no brand" (0).
    brand_share_by_code: np.ndarray

    @classmethod
    def of(
        cls,
        profile: Profile,
        items: ItemTable,
        weights: np.ndarray,
        transition: np.ndarray,
        affinity: np.ndarray,
        now_us: int,
    ) -> UserView:
        recency = np.full(len(items.categories), np.nan)
        code = {c: i for i, c in enumerate(items.categories)}
        for category, last in profile.category_last_us.items():
            recency[code[category]] = max(now_us - last, 0) / US_PER_DAY
        rows, w = profile.item_rows, profile.item_weights
        brand_share: dict[str, float] = {}
        mean_log_price = float("nan")
        if len(rows) and w.sum() > 0:
            share = w / w.sum()
            for brand, s in zip(items.brand[rows].tolist(), share.tolist()):
                if brand:
                    brand_share[brand] = brand_share.get(brand, 0.0) + s
            log_price = np.log(np.where(items.price[rows] > 0, items.price[rows], np.nan))
            priced = np.isfinite(log_price)
            if priced.any():
                mean_log_price = float(np.average(log_price[priced], weights=share[priced]))
        by_code = np.zeros(len(items.brands) + 1)  # the last slot: code -1, no brand
        if brand_share:
            codes = items.brand_code[rows]
            for brand, code in zip(items.brand[rows].tolist(), codes.tolist()):
                if brand:
                    by_code[code] = brand_share[brand]
        return cls(
            weights,
            transition,
            affinity,
            recency,
            profile.interests,
            profile.interest_weights,
            brand_share,
            mean_log_price,
            by_code,
        )


def candidate_features(
    candidates: Candidates,
    items: ItemTable,
    user: UserView,
    vectors: np.ndarray,
    blend: np.ndarray,
) -> np.ndarray:
    """(n, len(FEATURES)) float32. ``vectors``: the index's item vectors (rows = item rows);
    ``blend``: (n,) the retrieval-only score of each candidate."""
    rows = candidates.rows
    if not len(rows):
        return np.zeros((0, len(FEATURES)), np.float32)
    codes = items.category_code[rows]
    columns = []
    for s in SOURCES:
        j = candidates.sources.index(s)
        columns += [candidates.scores[:, j], candidates.ranks[:, j]]
    if len(user.interests):
        cosine = vectors[rows] @ user.interests.T  # (n, m)
        similarity, weighted = cosine.max(axis=1), cosine @ user.interest_weights
    else:
        similarity = weighted = np.full(len(rows), np.nan)
    log_price = np.log(np.where(items.price[rows] > 0, items.price[rows], np.nan))
    columns += [
        blend,
        np.log1p(items.popularity[rows]),
        items.popularity_share[rows],
        np.log1p(items.recent_events[rows, 0]),
        np.log1p(items.recent_events[rows, 1]),
        *(items.rates[rows, i] for i in range(3)),
        np.minimum(items.age_days[rows], AGE_CAP_DAYS),
        user.category_weights[codes],
        user.transition[codes],
        user.affinity[codes],
        user.category_weights[codes] == 0,
        user.recency_days[codes],
        similarity,
        weighted,
        user.brand_share_by_code[items.brand_code[rows]],
        log_price,
        log_price - user.mean_log_price,
        log_price - items.category_log_price[codes],
    ]
    return np.column_stack(columns).astype(np.float32)
