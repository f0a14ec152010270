"""``crossrec demo``: the end-to-end job on the embedded default shop.

Today it generates the synthetic shop and prints what was planted and what the events show; later
stages (index, ranker, engine, recommendations) join it as they land.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from indexer.datagen.cli import make_shop
from indexer.datagen.config import ShopConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on a small synthetic shop")
    p.add_argument("--out", type=Path, default=Path(".demo"), help="working folder (default %(default)s)")
    p.add_argument("--items", type=int, default=ShopConfig.items)
    p.add_argument("--seed", type=int, default=ShopConfig.seed)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("== 1/1 synthetic shop ==")
    make_shop(ShopConfig(items=args.items, seed=args.seed), args.out / "shop")
    return 0
