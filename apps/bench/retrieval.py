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
from pathlib import Path

import numpy as np

from apps.bench.retrieval_methods import (
    OPTIONAL,
    Queries,
    batched_methods,
    build_faiss,
    crossrec_methods,
    faiss_methods,
    recall,
    run_one_by_one,
)
from crossrec.stamp import stamp


def engine_queries(artifact: str, events, users: int, min_events: int, k: int, seed: int):
    """(version, :class:`Queries`) as described in the module docstring."""
    import polars as pl

    from engine.config import EngineConfig
    from engine.core import profile_of
    from engine.retrieval.query import Query
    from engine.retrieval.recommend import Recommender
    from engine.state.profile import ProfileEvent
    from indexer.artifact import open_index

    version = open_index(artifact, verify=False)
    config = EngineConfig()
    recommender = Recommender(version, config.retrieval)
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
        profile = profile_of(recommender, config.profile, history, now)
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
            found, qps = run_one_by_one(search, queries, k)
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
