"""Measuring an index version: ANN recall against exact search and search latency, per shard.

Queries are item vectors drawn from the whole catalogue plus a little noise (a cross-category
request searches a shard with vectors from elsewhere), distinct from the ones the build tuned on.
"""

from __future__ import annotations

import time

import numpy as np

from indexer.artifact import IndexVersion


def sample_queries(
    version: IndexVersion, n: int, seed: int = 1234, noise: float = 0.05
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(version.vectors), min(n, len(version.vectors)), replace=False)
    q = np.asarray(version.vectors[np.sort(rows)], dtype=np.float32)
    q = q + noise * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(q.shape[1])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def shard_recall(version: IndexVersion, queries: np.ndarray, k: int = 10) -> list[dict]:
    """Per shard: recall@k of its index at its recorded settings vs exact inner-product search over
    the shard's vectors, and search latency (one batch, and one query at a time)."""
    results = []
    items_shard = version.items["shard"].to_numpy()
    for entry in version.info.shards:
        rows = np.flatnonzero(items_shard == entry.id)
        kk = min(k, len(rows))
        exact = rows[np.argsort(-(queries @ np.asarray(version.vectors[rows]).T), axis=1)[:, :kk]]
        start = time.perf_counter()
        _, found = version.search(entry.id, queries, kk)
        batch_s = time.perf_counter() - start
        singles = []
        for q in queries[: min(50, len(queries))]:
            t = time.perf_counter()
            version.search(entry.id, q[None, :], kk)
            singles.append(time.perf_counter() - t)
        hits = sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist()))
        results.append(
            {
                "shard": entry.id,
                "factory": entry.factory,
                "count": entry.count,
                "search_params": entry.search_params,
                "recall_at_k": hits / exact.size,
                "batch_qps": len(queries) / batch_s if batch_s else float("inf"),
                "single_query_p50_ms": float(np.median(singles) * 1e3),
            }
        )
    return results
