"""The candidate sources (popular, neighbours, shard search with its behaviour block) on
hand-built versions.

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
    empty_profile,
    profile_of,
)

from engine.retrieval.items import POPULAR_PER_CATEGORY, ItemTable
from engine.retrieval.sources import Context, NeighbourSource, PopularSource, ShardSearchSource
from engine.state.profile import Profile


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
    assert r.name == "popular"
    assert r.interest is None
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
    assert r.name == "neighbours"
    assert r.rows.tolist() == [7, 4, 8]
    assert r.scores == pytest.approx([0.5, 0.3, 0.3])
    assert NeighbourSource(SimpleNamespace(neighbours=fake), limit=1).generate(
        context([0] * 4, profile=profile)
    ).rows.tolist() == [7]
    assert fake.calls[-1] == ([0, 3, 5], pytest.approx([0.6667, 0.1667, 0.1667], abs=1e-4))


def test_the_learned_sources_count_every_seed_alike_and_the_recommender_says_so(tiny_version):
    fake = FakeNeighbours([4], [1.0])
    profile = dataclasses.replace(
        empty_profile(), item_rows=np.array([0, 3, 5]), item_weights=np.array([8.0, 2.0, 2.0])
    )
    source = NeighbourSource(
        SimpleNamespace(factors=fake), max_seeds=2, name="factors", binary_seeds=True
    )
    assert source.generate(context([0] * 4, profile=profile)).name == "factors"
    assert fake.calls == [([0, 3], pytest.approx([0.5, 0.5]))]
    from engine.retrieval.recommend import Recommender

    r = Recommender(tiny_version)
    assert (r.neighbours.binary_seeds, r.ease.binary_seeds, r.factors.binary_seeds) == (
        False,
        True,
        True,
    )
    assert (r.ease.name, r.factors.name) == ("ease", "factors")


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
    assert r.name == "search"
    assert r.searched == 3
    assert r.rows.tolist() == [4, 3, 6]
    assert r.scores == pytest.approx([0.8, 0.6, 0.6])
    assert r.interest.tolist() == [0, 0, 0]
    two = ShardSearchSource(tiny_version, items, categories=2).generate(ctx)
    assert two.searched == 2
    assert two.rows.tolist() == [4, 3, 6]
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
    assert search.searcher.behaviour_dim == 2
    assert sorted(search.searcher.behaviour) == [
        "s0",
        "s1",
        "s2",
        "s3",
    ]
    rows, block = search.searcher.behaviour["s0"]
    assert rows.tolist() == [7, 8]
    assert block.tolist() == [[1, 0], pytest.approx([0.8, 0])]
    # Scores come from the full vectors, not the behaviour block.
    scores, found = search.searcher.behaviour_search("s1", np.array([[1, 0, 0, 0]], np.float32), 2)
    assert found.tolist() == [[6, 5]]
    assert scores == pytest.approx(np.array([[0.6, 0]]))
    assert ShardSearchSource(adapted, items, behaviour_rerank=0).searcher.behaviour == {}


def test_an_ask_without_behaviour_searches_the_faiss_shard_even_where_a_block_exists(
    tiny_version, items
):
    from engine.retrieval.shard_search import LocalShards, ShardAsk

    adapted = dataclasses.replace(
        tiny_version, manifest={**tiny_version.manifest, "adaptation": {"dim": 2}}
    )
    shards = LocalShards(adapted, items.shard_of)
    scanned = []
    shards.behaviour_search = lambda *a: (
        scanned.append(a[0]) or (np.zeros((1, 1)), np.zeros((1, 1)))
    )
    q = np.array([[1, 0, 0, 0]], np.float32)
    found = shards.search(q, [ShardAsk("s1", 2, behaviour=False), ShardAsk("s0", 1, True)])
    assert scanned == ["s0"]  # only the ask that wants the behaviour space
    assert found.found["s1"][1].tolist() == adapted.search("s1", q, 2)[1].tolist()
    assert found.late == []


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
    assert search.searcher.behaviour_dim == 0
    assert search.searcher.behaviour == {}


def test_popular_and_neighbour_sources_name_their_empty_results(items):
    assert PopularSource(items).generate(context([0, 0, 0, 0])).name == "popular"
    assert (
        NeighbourSource(SimpleNamespace(neighbours=None)).generate(context([0] * 4)).name
        == "neighbours"
    )
    r = PopularSource(items).generate(context([0.1, 0.3, 0.575, 0]))
    assert r.searched == 0
    assert r.scores.dtype == np.float32


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
    assert r.rows.tolist() == [1, 0, 2]
    assert r.scores == pytest.approx([1, 0.8, 0.6])
    single = ShardSearchSource(tiny_version, items).generate(
        context([0, 0, 1, 0], targets=[2], profile=profile, k=1)
    )
    assert single.rows.tolist() == [4, 3]
    assert single.searched == 1
    cold = ShardSearchSource(tiny_version, items).generate(
        context([1, 1, 1, 1], targets=[0, 1], k=1)
    )
    assert cold.name == "search"
    assert cold.searched == 0


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
    assert search.searcher.behaviour["b0"][1].ravel() == pytest.approx([b for _, b in B_VECTORS])
    # k=1: at least 4k = 4 candidates by the behaviour block (rows 0-3), then the best by a + b:
    # row 3.
    scores, rows = search.searcher.behaviour_search("b0", queries, 1)
    assert rows.tolist() == [[3], [0]]
    assert scores == pytest.approx(np.array([[1.5], [0.9]]))
    assert (scores.dtype, rows.dtype) == (np.float32, np.int64)
    # k=2: 8 candidates, every row: the full-vector best.
    scores, rows = search.searcher.behaviour_search("b0", queries, 2)
    assert rows.tolist() == [[5, 4], [0, 1]]
    assert scores == pytest.approx(np.array([[2.1, 2.0], [0.9, 0.8]]))
    # behaviour_rerank=5 re-ranks 5 candidates: row 4 comes in.
    scores, rows = ShardSearchSource(
        wide_version, items, behaviour_rerank=5
    ).searcher.behaviour_search("b0", queries, 1)
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
    assert r.rows.tolist() == [3, 8]
    assert r.scores == pytest.approx([1.5 / np.sqrt(2), 1.0], abs=1e-6)
    assert r.searched == 2
    assert r.interest.tolist() == [0, 0]
    # By default the touched category A is not searched: only B's row 3, one shard.
    untouched = ShardSearchSource(wide_version, items, per_shard=1, behaviour_rerank=1).generate(
        ctx
    )
    assert untouched.rows.tolist() == [3]
    assert untouched.searched == 1
    only_c = ShardSearchSource(wide_version, items).generate(
        dataclasses.replace(ctx, targets=np.array([2]))
    )
    assert only_c.name == "search"
    assert only_c.searched == 0
    assert len(only_c.rows) == 0
    assert len(only_c.scores) == 0
    assert (only_c.rows.dtype, only_c.scores.dtype) == (np.int64, np.float32)


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
    _, rows = search.searcher.behaviour_search("t", np.array([[1, 0, 0, 0]], np.float32), 20)
    assert rows.tolist() == [[3, 6, 11, 14, 18, 1, 4, 8, 9, 13, 16, 19, 0, 2, 5, 7, 10, 12, 15, 17]]


def test_shards_for_names_what_the_search_covers(wide_version):
    """Targets B, A, C with A touched: by default A's shard is left out; ``categories`` caps the
    categories, not the shards (B's two shards both count); ``shards_targeted`` is this list."""
    items = ItemTable.from_version(wide_version)
    profile = Profile(
        np.array([[0.70710677, 0, 0, 0.70710677]], np.float32),
        ["Cat > A"],
        np.ones(1),
        {"Cat > A": 1.0},
    )
    ctx = Context(profile, np.array([1.0, 1.0, 1.0]), np.array([1, 0, 2]), 1)
    pairs = ShardSearchSource(wide_version, items).shards_for(ctx)
    assert pairs == [("Cat > B", "b_empty"), ("Cat > B", "b0"), ("Cat > C", "c0")]
    everything = ShardSearchSource(wide_version, items, touched=True).shards_for(ctx)
    assert [s for _, s in everything] == ["b_empty", "b0", "a0", "c0"]
    assert [s for _, s in ShardSearchSource(wide_version, items, categories=1).shards_for(ctx)] == [
        "b_empty",
        "b0",
    ]
    assert (
        ShardSearchSource(wide_version, items).shards_for(
            dataclasses.replace(ctx, profile=empty_profile())
        )
        == []
    )
