"""The request path stage by stage on the hand-built ``tiny_version`` (tests/conftest.py).

Every expected value below is worked out by hand from the fixture's table: category codes are
0 Tools, 1 Knives, 2 Pans, 3 Tents; item rows 0-2 tents (t0 t1 t2), 3-4 pans (p0 p1), 5-6 knives
(k0 k1), 7-8 tools (g0 g1).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from engine.candidates import NOT_RANKED, SourceResult, merge
from engine.explain import explain
from engine.features import FEATURES, SOURCES
from engine.filters import allowed_categories, allowed_rows
from engine.items import POPULAR_PER_CATEGORY, ItemTable
from engine.profile import Profile, ProfileEvent, build_profile
from engine.query import Query
from engine.ranking import RETRIEVAL_ONLY, BlendRanker
from engine.recommend import Recommender, RecommenderSettings
from engine.sources import Context, NeighbourSource, PopularSource, ShardSearchSource
from engine.targets import CategoryModel

TOOLS, KNIVES, PANS, TENTS = (
    "Garden > Tools",
    "Home > Kitchen > Knives",
    "Home > Kitchen > Pans",
    "Outdoors > Tents",
)
NOW = 1_700_000_000 * 1_000_000


@pytest.fixture(scope="module")
def items(tiny_version) -> ItemTable:
    return ItemTable.from_version(tiny_version)


@pytest.fixture(scope="module")
def model(tiny_version, items) -> CategoryModel:
    return CategoryModel(tiny_version, items.categories)


#: The settings every hand computation below assumes (the engine's defaults are tuned elsewhere):
#: affinity = weight + transition score; blend = popular + neighbours + 0.1 x search; the search
#: source scans touched categories too.
PINNED = {
    "transition_weight": 1.0,
    "category_prior": 0.0,
    "blend": (("neighbours", 1.0), ("popular", 1.0), ("search", 0.1)),
    "search_touched": True,
}


def settings(**changes) -> RecommenderSettings:
    return RecommenderSettings(**{**PINNED, **changes})


@pytest.fixture(scope="module")
def recommender(tiny_version) -> Recommender:
    return Recommender(tiny_version, settings())


def profile_of(items: ItemTable, tiny_version, *events: tuple[str, str]) -> Profile:
    """A profile from (item_id, action) events, all happening now."""
    return build_profile(
        [ProfileEvent(i, a, NOW) for i, a in events],
        items.row_of,
        np.asarray(tiny_version.vectors),
        items.row_category,
        NOW,
    )


def empty_profile() -> Profile:
    return Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {})


# --- the item table -----------------------------------------------------------------------------


def test_item_table_orders_each_category_by_popularity(items):
    assert items.categories == [TOOLS, KNIVES, PANS, TENTS]
    assert items.category_code.tolist() == [3, 3, 3, 2, 2, 1, 1, 0, 0]
    assert [p.tolist() for p in items.popular] == [[7, 8], [5, 6], [3, 4], [0, 1, 2]]
    assert items.popularity_share == pytest.approx([0.6, 0.3, 0.1, 0.9, 0.1, 1, 0, 0.5, 0.5])
    assert items.row_of["k1"] == 6 and len(items) == 9
    assert np.isnan(items.price[2]) and items.in_stock.tolist()[4] is False


# --- filters ------------------------------------------------------------------------------------

ROWS = np.arange(9)


def no_seen() -> np.ndarray:
    return np.zeros(0, np.int64)


@pytest.mark.parametrize(
    "query, excluded, expected",
    [
        (Query(k=1), [], [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (Query(k=1), [0, 3], [0, 1, 1, 0, 1, 1, 1, 1, 1]),
        (Query(k=1, exclude_items=frozenset({"t1", "g1"})), [], [1, 0, 1, 1, 1, 1, 1, 1, 0]),
        (Query(k=1, in_stock_only=True), [], [1, 1, 1, 1, 0, 1, 1, 1, 1]),
        # min_price is inclusive (p0 costs exactly 20); t2 has no price and fails any price filter.
        (Query(k=1, min_price=20.0), [], [1, 1, 0, 1, 1, 0, 0, 0, 0]),
        (Query(k=1, max_price=15.0), [], [0, 0, 0, 0, 0, 1, 1, 1, 1]),
        (Query(k=1, min_price=0.0), [], [1, 1, 0, 1, 1, 1, 1, 1, 1]),
        (Query(k=1, brands=frozenset({"zeta"})), [], [0, 1, 0, 0, 1, 0, 1, 0, 1]),
        (Query(k=1, brands=frozenset({"zeta", "acme"})), [], [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (
            Query(
                k=1, min_price=10.0, max_price=30.0, brands=frozenset({"zeta"}), in_stock_only=True
            ),
            [6],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            Query(
                k=1,
                min_price=10.0,
                max_price=30.0,
                in_stock_only=True,
                exclude_items=frozenset({"k0"}),
            ),
            [],
            [0, 0, 0, 1, 0, 0, 1, 0, 0],
        ),
    ],
)
def test_allowed_rows_applies_each_filter(items, query, excluded, expected):
    assert (
        allowed_rows(ROWS, query, items, np.array(excluded, np.int64)).astype(int).tolist()
        == expected
    )


def test_allowed_rows_lines_up_with_the_rows_given(items):
    rows = np.array([8, 2, 5, 4])
    query = Query(k=1, max_price=10.0, exclude_items=frozenset({"g1"}))
    assert allowed_rows(rows, query, items, no_seen()).tolist() == [False, False, True, False]
    assert allowed_rows(rows, Query(k=1), items, np.array([5])).tolist() == [
        True,
        True,
        False,
        True,
    ]


@pytest.mark.parametrize(
    "include, exclude, expected",
    [
        (None, frozenset(), [True, True, True, True]),
        (frozenset({PANS, TENTS}), frozenset(), [False, False, True, True]),
        (None, frozenset({PANS}), [True, True, False, True]),
        (frozenset({PANS, TENTS}), frozenset({PANS}), [False, False, False, True]),
        (frozenset(), frozenset(), [False, False, False, False]),
    ],
)
def test_allowed_categories_include_then_exclude(include, exclude, expected):
    query = Query(k=1, include=include, exclude=exclude)
    assert allowed_categories(query, [TOOLS, KNIVES, PANS, TENTS]).tolist() == expected


# --- merging candidates -------------------------------------------------------------------------


def test_merge_unions_rows_and_keeps_each_sources_best_score_rank_and_interest():
    search = SourceResult(
        "search",
        np.array([5, 2, 5, 9, 7]),
        np.array([0.9, 0.8, 0.7, 0.1, 0.05], np.float32),
        np.array([1, 0, 2, 0, 4]),
    )
    popular = SourceResult(
        "popular", np.array([2, 7]), np.array([0.5, 0.4], np.float32), np.array([3, -1])
    )
    c = merge(SOURCES, [search, popular, SourceResult.empty("neighbours")])
    assert c.sources == SOURCES and len(c) == 4
    assert c.rows.tolist() == [2, 5, 7, 9]
    assert c.score("neighbours").tolist() == [0, 0, 0, 0]
    assert c.score("popular") == pytest.approx([0.5, 0, 0.4, 0])
    assert c.score("search") == pytest.approx([0.8, 0.9, 0.05, 0.1])
    assert c.ranks[:, 0].tolist() == [NOT_RANKED] * 4
    assert c.ranks[:, 1].tolist() == [0, NOT_RANKED, 1, NOT_RANKED]
    assert c.ranks[:, 2].tolist() == [1, 0, 4, 3]
    # popular comes before search in SOURCES: its interest 3 for row 2 wins; its -1 for row 7 does
    # not.
    assert c.interest.tolist() == [3, 1, 4, 0]


def test_merge_keeps_the_best_entry_of_a_row_listed_twice_wherever_it_is():
    worse_first = SourceResult(
        "search", np.array([4, 5, 4]), np.array([0.2, 0.4, 0.6], np.float32), np.array([7, 8, 9])
    )
    c = merge(SOURCES, [worse_first])
    assert c.rows.tolist() == [4, 5]
    assert c.score("search") == pytest.approx([0.6, 0.4])
    assert c.ranks[:, 2].tolist() == [0, 1]
    assert c.interest.tolist() == [9, 8]
    tie = merge(
        SOURCES,
        [
            SourceResult(
                "search", np.array([4, 4]), np.array([0.5, 0.5], np.float32), np.array([7, 8])
            )
        ],
    )
    assert tie.ranks[:, 2].tolist() == [0] and tie.interest.tolist() == [7]  # the earlier entry


def test_merge_without_interests_leaves_minus_one_and_take_selects_rows():
    c = merge(
        SOURCES, [SourceResult("neighbours", np.array([3, 1]), np.array([2.0, 1.0], np.float32))]
    )
    assert c.rows.tolist() == [1, 3] and c.interest.tolist() == [-1, -1]
    assert c.scores.tolist() == [[1, 0, 0], [2, 0, 0]] and c.ranks[:, 0].tolist() == [1, 0]
    t = c.take(np.array([1]))
    assert (
        t.rows.tolist() == [3]
        and t.scores.tolist() == [[2, 0, 0]]
        and t.ranks.tolist() == [[0, NOT_RANKED, NOT_RANKED]]
    )
    assert t.interest.tolist() == [-1] and t.sources == SOURCES


def test_merge_of_nothing_is_empty_with_one_column_per_source():
    c = merge(SOURCES, [SourceResult.empty("search"), SourceResult.empty("popular")])
    assert (
        len(c) == 0
        and c.scores.shape == (0, 3)
        and c.ranks.shape == (0, 3)
        and c.interest.shape == (0,)
    )
    assert merge(SOURCES, []).scores.shape == (0, 3)


# --- ranking ------------------------------------------------------------------------------------


def features_with(**scores) -> np.ndarray:
    out = np.zeros((3, len(FEATURES)), np.float32)
    for source, values in scores.items():
        out[:, FEATURES.index(f"{source}_score")] = values
        out[:, FEATURES.index(f"{source}_rank")] = [9, 8, 7]  # ranks play no part in the blend
    return out


def test_blend_divides_each_source_by_its_best_and_weights_it():
    ranker = BlendRanker({"neighbours": 1.0, "popular": 2.0, "search": 0.5})
    f = features_with(neighbours=[2, 1, 0], popular=[0, 0.5, 0.25], search=[4, 0, 2])
    # [1, .5, 0] + 2 * [0, 1, .5] + .5 * [1, 0, .5]
    assert ranker.score(f) == pytest.approx([1.5, 2.5, 1.25])
    assert ranker.model_version == RETRIEVAL_ONLY


def test_blend_skips_zero_weights_and_sources_without_a_positive_score():
    f = features_with(neighbours=[0, 0, 0], popular=[-1, -2, 0], search=[3, 6, 0])
    assert BlendRanker({"neighbours": 1.0, "popular": 1.0, "search": 0.0}).score(f).tolist() == [
        0,
        0,
        0,
    ]
    assert BlendRanker({"search": 3.0}).score(f) == pytest.approx([1.5, 3.0, 0])
    assert BlendRanker({}).score(np.zeros((0, len(FEATURES)))).shape == (0,)


def test_blend_refuses_unknown_sources():
    with pytest.raises(ValueError, match=r"unknown sources \['clicks'\]"):
        BlendRanker({"search": 1.0, "clicks": 1.0})


# --- the category model -------------------------------------------------------------------------


def test_transition_matrix_is_smoothed_toward_session_share_with_a_zero_diagonal(model):
    # P(B|A) = (count + 5 * share_B) / (row total + 5); shares .1 .2 .3 .4; Tents row total 15,
    # Pans row total 5, the others 0 (they fall back on the shares). "Nowhere" is not a category.
    assert model.share == pytest.approx([0.1, 0.2, 0.3, 0.4])
    expected = [
        [0, 0.2, 0.3, 0.4],
        [0.1, 0, 0.3, 0.4],
        [0.5 / 10, 6 / 10, 0, 2 / 10],
        [0.5 / 20, 6 / 20, 11.5 / 20, 0],
    ]
    assert model.matrix == pytest.approx(np.array(expected))
    assert model.transition(TENTS, PANS) == pytest.approx(0.575)
    assert model.transition(PANS, TENTS) == pytest.approx(0.2)
    assert model.by_popularity.tolist() == [3, 2, 1, 0]


def test_smoothing_is_a_parameter(tiny_version, items):
    m = CategoryModel(tiny_version, items.categories, smoothing=1.0)
    assert m.transition(TENTS, PANS) == pytest.approx(10.3 / 16)
    assert m.transition(TOOLS, PANS) == pytest.approx(0.3)


def test_category_sizes_stand_in_for_session_shares_without_events(tiny_version, items):
    version = dataclasses.replace(
        tiny_version,
        categories=tiny_version.categories.with_columns(pl.lit(0.0).alias("session_share")),
        transitions=tiny_version.transitions.clear(),
    )
    m = CategoryModel(version, items.categories)
    assert m.share == pytest.approx([2 / 9, 2 / 9, 2 / 9, 3 / 9])
    assert m.transition(TOOLS, TENTS) == pytest.approx(3 / 9)
    assert m.by_popularity.tolist() == [3, 0, 1, 2]  # ties keep code order


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Outdoors > Tents", {TENTS}),
        ("Home>Kitchen >Pans", {PANS}),
        ("Home", {KNIVES, PANS}),
        ("Home > Kitchen", {KNIVES, PANS}),
        ("Hom", set()),  # a department is whole segments
        ("Kitchen", set()),
        ("Nowhere", set()),
    ],
)
def test_resolve_names_leaves_and_departments(model, name, expected):
    assert model.resolve(name) == frozenset(expected)


def test_weights_and_transition_scores(model):
    profile = Profile(
        np.zeros((0, 4)), [], np.zeros(0), {TENTS: 0.75, PANS: 0.25, "Gone > Away": 0.1}
    )
    w = model.weights(profile)
    assert w.tolist() == [0, 0, 0.25, 0.75]
    # .25 * Pans row + .75 * Tents row
    assert model.transition_scores(w) == pytest.approx([0.03125, 0.375, 0.43125, 0.05])


# --- candidate sources --------------------------------------------------------------------------


def context(affinity, targets=(), profile=None, k=4) -> Context:
    return Context(
        profile if profile is not None else empty_profile(),
        np.array(affinity, float),
        np.array(targets, np.int64),
        k,
    )


def test_popular_source_scores_affinity_times_popularity_share(items):
    ctx = context([0.1, 0.3, 0.575, 0])  # Tents has no affinity: not proposed
    r = PopularSource(items).generate(ctx)
    assert r.name == "popular" and r.interest is None
    # p0 .575*.9, k0 .3*1, p1 .575*.1, g0/g1 .1*.5 (tie: lower row first); k1 has no popularity.
    assert r.rows.tolist() == [3, 5, 4, 7, 8]
    assert r.scores == pytest.approx([0.5175, 0.3, 0.0575, 0.05, 0.05])
    assert PopularSource(items, per_category=1).generate(ctx).rows.tolist() == [3, 5, 7]
    assert PopularSource(items, categories=2).generate(ctx).rows.tolist() == [3, 5, 4]
    assert PopularSource(items, limit=2).generate(ctx).rows.tolist() == [3, 5]
    assert len(PopularSource(items).generate(context([0, 0, 0, 0])).rows) == 0
    assert PopularSource(items, per_category=10_000).per_category == POPULAR_PER_CATEGORY


class FakeNeighbours:
    def __init__(self, rows, scores) -> None:
        self.result = (np.array(rows), np.array(scores))
        self.calls = []

    def gather(self, rows, weights):
        self.calls.append((rows.tolist(), weights.tolist()))
        return self.result


def test_neighbour_source_gathers_from_the_heaviest_seeds_with_weights_summing_to_one():
    fake = FakeNeighbours([4, 6, 7, 8], [0.3, 0.0, 0.5, 0.3])
    profile = dataclasses.replace(
        empty_profile(), item_rows=np.array([0, 3, 5]), item_weights=np.array([8.0, 2.0, 2.0])
    )
    r = NeighbourSource(SimpleNamespace(neighbours=fake), max_seeds=2).generate(
        context([0] * 4, profile=profile)
    )
    assert fake.calls == [([0, 3], pytest.approx([0.8, 0.2]))]
    assert r.name == "neighbours" and r.rows.tolist() == [7, 4, 8]  # k1's 0 dropped; ties by row
    assert r.scores == pytest.approx([0.5, 0.3, 0.3])
    assert NeighbourSource(SimpleNamespace(neighbours=fake), limit=1).generate(
        context([0] * 4, profile=profile)
    ).rows.tolist() == [7]
    assert fake.calls[-1] == ([0, 3, 5], pytest.approx([0.6667, 0.1667, 0.1667], abs=1e-4))


def test_neighbour_source_is_empty_without_neighbours_or_history():
    fake = FakeNeighbours([4], [1.0])
    assert len(NeighbourSource(SimpleNamespace()).generate(context([0] * 4)).rows) == 0
    assert (
        len(NeighbourSource(SimpleNamespace(neighbours=fake)).generate(context([0] * 4)).rows) == 0
    )
    assert fake.calls == []


def test_shard_search_searches_each_target_category_with_each_interest(tiny_version, items):
    profile = profile_of(items, tiny_version, ("t0", "purchase"))  # one interest: (1, 0, 0, 0)
    ctx = context([0.025, 0.3, 0.575, 0], targets=[2, 1, 0], profile=profile)
    r = ShardSearchSource(tiny_version, items).generate(ctx)
    # Pans: p1 .8, p0 .6; Knives: k1 .6, k0 0; Tools: g0 0, g1 -.6 (scores <= 0 dropped).
    assert r.name == "search" and r.searched == 3
    assert r.rows.tolist() == [4, 3, 6] and r.scores == pytest.approx([0.8, 0.6, 0.6])
    assert r.interest.tolist() == [0, 0, 0]
    two = ShardSearchSource(tiny_version, items, categories=2).generate(ctx)
    assert two.searched == 2 and two.rows.tolist() == [4, 3, 6]
    one = ShardSearchSource(tiny_version, items, per_shard=1).generate(
        dataclasses.replace(ctx, k=1)
    )
    assert one.rows.tolist() == [4, 6]  # the best of each shard only
    assert ShardSearchSource(tiny_version, items, limit=1).generate(ctx).rows.tolist() == [4]
    assert (
        len(
            ShardSearchSource(tiny_version, items)
            .generate(dataclasses.replace(ctx, targets=np.zeros(0, np.int64)))
            .rows
        )
        == 0
    )
    assert (
        len(
            ShardSearchSource(tiny_version, items)
            .generate(context([1, 1, 1, 1], targets=[0, 1]))
            .rows
        )
        == 0
    )


def test_shard_search_scans_the_behaviour_block_for_untouched_categories(tiny_version, items):
    adapted = dataclasses.replace(
        tiny_version, manifest={**tiny_version.manifest, "adaptation": {"dim": 2}}
    )
    search = ShardSearchSource(adapted, items)
    assert search.behaviour_dim == 2 and sorted(search.behaviour) == ["s0", "s1", "s2", "s3"]
    rows, block = search.behaviour["s0"]
    assert rows.tolist() == [7, 8] and block.tolist() == [[1, 0], pytest.approx([0.8, 0])]
    # Scores come from the full vectors, not the behaviour block.
    scores, found = search.behaviour_search("s1", np.array([[1, 0, 0, 0]], np.float32), 2)
    assert found.tolist() == [[6, 5]] and scores == pytest.approx(np.array([[0.6, 0]]))
    assert ShardSearchSource(adapted, items, behaviour_rerank=0).behaviour == {}


# --- the whole request --------------------------------------------------------------------------


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
    assert set(r.stage_seconds) == {"candidates", "rank", "allocate"}


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
    # Ranking: p0 1.075, t1 .680, k0 .580, p1 .211, t2 .193, ...; 2 cross slots (p0, k0) and 2 for
    # Tents (t1, t2; t0 was bought): p1 ranks above t2 but its side is full.
    assert r.rows.tolist() == [3, 1, 5, 2]
    assert r.scores == pytest.approx([1.075, 0.3 / 0.5175 + 0.1, 0.3 / 0.5175, 0.1 / 0.5175])
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
    assert notes[3].summary == "more Tents, which you engaged with" and notes[
        3
    ].source_item_ids == ("t0",)
    assert notes[5].source_category == PANS and notes[5].transition_probability == pytest.approx(
        0.05
    )
    assert (
        notes[5].summary
        == "goes with your interest in Pans: shoppers move on to Tools in 5% of such sessions"
    )


# --- more of each stage: dtypes, defaults, ties, settings ---------------------------------------


def test_merge_columns_have_fixed_dtypes_even_when_empty():
    for c in (
        merge(SOURCES, [SourceResult("search", np.array([2]), np.array([1.0], np.float32))]),
        merge(SOURCES, []),
    ):
        assert (c.rows.dtype, c.scores.dtype, c.ranks.dtype, c.interest.dtype) == (
            np.int64,
            np.float32,
            np.int64,
            np.int64,
        )
        assert c.sources == SOURCES
    empty = SourceResult.empty("popular")
    assert empty.name == "popular" and empty.searched == 0 and empty.interest is None
    assert (empty.rows.dtype, empty.scores.dtype, len(empty.rows), len(empty.scores)) == (
        np.int64,
        np.float32,
        0,
        0,
    )


def test_merge_ranks_ties_in_listing_order():
    scores = np.array(
        [1, 0, 1, 2, 0, 1, 2, 1, 0, 0, 2, 1, 1, 0, 2, 1, 0, 1, 2, 0], np.float32
    )  # 20 entries, many ties
    c = merge(SOURCES, [SourceResult("popular", np.arange(20), scores)])
    # The five 2s take ranks 0-4, the eight 1s 5-12, the seven 0s 13-19, each in listing order.
    assert c.ranks[:, 1].tolist() == [
        5,
        13,
        6,
        0,
        14,
        7,
        1,
        8,
        15,
        16,
        2,
        9,
        10,
        17,
        3,
        11,
        18,
        12,
        4,
        19,
    ]


def test_an_earlier_sources_interest_zero_is_kept_and_rows_without_any_stay_minus_one():
    popular = SourceResult(
        "popular", np.array([1, 2]), np.array([0.5, 0.4], np.float32), np.array([0, -1])
    )
    search = SourceResult(
        "search", np.array([1, 3]), np.array([0.9, 0.8], np.float32), np.array([5, 6])
    )
    neighbours = SourceResult("neighbours", np.array([4]), np.array([0.7], np.float32))
    c = merge(SOURCES, [search, neighbours, popular])
    assert c.rows.tolist() == [1, 2, 3, 4]
    assert c.interest.tolist() == [0, -1, 6, -1]


def test_allowed_rows_combines_exclusions_and_categories_on_no_codes():
    query = Query(k=1, exclude_items=frozenset({"t1"}))
    assert allowed_rows(np.arange(4), query, ItemTableStub(), np.array([0])).tolist() == [
        False,
        False,
        True,
        True,
    ]
    none = allowed_categories(Query(k=1), [])
    assert none.dtype == bool and none.shape == (0,)


class ItemTableStub:
    item_ids = np.array(["t0", "t1", "t2", "p0"], dtype=object)


def test_blend_of_no_candidates_is_empty():
    assert BlendRanker({"search": 1.0, "popular": 2.0}).score(
        np.zeros((0, len(FEATURES)), np.float32)
    ).shape == (0,)


def test_categories_missing_from_the_statistics_get_no_share(tiny_version, items):
    version = dataclasses.replace(
        tiny_version, categories=tiny_version.categories.filter(pl.col("category") != TOOLS)
    )
    m = CategoryModel(version, items.categories)
    assert m.share == pytest.approx([0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9])
    assert m.transition(KNIVES, TOOLS) == 0.0


def test_popularity_order_of_categories_keeps_code_order_on_ties():
    names = [f"C{i:02d}" for i in range(20)]
    sessions = [3, 1, 3, 2, 1, 3, 2, 2, 1, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    stats = SimpleNamespace(
        categories=pl.DataFrame(
            {"category": names, "items": [1] * 20, "session_share": [float(s) for s in sessions]}
        ),
        transitions=pl.DataFrame(
            {"source": [], "target": [], "sessions": []},
            schema={"source": pl.String, "target": pl.String, "sessions": pl.Int64},
        ),
    )
    m = CategoryModel(stats, names)
    assert m.by_popularity.tolist() == [
        0,
        2,
        5,
        9,
        12,
        15,
        18,
        3,
        6,
        7,
        11,
        14,
        17,
        1,
        4,
        8,
        10,
        13,
        16,
        19,
    ]


def test_sources_defaults_follow_the_engine_configuration(tiny_version, items):
    popular = PopularSource(items)
    assert (popular.per_category, popular.categories, popular.limit) == (50, 12, 300)
    neighbours = NeighbourSource(tiny_version)
    assert (neighbours.max_seeds, neighbours.limit, neighbours.neighbours) == (50, 300, None)
    search = ShardSearchSource(tiny_version, items)
    assert (search.per_shard, search.categories, search.behaviour_rerank, search.limit) == (
        50,
        6,
        200,
        300,
    )
    assert search.behaviour_dim == 0 and search.behaviour == {}  # no adaptation in this version


def test_popular_and_neighbour_sources_name_their_empty_results(items):
    assert PopularSource(items).generate(context([0, 0, 0, 0])).name == "popular"
    assert (
        NeighbourSource(SimpleNamespace(neighbours=None)).generate(context([0] * 4)).name
        == "neighbours"
    )
    r = PopularSource(items).generate(context([0.1, 0.3, 0.575, 0]))
    assert r.searched == 0 and r.scores.dtype == np.float32


def test_popular_source_takes_the_highest_affinity_categories_ties_in_code_order():
    # 20 categories of one item each (row = code), each item all of its category's popularity.
    affinity = np.array([1, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 1, 3, 2, 1, 3, 2, 1], float)
    table = SimpleNamespace(
        popular=[np.array([c]) for c in range(20)],
        category_code=np.arange(20),
        popularity_share=np.ones(20),
    )
    r = PopularSource(table, categories=8).generate(context(affinity))
    assert r.rows.tolist() == [1, 4, 7, 10, 14, 17, 3, 6]


def test_shard_search_finds_row_zero_in_a_touched_category(tiny_version, items):
    profile = profile_of(items, tiny_version, ("t1", "view"))  # interest (.8, 0, 0, .6)
    r = ShardSearchSource(tiny_version, items, touched=True).generate(
        context([0, 0, 0, 1], targets=[3], profile=profile, k=1)
    )
    assert r.rows.tolist() == [1, 0, 2] and r.scores == pytest.approx([1, 0.8, 0.6])
    single = ShardSearchSource(tiny_version, items).generate(
        context([0, 0, 1, 0], targets=[2], profile=profile, k=1)
    )
    assert single.rows.tolist() == [4, 3] and single.searched == 1
    cold = ShardSearchSource(tiny_version, items).generate(
        context([1, 1, 1, 1], targets=[0, 1], k=1)
    )
    assert cold.name == "search" and cold.searched == 0


B_VECTORS = [
    (0, 0.9),
    (0.5, 0.8),
    (0.1, 0.7),
    (0.9, 0.6),
    (1.5, 0.5),
    (2.0, 0.1),
    (0, 0.2),
    (0, 0.3),
]  # (a, b): item (a, 0, 0, b)


@pytest.fixture(scope="module")
def wide_version():
    """Categories A (row 8), B (rows 0-7, behind an empty shard) and C (one empty shard); the last
    vector column is the behaviour block. In B the behaviour block (b) and the full vectors (a + b
    for a query (1, 0, 0, 1)) disagree: b ranks rows 0 1 2 3 4 ..., a + b ranks 5 4 3 1 0 ..."""
    import faiss

    from indexer.artifact import IndexVersion

    vectors = np.array(
        [[a, 0, 0, b] for a, b in B_VECTORS] + [[0.70710677, 0, 0, 0.70710677]], np.float32
    )
    cats = ["Cat > B"] * 8 + ["Cat > A"]

    def shard(rows):
        index = faiss.IndexIDMap(faiss.IndexFlatIP(4))
        if rows:
            index.add_with_ids(vectors[rows], np.array(rows, np.int64))
        return index

    items = pl.DataFrame(
        {
            "item_id": [f"w{i}" for i in range(9)],
            "category": cats,
            "shard": ["b0"] * 8 + ["a0"],
            "popularity": [1.0] * 9,
        }
    )
    manifest = {
        "version": "wide",
        "dim": 4,
        "items": 9,
        "adaptation": {"dim": 1},
        "category_shards": {"Cat > A": ["a0"], "Cat > B": ["b_empty", "b0"], "Cat > C": ["c0"]},
    }
    shards = {"a0": shard([8]), "b_empty": shard([]), "b0": shard(list(range(8))), "c0": shard([])}
    return IndexVersion(
        path=None,
        manifest=manifest,
        items=items,
        vectors=vectors,
        transitions=None,
        categories=None,
        shards=shards,
    )


def test_behaviour_search_reranks_the_behaviour_blocks_best_with_full_vectors(wide_version):
    items = ItemTable.from_version(wide_version)
    queries = np.array([[1, 0, 0, 1], [0, 0, 0, 1]], np.float32)
    search = ShardSearchSource(wide_version, items, behaviour_rerank=1)
    assert search.behaviour["b0"][1].ravel() == pytest.approx([b for _, b in B_VECTORS])
    # k=1: at least 4k = 4 candidates by the behaviour block (rows 0-3), then the best by a + b:
    # row 3.
    scores, rows = search.behaviour_search("b0", queries, 1)
    assert rows.tolist() == [[3], [0]] and scores == pytest.approx(np.array([[1.5], [0.9]]))
    assert (scores.dtype, rows.dtype) == (np.float32, np.int64)
    # k=2: 8 candidates, every row: the full-vector best.
    scores, rows = search.behaviour_search("b0", queries, 2)
    assert rows.tolist() == [[5, 4], [0, 1]] and scores == pytest.approx(
        np.array([[2.1, 2.0], [0.9, 0.8]])
    )
    # behaviour_rerank=5 re-ranks 5 candidates: row 4 comes in.
    scores, rows = ShardSearchSource(wide_version, items, behaviour_rerank=5).behaviour_search(
        "b0", queries, 1
    )
    assert rows.tolist() == [[4], [0]]


def test_untouched_categories_are_searched_in_the_behaviour_block(wide_version):
    items = ItemTable.from_version(wide_version)
    profile = Profile(
        np.array([[0.70710677, 0, 0, 0.70710677]], np.float32),
        ["Cat > A"],
        np.ones(1),
        {"Cat > A": 1.0},
    )
    ctx = Context(profile, np.array([1.0, 1.0, 1.0]), np.array([1, 0, 2]), 1)
    r = ShardSearchSource(
        wide_version, items, per_shard=1, behaviour_rerank=1, touched=True
    ).generate(ctx)
    # B (untouched): behaviour block candidates 0-3, best row 3 (1.5 / sqrt 2); A (touched): faiss,
    # row 8.
    # The empty shards of B and C are skipped.
    assert r.rows.tolist() == [3, 8] and r.scores == pytest.approx(
        [1.5 / np.sqrt(2), 1.0], abs=1e-6
    )
    assert r.searched == 2 and r.interest.tolist() == [0, 0]
    # By default the touched category A is not searched: only B's row 3, one shard.
    untouched = ShardSearchSource(wide_version, items, per_shard=1, behaviour_rerank=1).generate(
        ctx
    )
    assert untouched.rows.tolist() == [3] and untouched.searched == 1
    only_c = ShardSearchSource(wide_version, items).generate(
        dataclasses.replace(ctx, targets=np.array([2]))
    )
    assert (
        only_c.name == "search"
        and only_c.searched == 0
        and len(only_c.rows) == 0
        and len(only_c.scores) == 0
    )
    assert (only_c.rows.dtype, only_c.scores.dtype) == (np.int64, np.float32)


def test_recommender_wires_its_settings_into_every_stage(tiny_version):
    rec = Recommender(
        tiny_version,
        RecommenderSettings(
            smoothing=1.0,
            target_categories=3,
            search_categories=2,
            candidates_per_shard=7,
            behaviour_rerank=11,
            popular_per_category=13,
            neighbour_seeds=17,
            source_limit=19,
            search_touched=True,
            blend=(("popular", 2.0), ("search", 0.5)),
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
    assert rec.search.touched is True and Recommender(tiny_version).search.touched is False
    assert (
        rec.ranker.weights == {"popular": 2.0, "search": 0.5}
        and rec.model_version == RETRIEVAL_ONLY
    )
    fake = SimpleNamespace(gather=lambda rows, weights: (np.array([6]), np.array([1.0])))
    with_neighbours = Recommender(dataclasses.replace(tiny_version, neighbours=fake))
    assert with_neighbours.neighbours.neighbours is fake
    custom = SimpleNamespace(model_version="m7", score=lambda f: np.zeros(len(f)))
    assert Recommender(tiny_version, ranker=custom).model_version == "m7"


def test_only_target_categories_feed_the_sources(tiny_version):
    rec = Recommender(tiny_version, settings(target_categories=1))
    profile = profile_of(rec.items, tiny_version, ("t0", "purchase"))
    r = rec.recommend(profile, Query(k=2))
    assert r.targets == [PANS] and r.rows.tolist() == [3, 4]


def test_refill_walks_the_short_categories_by_popularity_with_a_floor(recommender):
    short = np.array([True, True, False, False])  # Tools, Knives
    affinity = np.array([0.025, 0.3, 0.575, 0])
    r = recommender._refill(
        short, affinity, Query(k=2, exclude_items=frozenset({"g1"})), np.array([5])
    )
    # g1 excluded by the request, k0 seen; k1 has no popularity: floored, still positive, after g0.
    assert r.name == "popular" and r.rows.tolist() == [7, 6] and r.scores.dtype == np.float32
    assert r.scores == pytest.approx([0.025 * 0.5, 0.3 * 1e-9], rel=1e-3)
    # Categories without affinity stay in play: the floor keeps every score positive.
    cold = recommender._refill(
        np.array([True, False, False, False]), np.zeros(4), Query(k=2), np.zeros(0, np.int64)
    )
    assert cold.rows.tolist() == [7, 8] and (cold.scores > 0).all()
    nothing = recommender._refill(np.zeros(4, bool), affinity, Query(k=2), np.zeros(0, np.int64))
    assert nothing.rows.tolist() == [] and nothing.rows.dtype == np.int64


def test_result_dtypes_and_stage_times(recommender):
    r = recommender.recommend(empty_profile(), Query(k=2))
    assert r.interests.dtype == np.int64 and r.retrieval_scores.dtype == np.float64
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
    from engine.allocate import Group, Plan

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


def test_behaviour_search_breaks_ties_by_row():
    import faiss

    from indexer.artifact import IndexVersion

    pattern = [1, 2, 1, 4, 2, 1, 4, 1, 2, 2, 1, 4, 1, 2, 4, 1, 2, 1, 4, 2]
    vectors = np.array([[p, 0, 0, 0] for p in pattern], np.float32)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(4))
    index.add_with_ids(vectors, np.arange(20))
    version = IndexVersion(
        path=None,
        manifest={"dim": 4, "adaptation": {"dim": 1}, "category_shards": {"T": ["t"]}},
        items=pl.DataFrame(
            {"item_id": [f"x{i}" for i in range(20)], "category": ["T"] * 20, "shard": ["t"] * 20}
        ),
        vectors=vectors,
        transitions=None,
        categories=None,
        shards={"t": index},
    )
    search = ShardSearchSource(version, ItemTable.from_version(version))
    _, rows = search.behaviour_search("t", np.array([[1, 0, 0, 0]], np.float32), 20)
    assert rows.tolist() == [[3, 6, 11, 14, 18, 1, 4, 8, 9, 13, 16, 19, 0, 2, 5, 7, 10, 12, 15, 17]]


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


@pytest.mark.parametrize("k, walked", [(1, 100), (30, 120)])
def test_the_refill_walks_at_most_max_4k_100_items_per_short_category(crowded_version, k, walked):
    rec = Recommender(crowded_version, settings())
    r = rec.recommend(
        Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {}),
        Query(k=k, quotas=((frozenset({"Big"}), k),), max_price=10.0),
    )
    # Big's 150 cheap items are the only allowed ones; the sources proposed none of them.
    assert r.stage_counts["candidates"] == walked
    assert r.rows.tolist() == list(range(50, 50 + k))
