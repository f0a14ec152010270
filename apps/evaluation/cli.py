"""The ``crossrec eval`` command: item-level evaluation of crossrec against baselines.

crossrec eval --catalog C --events E --out DIR [--split auto|time|holdout] [--test-days 14]
              [--holdout-share 0.2] [--users 3000] [--seed 0] [--k 10,100] [--bootstrap 1000]
              [--methods popularity,cooccurrence,content,als,ease,itemknn,crossrec]
              [--head-share 0.01] [--artifact PATH] [--no-text]
              [--cross-share S | --crossrec-shares 1.0,0.5,none] [--engine-config F.toml]
              [--target host:port] [--ranker [--ranker-users N] [--ranker-decisions D] | --model M]
              [--json F] [--png F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apps.evaluation.split import SPLITS, SplitConfig


def _share(text: str) -> tuple:
    shares = _shares(text)
    if len(shares) != 1:
        raise argparse.ArgumentTypeError("one share; use --crossrec-shares for several")
    return shares


def _shares(text: str) -> tuple:
    from apps.evaluation.methods import parse_share

    try:
        return tuple(parse_share(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def register(sub: argparse._SubParsersAction) -> None:
    from apps.evaluation.run import METHODS

    p = sub.add_parser(
        "eval",
        help=(
            "item-level evaluation of crossrec against baselines "
            "(recall, NDCG, cross-category recall)"
        ),
    )
    p.add_argument("--catalog", type=Path, help="catalogue file (.parquet, .csv, .jsonl)")
    p.add_argument("--events", type=Path, help="event file (.parquet, .csv, .jsonl)")
    p.add_argument(
        "--families",
        type=_names,
        help="instead of --catalog/--events: generate a synthetic shop of each family "
        "(default,baskets,itemitem) and evaluate on each, a table per family",
    )
    p.add_argument(
        "--items", type=int, default=20_000, help="--families: items per shop (default 20000)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("crossrec-eval"),
        help="working folder: training split, built index, split.json (default: ./crossrec-eval)",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="auto",
        help="time: hold out the last days; holdout: a share of each user's items; auto "
        "(default): time when the clock is usable (7+ days, 1 in 5 timestamps distinct), "
        "else holdout",
    )
    p.add_argument(
        "--test-days",
        type=float,
        default=14.0,
        help="test period of the time split, days (default 14)",
    )
    p.add_argument(
        "--holdout-share",
        type=float,
        default=0.2,
        help="share of each user's items held out (default 0.2)",
    )
    p.add_argument("--users", type=int, default=3_000, help="test users drawn (default 3000)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, user draw, ALS and bootstrap (default 0)",
    )
    p.add_argument(
        "--k",
        type=_ints,
        default=(10, 100),
        help="cut-offs, comma-separated (default 10,100; 10 is always added)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1_000,
        help="bootstrap resamples per interval (default 1000; 0 = none)",
    )
    p.add_argument(
        "--methods",
        type=_names,
        default=METHODS,
        help=f"comma-separated, from {','.join(METHODS)} (default all)",
    )
    p.add_argument(
        "--neighbours",
        type=int,
        default=200,
        help="co-occurrence neighbours kept per item (default 200)",
    )
    p.add_argument(
        "--head-share",
        type=float,
        default=0.01,
        help="tail view: share of items, most popular first, left out of lists and positives "
        "(default 0.01; 0 = no tail view)",
    )
    p.add_argument(
        "--artifact",
        type=Path,
        help=(
            "index version (or root) built from the training events; default: build into OUT/index"
        ),
    )
    p.add_argument(
        "--no-text",
        action="store_true",
        help="build the index without the text model (fast; attributes only)",
    )
    shares = p.add_mutually_exclusive_group()
    shares.add_argument(
        "--cross-share",
        type=_share,
        help="crossrec's cross-category share in [0, 1], 'none' (no split: the "
        "ranking alone) or 'default' (the engine's configured default; the default)",
    )
    shares.add_argument(
        "--crossrec-shares", type=_shares, help="several crossrec rows, e.g. 1.0,0.5,none"
    )
    p.add_argument("--engine-config", type=Path, help="EngineConfig TOML for the in-process engine")
    p.add_argument(
        "--target",
        help="evaluate a running engine at host:port over gRPC instead of an in-process one",
    )
    ranker = p.add_mutually_exclusive_group()
    ranker.add_argument(
        "--ranker",
        action="store_true",
        help="also evaluate crossrec with a ranker trained here on the training split "
        "(crossrec train into OUT/ranker)",
    )
    ranker.add_argument(
        "--model", type=Path, help="also evaluate crossrec with this ranker model (for --artifact)"
    )
    p.add_argument(
        "--ranker-users", type=int, help="--ranker: users replayed per decision time (20000)"
    )
    p.add_argument("--ranker-decisions", type=int, help="--ranker: decision times replayed (2)")
    p.add_argument(
        "--tune",
        action="store_true",
        help="also evaluate crossrec tuned on the training split (crossrec tune into "
        "OUT/tuned.toml)",
    )
    p.add_argument("--tune-users", type=int, help="--tune: validation users (1000)")
    p.add_argument("--json", type=Path, help="write every figure, interval, setting and count here")
    p.add_argument(
        "--png",
        type=Path,
        help="bar chart of Recall@10 and cross-category Recall@10 with intervals",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from apps.evaluation.run import EvalConfig

    shares = args.crossrec_shares or args.cross_share or ("default",)
    return EvalConfig(
        catalog=args.catalog,
        events=args.events,
        out=args.out,
        split=SplitConfig(args.split, args.test_days, args.holdout_share, args.users, args.seed),
        ks=args.k,
        methods=args.methods,
        crossrec_shares=shares,
        engine_config=args.engine_config,
        target=args.target,
        artifact=args.artifact,
        text=not args.no_text,
        bootstrap=args.bootstrap,
        neighbours=args.neighbours,
        head_share=args.head_share,
        progress=not args.no_progress,
        model=args.model,
        train_ranker=args.ranker,
        tune=args.tune,
        tune_settings={} if args.tune_users is None else {"users": args.tune_users},
        ranker_train={
            k: v
            for k, v in (("users", args.ranker_users), ("decisions", args.ranker_decisions))
            if v is not None
        },
    )


def run(args: argparse.Namespace) -> int:
    from apps.evaluation.report import write_json

    if args.families:
        return _run_families(args)
    if args.catalog is None or args.events is None:
        raise SystemExit("crossrec eval: --catalog and --events are required (or --families)")
    from apps.evaluation.run import evaluate

    result = evaluate(config_from_args(args))
    _show(result, args)
    if args.json is not None:
        write_json(result, args.json)
    return 0


def _run_families(args: argparse.Namespace) -> int:
    from apps.evaluation.families import evaluate_families
    from apps.evaluation.report import write_json
    from indexer.datagen.families import FAMILIES

    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        raise SystemExit(f"crossrec eval: unknown families {sorted(unknown)}; from {FAMILIES}")
    args.catalog = args.events = Path("-")  # replaced per family
    results = evaluate_families(config_from_args(args), args.families, args.items)
    for family, result in results.items():
        print(f"\n== family {family} ==")
        _show(result, args)
    if args.json is not None:
        write_json(results, args.json)
    return 0


def _show(result: dict, args: argparse.Namespace) -> None:
    """The split summary and method table; the PNG (single shop only)."""
    from apps.evaluation.report import method_table, paired_lines, split_summary, write_png

    print(split_summary(result))
    print()
    print(method_table(result))
    paired = paired_lines(result)
    if paired:
        print("\n" + paired)
    choice = result.get("ranker_choice")
    if choice:
        verdict = "serve it" if choice["helps"] else "keep the blend"
        print(f"\nranker, chosen on its own held-out decisions: {verdict} ({choice['why']})")
    print(
        f"\nwall time {result['wall_seconds']:.0f} s"
        + (
            f" (crossrec engine load + ingest {result['crossrec_setup_seconds']:.1f} s)"
            if result["crossrec_setup_seconds"]
            else ""
        )
    )
    if args.png is not None and not args.families:
        write_png(result, args.png)
