"""``crossrec recommend-all``: the top-k of many shoppers at once, to Parquet - the lists a shop
precomputes for e-mails and home pages.

An engine in this process opens the configured store (the serving engine's SQLite file, or the
shared PostgreSQL) and the configured index and model (``[arms]``), exactly as ``crossrec serve``
would, and asks it for every shopper in ``--users`` (a Parquet or CSV with a ``user_id`` column, or
a text file of one id per line; ids, since the store keeps only pseudonyms). Each list is the one
Recommend would return for that shopper at that moment with no recent events sent (the arm the
shopper is routed to, its model, the default share unless ``--cross-share``); nothing goes to the
impression log (the lists are not shown yet). ``--threads`` requests run at once (the engine is
thread-safe, as under gRPC); with ``[gpu] shards`` or ``batch_searches`` their shard searches are
merged into one per shard (engine/retrieval/batching.py), so on a GPU many threads make large
batches.

Output, one row per (shopper, position): ``user_id``, ``position`` (0 = top), ``item_id``,
``score``, ``arm``, ``index_version``, ``model_version``; shoppers whose list is empty (no candidate
passed) have no rows and are counted in the summary.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

#: The output's columns and types.
COLUMNS = {
    "user_id": pl.String,
    "position": pl.Int32,
    "item_id": pl.String,
    "score": pl.Float64,
    "arm": pl.String,
    "index_version": pl.String,
    "model_version": pl.String,
}


def read_users(path: Path) -> list[str]:
    """Shopper ids from a Parquet/CSV ``user_id`` column or a text file of one id per line
    (blank lines skipped), in file order, duplicates dropped."""
    if path.suffix in (".parquet", ".csv"):
        frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
        if "user_id" not in frame.columns:
            raise ValueError(f"{path}: needs a user_id column (has {frame.columns})")
        ids = frame["user_id"].cast(pl.String).drop_nulls().to_list()
    else:
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(ids))


def recommend_all(engine, users: list[str], k: int, cross_share, threads: int) -> pl.DataFrame:
    """The frame of the module docstring for ``users``, from ``engine`` (loaded)."""
    from engine.retrieval.query import Query

    query = Query(k=k) if cross_share is None else Query(k=k, cross_share=cross_share)

    def one(user: str):
        return engine.recommend(user, [], query)

    columns: dict[str, list] = {name: [] for name in COLUMNS}
    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
        for user, rec in zip(users, pool.map(one, users), strict=True):
            n = len(rec.item_ids)
            columns["user_id"] += [user] * n
            columns["position"] += list(range(n))
            columns["item_id"] += list(rec.item_ids)
            columns["score"] += [float(s) for s in rec.result.scores]
            columns["arm"] += [rec.arm] * n
            columns["index_version"] += [rec.index_version] * n
            columns["model_version"] += [rec.model_version] * n
    return pl.DataFrame(columns, schema=COLUMNS)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend-all",
        help="the top-k of many shoppers at once, to Parquet (e-mail and home-page lists)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--config", type=Path, help="the engine's configuration TOML (store, arms)")
    p.add_argument("--users", type=Path, required=True, help="Parquet/CSV user_id, or one per line")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--cross-share", type=float, help="cross_category_share (default: the engine's)")
    p.add_argument("--threads", type=int, default=2, help="requests at once (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.state.store import open_store

    config = EngineConfig.load(args.config, {"feedback": {"impression_sample_rate": 0.0}})
    if not config.arms.artifact:
        raise SystemExit("crossrec recommend-all: the configuration names no [arms] artifact")
    users = read_users(args.users)
    started = time.perf_counter()
    engine = Engine(config, open_store(config.store.path, config.store.max_mb))
    try:
        engine.versions.load_configured()
        lists = recommend_all(engine, users, args.k, args.cross_share, args.threads)
    finally:
        engine.close()
    lists.write_parquet(args.out)
    seconds = time.perf_counter() - started
    empty = len(users) - lists["user_id"].n_unique()
    print(
        f"crossrec recommend-all: {len(users):,} shoppers, {lists.height:,} rows "
        f"({empty:,} empty lists) in {seconds:.1f} s -> {args.out}"
    )
    return 0
