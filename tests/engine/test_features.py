"""The ranker's feature matrix on the hand-built tiny version: every column computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_tiny import KNIVES, NOW, PANS, TENTS

from engine.retrieval.candidates import NOT_RANKED, SourceResult, merge
from engine.retrieval.features import FEATURES, SOURCES, UserView, candidate_features
from engine.state.profile import ProfileEvent, build_profile

DAY = 86_400 * 1_000_000


@pytest.fixture
def profile(items, tiny_version):
    """t0 (Tents, acme, 100) bought 2 days ago; p0 (Pans, acme, 20) viewed 1 day ago; g1 (Tools,
    zeta, 5) viewed 14 days ago."""
    events = [
        ProfileEvent("t0", "purchase", NOW - 2 * DAY),
        ProfileEvent("p0", "view", NOW - DAY),
        ProfileEvent("g1", "view", NOW - 14 * DAY),
    ]
    return build_profile(
        events, items.row_of, np.asarray(tiny_version.vectors), items.row_category, NOW
    )


def test_each_feature_of_two_candidates_by_hand(items, tiny_version, profile):
    # Weights: action x 0.5 ** (age / 14 days).
    w_t, w_p, w_g = 8 * 0.5 ** (2 / 14), 0.5 ** (1 / 14), 0.5
    total = w_t + w_p + w_g
    categories = np.array([0.1, 0.2, 0.3, 0.4])  # any per-category values, by code
    weights = np.array([w_g, 0, w_p, w_t]) / total
    transition, affinity = categories * 2, categories * 3
    user = UserView.of(profile, items, weights, transition, affinity, NOW)

    # k0 (row 5, Knives, acme, 10, popularity 4, vector (0, 1, 0, 0)) from popular (0.5, rank 0)
    # and search (0.25, rank 1); t1 (row 1, Tents, zeta, 50, popularity 3, (.8, 0, 0, .6)) from
    # search only (0.5, rank 0).
    candidates = merge(
        SOURCES,
        [
            SourceResult("popular", np.array([5]), np.array([0.5], np.float32)),
            SourceResult("search", np.array([1, 5]), np.array([0.5, 0.25], np.float32)),
        ],
    )
    assert candidates.rows.tolist() == [1, 5]
    f = candidate_features(candidates, items, user, np.asarray(tiny_version.vectors), [0.7, 0.9])
    assert f.shape == (2, len(FEATURES))
    assert f.dtype == np.float32
    col = {name: f[:, j] for j, name in enumerate(FEATURES)}

    def same(name, expected):
        assert col[name] == pytest.approx(np.array(expected, np.float64), nan_ok=True), name

    same("neighbours_score", [0, 0])
    same("neighbours_rank", [NOT_RANKED, NOT_RANKED])
    same("popular_score", [0, 0.5])
    same("popular_rank", [NOT_RANKED, 0])
    same("search_score", [0.5, 0.25])
    same("search_rank", [0, 1])
    same("blend", [0.7, 0.9])
    same("log_popularity", [math.log1p(3), math.log1p(4)])
    # Tents popularity 6 + 3 + 1; Knives 4 + 0.
    same("popularity_share", [0.3, 1.0])
    # The tiny version has no recent counts, funnel rates or event ages.
    same("log_events_7d", [0, 0])
    same("click_rate", [0, 0])
    same("age_days", [math.nan, math.nan])
    # Codes: Tents 3, Knives 1.
    same("category_weight", [w_t / total, 0])
    same("transition_score", [0.8, 0.4])
    same("affinity", [1.2, 0.6])
    same("cross_category", [0, 1])
    same("category_recency_days", [2.0, math.nan])
    # Interests: Tents (t0) (1, 0, 0, 0), Pans (p0) (.6, .8, 0, 0), Tools (g1) (-.6, 0, .8, 0),
    # heaviest first. t1 . those = .8, .48, -.48; k0 . those = 0, .8, 0.
    iw = np.array([w_t, w_p, w_g]) / total
    same("interest_similarity", [0.8, 0.8])
    same("weighted_similarity", [iw @ [0.8, 0.48, -0.48], iw @ [0, 0.8, 0]])
    # acme: t0 and p0; zeta: g1.
    same("brand_affinity", [w_g / total, (w_t + w_p) / total])
    user_log_price = (w_t * math.log(100) + w_p * math.log(20) + w_g * math.log(5)) / total
    same("log_price", [math.log(50), math.log(10)])
    same("price_vs_user", [math.log(50) - user_log_price, math.log(10) - user_log_price])
    # Tents' priced items: 100 and 50 (t2 has no price); Knives: 10 and 15.
    same(
        "price_vs_category",
        [
            math.log(50) - (math.log(100) + math.log(50)) / 2,
            math.log(10) - (math.log(10) + math.log(15)) / 2,
        ],
    )
    assert profile.interest_categories[:2] == [TENTS, PANS]
    assert KNIVES not in profile.category_weights


def test_an_empty_profile_has_missing_similarity_price_and_recency(items, tiny_version):
    from helpers_tiny import empty_profile

    n = len(items.categories)
    user = UserView.of(empty_profile(), items, np.zeros(n), np.zeros(n), np.zeros(n), NOW)
    candidates = merge(SOURCES, [SourceResult("popular", np.array([2]), np.array([1.0]))])
    f = candidate_features(candidates, items, user, np.asarray(tiny_version.vectors), [1.0])
    row = dict(zip(FEATURES, f[0].tolist()))
    for name in ("interest_similarity", "weighted_similarity", "category_recency_days"):
        assert math.isnan(row[name]), name
    # t2 has no price: every price feature is missing; no brand weight at all.
    for name in ("log_price", "price_vs_user", "price_vs_category"):
        assert math.isnan(row[name]), name
    assert row["brand_affinity"] == 0
    assert row["cross_category"] == 1


def test_no_candidates_give_an_empty_matrix(items, tiny_version):
    from helpers_tiny import empty_profile

    n = len(items.categories)
    user = UserView.of(empty_profile(), items, np.zeros(n), np.zeros(n), np.zeros(n), NOW)
    f = candidate_features(merge(SOURCES, []), items, user, np.asarray(tiny_version.vectors), [])
    assert f.shape == (0, len(FEATURES))


def test_item_age_is_capped_so_versions_of_different_spans_agree(items, tiny_version):
    import dataclasses

    from helpers_tiny import empty_profile

    from engine.retrieval.features import AGE_CAP_DAYS

    aged = dataclasses.replace(
        items, age_days=np.array([40, 3, np.nan, 28, 0, 0, 0, 0, 0], np.float32)
    )
    n = len(items.categories)
    user = UserView.of(empty_profile(), aged, np.zeros(n), np.zeros(n), np.zeros(n), NOW)
    candidates = merge(SOURCES, [SourceResult("popular", np.arange(4), np.ones(4, np.float32))])
    f = candidate_features(candidates, aged, user, np.asarray(tiny_version.vectors), np.ones(4))
    age = f[:, FEATURES.index("age_days")]
    assert AGE_CAP_DAYS == 28
    assert age[[0, 1, 3]].tolist() == [28, 3, 28]
    assert np.isnan(age[2])


def test_recent_counts_free_items_and_unbranded_items_by_hand(items, tiny_version, profile):
    import dataclasses

    # t0: 7 events in 7 days, 20 in 28; t1 free (price 0); t2 without a brand.
    recent = np.zeros((9, 2), np.float32)
    recent[0] = [7, 20]
    price = items.price.copy()
    price[1] = 0.0
    brand, brand_code = items.brand.copy(), items.brand_code.copy()
    brand[2], brand_code[2] = "", -1
    changed = dataclasses.replace(
        items, recent_events=recent, price=price, brand=brand, brand_code=brand_code
    )
    n = len(items.categories)
    user = UserView.of(profile, changed, np.zeros(n), np.zeros(n), np.zeros(n), NOW)
    candidates = merge(SOURCES, [SourceResult("popular", np.arange(3), np.ones(3, np.float32))])
    f = candidate_features(candidates, changed, user, np.asarray(tiny_version.vectors), np.ones(3))
    col = {name: f[:, j] for j, name in enumerate(FEATURES)}
    assert col["log_events_7d"] == pytest.approx([math.log1p(7), 0, 0])
    assert col["log_events_28d"] == pytest.approx([math.log1p(20), 0, 0])
    # A price of 0 is no price to take the log of; the user's own spend is unchanged (t0, p0, g1).
    assert np.isnan(col["log_price"][1])
    assert np.isnan(col["price_vs_user"][1])
    # No brand: no brand affinity, even though the user's weight is all on branded items.
    assert col["brand_affinity"][2] == 0
    assert col["brand_affinity"][0] > 0.5


def test_brands_are_coded_once_per_version(items):
    # tiny_version's brands: acme, zeta, acme, acme, zeta, acme, zeta, acme, zeta.
    assert items.brands == ["acme", "zeta"]
    assert items.brand_code.tolist() == [0, 1, 0, 0, 1, 0, 1, 0, 1]
