"""Indexer commands of the ``crossrec`` CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from indexer.adapt import AdaptConfig
from indexer.catalog import read_catalog
from indexer.ease import EaseConfig
from indexer.errors import DataValidationError
from indexer.events import read_events, unknown_item_problems
from indexer.factors import FactorsConfig
from indexer.neighbours import NeighbourConfig
from indexer.privacy.config import PrivacyConfig
from indexer.shards import ShardPolicy


def register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check catalogue and event files against the data contracts"
    )
    p.add_argument("--catalog", type=Path, help="catalogue file (.parquet, .csv, .jsonl)")
    p.add_argument("--events", type=Path, help="event file (.parquet, .csv, .jsonl)")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every given file is valid (and, with both, every event names a catalogue
    item)."""
    if args.catalog is None and args.events is None:
        raise SystemExit("crossrec validate: give --catalog and/or --events")
    catalog = events = None
    if args.catalog is not None:
        catalog = read_catalog(args.catalog)
        n_categories = catalog["category"].n_unique()
        print(f"{args.catalog}: ok, {catalog.height:,} items in {n_categories:,} categories")
    if args.events is not None:
        events = read_events(args.events)
        span = f"{events['ts'].min()!s} .. {events['ts'].max()!s}"
        print(
            f"{args.events}: ok, {events.height:,} events "
            f"from {events['user_id'].n_unique():,} users, {span}"
        )
    if catalog is not None and events is not None:
        problems = unknown_item_problems(events, catalog)
        if problems:
            raise DataValidationError(args.events, problems)
        print("every event names a catalogue item")
    return 0


