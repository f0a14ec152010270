"""Merging the sources' candidates (scores, ranks, interests, dtypes) and the blend ranker."""

from __future__ import annotations

import numpy as np
import pytest

from engine.retrieval.candidates import NOT_RANKED, Candidates, SourceResult, merge
from engine.retrieval.features import FEATURES, SOURCES
from engine.retrieval.query import Query
from engine.retrieval.ranking import RETRIEVAL_ONLY, BlendRanker


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
    assert c.sources == SOURCES
    assert len(c) == 4
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
    assert tie.ranks[:, 2].tolist() == [0]
    assert tie.interest.tolist() == [7]


def test_merge_without_interests_leaves_minus_one_and_take_selects_rows():
    c = merge(
        SOURCES, [SourceResult("neighbours", np.array([3, 1]), np.array([2.0, 1.0], np.float32))]
    )
    assert c.rows.tolist() == [1, 3]
    assert c.interest.tolist() == [-1, -1]
    assert c.scores.tolist() == [[1, 0, 0, 0, 0], [2, 0, 0, 0, 0]]
    assert c.ranks[:, 0].tolist() == [1, 0]
    t = c.take(np.array([1]))
    assert t.rows.tolist() == [3]
    assert t.scores.tolist() == [[2, 0, 0, 0, 0]]
    assert t.ranks.tolist() == [[0] + [NOT_RANKED] * 4]
    assert t.interest.tolist() == [-1]
    assert t.sources == SOURCES


def test_merge_of_nothing_is_empty_with_one_column_per_source():
    c = merge(SOURCES, [SourceResult.empty("search"), SourceResult.empty("popular")])
    assert len(c) == 0
    assert c.scores.shape == (0, 5)
    assert c.ranks.shape == (0, 5)
    assert c.interest.shape == (0,)
    assert merge(SOURCES, []).scores.shape == (0, 5)


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
    assert empty.name == "popular"
    assert empty.searched == 0
    assert empty.interest is None
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


def candidates_with(**scores) -> Candidates:
    """Three candidates with the given per-source scores (others 0)."""
    columns = np.zeros((3, len(SOURCES)), np.float32)
    for source, values in scores.items():
        columns[:, SOURCES.index(source)] = values
    ranks = np.tile([9, 8, 7], (len(SOURCES), 1)).T  # ranks play no part in the blend
    return Candidates(SOURCES, np.arange(3), columns, ranks, np.full(3, -1))


def test_blend_divides_each_source_by_its_best_and_weights_it():
    ranker = BlendRanker({"neighbours": 1.0, "popular": 2.0, "search": 0.5})
    c = candidates_with(neighbours=[2, 1, 0], popular=[0, 0.5, 0.25], search=[4, 0, 2])
    # [1, .5, 0] + 2 * [0, 1, .5] + .5 * [1, 0, .5]
    assert ranker.blend(c) == pytest.approx([1.5, 2.5, 1.25])
    assert ranker.model_version == RETRIEVAL_ONLY


def test_blend_ranker_orders_by_the_blend_feature_column():
    f = np.zeros((3, len(FEATURES)), np.float32)
    f[:, FEATURES.index("blend")] = [0.5, 2.0, 1.0]
    ranker = BlendRanker({"search": 1.0})
    assert ranker.rank(f, np.full(3, np.nan), Query(k=2)).tolist() == [0.5, 2.0, 1.0]
    assert ranker.objectives(f) == {}


def test_blend_skips_zero_weights_and_sources_without_a_positive_score():
    c = candidates_with(neighbours=[0, 0, 0], popular=[-1, -2, 0], search=[3, 6, 0])
    assert BlendRanker({"neighbours": 1.0, "popular": 1.0, "search": 0.0}).blend(c).tolist() == [
        0,
        0,
        0,
    ]
    assert BlendRanker({"search": 3.0}).blend(c) == pytest.approx([1.5, 3.0, 0])
    # A zero weight before others skips that source only.
    assert BlendRanker({"neighbours": 0.0, "search": 3.0}).blend(c) == pytest.approx([1.5, 3.0, 0])


def test_blend_refuses_unknown_sources():
    with pytest.raises(ValueError, match=r"unknown sources \['clicks'\]"):
        BlendRanker({"search": 1.0, "clicks": 1.0})


def test_blend_of_no_candidates_is_empty():
    empty = merge(SOURCES, [])
    assert BlendRanker({"search": 1.0, "popular": 2.0}).blend(empty).shape == (0,)
