"""The behaviour-space scan in torch (engine/retrieval/device_scan.py), run on the CPU device here:
the same rows and scores as the numpy scan for every shard, small shards and large k included."""

from __future__ import annotations

import numpy as np
import pytest

from engine.retrieval.shard_search import LocalShards


@pytest.fixture(scope="module")
def version(built_index):
    from indexer.artifact import open_index

    return open_index(built_index.path)


@pytest.fixture(scope="module")
def pair(version):
    shard_of = version.items["shard"].to_numpy()
    return LocalShards(version, shard_of), LocalShards(version, shard_of, device="cpu")


def test_the_torch_scan_answers_as_the_numpy_scan_on_every_shard(version, pair):
    numpy_scan, torch_scan = pair
    assert torch_scan.device_scan is not None
    assert numpy_scan.device_scan is None
    rng = np.random.default_rng(0)
    shards = sorted(numpy_scan.behaviour)
    assert len(shards) == 64
    for shard_id in shards:
        rows = numpy_scan.behaviour[shard_id][0]
        others = np.flatnonzero(~np.isin(np.arange(len(version.items)), rows))
        queries = np.asarray(version.vectors[rng.choice(others, 3, replace=False)])
        for k in (1, 5, len(rows) + 3):  # the last: more than the shard holds
            want_scores, want_rows = numpy_scan.behaviour_search(shard_id, queries, k)
            got_scores, got_rows = torch_scan.behaviour_search(shard_id, queries, k)
            assert got_rows.shape == want_rows.shape == (3, min(k, len(rows)))
            assert got_rows.tolist() == want_rows.tolist(), (shard_id, k)
            np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)


def test_the_re_rank_is_exact_over_the_coarse_candidates(version, pair):
    """By hand: the torch answer is the best k full-vector scores among the shard's best
    ``behaviour_rerank`` behaviour-block scores."""
    _, torch_scan = pair
    shard_id = sorted(torch_scan.behaviour)[0]
    rows, block = torch_scan.behaviour[shard_id]
    query = np.asarray(version.vectors[[len(version.items) - 1]])
    n = min(len(rows), torch_scan.behaviour_rerank)
    coarse = block @ query[0, -torch_scan.behaviour_dim :]
    pool = rows[np.argsort(-coarse)[:n]]
    exact = np.asarray(version.vectors)[pool] @ query[0]
    want = pool[np.argsort(-exact)[:4]]
    _, got = torch_scan.behaviour_search(shard_id, query, 4)
    assert got[0].tolist() == want.tolist()
