"""``crossrec bench retrieval``: crossrec's cross-category retrieval against what a user would
build instead, on the engine's real queries, the same vectors, in the same run.

**Queries.** Users sampled from an event file (at least ``--min-events`` events) get their profile
as the engine builds it (at their last event) and its targets; each interest vector, searched in
the categories the engine's search source would search for that user (the best target
categories the user never touched), is one query: a vector and a set of allowed categories.
**Truth**: the exact inner-product top-k over the items of the allowed categories.

**Methods**, each over a sweep of its search parameter:

==========================  =================================================================
``crossrec``                the engine's search: each allowed category's behaviour block
                            scanned, the best ``rerank`` re-ranked with the full vectors,
                            merged (``rerank`` swept)
``crossrec-shards``         each allowed category's faiss shard at its recorded settings
``faiss-hnsw-filtered``     one global HNSW (M 32) over all items, allowed items passed as an
                            ``IDSelectorBatch`` (``efSearch`` swept)
``faiss-ivf-filtered``      one global IVF-Flat (``4 sqrt(n)`` lists, at most ``n / 39``), the
                            same selector
                            (``nprobe`` swept)
==========================  =================================================================

``usearch-postfilter``: one global usearch HNSW (connectivity 32) searched for ``k x
oversample`` neighbours, filtered afterwards (usearch's Python API has no filtered search;
oversampling swept), when usearch is installed (the ``bench`` extra installs it).
``hnswlib-filtered``: one global hnswlib HNSW (M 32) searched with the allowed items as its
``filter`` callback (a Python call per visited item, as hnswlib's API offers it; ``ef`` swept;
a search the filter leaves short of k results raises in hnswlib and counts as found nothing),
when hnswlib is installed (the ``bench`` extra builds it from source: no wheel here). Every method
answers one query at a time on one thread (the engine's setting: requests run in parallel, each
search on one thread), over its parameter sweep; then, at the smallest k, all queries in one batch
at the settings that reach recall@10 0.95 on the 50k shop (``batched`` in the JSON). Recall@k
against the truth; QPS; JSON (stamped with machine, library versions, parameters and commit) and
a recall-vs-QPS PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossrec.stamp import stamp

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


def engine_queries(artifact: str, events, users: int, min_events: int, k: int, seed: int):
    """(version, :class:`Queries`) as described in the module docstring."""
    import polars as pl

    from engine.config import EngineConfig
    from engine.core import profile_of
    from engine.profile import ProfileEvent
    from engine.query import Query
    from engine.recommend import Recommender
    from indexer.artifact import open_index

    version = open_index(artifact, verify=False)
    config = EngineConfig()
    recommender = Recommender(version, config.recommender_settings())
    items = recommender.items
    counts = events.group_by("user_id").len().filter(pl.col("len") >= min_events).sort("user_id")
    rng = np.random.default_rng(seed)
    chosen = counts["user_id"].to_numpy()[rng.permutation(counts.height)[:users]].tolist()
    mine = events.filter(pl.col("user_id").is_in(chosen)).sort("ts")
    ts = mine["ts"].dt.epoch("us").to_numpy()
    vectors, allowed = [], []
    by_user: dict[str, list[ProfileEvent]] = {}
    for user, item, action, t in zip(
        mine["user_id"].to_list(), mine["item_id"].to_list(), mine["action"].to_list(), ts
    ):
        by_user.setdefault(user, []).append(ProfileEvent(item, action, int(t)))
    for user in chosen:
        history = by_user.get(user, [])
        if not history:
            continue
        now = history[-1].ts_us + 1
        profile = profile_of(recommender, config, history, now)
        if profile.empty:
            continue
        g = recommender.gather(profile, Query(k=10, cross_share=None), now)
        categories = sorted({c for c, _ in recommender.search.shards_for(g.context)})
        if not categories:
            continue
        for vector in np.asarray(profile.interests):
            vectors.append(vector)
            allowed.append(categories)
    if not vectors:
        raise ValueError("no user yields a cross-category query: more users or events needed")
    q = np.ascontiguousarray(np.stack(vectors), np.float32)
    rows = [np.flatnonzero(np.isin(items.row_category, cats)) for cats in allowed]
    full = np.asarray(version.vectors, np.float32)
    truth = np.full((len(q), k), -1, np.int64)
    for i, (vector, r) in enumerate(zip(q, rows)):
        scores = full[r] @ vector
        top = np.argsort(-scores, kind="stable")[:k]
        truth[i, : len(top)] = r[top]
    return version, recommender, Queries(q, allowed, rows, truth)


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & truth[:k]| / |truth[:k]|."""
    total, hits = 0, 0
    for f, t in zip(found, truth):
        t = t[:k][t[:k] >= 0]
        total += len(t)
        hits += len(np.intersect1d(f[:k], t))
    return hits / max(total, 1)


def _run(search, queries: Queries, k: int) -> tuple[np.ndarray, float]:
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
    from engine.shard_search import LocalShards

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


