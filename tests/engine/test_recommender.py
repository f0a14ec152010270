"""``Recommender`` end to end: fallback order, cross share, quotas, refills, interests, explanations
and settings.

Every expected value is worked out by hand from the fixture's table (codes and rows: see
tests/helpers_tiny.py).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from helpers_tiny import (
    KNIVES,
    NOW,
    PANS,
    TENTS,
    TOOLS,
    empty_profile,
    profile_of,
    settings,
)

from engine.config import Blend, RetrievalConfig
from engine.retrieval.explain import explain
from engine.retrieval.filters import RowFilter
from engine.retrieval.query import Query
from engine.retrieval.ranking import RETRIEVAL_ONLY
from engine.retrieval.recommend import Recommender
from engine.state.profile import Profile, ProfileEvent, build_profile


@pytest.fixture(scope="module")
def recommender(tiny_version) -> Recommender:
    return Recommender(tiny_version, settings())


def test_unknown_users_get_the_most_popular_items_of_the_most_popular_categories(recommender):
    r = recommender.recommend(empty_profile(), Query(k=5))
    # affinity = session share; score = share x popularity share: p0 .27, t0 .24, k0 .2, t1 .12,
    # g0 .05, g1 .05, t2 .04, p1 .03 (k1 has no popularity).
    assert r.fallback is True
    assert r.rows.tolist() == [3, 0, 5, 1, 7]
    assert r.scores == pytest.approx([1, 0.24 / 0.27, 0.2 / 0.27, 0.12 / 0.27, 0.05 / 0.27])
    assert r.interests.tolist() == [-1] * 5
    assert r.sources == [("popular",)] * 5
    assert r.retrieval_scores.tolist() == [0] * 5
    assert r.targets == [TENTS, PANS, KNIVES, TOOLS]
    assert (r.shards_searched, r.shards_targeted) == (0, 0)
    assert r.stage_counts == {"targets": 4, "candidates": 8, "returned": 5}
    assert set(r.stage_seconds) == {"candidates", "features", "rank", "allocate"}


def test_diversity_caps_reorder_the_fallback_list(tiny_version):
    # The fallback order above: p0 .27, t0 .24, k0 .2, t1 .12, g0 .05, g1 .05, t2 .04, p1 .03.
    # One item per category (ceil(0.2 x 5)): t1 waits behind g0, and fills the fifth slot.
    capped = Recommender(tiny_version, settings(max_category_share=0.2))
    assert capped.recommend(empty_profile(), Query(k=5)).rows.tolist() == [3, 0, 5, 7, 1]
    # Two per brand (acme: p0 t0 k0 g0 t2; zeta: t1 g1 p1): k0 and g0 wait; k0 fills the fifth.
    capped = Recommender(tiny_version, settings(max_brand_share=0.4))
    assert capped.recommend(empty_profile(), Query(k=5)).rows.tolist() == [3, 0, 1, 8, 5]


def test_fallback_left_short_by_a_filter_walks_the_categories_by_popularity(recommender):
    r = recommender.recommend(empty_profile(), Query(k=9, in_stock_only=True))
    # p1 is out of stock; k1 (no popularity) only comes in through the refill, last.
    assert r.rows.tolist() == [3, 0, 5, 1, 7, 8, 2, 6]


def test_cross_category_request_ranks_popular_and_search_candidates(recommender):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"))
    r = recommender.recommend(profile, Query(k=4))
    # Affinity (Tents touched, so out of play): Pans .575, Knives .3, Tools .025.
    # popular: p0 .5175, k0 .3, p1 .0575, g0 g1 .0125; search: p1 .8, p0 .6, k1 .6.
    # score = popular / .5175 + 0.1 * search / .8
    assert r.fallback is False
    assert r.rows.tolist() == [3, 5, 4, 6]
    assert r.scores == pytest.approx([1.075, 0.3 / 0.5175, 0.0575 / 0.5175 + 0.1, 0.075])
    assert r.retrieval_scores == pytest.approx([0.6, 0, 0.8, 0.6])
    assert r.sources == [("popular", "search"), ("popular",), ("popular", "search"), ("search",)]
    assert r.interests.tolist() == [0, 0, 0, 0]
    assert r.targets == [PANS, KNIVES, TOOLS]
    assert (r.shards_searched, r.shards_targeted) == (3, 3)
    assert r.stage_counts == {"targets": 3, "candidates": 6, "returned": 4}


def test_cross_share_keeps_slots_for_the_touched_category(recommender):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"))
    r = recommender.recommend(profile, Query(k=4, cross_share=0.5))
    # Each source's scores are divided by its best proposal before the filter drops the bought t0.
    g = recommender.gather(profile, Query(k=4, cross_share=0.5))
    popular, search = (
        recommender.popular.generate(g.context),
        recommender.search.generate(g.context),
    )
    # t0 (bought, filtered out) is both sources' best: popular .6 (Tents 1.0 x .6), search 1.0
    assert popular.rows[0] == search.rows[0] == 0
    assert 0 not in g.candidates.rows
    assert (popular.scores[0], search.scores[0]) == pytest.approx((0.6, 1.0))
    # Ranking: p0, t1, k0, p1, t2, ...; 2 cross slots (p0, k0) and 2 for Tents (t1, t2; t0 was
    # bought): p1 ranks above t2 but its side is full.
    assert r.rows.tolist() == [3, 1, 5, 2]
    assert r.scores == pytest.approx(
        [0.5175 / 0.6 + 0.1 * 0.6, 0.3 / 0.6 + 0.1 * 0.8, 0.3 / 0.6, 0.1 / 0.6],
        rel=1e-5,
    )
    assert r.targets == [TENTS, PANS, KNIVES, TOOLS]


def test_seen_items_come_back_only_when_told_to(tiny_version, recommender):
    profile = profile_of(recommender.items, tiny_version, ("t1", "view"))
    query = Query(k=3, cross_share=0.0)  # Tents only
    assert recommender.recommend(profile, query).rows.tolist() == [0, 2]
    keep_seen = Recommender(tiny_version, settings(exclude_seen=False))
    assert keep_seen.recommend(profile, query).rows.tolist() == [0, 1, 2]
    bought = profile_of(recommender.items, tiny_version, ("t1", "purchase"))
    assert keep_seen.recommend(bought, query).rows.tolist() == [0, 2]


def test_a_quota_left_short_by_sources_is_refilled_from_its_categories(tiny_version):
    rec = Recommender(tiny_version, settings(popular_per_category=1))
    profile = profile_of(rec.items, tiny_version, ("t0", "purchase"))
    query = Query(k=2, quotas=((frozenset({TOOLS}), 2),))
    # The popular source only proposes g0 and search finds nothing above 0 in Tools: g1 is refilled.
    r = rec.recommend(profile, query)
    assert r.rows.tolist() == [7, 8]
    assert r.targets == [TOOLS]


def test_an_exact_quota_stays_short_rather_than_borrowing(recommender):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"))
    r = recommender.recommend(profile, Query(k=3, quotas=((frozenset({TENTS}), 3),)))
    assert r.rows.tolist() == [1, 2]
    mixed = recommender.recommend(profile, Query(k=3, quotas=((frozenset({TENTS}), 1),)))
    assert mixed.rows.tolist() == [3, 1, 5]


def test_filters_and_categories_apply_to_every_candidate(recommender):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"))
    r = recommender.recommend(
        profile, Query(k=4, include=frozenset({PANS, KNIVES}), max_price=20.0)
    )
    assert r.rows.tolist() == [3, 5, 6]
    r = recommender.recommend(
        profile, Query(k=9, cross_share=None, exclude=frozenset({PANS}), brands=frozenset({"acme"}))
    )
    assert r.rows.tolist() == [5, 2, 7]


def test_each_item_names_the_interest_behind_it(recommender):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"), ("p0", "view"))
    assert profile.interest_categories == [TENTS, PANS]
    r = recommender.recommend(profile, Query(k=9, cross_share=None))
    # By search: t1 (tents interest), p1, k0 (pans interest), k1 (tents interest). Not found by
    # search: t2 is in the tents interest's own category; g0, g1: P(Tools | Pans) .05 >
    # P(Tools | Tents) .025.
    assert dict(zip(r.rows.tolist(), r.interests.tolist())) == {
        1: 0,
        2: 0,
        4: 1,
        5: 1,
        6: 0,
        7: 1,
        8: 1,
    }
    assert r.rows.tolist() == [5, 1, 4, 2, 6, 7, 8]
    notes = explain(r, profile, recommender.items, recommender.categories)
    assert notes[3].summary == "more Tents, which you engaged with"
    assert notes[3].source_item_ids == ("t0",)
    assert notes[5].source_category == PANS
    assert notes[5].transition_probability == pytest.approx(0.05)
    assert (
        notes[5].summary
        == "goes with your interest in Pans: shoppers move on to Tools in 5% of such sessions"
    )


def test_recommender_wires_its_settings_into_every_stage(tiny_version):
    rec = Recommender(
        tiny_version,
        RetrievalConfig(
            transition_smoothing=1.0,
            target_categories=3,
            search_categories=2,
            candidates_per_shard=7,
            behaviour_rerank=11,
            popular_per_category=13,
            neighbour_seeds=17,
            source_limit=19,
            search_touched=True,
            blend=Blend(neighbours=0.0, popular=2.0, search=0.5, ease=0.0, factors=0.0),
        ),
    )
    assert rec.categories.transition(TENTS, PANS) == pytest.approx(10.3 / 16)
    assert (rec.neighbours.max_seeds, rec.neighbours.limit, rec.neighbours.neighbours) == (
        17,
        19,
        None,
    )
    assert (rec.popular.per_category, rec.popular.categories, rec.popular.limit) == (13, 6, 190)
    assert (
        rec.search.per_shard,
        rec.search.categories,
        rec.search.behaviour_rerank,
        rec.search.limit,
    ) == (7, 2, 11, 19)
    assert rec.search.touched is True
    assert Recommender(tiny_version).search.touched is False
    assert rec.ranker.weights == {"popular": 2.0, "search": 0.5}
    assert rec.model_version == RETRIEVAL_ONLY
    fake = SimpleNamespace(gather=lambda rows, weights: (np.array([6]), np.array([1.0])))
    with_neighbours = Recommender(dataclasses.replace(tiny_version, neighbours=fake))
    assert with_neighbours.neighbours.neighbours is fake
    custom = SimpleNamespace(model_version="m7", score=lambda f: np.zeros(len(f)))
    assert Recommender(tiny_version, ranker=custom).model_version == "m7"


def test_only_target_categories_feed_the_sources(tiny_version):
    rec = Recommender(tiny_version, settings(target_categories=1))
    profile = profile_of(rec.items, tiny_version, ("t0", "purchase"))
    r = rec.recommend(profile, Query(k=2))
    assert r.targets == [PANS]
    assert r.rows.tolist() == [3, 4]


def test_refill_walks_the_short_categories_by_popularity_with_a_floor(recommender):
    short = np.array([True, True, False, False])  # Tools, Knives
    affinity = np.array([0.025, 0.3, 0.575, 0])
    query = Query(k=2, exclude_items=frozenset({"g1"}))
    r = recommender._refill(short, affinity, 2, RowFilter(query, recommender.items, np.array([5])))
    # g1 excluded by the request, k0 seen; k1 has no popularity: floored, still positive, after g0.
    assert r.name == "popular"
    assert r.rows.tolist() == [7, 6]
    assert r.scores.dtype == np.float32
    assert r.scores == pytest.approx([0.025 * 0.5, 0.3 * 1e-9], rel=1e-3)
    # Categories without affinity stay in play: the floor keeps every score positive.
    anything = RowFilter(Query(k=2), recommender.items, np.zeros(0, np.int64))
    cold = recommender._refill(np.array([True, False, False, False]), np.zeros(4), 2, anything)
    assert cold.rows.tolist() == [7, 8]
    assert (cold.scores > 0).all()
    nothing = recommender._refill(np.zeros(4, bool), affinity, 2, anything)
    assert nothing.rows.tolist() == []
    assert nothing.rows.dtype == np.int64


def test_result_dtypes_and_stage_times(recommender):
    r = recommender.recommend(empty_profile(), Query(k=2))
    assert r.interests.dtype == np.int64
    assert r.retrieval_scores.dtype == np.float64
    assert all(0.0 <= s < 60.0 for s in r.stage_seconds.values())


def test_category_prior_adds_the_session_share_to_affinity(tiny_version):
    rec = Recommender(tiny_version, settings(category_prior=0.5))
    profile = profile_of(rec.items, tiny_version, ("t0", "purchase"))
    r = rec.recommend(profile, Query(k=4))
    # Affinity = transition + .5 x share: Pans .575 + .15, Knives .3 + .1, Tools .025 + .05.
    # popular: p0 .725 * .9 = .6525, k0 .4, p1 .0725; search as before (max .8).
    assert r.rows.tolist() == [3, 5, 4, 6]
    assert r.scores == pytest.approx([1.075, 0.4 / 0.6525, 0.0725 / 0.6525 + 0.1, 0.075])
    fallback = rec.recommend(empty_profile(), Query(k=3))
    assert fallback.rows.tolist() == [3, 0, 5]  # 1.5 x share: the same order as share alone


def test_targets_are_each_groups_best_categories_ties_in_code_order(recommender):
    from engine.retrieval.allocate import Group, Plan

    affinity = np.array([1, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 1, 3, 2, 1, 3, 2, 1], float)
    everything = Plan((Group(np.ones(20, bool), 5),), exact=False)
    assert recommender._targets(everything, affinity).tolist() == [1, 4, 7, 10, 14, 17, 3, 6]
    odd = np.arange(20) % 2 == 1
    split = Plan(
        (Group(odd, 1), Group(~odd, 1)), exact=False
    )  # 8 best of each group, then by affinity
    assert recommender._targets(split, affinity).tolist() == [
        1,
        4,
        7,
        10,
        14,
        17,
        3,
        6,
        9,
        12,
        15,
        18,
        0,
        2,
        5,
        11,
    ]


@pytest.fixture(scope="module")
def crowded_version():
    """Big (200 items: 50 dear and popular, 150 cheap) and Small (60 items: 59 dear and popular, one
    cheap and rarely bought); session shares .9 and .1; one faiss shard each."""
    import faiss

    from indexer.artifact import IndexVersion

    n = 260
    cats = ["Big"] * 200 + ["Small"] * 60
    popularity = [100.0] * 50 + [10.0] * 150 + [100.0] * 59 + [1.0]
    price = [100.0] * 50 + [1.0] * 150 + [100.0] * 59 + [1.0]
    vectors = np.zeros((n, 4), np.float32)
    vectors[:, 0] = 1
    shards = {}
    for shard_id, rows in (("big", np.arange(200)), ("small", np.arange(200, n))):
        index = faiss.IndexIDMap(faiss.IndexFlatIP(4))
        index.add_with_ids(vectors[rows], rows)
        shards[shard_id] = index
    items = pl.DataFrame(
        {
            "item_id": [f"c{i}" for i in range(n)],
            "category": cats,
            "shard": ["big"] * 200 + ["small"] * 60,
            "popularity": popularity,
            "price": price,
        }
    )
    return IndexVersion(
        path=None,
        manifest={"dim": 4, "category_shards": {"Big": ["big"], "Small": ["small"]}},
        items=items,
        vectors=vectors,
        transitions=pl.DataFrame({"source": ["Big"], "target": ["Small"], "sessions": [0]}),
        categories=pl.DataFrame(
            {"category": ["Big", "Small"], "items": [200, 60], "session_share": [0.9, 0.1]}
        ),
        shards=shards,
    )


def test_a_lone_short_quota_is_refilled_past_the_popular_sources_reach(crowded_version):
    rec = Recommender(crowded_version, settings())
    r = rec.recommend(
        Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {}),
        Query(k=1, quotas=((frozenset({"Small"}), 1),), max_price=10.0),
    )
    assert r.rows.tolist() == [259]


def test_a_short_quota_is_refilled_even_next_to_a_large_short_category(crowded_version):
    rec = Recommender(crowded_version, settings())
    query = Query(k=2, quotas=((frozenset({"Big"}), 1), (frozenset({"Small"}), 1)), max_price=10.0)
    # The popular source proposes each category's 50 most popular items: all dear, so both quotas
    # are short. Walked together, Big's cheap items (.9 x 10/6500 each) would crowd out Small's
    # cheap one (.1 x 1/5901) at any cap below 151; the refill walks each short category on its own.
    r = rec.recommend(Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {}), query)
    assert sorted(rec.items.row_category[r.rows].tolist()) == ["Big", "Small"]


def test_seen_items_take_no_place_in_the_refill(crowded_version):
    rec = Recommender(crowded_version, settings())
    # The user viewed 100 of Big's cheap items (rows 50-149): the refill's first 100 allowed rows
    # are the 50 cheap ones left, not the seen ones.
    events = [ProfileEvent(f"c{i}", "view", NOW) for i in range(50, 150)]
    profile = build_profile(
        events, rec.items.row_of, np.asarray(crowded_version.vectors), rec.items.row_category, NOW
    )
    r = rec.recommend(profile, Query(k=1, quotas=((frozenset({"Big"}), 1),), max_price=10.0))
    assert r.rows.tolist() == [150]


@pytest.mark.parametrize(("k", "walked"), [(1, 100), (30, 120)])
def test_the_refill_walks_at_most_max_4k_100_items_per_short_category(crowded_version, k, walked):
    rec = Recommender(crowded_version, settings())
    r = rec.recommend(
        Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {}),
        Query(k=k, quotas=((frozenset({"Big"}), k),), max_price=10.0),
    )
    # Big's 150 cheap items are the only allowed ones; the sources proposed none of them.
    assert r.stage_counts["candidates"] == walked
    assert r.rows.tolist() == list(range(50, 50 + k))


def test_work_stops_at_the_next_stage_once_the_deadline_has_passed(recommender):
    import time

    from engine.errors import DeadlineExceeded

    calls = []

    class Counting:
        name = "counting"

        def generate(self, context):
            calls.append(context)
            return recommender.popular.generate(context)

    try:
        recommender.sources = (Counting(),)
        with pytest.raises(DeadlineExceeded, match="stopped at targets"):
            recommender.recommend(empty_profile(), Query(k=2), deadline=time.monotonic() - 1)
        assert calls == []  # no source ran
        assert len(recommender.recommend(empty_profile(), Query(k=2)).rows) == 2
        assert len(calls) == 1
    finally:
        recommender.sources = (recommender.popular, recommender.neighbours, recommender.search)


@pytest.mark.parametrize(
    "narrowed",
    [
        {"exclude_items": frozenset({"p0", "t1"})},  # the two best go
        {"in_stock_only": True},
        {"max_price": 25.0},
        {"brands": frozenset({"zeta"})},
    ],
    ids=["exclude-best", "in-stock", "max-price", "brand"],
)
def test_a_filter_never_changes_the_order_of_the_items_that_pass_it(recommender, narrowed):
    profile = profile_of(recommender.items, recommender.version, ("t0", "purchase"))
    full = recommender.recommend(profile, Query(k=9, cross_share=None))
    kept = recommender.recommend(profile, Query(k=9, cross_share=None, **narrowed))
    ids = recommender.items.item_ids
    passing = set(ids[kept.rows].tolist())
    assert len(passing) >= 2
    assert [i for i in ids[full.rows].tolist() if i in passing] == ids[kept.rows].tolist()
    # and with the same scores: nothing was rescaled
    same = np.isin(full.rows, kept.rows)
    assert full.scores[same] == pytest.approx(kept.scores)
