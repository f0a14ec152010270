"""``crossrec ope``: what a candidate model (or the retrieval-only order, or another cross-category
share) would have earned on the logged traffic, before it serves anyone.

Per candidate: CTR, purchase rate and revenue per 1000 impressions by every estimator of
:mod:`apps.ope.estimators` with 95% bootstrap intervals, beside the logged policy's own figures,
and the share of the candidate's item-positions (items, for the position-based ``pbm-*``
estimators of :mod:`apps.ope.pbm`) the log can support. Below ``--min-support`` a family's
propensity-based estimates are refused, with the reason: the logged lists could not have shown
what the candidate shows (turn up ``[exploration]`` or judge it online).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import polars as pl

from apps.ope.candidates import Candidate, RewardModel, candidate_lists, parse_candidate
from apps.ope.estimators import Logged, evaluate
from apps.ope.pbm import transferred

log = logging.getLogger(__name__)

#: Outcome -> (column of the attributed impressions, label, scale for printing).
REWARDS = {"ctr": ("click", "CTR %", 100.0), "purchase_rate": ("purchase", "purchase %", 100.0)}
REWARDS["rpm"] = ("revenue", "revenue/1000", 1000.0)


def run_ope(
    impressions: str | Path,
    store: str | Path,
    index: Path,
    candidates: list[Candidate],
    config,
    window_hours: float = 24.0,
    arm: str | None = None,
    resamples: int = 500,
    progress: bool = True,
    examination: str = "swaps",
) -> dict:
    """The figures of the module docstring, as a dict (JSON-serialisable). ``examination``: the
    position-based estimators' curve, ``swaps`` (measured from this log's swapped pairs) or the
    values by position, comma-separated."""
    from apps.impression_log import read_log, read_outcome_events, read_user_events
    from apps.online import attribute

    lists, shown = read_log(impressions, vectors=True)
    if arm is not None:
        lists = lists.filter(pl.col("arm") == arm)
    if lists.is_empty():
        raise ValueError(f"{impressions}: no logged lists{'' if arm is None else f' of arm {arm}'}")
    window_us = int(window_hours * 3600 * 1_000_000)
    rows = attribute(lists, shown, read_outcome_events(store), window_us)
    rows = rows.sort("ts_us", "recommendation_id", "position")  # lists in time order
    contexts = (
        rows.group_by("recommendation_id", maintain_order=True)
        .agg(pl.col("user_key").first(), pl.col("ts_us").first(), pl.len().alias("k"))
        .with_row_index("list")
    )
    rows = rows.join(contexts.select("recommendation_id", "list"), on="recommendation_id")
    list_index = rows["list"].to_numpy().astype(np.int64)
    positions = rows["position"].to_numpy()
    x = np.stack([np.frombuffer(v, np.float32) for v in rows["vector"].to_list()])
    histories = read_user_events(store, contexts["user_key"].unique().to_list())
    models = {
        "click": RewardModel(x, positions, rows["click"].to_numpy()),
        "purchase": RewardModel(x, positions, rows["purchase"].to_numpy()),
    }
    rewards = {
        name: rows[column].to_numpy().astype(np.float64) for name, (column, _, _) in REWARDS.items()
    }
    logged_model = {
        "ctr": models["click"].predict(x, positions),
        "purchase_rate": models["purchase"].predict(x, positions),
    }
    logged_model["rpm"] = logged_model["purchase_rate"] * np.nan_to_num(rows["price"].to_numpy())
    k = contexts["k"].to_numpy()
    everything = np.ones(len(rows), bool)
    report: dict = {
        "lists": contexts.height,
        "impressions": len(rows),
        "explored_lists": lists.select(
            pl.col("exploration").str.json_path_match("$.kind").fill_null("none").ne("none").sum()
        ).item(),
        "logged": {
            name: evaluate(Logged(list_index, r, np.ones(len(r)), everything, k), resamples)[
                "ips"
            ].as_dict()
            for name, r in rewards.items()
        },
        "candidates": {},
    }
    item_ids = rows["item_id"].to_list()
    theta, theta_why = _examination(examination, rows)
    report["examination"] = {
        "source": theta_why,
        "theta": None if theta is None else theta.tolist(),
    }
    ends = np.cumsum(contexts["k"].to_numpy())[:-1]
    shown = [list(part) for part in np.split(np.array(item_ids, dtype=object), ends)]
    draws = contexts.join(lists.select("recommendation_id", "exploration"), on="recommendation_id")
    draws = draws.sort("list")["exploration"].to_list()
    for candidate in candidates:
        made = candidate_lists(candidate, index, contexts, histories, config, progress)
        match = np.array(
            [
                p < len(made.item_ids[n]) and made.item_ids[n][p] == item
                for n, p, item in zip(
                    list_index.tolist(), positions.tolist(), item_ids, strict=True
                )
            ]
        )
        slots = np.array([len(ids) for ids in made.item_ids])
        figures = {}
        for name, reward in rewards.items():
            model_at = _candidate_values(name, made, models)
            model_candidate = np.array([v.sum() for v in model_at])
            figures[name] = {
                e: v.as_dict()
                for e, v in evaluate(
                    Logged(
                        list_index,
                        reward,
                        rows["propensity"].to_numpy(),
                        match,
                        slots,
                        logged_model[name],
                        model_candidate,
                    ),
                    resamples,
                ).items()
            }
            if theta is not None:
                pbm = transferred(
                    shown,
                    draws,
                    np.split(reward, ends),
                    made.item_ids,
                    theta,
                    model_at,
                    model_candidate,
                )
                for e, v in evaluate(pbm, resamples).items():
                    if e in ("ips", "snips", "dr", "support"):
                        figures[name][f"pbm-{e}"] = v.as_dict()
        report["candidates"][candidate.name] = figures
    return report


def _candidate_values(name: str, made, models: dict[str, RewardModel]) -> list[np.ndarray]:
    """Per list, the reward model's value of each item of the candidate's list at its position
    (one prediction call for all lists)."""
    features = np.concatenate(made.features)
    at = np.concatenate([np.arange(len(f)) for f in made.features])
    if name == "ctr":
        values = models["click"].predict(features, at)
    else:
        values = models["purchase"].predict(features, at)
        if name == "rpm":
            values = values * np.nan_to_num(np.concatenate(made.prices))
    return np.split(values, np.cumsum([len(f) for f in made.features])[:-1])


def _examination(spec: str, rows: pl.DataFrame) -> tuple[np.ndarray | None, str]:
    """(theta by position, where it came from); None when the log's swaps do not reach every
    position shown."""
    from apps.position_bias import measured_curve

    depth = int(rows["position"].max()) + 1
    if spec != "swaps":
        theta = np.array([float(v) for v in spec.split(",")])
        if len(theta) < depth or (theta <= 0).any():
            raise ValueError(f"--examination needs {depth} positive values, got {spec!r}")
        return theta, "given"
    curve, _, _ = measured_curve(rows)
    if curve is None:
        return None, "the log's swapped pairs do not measure every position (pbm-* not given)"
    return curve, "measured from the log's swapped pairs"


def format_report(report: dict, min_support: float) -> str:
    lines = [
        f"{report['lists']:,} logged lists ({report['explored_lists']:,} explored), "
        f"{report['impressions']:,} impressions",
        "logged policy: "
        + ", ".join(
            f"{label} {_cell(report['logged'][name], scale)}"
            for name, (_, label, scale) in REWARDS.items()
        ),
    ]
    lines.append(f"examination curve: {report['examination']['source']}")
    for name, figures in report["candidates"].items():
        ctr = figures["ctr"]
        refused = {
            family: ctr[f"{family}support"]["value"] < min_support
            for family in ("", "pbm-")
            if f"{family}support" in ctr
        }
        lines.append(
            f"\ncandidate {name}: the log supports {ctr['support']['value']:.0%} of its "
            "item-positions"
            + (f", {ctr['pbm-support']['value']:.0%} of its items" if "pbm-" in refused else "")
        )
        for family, no in refused.items():
            if no:
                lines.append(
                    f"  {family or 'item-position '}estimates refused: support under "
                    f"--min-support {min_support:.0%} - the logged lists could not have shown "
                    "most of what this candidate shows (no overlap). Explore more ([exploration] "
                    "slot_share, swap_depth) or run it as an A/B arm."
                )
        lines.append(
            f"  {'estimate':<10}" + "".join(f"{label:>28}" for _, label, _ in REWARDS.values())
        )
        for estimate in ("naive", "ips", "snips", "dm", "dr", "pbm-ips", "pbm-snips", "pbm-dr"):
            family = "pbm-" if estimate.startswith("pbm-") else ""
            if estimate not in ctr or (refused.get(family) and estimate not in ("naive", "dm")):
                continue
            cells = [_cell(figures[n][estimate], scale) for n, (_, _, scale) in REWARDS.items()]
            lines.append(f"  {estimate:<10}" + "".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)


def _cell(estimate: dict, scale: float) -> str:
    v, lo, hi = (estimate[key] * scale for key in ("value", "low", "high"))
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ope",
        help="off-policy evaluation: a candidate's figures on the logged traffic",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--impressions", required=True, help="impression log (file or postgresql:// URL)"
    )
    p.add_argument("--store", required=True, help="the event store (file or postgresql:// URL)")
    p.add_argument("--index", type=Path, required=True, help="index version the candidates run on")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="a candidate ranker model for the index (repeatable); 'none': retrieval-only",
    )
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="a candidate as model=PATH and/or share=S, or retrieval-only (repeatable)",
    )
    p.add_argument("--arm", help="only the lists of this arm (the logging policy)")
    p.add_argument("--engine-config", type=Path, help="TOML of engine settings the candidates use")
    p.add_argument("--window-hours", type=float, default=24.0, help="attribution window")
    p.add_argument(
        "--min-support",
        type=float,
        default=0.5,
        help="refuse an estimator family whose support is below this share (default 0.5)",
    )
    p.add_argument(
        "--examination",
        default="swaps",
        help="examination by position for the pbm-* estimators: 'swaps' (measured from the "
        "log's swapped pairs, the default) or values by position, comma-separated",
    )
    p.add_argument("--resamples", type=int, default=500, help="bootstrap resamples")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.config import EngineConfig
    from engine.errors import ModelMismatch
    from indexer.errors import ArtifactError

    try:
        candidates = [
            Candidate("retrieval-only") if m == "none" else Candidate(f"model={m}", m)
            for m in args.model
        ] + [parse_candidate(c) for c in args.candidate]
        if not candidates:
            raise ValueError("name at least one candidate (--model or --candidate)")
        report = run_ope(
            args.impressions,
            args.store,
            args.index,
            candidates,
            EngineConfig.load(args.engine_config),
            args.window_hours,
            args.arm,
            args.resamples,
            not args.quiet,
            args.examination,
        )
    except (ValueError, OSError, ArtifactError, ModelMismatch) as exc:
        print(f"crossrec ope: {exc}")
        return 2
    print(format_report(report, args.min_support))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report, "min_support": args.min_support}, indent=2))
    return 0