def measure(
    artifact: str,
    events_file: Path,
    users: int,
    min_events: int,
    ks: tuple[int, ...] = (10, 100),
    seed: int = 0,
) -> dict:
    """Every method at every parameter, searched at each depth k of ``ks`` (recall@k against the
    exact top k). See the module docstring."""
    import faiss

    from indexer.events import read_events

    faiss.omp_set_num_threads(1)
    version, recommender, queries = engine_queries(
        artifact, read_events(events_file), users, min_events, max(ks), seed
    )
    vectors = np.ascontiguousarray(np.asarray(version.vectors, np.float32))
    hnsw, ivf, build_seconds = build_faiss(vectors, seed)
    points, optional = [], {}  # method -> its index, built at the first k
    for k in ks:
        methods = crossrec_methods(version, recommender, queries, k)
        others = faiss_methods(hnsw, ivf, queries, k)
        for library, method, make in OPTIONAL:
            if not _importable(library):
                continue
            started = time.perf_counter()
            more, optional[method] = make(vectors, queries, k, optional.get(method))
            build_seconds.setdefault(method, time.perf_counter() - started)
            others += more
        for method, parameter, search in methods + others:
            search(0)  # warm-up
            found, qps = _run(search, queries, k)
            points.append(
                {
                    "method": method,
                    "parameter": parameter,
                    "k": k,
                    "qps": round(qps, 1),
                    "recall": round(recall(found, queries.truth, k), 4),
                }
            )
    batched = []
    k = min(ks)
    for method, parameter, run in batched_methods(
        version,
        recommender,
        hnsw,
        ivf,
        optional.get("usearch-postfilter"),
        queries,
        k,
        optional.get("hnswlib-filtered"),
    ):
        started = time.perf_counter()
        found = run()
        seconds = time.perf_counter() - started
        batched.append(
            {
                "method": method,
                "parameter": parameter,
                "k": k,
                "qps": round(len(queries.vectors) / seconds, 1),
                "recall": round(recall(found, queries.truth, k), 4),
            }
        )
    return {
        "artifact": str(artifact),
        "index_version": version.version,
        "items": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "queries": len(queries.vectors),
        "users": users,
        "ks": list(ks),
        "allowed_items_mean": round(float(np.mean([len(r) for r in queries.rows])), 1),
        "build_seconds": {m: round(s, 2) for m, s in build_seconds.items()},
        "not_installed": [lib for lib, _, _ in OPTIONAL if not _importable(lib)],
        "points": points,
        "batched": batched,
        "best_at_recall_0.95": {str(k): best_at(points, 0.95, k) for k in ks},
        "stamp": stamp(extra=("faiss-cpu", "hnswlib", "usearch")),
    }


def best_at(points: list[dict], target: float, k: int) -> dict:
    """Per method, the fastest point at depth ``k`` with recall >= ``target`` (None when none
    reaches it)."""
    out: dict = {}
    for p in points:
        if p["k"] != k:
            continue
        out.setdefault(p["method"], None)
        if p["recall"] >= target and p["qps"] > (out[p["method"]] or {}).get("qps", -1):
            out[p["method"]] = p
    return out


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = result["ks"]
    fig, axes = plt.subplots(1, len(ks), figsize=(6.5 * len(ks), 4.5), squeeze=False)
    for ax, k in zip(axes[0], ks):
        at_k = [p for p in result["points"] if p["k"] == k]
        for method in dict.fromkeys(p["method"] for p in at_k):
            pts = [p for p in at_k if p["method"] == method]
            ax.plot([p["recall"] for p in pts], [p["qps"] for p in pts], marker="o", label=method)
        ax.axvline(0.95, color="grey", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k} against exact search")
        ax.set_ylabel("queries per second, one thread")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"The engine's cross-category queries: {result['items']:,} items, "
        f"{result['queries']:,} queries, ~{result['allowed_items_mean']:,.0f} allowed items each"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrieval",
        help="crossrec's retrieval against global filtered faiss indexes: recall vs QPS",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("artifact", help="index version folder or root")
    p.add_argument("--events", type=Path, required=True, help="event file the users come from")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--min-events", type=int, default=5)
    p.add_argument("--k", default="10,100", help="search depths, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-retrieval"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ks = tuple(int(k) for k in args.k.split(","))
    result = measure(args.artifact, args.events, args.users, args.min_events, ks, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "retrieval.png")
    print(
        f"{result['queries']:,} queries over {result['items']:,} items "
        f"(~{result['allowed_items_mean']:,.0f} allowed each)"
    )
    print(f"{'method':<22} {'parameter':<14} {'k':>4} {'QPS':>9} {'recall@k':>9}")
    for p in result["points"]:
        print(
            f"{p['method']:<22} {p['parameter']:<14} {p['k']:>4} {p['qps']:>9,.0f} "
            f"{p['recall']:>9.3f}"
        )
    for p in result["batched"]:
        print(
            f"batched, k={p['k']}: {p['method']:<22} {p['parameter']:<14} {p['qps']:>9,.0f} QPS, "
            f"recall {p['recall']:.3f}"
        )
    for k, best in result["best_at_recall_0.95"].items():
        for method, p in best.items():
            print(
                f"k={k}, recall >= 0.95, {method}: "
                + (f"{p['qps']:,.0f} QPS ({p['parameter']})" if p else "never reached")
            )
    print(f"wrote {args.out / 'retrieval.json'} and {args.out / 'retrieval.png'}")
    return 0
