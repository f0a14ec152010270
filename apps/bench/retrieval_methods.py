"""The methods ``crossrec bench retrieval`` compares (:mod:`apps.bench.retrieval` describes
them): each builds its index once and returns (method, parameter, search function) triples over
its parameter sweep; :func:`batched_methods` the same, answering every query in one call."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

RERANKS = (25, 50, 100, 200, 400)
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
OVERSAMPLE = (4, 16, 64, 256)


@dataclass(frozen=True)
class Queries:
    vectors: np.ndarray  # (q, dim)
    allowed: list[list[str]]  # allowed categories per query
    rows: list[np.ndarray]  # allowed item rows per query
    truth: np.ndarray  # (q, K) exact top-K item rows, -1 padded


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / |truth[:k]|."""
    total, hits = 0, 0
    for f, t in zip(found, truth):
        t = t[:k][t[:k] >= 0]
        total += len(t)
        hits += len(np.intersect1d(f[:k], t))
    return hits / max(total, 1)


def run_one_by_one(search, queries: Queries, k: int) -> tuple[np.ndarray, float]:
    """Rows found (q, k) and queries per second, one query at a time."""
    found = np.full((len(queries.vectors), k), -1, np.int64)
    started = time.perf_counter()
    for i in range(len(queries.vectors)):
        rows = search(i)[:k]
        found[i, : len(rows)] = rows
    return found, len(queries.vectors) / (time.perf_counter() - started)


