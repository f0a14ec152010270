"""``crossrec demo``: the end-to-end job on the embedded default shop.

1. generate the synthetic shop;
2. build an index version from its catalogue and the first six weeks of events, and show for a few
   products their nearest items in *other* categories before and after complement adaptation;
3. train a ranker model for that index by replaying those six weeks (``crossrec train``) and print
   its held-out figures;
4. start the gRPC engine on a free local port with the index and the model, replay the last two
   weeks of events of some users through ``IngestEvents``, and print each user's cross-category
   recommendations next to what they did, marking planted complements; then stop the engine;
5. evaluate at the item level (``crossrec eval --ranker``): crossrec with and without the ranker
   next to the baselines a shop already has, on the shop's last two weeks.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from apps.evaluation.report import method_table, split_summary
from apps.evaluation.run import EvalConfig, evaluate
from apps.training import TrainJob, format_report, train_ranker
from clients.sdk import CrossrecClient, Event
from crossrec.vocabulary import leaf
from engine.api.server import BackgroundServer
from engine.config import ArmsConfig, EngineConfig, ServerConfig, StoreConfig
from indexer.artifact import open_index
from indexer.build import BuildConfig, build_index
from indexer.cli import summarise
from indexer.datagen.cli import make_shop
from indexer.datagen.config import ShopConfig
from indexer.datagen.shop import TRUTH_FILE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic shop")
    p.add_argument(
        "--out", type=Path, default=Path(".demo"), help="working folder (default %(default)s)"
    )
    p.add_argument("--items", type=int, default=ShopConfig.items)
    p.add_argument("--seed", type=int, default=ShopConfig.seed)
    p.add_argument("--examples", type=int, default=3, help="products and users to show")
    p.add_argument("--users", type=int, default=200, help="users whose live events are replayed")
    p.add_argument(
        "--ranker-users", type=int, default=3_000, help="users replayed per decision (ranker)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shop_dir, index_root = args.out / "shop", args.out / "index"
    print("== 1/5 synthetic shop ==")
    make_shop(ShopConfig(items=args.items, seed=args.seed), shop_dir)

    print("\n== 2/5 index build (text + attributes, adapted with the first 6 weeks of events) ==")
    events = pl.read_parquet(shop_dir / "events.parquet")
    cut = events["ts"].min() + timedelta(weeks=6)
    history, live = events.filter(pl.col("ts") < cut), events.filter(pl.col("ts") >= cut)
    history.write_parquet(args.out / "history.parquet")
    report = build_index(
        shop_dir / "catalog.parquet",
        index_root,
        args.out / "history.parquet",
        BuildConfig(progress=False),
    )
    for line in summarise(report.manifest, report.stages):
        print(line)
    print(f"written to {report.path}")
    truth = json.loads((shop_dir / TRUTH_FILE).read_text())
    for line in neighbour_examples(index_root, truth, args.examples, args.seed):
        print(line)

    print("\n== 3/5 ranker: replay the six weeks through the engine, train LightGBM heads ==")
    trained = train_ranker(
        TrainJob(
            shop_dir / "catalog.parquet",
            args.out / "history.parquet",
            index_root,
            args.out / "ranker",
            users=args.ranker_users,
            train={"progress": False},
            progress=False,
        )
    )
    print(format_report(trained))

    print("\n== 4/5 engine: live events in, cross-category recommendations out ==")
    store = args.out / "events.sqlite"
    store.unlink(missing_ok=True)
    config = EngineConfig(
        arms=ArmsConfig(artifact=str(index_root), model=trained["model"]),
        server=ServerConfig(port=0),
        store=StoreConfig(path=str(store), pseudonym_key="crossrec-demo-throwaway-pseudonym-key"),
    )
    catalog = pl.read_parquet(shop_dir / "catalog.parquet").select("item_id", "title", "category")
    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=10) as client:
        print(f"engine on {server.target}, index {server.engine.served.version.version}")
        users = (
            live.group_by("user_id")
            .len()
            .filter(pl.col("len") >= 10)
            .sort("user_id")["user_id"][: args.users]
        )
        replay = live.filter(pl.col("user_id").is_in(users.implode()))
        # Live events arrive as they happen: the replayed weeks end now (the engine asks at its
        # clock, and the ranker's recency features expect the ages it was trained on).
        replay = replay.with_columns(pl.col("ts") + (datetime.now(UTC) - replay["ts"].max()))
        started = time.perf_counter()
        stored = 0
        for chunk in replay.iter_slices(500):
            stored += client.ingest(
                Event(r["user_id"], r["item_id"], r["action"], r["ts"], r["session_id"] or "")
                for r in chunk.iter_rows(named=True)
            ).accepted
        print(
            f"replayed {stored:,} live events of {len(users)} users through IngestEvents "
            f"in {time.perf_counter() - started:.2f}s"
        )
        for line in recommendation_examples(client, replay, catalog, truth, users[: args.examples]):
            print(line)
        s = client.status()
        print(
            f"\nengine status: index {s.index_version}, model {s.model_version}, "
            f"{s.item_count:,} items, "
            f"{s.user_count:,} users and {s.event_count:,} events stored"
        )
    print("engine stopped")

    print("\n== 5/5 item-level evaluation: the last 2 weeks, against the baselines ==")
    result = evaluate(
        EvalConfig(
            catalog=shop_dir / "catalog.parquet",
            events=shop_dir / "events.parquet",
            out=args.out / "eval",
            ks=(10, 20),
            crossrec_shares=("default", 0.4),
            bootstrap=200,
            train_ranker=True,
            ranker_train={"users": args.ranker_users, "train": {"progress": False}},
            progress=False,
        )
    )
    print(split_summary(result))
    print()
    print(method_table(result))
    print(f"(the same as: crossrec eval --catalog {shop_dir / 'catalog.parquet'} --events ")
    print(f"   {shop_dir / 'events.parquet'} --out {args.out / 'eval'} --k 10,20 --ranker ...)")
    return 0


def recommendation_examples(
    client: CrossrecClient, replay: pl.DataFrame, catalog: pl.DataFrame, truth: dict, users
) -> list[str]:
    complements: dict[str, set[str]] = {}
    for e in truth["complements"]:
        complements.setdefault(e["source"], set()).add(e["target"])
    lines = []
    for user in users:
        did = replay.filter(pl.col("user_id") == user).join(catalog, on="item_id")
        strongest = (
            did.sort("ts")
            .group_by("category", maintain_order=True)
            .agg(pl.col("action").cast(pl.String).unique())
        )
        touched = set(did["category"])
        planted = set().union(*(complements.get(c, set()) for c in touched)) - touched
        lines.append(
            f"\nuser {user} did: "
            + "; ".join(f"{leaf(c)} ({', '.join(sorted(a))})" for c, a in strongest.iter_rows())
        )
        rec = client.recommend(user, k=6, cross_category_share=1.0, explain=True)
        hits = sum(i.category in planted for i in rec.items)
        lines.append(
            f"  recommended ({hits}/{len(rec.items)} in a planted complement "
            "of what they did, [+]):"
        )
        titles = dict(catalog.select("item_id", "title").iter_rows())
        for i in rec.items:
            mark = "[+]" if i.category in planted else "[ ]"
            p = i.objective_scores
            odds = f"P(click) {p['click']:.3f}" if "click" in p else ""
            lines.append(
                f"   {mark} {titles[i.item_id]:<45} {leaf(i.category):<20} {odds}  "
                f"because: {leaf(i.interest_label)}"
            )
    return lines


def neighbour_examples(
    index_root: Path, truth: dict, examples: int, seed: int, k: int = 5
) -> list[str]:
    """For a few popular products: nearest items outside their category, content vs adapted."""
    version = open_index(index_root)
    complements = {(e["source"], e["target"]) for e in truth["complements"]}
    complements |= {(b, a) for a, b in complements}
    items = version.items
    categories = items["category"].to_numpy()
    vectors = np.asarray(version.vectors)
    content = version.content_vectors()
    popular = np.argsort(-items["popularity"].to_numpy())[:50]
    picks = np.random.default_rng(seed).choice(popular, examples, replace=False)
    lines = ["", "Nearest items in other categories ([+] = a planted complement category):"]
    for row in picks:
        lines.append(f"* {items['title'][int(row)]}  ({categories[row]})")
        for label, space in (("content only", content), ("adapted", vectors)):
            scores = space[row] @ space.T
            scores[categories == categories[row]] = -np.inf
            top = np.argsort(-scores)[:k]
            marks = [
                f"{'[+]' if (categories[row], categories[j]) in complements else '[ ]'} "
                f"{categories[j].split(' > ')[-1]}"
                for j in top
            ]
            hits = sum(m.startswith("[+]") for m in marks)
            lines.append(f"    {label:>12} {hits}/{k}: " + "; ".join(marks))
    return lines
