"""``crossrec simulate``: simulated shoppers of a synthetic shop use an engine's recommendations, so
the loop (shown -> taken -> logged -> attributed -> retrained) runs end to end with a known truth.

The shop's ground truth (``crossrec datagen`` writes it) says what each user wants. A *visit* at a
simulated time: the shopper opens an item of one of their interest categories (chosen by the
interest weights, the item by popularity; a ``view`` event), the engine answers ``Recommend`` for
them (k items, the user's arm), and the shopper looks down the list:

=================  ==============================================================================
step               probability
=================  ==============================================================================
examine position   ``1 / log2(p + 2)`` (p = 0 at the top): lower positions are seen less
want the item's    1 for the user's interest categories (the opened item's among them); for
category           complements of the opened category, the planted edge weight relative to its
                   strongest edge; half that for complements of the user's other interests;
                   ``FLOOR`` (0.02) elsewhere; a planted partner of the opened item at least
                   ``partner_take`` (the generator's chance of following a partner)
click              ``attention x`` the above ``x`` the generator's P(click | view) (item appeal,
                   interest)
cart, purchase     the generator's funnel after a click (appeal, price against the user's budget,
                   stock)
=================  ==============================================================================

Outcomes go back to the engine as events quoting the list's ``recommendation_id``, as a shop's
front end would send them. The engine runs in this process (the same :class:`engine.core.Engine`
``crossrec serve`` runs, with its impression log and live attribution on) because the simulation
keeps its own clock: visits happen at simulated times after the shop's history, which a request
over gRPC cannot carry. Visits of one round span one simulated day; a round's figures come from the
impression log with the attribution rule of :mod:`apps.online`, per arm, with intervals.

With ``--retrain-arm``, after every round but the last a model is trained from all impressions
logged so far (``crossrec train --impressions``) and swapped into that arm for the next round.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from apps.simulate_truth import ShopTruth
from crossrec.vocabulary import US_PER_DAY
from engine.retrieval.features import FEATURES

log = logging.getLogger(__name__)

_US = 1_000_000
_EXPECTED = (
    "impressions",
    "expected_clicks",
    "expected_purchases",
    "want",
    "interest",
    "appeal",
    "cross_category",
)
_CROSS = FEATURES.index("cross_category")


@dataclass(frozen=True)
class SimConfig:
    visits: int = 4_000  # per round
    rounds: int = 2
    k: int = 10
    #: Scales every click probability (a shopper's attention to the recommendation block).
    attention: float = 1.0
    seed: int = 0
    #: Share of each list from categories new to the user, as a request's
    #: ``cross_category_share``; negative: the engine's default (the ranking decides).
    cross_share: float = -1.0


def simulate(
    engine,
    truth: ShopTruth,
    config: SimConfig,
    start_us: int,
    rounds_done: int = 0,
    after_round=None,
) -> list[dict]:
    """Run ``config.rounds`` rounds of visits on ``engine`` from ``start_us``; after each round
    ``after_round(round, start_us, end_us)`` (e.g. a retrain). Returns per round the counts sent."""
    from engine.retrieval.query import Query
    from engine.state.store import StoredEvent

    rng = np.random.default_rng(config.seed)
    # As a request that leaves the split to the engine: its configured default.
    share = engine.config.retrieval.default_cross_category_share
    query = Query(k=config.k, cross_share=config.cross_share if config.cross_share >= 0 else share)
    out = []
    for r in range(rounds_done, rounds_done + config.rounds):
        round_start = start_us + r * int(US_PER_DAY)
        step = int(US_PER_DAY) // max(config.visits, 1)
        sent = {"visits": 0, "empty_lists": 0, "click": 0, "cart": 0, "purchase": 0}
        users = rng.choice(len(truth.user_ids), size=config.visits, replace=True)
        per_arm: dict[str, dict[str, float]] = {}
        started = time.perf_counter()
        for v, u in enumerate(users.tolist()):
            t = round_start + v * step
            user_id = truth.user_ids[u]
            key = engine.user_key(user_id)
            w = truth.interest_weights[u]
            leaf = int(rng.choice(truth.interests[u], p=w / w.sum()))
            pool = truth.by_leaf[leaf]
            opened = int(rng.choice(pool, p=truth.weight[pool] / truth.weight[pool].sum()))
            session = f"sim{r}-{v}"
            engine.ingest(
                [StoredEvent(f"{session}-v", key, truth.item_ids[opened], "view", t, session)]
            )
            rec = engine.recommend(user_id, [], query, now_us=t + _US)
            rows = np.array([truth.row_of[i] for i in rec.item_ids], np.int64)
            sent["visits"] += 1
            if len(rows) == 0:
                sent["empty_lists"] += 1
                continue
            c = truth.choices(u, opened, rows, config.attention)
            clicked = rng.random(len(rows)) < c.click
            carted = clicked & (rng.random(len(rows)) < c.cart)
            bought = carted & (rng.random(len(rows)) < c.purchase)
            truths = per_arm.setdefault(rec.arm, dict.fromkeys(_EXPECTED, 0.0))
            truths["impressions"] += len(rows)
            truths["expected_clicks"] += float(c.click.sum())
            truths["expected_purchases"] += float((c.click * c.cart * c.purchase).sum())
            truths["want"] += float(c.want.sum())
            truths["interest"] += float(c.interest.sum())
            truths["appeal"] += float(truth.appeal[rows].sum())
            truths["cross_category"] += int(
                (rec.result.features[:, _CROSS] > 0.5).sum()
                if rec.result.features is not None
                else 0
            )
            events = []
            for action, mask, delay_s in (
                ("click", clicked, 20),
                ("cart", carted, 80),
                ("purchase", bought, 260),
            ):
                for j in np.flatnonzero(mask).tolist():
                    item = rec.item_ids[j]
                    events.append(
                        StoredEvent(
                            f"{session}-{action}-{j}",
                            key,
                            item,
                            action,
                            t + (1 + delay_s + j) * _US,
                            session,
                            rec.recommendation_id,
                        )
                    )
                    sent[action] += 1
            if events:
                engine.ingest(events)
        sent["truth_per_arm"] = {
            arm: {
                "impressions": int(t["impressions"]),
                # Expected rates under the simulator's own probabilities (no sampling noise).
                "expected_ctr": t["expected_clicks"] / max(t["impressions"], 1),
                "expected_purchase_rate": t["expected_purchases"] / max(t["impressions"], 1),
                **{
                    f"mean_{name}": t[name] / max(t["impressions"], 1)
                    for name in ("want", "interest", "appeal", "cross_category")
                },
            }
            for arm, t in sorted(per_arm.items())
        }
        sent["seconds"] = round(time.perf_counter() - started, 1)
        sent["round"] = r
        log.info("round %d: %s", r, sent)
        out.append(sent)
        if after_round is not None:
            after_round(r, round_start, round_start + int(US_PER_DAY))
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulated shoppers of a synthetic shop use the engine's recommendations (A/B)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--shop", type=Path, required=True, help="crossrec datagen folder")
    p.add_argument("--index", type=Path, required=True, help="index version (or root) for arm a")
    p.add_argument("--model", type=Path, help="ranker model for arm a (default: retrieval-only)")
    p.add_argument("--arm-b-index", type=Path, help="index for arm b (default: arm a's)")
    p.add_argument("--arm-b-model", type=Path, help="ranker model for arm b")
    p.add_argument("--arm-b-share", type=float, default=0.5)
    p.add_argument("--no-arm-b", action="store_true", help="one arm only")
    p.add_argument("--out", type=Path, required=True, help="store, impression log, report, models")
    p.add_argument("--visits", type=int, default=SimConfig.visits, help="visits per round")
    p.add_argument("--rounds", type=int, default=SimConfig.rounds)
    p.add_argument("--k", type=int, default=SimConfig.k)
    p.add_argument("--attention", type=float, default=SimConfig.attention)
    p.add_argument("--seed", type=int, default=SimConfig.seed)
    p.add_argument(
        "--cross-share",
        type=float,
        default=SimConfig.cross_share,
        help="each request's cross_category_share (default: the engine's, the ranking decides)",
    )
    p.add_argument(
        "--retrain-arm",
        choices=("a", "b"),
        help="after each round but the last, train on the impressions so far and swap the model "
        "into this arm",
    )
    p.add_argument("--engine-config", type=Path, help="TOML of engine settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from apps.inprocess import ingest_frame
    from apps.training import ImpressionJob, train_from_impressions
    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.state.store import SQLiteEventStore
    from indexer.datagen.shop import EVENTS_FILE

    config = SimConfig(
        args.visits, args.rounds, args.k, args.attention, args.seed, args.cross_share
    )
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    store = out / "events.sqlite"
    if store.exists():
        print(f"crossrec simulate: {out} already holds a simulation; give a new --out")
        return 2
    truth = ShopTruth(args.shop)
    engine_config = EngineConfig.load(
        args.engine_config,
        {
            "arms": {
                "artifact": str(args.index),
                "model": str(args.model) if args.model else "",
                "b_artifact": "" if args.no_arm_b else str(args.arm_b_index or args.index),
                "b_model": str(args.arm_b_model) if args.arm_b_model else "",
                "b_share": args.arm_b_share,
            },
            "store": {
                "path": str(store),
                "pseudonym_key": "crossrec-simulate-throwaway-pseudonyms",
            },
            "feedback": {"impression_log": str(out / "impressions.sqlite")},
        },
    )
    engine = Engine(engine_config, SQLiteEventStore(store))
    started = time.perf_counter()
    retrained: list[dict] = []
    try:
        engine.versions.load_configured()
        history = pl.read_parquet(args.shop / EVENTS_FILE)
        print(f"ingesting the shop's {history.height:,} events ...", flush=True)
        ingest_frame(engine, history, progress=True)
        start_us = truth.end_us + 3600 * _US

        def retrain(r: int, _start: int, _end: int) -> None:
            if args.retrain_arm is None or r == config.rounds - 1:
                return
            engine.feedback.impressions.flush()
            served = engine.versions.current()[args.retrain_arm]
            report = train_from_impressions(
                ImpressionJob(
                    out / "impressions.sqlite",
                    store,
                    Path(served.version.path),
                    out / f"retrain-{r}",
                    24.0,
                    {"progress": False},
                )
            )
            engine.versions.load(str(served.version.path), report["model"], arm=args.retrain_arm)
            retrained.append(
                {
                    "after_round": r,
                    "arm": args.retrain_arm,
                    "model": report["model"],
                    "rows": report["row_count"],
                    "positives": report["positives"],
                    "held_out_auc": {
                        o: report["metrics"][o]["auc"] for o in ("click", "cart", "purchase")
                    },
                }
            )
            print(f"round {r}: retrained arm {args.retrain_arm} -> {report['model']}", flush=True)

        sent = simulate(engine, truth, config, start_us, after_round=retrain)
        engine.feedback.impressions.flush()
    finally:
        engine.close()
    from apps.simulate_figures import format_figures, plot_figures, round_figures

    figures = round_figures(out / "impressions.sqlite", store, start_us, config.rounds)
    print(format_figures(figures))
    for r in sent:
        for arm, t in r["truth_per_arm"].items():
            print(
                f"round {r['round']} arm {arm}: expected CTR {100 * t['expected_ctr']:.2f}%, "
                f"expected purchase rate {100 * t['expected_purchase_rate']:.3f}%; shown items: "
                f"want {t['mean_want']:.3f}, interest share {t['mean_interest']:.3f}, "
                f"appeal {t['mean_appeal']:+.3f}, cross-category share "
                f"{t['mean_cross_category']:.3f}"
            )
    plot_figures(figures, out / "simulation.png")
    report = {
        "config": asdict(config),
        "shop": str(args.shop),
        "arms": {
            "a": {"index": str(args.index), "model": str(args.model or "")},
            "b": None
            if args.no_arm_b
            else {
                "index": str(args.arm_b_index or args.index),
                "model": str(args.arm_b_model or ""),
                "share": args.arm_b_share,
            },
        },
        "rounds": sent,
        "retrained": retrained,
        "figures": figures.to_dicts(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "simulation.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out / 'simulation.json'} and {out / 'simulation.png'}")
    return 0
