"""Shards: which items go in which FAISS index, what kind of index, and at which search settings.

One shard per leaf category; a category above ``max_shard_items`` splits by a stable hash of the
item id into equal-ish parts, so a cross-category request searches exactly the shards of its target
categories. The index type follows the shard's size:

==================  ======================  =================================================
items               index                   why
==================  ======================  =================================================
<= ``exact_max``    ``Flat`` (exact IP)     a scan of a small shard costs microseconds
<= ``hnsw_max``     ``HNSW32,Flat``         best recall per CPU-ms at 10^4-10^5 vectors
larger              ``IVF{nlist},SQ8``      4x less memory than float32, recall ceiling ~0.99
==================  ======================  =================================================

Search settings (``efSearch`` / ``nprobe``) are tuned per shard at build time: the smallest value
whose recall@10 against exact search reaches ``recall_target`` on sampled queries, recorded with the
recall it measured. The queries are items from *other* categories, because that is what a
cross-category request sends; such queries lie far from the shard's own vectors, and graph and IVF
indexes can miss the target on them at any setting (measured at 1M items: HNSW32 recall@10 ~0.7 at
efSearch 512). A shard whose approximate index misses the target is rebuilt exact (``Flat``) and
the manifest says why: the recall target is kept, and latency pays for it.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from indexer import gpu

log = logging.getLogger(__name__)

EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
NPROBE = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)


@dataclass(frozen=True)
class ShardPolicy:
    exact_max: int = 20_000
    hnsw_max: int = 400_000
    max_shard_items: int = 1_000_000
    hnsw_m: int = 32
    ef_construction: int = 100
    recall_target: float = 0.95
    tune_queries: int = 200
    k: int = 10


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its id, the category it serves, its part number within that category,
    and the catalogue rows (global item indices) it holds."""

    shard_id: str
    category: str
    part: int
    rows: np.ndarray


@dataclass
class BuiltShard:
    spec: ShardSpec
    index: Any  # faiss.Index (an IndexIDMap whose ids are catalogue rows)
    factory: str
    params: dict
    recall_at_k: float | None
    build_s: float
    note: str = ""


def plan_shards(categories: pl.Series, item_ids: pl.Series, policy: ShardPolicy) -> list[ShardSpec]:
    """Shards in category order; ids are ``s0000``, ``s0001``, ... (file-name safe)."""
    frame = pl.DataFrame({"category": categories, "item_id": item_ids}).with_row_index("row")
    specs: list[ShardSpec] = []
    groups = frame.partition_by("category", as_dict=True)
    for (category,), group in sorted(groups.items()):
        rows = group["row"].to_numpy().astype(np.int64)
        parts = max(1, math.ceil(len(rows) / policy.max_shard_items))
        if parts == 1:
            specs.append(ShardSpec(f"s{len(specs):04d}", category, 0, rows))
            continue
        # Near-equal parts of at most max_shard_items, cut in the order of a stable hash of the id.
        key = np.array([zlib.crc32(i.encode()) for i in group["item_id"]], dtype=np.int64)
        ordered = rows[np.lexsort((rows, key))]
        for p, part in enumerate(np.array_split(ordered, parts)):
            specs.append(ShardSpec(f"s{len(specs):04d}", category, p, np.sort(part)))
    return specs


def choose_factory(n: int, dim: int, policy: ShardPolicy) -> str:
    """The faiss factory string for a shard of ``n`` vectors (see the module table)."""
    if n <= policy.exact_max:
        return "Flat"
    if n <= policy.hnsw_max:
        return f"HNSW{policy.hnsw_m},Flat"
    if n < 39 * 16:
        return "Flat"  # too few vectors to train even 16 lists; a scan is cheap at this size
    # About 4 sqrt(n) lists, a power of two, and at least 39 training points per list.
    nlist = int(2 ** min(round(math.log2(4 * math.sqrt(n))), math.floor(math.log2(n / 39))))
    return f"IVF{nlist},SQ8"