def _merge(found: list[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """The best ``k`` rows of several shards' (scores, rows), padding (-1) dropped."""
    s = np.concatenate([f[0] for f in found])
    r = np.concatenate([f[1] for f in found])
    keep = r >= 0
    return r[keep][np.argsort(-s[keep], kind="stable")][:k]


def _one_at_a_time(version, queries: Queries, k: int, search):
    """Query ``i`` searched in each shard of its allowed categories by ``search(shard, q, k)``,
    merged."""

    def run(i):
        q = queries.vectors[i : i + 1]
        found = [search(shard, q, k) for c in queries.allowed[i] for shard in version.shards_of(c)]
        return _merge([(s[0], r[0]) for s, r in found], k)

    return run


def _all_at_once(version, queries: Queries, k: int, search):
    """Every query at once: one ``search`` call per shard with all the queries that search it."""
    by_shard: dict[str, list[int]] = {}
    for i, categories in enumerate(queries.allowed):
        for category in categories:
            for shard in version.shards_of(category):
                by_shard.setdefault(shard, []).append(i)

    def run():
        parts: list[list] = [[] for _ in range(len(queries.vectors))]
        for shard, idx in by_shard.items():
            s, r = search(shard, queries.vectors[idx], k)
            for j, i in enumerate(idx):
                parts[i].append((s[j], r[j]))
        found = np.full((len(parts), k), -1, np.int64)
        for i, part in enumerate(parts):
            best = _merge(part, k)
            found[i, : len(best)] = best
        return found

    return run


def crossrec_methods(version, recommender, queries: Queries, k: int, reranks=RERANKS, batch=False):
    """(method, parameter, search) for crossrec's two paths: the behaviour scan with re-rank
    (one per ``reranks``) and the exact category shards; ``batch``: functions answering every
    query at once instead of query ``i``."""
    from engine.retrieval.shard_search import LocalShards

    wrap = _all_at_once if batch else _one_at_a_time
    out = []
    for rerank in reranks:
        shards = LocalShards(version, recommender.items.shard_of, behaviour_rerank=rerank)
        if not shards.behaviour_dim:
            break
        out.append(
            ("crossrec", f"rerank={rerank}", wrap(version, queries, k, shards.behaviour_search))
        )
    out.append(("crossrec-shards", "recorded", wrap(version, queries, k, version.search)))
    return out


def build_faiss(vectors: np.ndarray, seed: int):
    """The global indexes a user would build over all items: (hnsw, ivf, build seconds)."""
    import faiss

    n, dim = vectors.shape
    built = {}
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    hnsw.add(vectors)
    built["faiss-hnsw-filtered"] = time.perf_counter() - started
    started = time.perf_counter()
    nlist = min(max(int(4 * np.sqrt(n)), 1), max(n // 39, 1))  # faiss wants ~39 points a list
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(vectors)
    ivf.add(vectors)
    built["faiss-ivf-filtered"] = time.perf_counter() - started
    return hnsw, ivf, built


def faiss_methods(hnsw, ivf, queries: Queries, k: int):
    """(method, parameter, search) for the global indexes, the allowed items as a selector."""
    import faiss

    nlist = ivf.nlist
    selectors = [faiss.IDSelectorBatch(r.astype(np.int64)) for r in queries.rows]
    out = []
    for ef in EF_SEARCH:

        def search(i, ef=ef):
            params = faiss.SearchParametersHNSW(sel=selectors[i], efSearch=max(ef, k))
            _, rows = hnsw.search(queries.vectors[i : i + 1], k, params=params)
            return rows[0][rows[0] >= 0]

        out.append(("faiss-hnsw-filtered", f"efSearch={ef}", search))
    for nprobe in NPROBE:
        if nprobe > nlist:
            break

        def search(i, nprobe=nprobe):
            params = faiss.SearchParametersIVF(sel=selectors[i], nprobe=nprobe)
            _, rows = ivf.search(queries.vectors[i : i + 1], k, params=params)
            return rows[0][rows[0] >= 0]

        out.append(("faiss-ivf-filtered", f"nprobe={nprobe}", search))
    return out


def usearch_methods(vectors: np.ndarray, queries: Queries, k: int, index=None):
    """usearch has no filtered search in Python: the usual build is one global HNSW searched
    for ``k x oversample`` neighbours, filtered to the allowed items afterwards (oversampling
    swept, ``expansion_search`` set to the count). Returns (methods, the index)."""
    from usearch.index import Index

    if index is None:
        index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=32)
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=1)
    out = []
    for oversample in OVERSAMPLE:
        count = min(k * oversample, len(vectors))

        def search(i, count=count):
            index.expansion_search = max(count, 64)
            keys = np.asarray(index.search(queries.vectors[i], count, threads=1).keys, np.int64)
            return keys[np.isin(keys, queries.rows[i], assume_unique=True)]

        out.append(("usearch-postfilter", f"oversample={oversample}", search))
    return out, index


def hnswlib_methods(vectors: np.ndarray, queries: Queries, k: int, index=None):
    """One global hnswlib index, the allowed items as its filter callback. Returns (methods, the
    index)."""
    import hnswlib

    if index is None:
        index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        index.init_index(max_elements=len(vectors), ef_construction=200, M=32, random_seed=0)
        index.add_items(vectors, np.arange(len(vectors)))
    allowed = [set(r.tolist()) for r in queries.rows]
    out = []
    for ef in EF_SEARCH:

        def search(i, ef=ef):
            index.set_ef(max(ef, k))
            return _hnswlib_search(index, queries.vectors[i : i + 1], k, allowed[i])[0]

        out.append(("hnswlib-filtered", f"ef={ef}", search))
    return out, index


def _hnswlib_search(index, vectors: np.ndarray, k: int, allowed: set) -> np.ndarray:
    """(len(vectors), k) rows, -1 where hnswlib could not fill k through the filter."""
    try:
        labels, _ = index.knn_query(vectors, k, num_threads=1, filter=allowed.__contains__)
        return np.asarray(labels, np.int64)
    except RuntimeError:  # fewer than k allowed items reached at this ef
        return np.full((len(vectors), k), -1, np.int64)


#: Alternatives from optional libraries: (library, method, builder of (methods, index)).
OPTIONAL = (
    ("usearch", "usearch-postfilter", usearch_methods),
    ("hnswlib", "hnswlib-filtered", hnswlib_methods),
)


def batched_methods(
    version, recommender, hnsw, ivf, usearch_index, queries: Queries, k: int, hnswlib_index=None
):
    """(method, parameter, batch function -> (q, k) rows) answering every query in one go, one
    thread, at the settings each method needs for recall@10 >= 0.95 on the 50k shop: crossrec
    groups the queries by shard (one matrix product per shard for the behaviour scan); the faiss
    indexes take a selector per call, so queries are grouped by their allowed set; usearch
    searches all queries at once and filters afterwards."""
    import faiss

    n = len(queries.vectors)
    by_allowed: dict[tuple[str, ...], list[int]] = {}
    for i, categories in enumerate(queries.allowed):
        by_allowed.setdefault(tuple(categories), []).append(i)
    out = crossrec_methods(version, recommender, queries, k, reranks=(25, 200), batch=True)

    def grouped(index, make_params):
        def run():
            found = np.full((n, k), -1, np.int64)
            for idx in by_allowed.values():
                rows = queries.rows[idx[0]]
                params = make_params(faiss.IDSelectorBatch(rows.astype(np.int64)))
                _, r = index.search(queries.vectors[idx], k, params=params)
                found[idx] = r
            return found

        return run

    out.append(
        (
            "faiss-hnsw-filtered",
            "efSearch=4096",
            grouped(hnsw, lambda sel: faiss.SearchParametersHNSW(sel=sel, efSearch=4096)),
        )
    )
    out.append(
        (
            "faiss-ivf-filtered",
            f"nprobe={min(512, ivf.nlist)}",
            grouped(
                ivf, lambda sel: faiss.SearchParametersIVF(sel=sel, nprobe=min(512, ivf.nlist))
            ),
        )
    )
    if usearch_index is not None:
        count = min(k * 256, len(recommender.items))

        def usearch():
            usearch_index.expansion_search = count
            keys = np.asarray(
                usearch_index.search(queries.vectors, count, threads=1).keys, np.int64
            )
            found = np.full((n, k), -1, np.int64)
            for i in range(n):
                kept = keys[i][np.isin(keys[i], queries.rows[i], assume_unique=True)][:k]
                found[i, : len(kept)] = kept
            return found

        out.append(("usearch-postfilter", "oversample=256", usearch))
    if hnswlib_index is not None:

        def hnswlib_batched():
            hnswlib_index.set_ef(32)
            found = np.full((n, k), -1, np.int64)
            for idx in by_allowed.values():
                allowed = set(queries.rows[idx[0]].tolist())
                found[idx] = _hnswlib_search(hnswlib_index, queries.vectors[idx], k, allowed)
            return found

        out.append(("hnswlib-filtered", "ef=32", hnswlib_batched))
    return out
