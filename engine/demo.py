"""``crossrec demo``: the end-to-end job on the embedded default shop.

Stages so far: generate the synthetic shop, build an index version from it (with its events), and
show, for a few products, their nearest items in *other* categories before and after complement
adaptation, marking the ones in a planted complement category. The ranker and the engine join as
they land.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from indexer.artifact import open_index
from indexer.build import BuildConfig, build_index
from indexer.cli import summarise
from indexer.datagen.cli import make_shop
from indexer.datagen.config import ShopConfig
from indexer.datagen.shop import TRUTH_FILE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic shop")
    p.add_argument("--out", type=Path, default=Path(".demo"), help="working folder (default %(default)s)")
    p.add_argument("--items", type=int, default=ShopConfig.items)
    p.add_argument("--seed", type=int, default=ShopConfig.seed)
    p.add_argument("--examples", type=int, default=3, help="products to show neighbours for")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shop_dir, index_root = args.out / "shop", args.out / "index"
    print("== 1/2 synthetic shop ==")
    make_shop(ShopConfig(items=args.items, seed=args.seed), shop_dir)

    print("\n== 2/2 index build (text + attributes, adapted with the events) ==")
    report = build_index(shop_dir / "catalog.parquet", index_root, shop_dir / "events.parquet", BuildConfig(progress=False))
    for line in summarise(report.manifest, report.stages):
        print(line)
    print(f"written to {report.path}")
    truth = json.loads((shop_dir / TRUTH_FILE).read_text())
    for line in neighbour_examples(index_root, truth, args.examples, args.seed):
        print(line)
    return 0


def neighbour_examples(index_root: Path, truth: dict, examples: int, seed: int, k: int = 5) -> list[str]:
    """For a few popular products: nearest items outside their category, content vs adapted."""
    version = open_index(index_root)
    complements = {(e["source"], e["target"]) for e in truth["complements"]}
    complements |= {(b, a) for a, b in complements}
    items = version.items
    categories = items["category"].to_numpy()
    vectors = np.asarray(version.vectors)
    adaptation = version.manifest["adaptation"]
    content = vectors[:, : adaptation["content_dim"]] / np.sqrt(1 - adaptation["share"])
    popular = np.argsort(-items["popularity"].to_numpy())[:50]
    picks = np.random.default_rng(seed).choice(popular, examples, replace=False)
    lines = ["", "Nearest items in other categories ([+] = a planted complement category):"]
    for row in picks:
        lines.append(f"* {items['title'][int(row)]}  ({categories[row]})")
        for label, space in (("content only", content), ("adapted", vectors)):
            scores = space[row] @ space.T
            scores[categories == categories[row]] = -np.inf
            top = np.argsort(-scores)[:k]
            marks = [f"{'[+]' if (categories[row], categories[j]) in complements else '[ ]'} {categories[j].split(' > ')[-1]}" for j in top]
            hits = sum(m.startswith("[+]") for m in marks)
            lines.append(f"    {label:>12} {hits}/{k}: " + "; ".join(marks))
    return lines
