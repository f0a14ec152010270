"""Shard planning, index choice by size, and recall of approximate shards at their recorded
settings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from indexer.shards import ShardPolicy, build_shard, choose_factory, plan_shards, set_search_params


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres: structured like embeddings, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_plan_follows_categories_and_splits_large_ones():
    categories = pl.Series(["b"] * 5 + ["a"] * 3 + ["c"] * 25)
    ids = pl.Series([f"i{i}" for i in range(33)])
    specs = plan_shards(categories, ids, ShardPolicy(max_shard_items=10))
    assert [(s.category, s.part) for s in specs] == [
        ("a", 0),
        ("b", 0),
        ("c", 0),
        ("c", 1),
        ("c", 2),
    ]
    assert [s.shard_id for s in specs] == ["s0000", "s0001", "s0002", "s0003", "s0004"]
    rows = np.sort(np.concatenate([s.rows for s in specs]))
    assert np.array_equal(rows, np.arange(33))  # every item in exactly one shard
    assert sum(len(s.rows) for s in specs if s.category == "c") == 25
    # The split is by item id, so it does not change when rows are reordered.
    again = plan_shards(categories[::-1], ids[::-1], ShardPolicy(max_shard_items=10))

    def by_part(plan, frame_ids):
        return {s.part: set(frame_ids.gather(s.rows).to_list()) for s in plan if s.category == "c"}

    assert by_part(specs, ids) == by_part(again, ids[::-1])


def test_index_type_follows_size():
    policy = ShardPolicy(exact_max=1_000, hnsw_max=50_000)
    assert choose_factory(1_000, 64, policy) == "Flat"
    assert choose_factory(1_001, 64, policy) == "HNSW32,Flat"
    assert choose_factory(2_000_000, 64, policy) == "IVF4096,SQ8"
    assert choose_factory(60_000, 64, policy) == "IVF1024,SQ8"


@pytest.mark.parametrize("hnsw_max", [50_000, 1_000], ids=["hnsw", "ivf-sq8"])
def test_approximate_shards_meet_recall_at_recorded_settings(hnsw_max):
    data = clustered_unit_vectors(12_300, 48, clusters=40, seed=0)
    vectors, queries = data[:12_000], data[12_000:]  # held-out queries from the same distribution
    policy = ShardPolicy(exact_max=500, hnsw_max=hnsw_max, recall_target=0.95)
    spec = plan_shards(
        pl.Series(["c"] * 12_000), pl.Series([f"i{i}" for i in range(12_000)]), policy
    )[0]
    shard = build_shard(spec, vectors, policy, np.random.default_rng(0))
    assert shard.factory.startswith("HNSW" if hnsw_max == 50_000 else "IVF")
    assert shard.recall_at_k >= 0.95
    assert shard.params

    # Fresh queries, not the tuning ones, at the recorded settings on a reloaded copy.
    import faiss

    reloaded = faiss.deserialize_index(faiss.serialize_index(shard.index))
    set_search_params(reloaded, shard.params)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    _, found = reloaded.search(queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())])
    assert recall >= 0.95


def test_every_item_is_found_by_its_own_vector_in_each_shard_type():
    vectors = clustered_unit_vectors(6_000, 32, clusters=30, seed=1)
    categories = pl.Series(["flat"] * 400 + ["hnsw"] * 2_600 + ["ivf"] * 3_000)
    ids = pl.Series([f"i{i}" for i in range(6_000)])
    specs = plan_shards(categories, ids, ShardPolicy())
    for spec, hnsw_max in zip(specs, [10_000, 10_000, 2_000]):
        policy = ShardPolicy(exact_max=500, hnsw_max=hnsw_max)
        shard = build_shard(spec, vectors, policy, np.random.default_rng(0))
        _, found = shard.index.search(vectors[spec.rows], 10)
        found_self = (found == spec.rows[:, None]).any(axis=1).mean()
        assert found_self >= (1.0 if shard.factory == "Flat" else 0.99), (shard.factory, found_self)


def test_a_shard_that_cannot_reach_the_recall_target_is_built_exact():
    vectors = clustered_unit_vectors(3_000, 32, clusters=20, seed=2)
    policy = ShardPolicy(
        exact_max=100, hnsw_max=10_000, recall_target=1.01
    )  # unreachable on purpose
    spec = plan_shards(
        pl.Series(["c"] * 3_000), pl.Series([f"i{i}" for i in range(3_000)]), policy
    )[0]
    shard = build_shard(spec, vectors, policy, np.random.default_rng(0))
    assert shard.factory == "Flat"
    assert shard.recall_at_k == 1.0
    assert shard.params == {}
    assert "HNSW32,Flat reached recall@10" in shard.note
    assert "built exact instead" in shard.note


def test_split_parts_are_never_empty_and_tiny_shards_stay_exact():
    specs = plan_shards(
        pl.Series(["c"] * 3), pl.Series(["a", "b", "c"]), ShardPolicy(max_shard_items=1)
    )
    assert [len(s.rows) for s in specs] == [1, 1, 1]
    specs = plan_shards(
        pl.Series(["c"] * 10),
        pl.Series([f"i{i}" for i in range(10)]),
        ShardPolicy(max_shard_items=4),
    )
    assert sorted(len(s.rows) for s in specs) == [3, 3, 4]
    assert choose_factory(30, 16, ShardPolicy(exact_max=10, hnsw_max=10)) == "Flat"


@pytest.mark.parametrize("factory", ["Flat", "HNSW32,Flat", "HNSW16,Flat", "IVF32,SQ8"])
def test_shards_built_by_constructors_are_the_factorys_indexes_byte_for_byte(factory):
    """Shards are made with faiss's constructors (a CUDA faiss build's index_factory failed on a
    GPU machine); filled with the same vectors they serialise to exactly what the factory makes."""
    import faiss

    from indexer.shards import construct

    x = np.random.default_rng(0).standard_normal((2_000, 16)).astype(np.float32)
    made = [construct(factory, 16), faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)]
    for index in made:
        if not index.is_trained:
            index.train(x)
        index.add(x)
    ours, theirs = (faiss.serialize_index(i) for i in made)
    assert np.array_equal(ours, theirs)
    with pytest.raises(ValueError, match="no constructor for the shard kind 'PQ8'"):
        construct("PQ8", 16)
