"""``crossrec tune``: fit the retrieval blend to a shop's own data, on a validation split of its own
events, and write the chosen settings where the engine reads them.

The defaults in code were chosen on our synthetic shop, whose popularity skew is strong; on a shop
where popularity says little (baskets, flat demand) the same weights bury the item-item sources
under best-sellers. So, per shop:

1. **Split.** Hold out a validation part of the events: a *time* split (the last ``valid_days``)
   when the clock is usable, else a per-user *holdout*
   (:func:`apps.evaluation.split.choose_split` says which and why;
   ``--split`` forces one). Positives and users follow ``crossrec eval``'s rules
   (:mod:`apps.evaluation.split`).
2. **Index.** Build an index version from the fit part only (the content vectors of ``--index``
   reused, so only the behaviour stages run): statistics that saw the validation events would leak
   them.
3. **Gather once.** Each validation user's candidates and features are gathered once
   (:meth:`engine.retrieval.recommend.Recommender.gather`, k = ``k``): the candidate set does not
   depend on the blend weights, only their order does.
4. **Search.** Coordinate ascent over the blend weights of every source (``neighbours``,
   ``popular``, ``search``, ``ease``, ``factors``) on a log grid, from the current defaults,
   ``rounds`` passes or until nothing improves; the objective is Recall@10 on the validation
   positives (NDCG@10 breaks ties). Every setting tried and its score go to the report.
5. **Write.** An engine configuration (``[retrieval.blend]``) that ``crossrec serve --config`` and
   ``crossrec eval --engine-config`` load, and the report (same name, ``.json``) beside it.
"""

from __future__ import annotations

import json
import logging
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from apps.evaluation.metrics import ndcg, recall
from apps.evaluation.split import Split, SplitConfig, split_events
from engine.config.file import to_toml
from engine.retrieval.features import SOURCES
from engine.retrieval.query import Query
from engine.retrieval.ranking import BlendRanker

log = logging.getLogger(__name__)

#: Weights tried per source (the scale is free: only ratios matter, so 1.0 anchors it).
GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class TuneConfig:
    """``split``: ``auto``, ``time`` or ``holdout``. ``valid_days``: the time split's validation
    period (default: a fifth of the span, at most 14 days). ``users``: validation users (1,000).
    ``rounds``: coordinate-ascent passes (3). ``k``: the list length tuned for (10)."""

    split: str = "auto"
    valid_days: float | None = None
    users: int = 1_000
    rounds: int = 3
    k: int = 10
    seed: int = 0
    progress: bool = True


@dataclass
class TuneReport:
    split: dict
    chosen: dict[str, float]
    defaults: dict[str, float]
    default_score: dict[str, float]
    best_score: dict[str, float]
    tried: list[dict] = field(default_factory=list)
    index: str = ""
    seconds: float = 0.0


def validation_split(
    events: pl.DataFrame, catalog: pl.DataFrame, config: TuneConfig
) -> tuple[Split, str]:
    span_days = (events["ts"].max() - events["ts"].min()).total_seconds() / 86_400
    days = config.valid_days or max(min(14.0, span_days / 5), 1.0)
    split = split_events(
        events,
        catalog,
        SplitConfig(config.split, test_days=days, users=config.users, seed=config.seed),
    )
    return split, split.config.why or "asked for"


class _Scores:
    """A ranker that returns scores computed outside (the blend of one tried setting)."""

    model_version = "tuning"

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def rank(self, features, prices, query) -> np.ndarray:
        return self.scores

    def objectives(self, features) -> dict:
        return {}


def score_setting(
    recommender, gathered: list, positives: list[set[int]], weights: dict[str, float], k: int
) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over the validation users of the lists the blend ``weights``
    gives over each user's ``gathered`` (profile, Gathered) pair."""
    blend = BlendRanker(weights)
    query = Query(k=k, cross_share=None)
    hits = np.zeros((len(gathered), k), dtype=bool)
    for u, ((profile, g), wanted) in enumerate(zip(gathered, positives)):
        scores = blend.blend(g.candidates, g.tops)
        rows = recommender.finish(profile, g, query, ranker=_Scores(scores)).rows[:k]
        hits[u, : len(rows)] = [r in wanted for r in rows.tolist()]
    n = np.array([len(w) for w in positives])
    return {
        "recall": round(float(recall(hits, n).mean()), 5),
        "ndcg": round(float(ndcg(hits, n).mean()), 5),
    }


def coordinate_ascent(score, start: dict[str, float], rounds: int, tried: list[dict]) -> dict:
    """Best weights by changing one source's weight at a time over :data:`GRID`, ``rounds``
    passes at most (fewer when a pass improves nothing); ``score(w)`` returns {"recall", "ndcg"}
    (recall first, NDCG breaks ties). Each distinct setting is scored once and appended to
    ``tried``; the all-zero setting is never tried."""
    seen: dict[tuple, dict] = {}

    def measured(weights: dict[str, float]) -> dict:
        key = tuple(sorted(weights.items()))
        if key not in seen:
            seen[key] = score(weights)
            tried.append({"weights": dict(weights), **seen[key]})
        return seen[key]

    def better(a: dict, b: dict) -> bool:
        return (a["recall"], a["ndcg"]) > (b["recall"], b["ndcg"])

    best = dict(start)
    best_score = measured(best)
    for _ in range(rounds):
        improved = False
        for source in best:
            for value in GRID:
                candidate = {**best, source: value}
                if not any(candidate.values()):
                    continue
                s = measured(candidate)
                if better(s, best_score):
                    best, best_score, improved = candidate, s, True
        if not improved:
            break
    return best


