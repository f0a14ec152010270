"""``crossrec check-complements``: do recommendations land in the planted complement categories?

On a synthetic shop (``crossrec datagen``) served by an in-process engine: for users with at least
``min_events`` events, ingest their events, ask for a purely cross-category list, and measure the
share of recommended items that fall in a planted complement category of a category the user
engaged with. Chance is the share of such categories among all the categories the user did not
touch (what picking untouched categories at random would score).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from apps.inprocess import engine_with_events
from engine.retrieval.query import Query
from indexer.datagen.shop import TRUTH_FILE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-complements",
        help="share of recommendations in planted complement categories (synthetic shops)",
    )
    p.add_argument("--artifact", required=True, help="index version folder or root")
    p.add_argument(
        "--shop",
        type=Path,
        required=True,
        help="the crossrec datagen folder the index was built from",
    )
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--min-events", type=int, default=8)
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=run)


def complement_hit_rate(
    artifact: str, shop: Path, users: int, min_events: int, k: int, seed: int = 0
) -> dict:
    truth = json.loads((shop / TRUTH_FILE).read_text())
    complements: dict[str, set[str]] = {}
    for e in truth["complements"]:
        complements.setdefault(e["source"], set()).add(e["target"])
    events = pl.read_parquet(shop / "events.parquet")
    catalog = pl.read_parquet(shop / "catalog.parquet").select("item_id", "category")
    counts = events.group_by("user_id").len().filter(pl.col("len") >= min_events).sort("user_id")
    chosen = counts["user_id"].sample(min(users, counts.height), seed=seed).to_list()
    mine = events.filter(pl.col("user_id").is_in(chosen)).join(catalog, on="item_id")
    all_categories = set(catalog["category"].unique())
    with engine_with_events(artifact, mine) as engine:
        hits, chance, seconds = [], [], []
        touched_by_user = dict(
            mine.group_by("user_id").agg(pl.col("category").unique()).iter_rows()
        )
        for user in chosen:
            touched = set(touched_by_user[user])
            planted = set().union(*(complements.get(c, set()) for c in touched)) - touched
            start = time.perf_counter()
            rec = engine.recommend(user, [], Query(k=k, cross_share=1.0))
            seconds.append(time.perf_counter() - start)
            cats = [i.category for i in rec.items]
            hits.append(np.mean([c in planted for c in cats]) if cats else 0.0)
            chance.append(len(planted) / max(len(all_categories - touched), 1))
    return {
        "users": len(chosen),
        "k": k,
        "complement_share": round(float(np.mean(hits)), 4),
        "chance": round(float(np.mean(chance)), 4),
        "lift": round(float(np.mean(hits) / np.mean(chance)), 2),
        "in_process_p50_ms": round(float(np.median(seconds) * 1e3), 3),
    }


def run(args: argparse.Namespace) -> int:
    result = complement_hit_rate(args.artifact, args.shop, args.users, args.min_events, args.k)
    print(
        f"{result['users']} users, k={result['k']}: {result['complement_share']:.1%} of "
        "cross-category recommendations are in a "
        "planted complement category of what the user engaged with; "
        f"chance {result['chance']:.1%} ({result['lift']}x)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
