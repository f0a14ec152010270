"""``crossrec datagen``: write a synthetic shop (catalogue, events, ground truth) to a folder."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from indexer.datagen.config import ShopConfig
from indexer.datagen.families import FAMILIES, family_config
from indexer.datagen.shop import (
    CATALOG_FILE,
    EVENTS_FILE,
    TRUTH_FILE,
    Shop,
    generate_shop,
    write_shop,
)
from indexer.datagen.stats import shop_stats

FORMAT_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datagen", help="generate a synthetic shop with known answers")
    p.add_argument(
        "--out", type=Path, default=Path("shop"), help="output folder (replaced if it exists)"
    )
    p.add_argument(
        "--items", type=int, default=ShopConfig.items, help="catalogue size (default %(default)s)"
    )
    p.add_argument("--users", type=int, default=None, help="number of users (default items/2)")
    p.add_argument("--weeks", type=int, default=ShopConfig.weeks, help="length of the event window")
    p.add_argument("--seed", type=int, default=ShopConfig.seed)
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="default",
        help="shop family (default: sessions, clock, popularity skew; baskets: no sessions, no "
        "clock, flat popularity; itemitem: item partners dominate, categories shuffled)",
    )
    p.add_argument(
        "--format",
        choices=sorted(FORMAT_SUFFIX),
        default="parquet",
        help="also write catalogue and events in this format (Parquet is always written)",
    )
    p.add_argument(
        "--no-validate",
        action="store_true",
        help="skip reading the files back through the validators",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = family_config(
        args.family, items=args.items, users=args.users, weeks=args.weeks, seed=args.seed
    )
    make_shop(cfg, args.out, fmt=args.format, validate=not args.no_validate, echo=print)
    return 0


def make_shop(
    cfg: ShopConfig, out: Path, fmt: str = "parquet", validate: bool = True, echo=print
) -> tuple[Shop, dict]:
    """Generate, measure, write (and optionally read back through the validators) one shop."""
    try:
        cfg.validate()
    except ValueError as exc:
        raise SystemExit(f"crossrec datagen: {exc}") from None
    started = time.perf_counter()
    shop = generate_shop(cfg)
    t = time.perf_counter()
    stats = shop_stats(
        shop.catalog.frame, shop.events, sorted(shop.complement_pairs()), shop.partner_pairs()
    )
    shop.seconds["measure"] = time.perf_counter() - t
    write_shop(shop, out, stats)
    if fmt != "parquet":
        t = time.perf_counter()
        _write_as(shop, out, fmt)
        shop.seconds[f"write_{fmt}"] = time.perf_counter() - t
    if validate:
        from indexer.catalog import read_catalog
        from indexer.events import read_events

        t = time.perf_counter()
        suffix = FORMAT_SUFFIX[fmt]
        read_catalog(out / f"catalog{suffix}")
        read_events(out / f"events{suffix}")
        shop.seconds["validate"] = time.perf_counter() - t
    shop.seconds["total"] = time.perf_counter() - started
    stats["seconds"] = {k: round(v, 2) for k, v in shop.seconds.items()}
    (out / TRUTH_FILE).write_text(
        json.dumps({**json.loads((out / TRUTH_FILE).read_text()), "measured": stats}, indent=2)
    )
    for line in describe(shop, stats, out):
        echo(line)
    return shop, stats


def _write_as(shop: Shop, out: Path, fmt: str) -> None:
    for frame, name in ((shop.catalog.frame, "catalog"), (shop.events, "events")):
        path = out / f"{name}{FORMAT_SUFFIX[fmt]}"
        if fmt == "csv":
            frame.write_csv(path)
        else:
            frame.write_ndjson(path)


def describe(shop: Shop, stats: dict, out: Path | None = None, examples: int = 5) -> list[str]:
    """A human summary of what was planted and what the events show."""
    cfg = shop.config
    f = stats["funnel"]
    lines = [
        f"Synthetic shop (seed {cfg.seed}): {stats['items']:,} items "
        f"in {stats['categories']} categories "
        f"({len({lf.department for lf in shop.leaves})} departments), {stats['users']:,} users, "
        f"{stats['events']:,} events in {stats['sessions']:,} sessions over {cfg.weeks} weeks",
        f"Planted complement graph: {stats['complement_edges']} directed edges "
        "between categories, e.g.",
    ]
    strongest = sorted(zip(shop.graph.weight, shop.graph.src, shop.graph.dst), reverse=True)[
        :examples
    ]
    lines += [
        f"  {shop.leaves[s].path}  ->  {shop.leaves[d].path}  (weight {w:.2f})"
        for w, s, d in strongest
    ]
    lines.append(
        f"Planted item partners: {len(shop.partners):,} pairs; "
        "a complement move from an item with a partner in "
        f"the target category lands on it with probability {cfg.partner_take:.0%}"
    )
    lines += [
        "What the events show (measured):",
        "  complement pairs are co-engaged in sessions "
        f"{stats['complement_lift_mean']:.1f}x as often as chance "
        f"(other pairs {stats['non_complement_lift_mean']:.1f}x); "
        "co-engagement ranks complements with "
        f"AUC {stats['complement_auc_by_coengagement']:.2f}",
        "  title similarity does not: "
        f"AUC {stats['complement_auc_by_title_similarity']:.2f} (0.5 = chance), "
        f"although {stats['titles_nearest_own_category']:.0%} of titles "
        "sit nearest their own category",
        (
            f"  planted item partners ({stats['partner_pairs']:,} pairs "
            f"on {stats['items_with_partners']:,} items) "
            f"share a session {stats['partner_lift']:.0f}x as often as chance "
            "for their categories and "
            f"popularity (random same-category stand-ins {stats['partner_control_lift']:.1f}x); "
            f"{stats['partner_pairs_seen']:.0%} of pairs are seen together at least once"
        ),
        f"  top 1% of items draw {stats['top1pct_item_share']:.0%} of events; "
        f"{stats['outside_first_category_share']:.0%} of a user's events "
        "fall outside their first category; "
        f"median basket {stats['median_basket']:.0f} items; "
        f"{stats['single_event_user_share']:.0%} of users have a single event",
        f"  funnel: {f['click_per_view']:.0%} of views clicked, "
        f"{f['cart_per_click']:.0%} of clicks carted, "
        f"{f['purchase_per_cart']:.0%} of carts purchased",
    ]
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in shop.seconds.items())
    lines.append(f"Time: {secs}")
    if out is not None:
        lines.append(
            f"Files in {out}: {CATALOG_FILE}, {EVENTS_FILE}, {TRUTH_FILE} "
            "(+ per-user and per-item truth)"
        )
    return lines