def tune(
    catalog_path: Path,
    events_path: Path,
    index: Path,
    out: Path,
    config: TuneConfig = TuneConfig(),
    engine_config: Path | None = None,
) -> TuneReport:
    """Run the steps of the module docstring; writes ``out`` (TOML) and the report beside it
    (``out`` with the suffix ``.json``)."""
    from apps.evaluation.index import prepare_index, write_train_events
    from apps.inprocess import engine_with_events
    from engine.config import EngineConfig
    from indexer.artifact import resolve_version
    from indexer.catalog import read_catalog
    from indexer.events import read_events

    started = time.perf_counter()
    catalog, events = read_catalog(catalog_path), read_events(events_path)
    split, why = validation_split(events, catalog, config)
    log.info("tune: %s split (%s)", split.config.method, why)
    work = out.parent / f".{out.stem}-work"
    fit_path, digest = write_train_events(split.train, work)
    prepared = prepare_index(
        catalog_path,
        fit_path,
        digest,
        work,
        progress=config.progress,
        reuse_content=resolve_version(index),
    )
    defaults = EngineConfig.load(engine_config).retrieval.blend.as_dict()
    cut_us = split.cut_us
    fit_events = split.train.filter(pl.col("user_id").is_in(split.test_users))
    with engine_with_events(prepared.path, fit_events, engine_config, config.progress) as engine:
        served = engine.served
        recommender = served.recommender
        code = recommender.items.row_of
        by_user = split.positives.group_by("user_id").agg("item_id")
        wanted = {u: {code[i] for i in items if i in code} for u, items in by_user.iter_rows()}
        gathered, positives = [], []
        query = Query(k=config.k, cross_share=None)
        for user in tqdm(split.test_users, desc="gather", disable=not config.progress):
            profile = engine.profile(served, user, [], cut_us)
            gathered.append((profile, recommender.gather(profile, query, cut_us)))
            positives.append(wanted.get(user, set()))
        tried: list[dict] = []

        def score(weights: dict[str, float]) -> dict[str, float]:
            return score_setting(recommender, gathered, positives, weights, config.k)

        start = {s: float(defaults.get(s, 0.0)) for s in SOURCES}
        chosen = coordinate_ascent(score, start, config.rounds, tried)
    report = TuneReport(
        split={**split.summary(), "why": why},
        chosen=chosen,
        defaults=start,
        default_score=tried[0] if tried else {},
        best_score=next(t for t in tried if t["weights"] == chosen),
        tried=tried,
        index=str(prepared.path),
        seconds=round(time.perf_counter() - started, 1),
    )
    write_settings(out, chosen, engine_config)
    out.with_suffix(".json").write_text(json.dumps(asdict(report), indent=2, default=str))
    return report


def write_settings(out: Path, weights: dict[str, float], base: Path | None = None) -> None:
    """An engine configuration TOML: ``base``'s tables (when given) with ``[retrieval.blend]``
    replaced by ``weights``."""
    data = {}
    if base is not None:
        with open(base, "rb") as fh:
            data = tomllib.load(fh)
    data.setdefault("retrieval", {})["blend"] = {s: float(w) for s, w in weights.items()}
    header = "# [retrieval.blend] chosen by crossrec tune on this shop's validation split.\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + to_toml(data))


def register(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="fit the retrieval blend to this shop's data on a validation split of its events",
    )
    p.add_argument("--catalog", type=Path, required=True, help="catalogue file")
    p.add_argument("--events", type=Path, required=True, help="event file (the training events)")
    p.add_argument(
        "--index",
        type=Path,
        required=True,
        help="an index version of this catalogue (its content vectors are reused)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("tuned.toml"),
        help="engine settings to write (default tuned.toml; the report goes beside it as .json)",
    )
    p.add_argument(
        "--split",
        choices=("auto", "time", "holdout"),
        default="auto",
        help="validation split (default auto: time when the clock is usable, else holdout)",
    )
    p.add_argument("--valid-days", type=float, help="time split: validation days")
    p.add_argument("--users", type=int, default=1_000, help="validation users (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="coordinate-ascent passes (default 3)")
    p.add_argument("--engine-config", type=Path, help="engine settings to start from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)


def _run(args) -> int:
    config = TuneConfig(
        split=args.split,
        valid_days=args.valid_days,
        users=args.users,
        rounds=args.rounds,
        seed=args.seed,
        progress=not args.no_progress,
    )
    report = tune(args.catalog, args.events, args.index, args.out, config, args.engine_config)
    print(describe(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


def describe(report: TuneReport) -> str:
    """What was split, what the defaults scored, what was chosen and what it scored."""
    s = report.split
    return "\n".join(
        [
            f"validation: {s['method']} split ({s['why']}); {s['test_users']:,} users, "
            f"{s['positives']:,} positives",
            f"defaults {_weights(report.defaults)}: Recall@10 {report.default_score['recall']:.4f}"
            f", NDCG@10 {report.default_score['ndcg']:.4f}",
            f"chosen   {_weights(report.chosen)}: Recall@10 {report.best_score['recall']:.4f}"
            f", NDCG@10 {report.best_score['ndcg']:.4f} ({len(report.tried)} settings tried, "
            f"{report.seconds:.0f} s)",
        ]
    )


def _weights(weights: dict[str, float]) -> str:
    return " ".join(f"{k} {v:g}" for k, v in weights.items())