def register_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build and inspect index versions")
    index_sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)

    b = index_sub.add_parser("build", help="build an index version from a catalogue (and events)")
    b.add_argument(
        "--catalog", type=Path, required=True, help="catalogue file (.parquet, .csv, .jsonl)"
    )
    b.add_argument(
        "--out", type=Path, required=True, help="index root folder; the version goes below it"
    )
    b.add_argument(
        "--events",
        type=Path,
        help="event file: enables transitions, popularity and complement adaptation",
    )
    b.add_argument("--version", help="version name (default: a UTC timestamp)")
    b.add_argument(
        "--text-model",
        help="sentence-transformers model folder (default: packaged all-MiniLM-L6-v2)",
    )
    b.add_argument(
        "--text-fields",
        default="title",
        help="catalogue columns to embed, comma-separated (default: title)",
    )
    b.add_argument(
        "--no-text", action="store_true", help="skip the text encoder (use with --vectors)"
    )
    b.add_argument(
        "--image-model", help="CLIP / image model folder; encodes the catalogue's image column"
    )
    b.add_argument("--vectors", help="Parquet of (item_id, vector) to use as given")
    b.add_argument("--vector-column", help="catalogue column of precomputed vectors")
    b.add_argument(
        "--exact-max",
        type=int,
        default=ShardPolicy.exact_max,
        help="largest shard searched exactly",
    )
    b.add_argument(
        "--hnsw-max",
        type=int,
        default=ShardPolicy.hnsw_max,
        help="largest HNSW shard; larger ones use IVF-SQ8",
    )
    b.add_argument(
        "--max-shard-items",
        type=int,
        default=ShardPolicy.max_shard_items,
        help="split larger categories",
    )
    b.add_argument("--recall-target", type=float, default=ShardPolicy.recall_target)
    b.add_argument("--adapt-epochs", type=int, default=AdaptConfig.epochs)
    b.add_argument(
        "--neighbours",
        type=int,
        default=NeighbourConfig.top_n,
        metavar="N",
        help=f"co-engagement neighbours kept per item (default {NeighbourConfig.top_n}; 0: none)",
    )
    b.add_argument(
        "--ease-items",
        type=int,
        default=EaseConfig.max_items,
        metavar="N",
        help="learned (EASE) item-item neighbours over the N items with most users (default "
        f"{EaseConfig.max_items}; memory ~ 8 N^2 bytes; 0: none)",
    )
    b.add_argument(
        "--ease-lambda",
        type=float,
        help="EASE ridge strength (default: chosen on a validation split of the events)",
    )
    b.add_argument(
        "--factor-items",
        type=int,
        default=FactorsConfig.max_items,
        metavar="N",
        help="low-rank (ALS fold-in) item-item neighbours over the N items with most users "
        f"(default {FactorsConfig.max_items}; time ~ N^2; 0: none)",
    )
    b.add_argument(
        "--json", type=Path, help="also write the build report (manifest + stage times) here"
    )
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument(
        "--reuse-content",
        metavar="VERSION",
        help="reuse this version's content vectors (same catalogue) instead of encoding again",
    )
    d = b.add_argument_group(
        "differential privacy (docs/privacy.md)",
        "user-level DP for every behaviour statistic; no adaptation, EASE or factors are built",
    )
    d.add_argument("--dp-epsilon", type=float, help="the whole build's epsilon per shopper")
    d.add_argument("--dp-delta", type=float, default=PrivacyConfig.delta)
    d.add_argument(
        "--dp-max-items",
        type=int,
        default=PrivacyConfig.max_items_per_user,
        help="items a shopper counts on, the most recently touched "
        f"(default {PrivacyConfig.max_items_per_user})",
    )
    d.add_argument(
        "--dp-max-events",
        type=int,
        default=PrivacyConfig.max_events_per_item,
        help="events a shopper counts per item, the most recent "
        f"(default {PrivacyConfig.max_events_per_item})",
    )
    d.add_argument("--dp-max-transitions", type=int, default=PrivacyConfig.max_transitions_per_user)
    d.add_argument(
        "--dp-pair-items",
        type=int,
        default=PrivacyConfig.max_pair_items,
        help="a shopper's most recent items that form co-engagement pairs "
        f"(default {PrivacyConfig.max_pair_items})",
    )
    d.add_argument(
        "--dp-popularity-clip",
        type=float,
        help="L2 norm each shopper's popularity weights are scaled down to "
        "(default: the private median of the shoppers' norms, 2%% of the budget)",
    )
    d.add_argument(
        "--dp-seed",
        type=int,
        help="draw the noise from a seeded generator (a repeatable build, for tests and audits); "
        "default: OpenDP's secure sampler",
    )
    b.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="encode and build shards on Ray (crossrec[ray]): the cluster at ADDRESS, or without "
        "one a local Ray started for the build",
    )
    b.add_argument(
        "--ray-encode-actors",
        type=int,
        default=0,
        metavar="N",
        help="encoder actors on Ray (default: one per GPU of the cluster, else one per CPU)",
    )
    b.set_defaults(func=run_build)

    i = index_sub.add_parser("inspect", help="describe an index version (a root uses its LATEST)")
    i.add_argument("path", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest")
    i.add_argument(
        "--verify", action="store_true", help="also check every file's sha256 and load every shard"
    )
    i.set_defaults(func=run_inspect)

    e = index_sub.add_parser(
        "bench", help="recall@10 vs exact search and search latency, per shard"
    )
    e.add_argument("path", type=Path)
    e.add_argument("--queries", type=int, default=500)
    e.add_argument("--json", type=Path, help="write per-shard results and the summary here")
    e.set_defaults(func=run_bench)


def run_build(args: argparse.Namespace) -> int:
    from indexer.build import BuildConfig, build_index
    from indexer.ray_build import RayOptions

    config = BuildConfig(
        text=not args.no_text,
        text_model=args.text_model,
        text_fields=tuple(f.strip() for f in args.text_fields.split(",") if f.strip()),
        image_model=args.image_model,
        vectors=args.vectors,
        vector_column=args.vector_column,
        adapt=AdaptConfig(epochs=args.adapt_epochs),
        neighbours=NeighbourConfig(top_n=args.neighbours),
        ease=EaseConfig(
            lambda_=args.ease_lambda,
            max_items=max(args.ease_items, 1),
            top_n=EaseConfig.top_n if args.ease_items > 0 else 0,
        ),
        factors=FactorsConfig(
            max_items=max(args.factor_items, 1),
            top_n=FactorsConfig.top_n if args.factor_items > 0 else 0,
        ),
        policy=ShardPolicy(
            exact_max=args.exact_max,
            hnsw_max=args.hnsw_max,
            max_shard_items=args.max_shard_items,
            recall_target=args.recall_target,
        ),
        version=args.version,
        progress=not args.quiet,
        reuse_content=args.reuse_content,
        privacy=_privacy(args),
        ray=None
        if args.ray is None
        else RayOptions(address=args.ray, encode_actors=args.ray_encode_actors),
    )
    report = build_index(args.catalog, args.out, args.events, config)
    for line in summarise(report.manifest, report.stages):
        print(line)
    print(f"written to {report.path}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({**report.manifest, "stages": report.stages}, indent=2, default=str)
        )
    return 0


def _privacy(args: argparse.Namespace) -> PrivacyConfig | None:
    if args.dp_epsilon is None:
        return None
    if args.events is None:
        raise SystemExit("crossrec index build: --dp-epsilon needs --events (nothing to protect)")
    try:
        return PrivacyConfig(
            epsilon=args.dp_epsilon,
            delta=args.dp_delta,
            max_items_per_user=args.dp_max_items,
            max_events_per_item=args.dp_max_events,
            max_transitions_per_user=args.dp_max_transitions,
            max_pair_items=args.dp_pair_items,
            popularity_clip=args.dp_popularity_clip,
            seed=args.dp_seed,
        )
    except ValueError as exc:
        raise SystemExit(f"crossrec index build: {exc}") from exc


def run_inspect(args: argparse.Namespace) -> int:
    from indexer.artifact import open_index, read_manifest

    if args.verify:
        version = open_index(args.path, verify=True)
        path, manifest = version.path, version.manifest
    else:
        path, manifest = read_manifest(args.path)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"{path}")
    for line in summarise(manifest, None):
        print(line)
    if args.verify:
        print("verified: every file matches its sha256; shards load with the recorded shapes")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Per shard type: recall@10 (fresh queries, recorded settings) and latency; JSON on request."""
    import numpy as np

    from indexer.artifact import open_index
    from indexer.evaluation import sample_queries, shard_recall

    version = open_index(args.path, verify=False)
    results = shard_recall(version, sample_queries(version, args.queries))
    summary = {}
    for kind in sorted({r["factory"].split(",")[0].rstrip("0123456789") for r in results}):
        group = [r for r in results if r["factory"].split(",")[0].rstrip("0123456789") == kind]
        weights = np.array([r["count"] for r in group], dtype=float)
        summary[kind] = {
            "shards": len(group),
            "items": int(weights.sum()),
            "recall_at_10_mean": float(
                np.average([r["recall_at_k"] for r in group], weights=weights)
            ),
            "recall_at_10_min": float(min(r["recall_at_k"] for r in group)),
            "single_query_p50_ms_mean": float(np.mean([r["single_query_p50_ms"] for r in group])),
        }
        s = summary[kind]
        print(
            f"{kind}: {s['shards']} shards, {s['items']:,} items: "
            f"recall@10 {s['recall_at_10_mean']:.3f} (min {s['recall_at_10_min']:.3f}), "
            f"one query {s['single_query_p50_ms_mean']:.3f} ms per shard (p50)"
        )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "version": version.version,
                    "queries": args.queries,
                    "summary": summary,
                    "shards": results,
                },
                indent=2,
            )
        )
    return 0


def summarise(manifest: dict, stages: dict | None) -> list[str]:
    """Human summary of an index version (:meth:`indexer.manifest.IndexManifest.describe`)."""
    from indexer.manifest import IndexManifest

    return IndexManifest.from_json(manifest).describe(stages)