def construct(factory: str, dim: int):
    """An empty inner-product index for one of :func:`choose_factory`'s strings, made with faiss's
    constructors rather than ``faiss.index_factory``: the same index byte for byte once filled,
    and it builds where the factory does not (a CUDA build of faiss raised ``std::bad_cast`` from
    ``index_factory`` on an H200 while its constructors worked)."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if factory == "Flat":
        return faiss.IndexFlatIP(dim)
    head, _, tail = factory.partition(",")
    if head.startswith("HNSW") and tail == "Flat":
        return faiss.IndexHNSWFlat(dim, int(head[4:]), ip)
    if head.startswith("IVF") and tail == "SQ8":
        quantizer: Any = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, int(head[3:]), faiss.ScalarQuantizer.QT_8bit, ip
        )
        index.own_fields = True  # the index frees its quantizer
        quantizer.this.disown()
        return index
    raise ValueError(f"no constructor for the shard kind {factory!r}")


def build_shard(
    spec: ShardSpec, vectors: np.ndarray, policy: ShardPolicy, rng: np.random.Generator
) -> BuiltShard:
    """Build, fill and tune one shard from the rows of ``vectors`` it holds."""

    started = time.perf_counter()
    x = np.ascontiguousarray(vectors[spec.rows])
    n, dim = x.shape
    factory = choose_factory(n, dim, policy)
    wrapped, params, recall = _build(factory, x, spec.rows, vectors, policy, rng)
    note = ""
    if recall is not None and recall < policy.recall_target:
        note = (
            f"{factory} reached recall@{policy.k} {recall:.3f} at {params} "
            "on cross-category queries, "
            f"below the target {policy.recall_target}; built exact instead"
        )
        log.warning("shard %s (%d items): %s", spec.shard_id, n, note)
        factory = "Flat"
        wrapped, params, recall = _build(factory, x, spec.rows, vectors, policy, rng)
    return BuiltShard(spec, wrapped, factory, params, recall, time.perf_counter() - started, note)


def _build(
    factory: str,
    x: np.ndarray,
    rows: np.ndarray,
    vectors: np.ndarray,
    policy: ShardPolicy,
    rng: np.random.Generator,
):
    import faiss

    n, dim = x.shape
    index = construct(factory, dim)
    if factory.startswith("HNSW"):
        hnsw: Any = faiss.downcast_index(index)
        hnsw.hnsw.efConstruction = policy.ef_construction
    if not index.is_trained:
        train = x if n <= 100_000 else x[rng.choice(n, 100_000, replace=False)]
        gpu.train(index, train)
    wrapped = faiss.IndexIDMap(index)
    wrapped.add_with_ids(x, rows)
    params, recall = tune(wrapped, factory, x, rows, vectors, policy, rng)
    return wrapped, params, recall


def tune(
    index,
    factory: str,
    x: np.ndarray,
    rows: np.ndarray,
    all_vectors: np.ndarray,
    policy: ShardPolicy,
    rng: np.random.Generator,
) -> tuple[dict, float | None]:
    """Smallest efSearch / nprobe reaching the recall target; exact shards need no tuning.

    Queries are items from outside the shard (cross-category requests search a shard with vectors
    from elsewhere; all items when the shard holds the whole catalogue); the truth is exact
    inner-product search over the shard.
    """
    if factory == "Flat":
        return {}, 1.0
    k = min(policy.k, len(x))
    outside = np.setdiff1d(np.arange(len(all_vectors)), rows, assume_unique=True)
    pool = outside if len(outside) >= policy.tune_queries else np.arange(len(all_vectors))
    queries = np.ascontiguousarray(
        all_vectors[np.sort(rng.choice(pool, min(policy.tune_queries, len(pool)), replace=False))]
    )
    truth = np.argsort(-(queries @ x.T), axis=1)[:, :k]
    truth_ids = _shard_ids(index)[truth]
    name, values = ("efSearch", EF_SEARCH) if factory.startswith("HNSW") else ("nprobe", NPROBE)
    best: tuple[dict, float] | None = None
    for value in values:
        if name == "nprobe" and value > _nlist(index):
            break
        params = {name: value}
        set_search_params(index, params)
        _, found = index.search(queries, k)
        recall = _recall(found, truth_ids)
        best = (params, recall)
        if recall >= policy.recall_target:
            break
    assert best is not None
    return best[0], round(best[1], 4)


def set_search_params(index, params: dict) -> None:
    """Apply recorded search settings to a loaded shard (an IndexIDMap around the real index)."""
    import faiss

    inner: Any = faiss.downcast_index(index.index if hasattr(index, "index") else index)
    if "efSearch" in params:
        inner.hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params:
        inner.nprobe = int(params["nprobe"])


def _nlist(index) -> int:
    import faiss

    inner: Any = faiss.downcast_index(index.index)
    return int(inner.nlist)


def _shard_ids(index) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(index.id_map).astype(np.int64)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    return hits / truth.size
