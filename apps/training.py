"""``crossrec train``: a ranker model for a serving index version, from replayed history.

Steps (what each writes under ``OUT``):

1. **Decision times.** The serving index knows events up to ``end`` (its recorded window). The
   latest decision is ``end - label_days`` (its labels fill the last ``label_days``), then one every
   ``step_days`` before it, ``decisions`` in all.
2. **Replay indexes** (``replay/<decision>/index``). Rows must come from statistics that know only
   the past, and as fresh as the serving version's are when it answers, so each decision time gets
   an index version built from the events before it, reusing the serving version's content
   vectors (no text encoding; the behaviour stages only). Rebuilt only when those events change.
   (One version for every decision, built before the earliest, left the later decisions with
   statistics days stale; a model trained on them ranked worse than the blend when serving.)
3. **Rows** (``rows/``, Parquet parts): :func:`engine.replay.replay_parts` at every decision time,
   labelled by the events up to ``end`` (never later: they would belong to a period the serving
   index has not seen either), written a few thousand decisions at a time
   (:class:`ranker.row_files.RowWriter`), so the replay holds one part, not every row.
4. **Model** (``models/<version>``, ``models/LATEST``): :func:`ranker.train.train_model`; the model
   names the serving index version it was trained for (the engine refuses any other pairing), the
   replay index and the decision times.

**Without a usable clock** (``--mode holdout``, or ``auto`` on a log whose clock says nothing: the
rule of ``crossrec eval --split auto``): a seeded ``holdout_share`` of each user's items is hidden,
one replay index is built from the visible events only, and each user's candidates (gathered from
the visible history) are labelled by what they did with the hidden items
(:func:`engine.replay.replay_holdout`). The report says which mode ran and why.

**From logged impressions** (``--impressions LOG --store STORE``, no replay): the rows are what the
engine showed with that index version, each item with the feature row it was ranked with and its
position, labelled by the events that quote the list (:func:`apps.online.exposure_rows`): items
shown and not taken are the negatives, and the model learns how much of a click the position
explains, which serving then neutralises (:mod:`engine.retrieval.ranking`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from apps.training_rows import (  # noqa: F401  (decision_times: part of this job's interface)
    MODES,
    decision_times,
    holdout_rows,
    time_rows,
    training_mode,
)
from crossrec.vocabulary import US_PER_DAY

log = logging.getLogger(__name__)

ROWS_DIR = "rows"
#: ``--position auto`` weighs clicks by the measured examination only when every adjacent pair
#: was swapped in at least this many lists (else the position is a feature).
MIN_SWAPPED_PER_PAIR = 1_000
IMPRESSION_ROWS_FILE = "rows.parquet"
MODELS_DIR = "models"


@dataclass(frozen=True)
class TrainJob:
    """``index``: the serving index version (folder or root with LATEST) the model is for.
    ``events``: the behaviour log (its events after the index's window are ignored)."""

    catalog: Path
    events: Path
    index: Path
    out: Path
    label_days: float = 14.0
    decisions: int = 2
    step_days: float = 7.0
    users: int = 20_000
    engine_config: Path | None = None
    train: dict = field(default_factory=dict)  # TrainConfig fields
    progress: bool = True
    #: ``time`` (replay at decision times), ``holdout`` (hide part of each user's items; for logs
    #: without a usable clock) or ``auto`` (time when the clock is usable).
    mode: str = "auto"
    holdout_share: float = 0.2
    seed: int = 0


def train_ranker(job: TrainJob) -> dict:
    """Run the job; returns a report (paths, mode, decision times, split counts, metrics,
    seconds)."""
    from engine.config import EngineConfig
    from engine.retrieval.features import FEATURES
    from indexer.artifact import read_index_manifest
    from indexer.events import read_events
    from ranker.config import TrainConfig
    from ranker.row_files import RowWriter, read_rows
    from ranker.train import train_model

    started = time.perf_counter()
    # The manifest is all that is needed of the serving version here (opening it loads and
    # verifies every shard; the replay builds verify it when they reuse its content vectors).
    serving_path, manifest = read_index_manifest(job.index)
    config = EngineConfig.load(job.engine_config)
    events = read_events(job.events)
    mode, why = training_mode(job.mode, events)
    log.info("train: %s rows (%s)", mode, why)
    rows_of = holdout_rows if mode == "holdout" else time_rows
    with RowWriter(job.out / ROWS_DIR, FEATURES) as writer:
        meta, index_seconds, replay_seconds = rows_of(
            job, events, serving_path, manifest, config, writer
        )
        meta = {"mode": mode, "mode_why": why, "index_version": serving_path.name, **meta}
        rows_path = writer.close(meta)
    del events  # the event log is not needed past the replay
    # The features stay in the parts; each training step reads the rows it needs.
    rows = read_rows(rows_path, features_in_memory=False)
    report = train_model(rows, job.out / MODELS_DIR, TrainConfig(**job.train), meta=meta)
    return {
        "model": str(report.path),
        "rows": str(rows_path),
        "row_count": rows.height,
        "decisions": writer.decisions,
        **meta,
        "replay_index_seconds": round(index_seconds, 1),
        "replay_seconds": round(replay_seconds, 1),
        "metrics": report.metrics,
        "train_seconds": round(report.seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "job": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(job).items()},
    }


@dataclass(frozen=True)
class ImpressionJob:
    """Train for ``index`` from the impression log ``impressions`` and the event store ``store``
    that holds the outcomes; an event counts within ``window_hours`` of its list."""

    impressions: str | Path
    store: str | Path
    index: Path
    out: Path
    window_hours: float = 24.0
    train: dict = field(default_factory=dict)
    #: How the position is learnt: ``weights`` (clicks weighted by inverse examination, measured
    #: from the log's swapped pairs; the click head then pointwise), ``feature`` (the position
    #: as a feature, neutralised when serving) or ``auto`` (weights when the swaps measure
    #: every position shown).
    position: str = "auto"


def train_from_impressions(job: ImpressionJob) -> dict:
    """Run the job; returns a report as :func:`train_ranker` does."""
    from apps.impression_log import read_log, read_outcome_events
    from apps.online import attribute, exposure_rows
    from indexer.artifact import read_manifest
    from ranker.config import TrainConfig
    from ranker.row_files import read_rows, write_rows
    from ranker.train import train_model

    started = time.perf_counter()
    serving_path, _ = read_manifest(job.index)
    lists, shown = read_log(job.impressions, vectors=True)
    attributed = attribute(
        lists, shown, read_outcome_events(job.store), int(job.window_hours * US_PER_DAY / 24)
    )
    examination, position_why = _examination(attributed, job.position)
    rows = exposure_rows(attributed, serving_path.name, examination)
    settings = dict(job.train)
    if examination is not None:
        settings.setdefault("first_objective", "binary")
    times = rows.keys["decision_ts_us"]
    meta = {
        "index_version": serving_path.name,
        "source": "impressions",
        "impressions": str(job.impressions),
        "attribution_window_hours": job.window_hours,
        "decision_times": [_iso(times.min()), _iso(times.max())],
        "label_days": job.window_hours / 24,
        "position": position_why,
        "examination": None if examination is None else examination.tolist(),
    }
    rows_path = job.out / IMPRESSION_ROWS_FILE
    write_rows(rows_path, rows.frame, rows.features, meta)
    report = train_model(
        read_rows(rows_path), job.out / MODELS_DIR, TrainConfig(**settings), meta=meta
    )
    return {
        "model": str(report.path),
        "rows": str(rows_path),
        "row_count": rows.height,
        "decisions": rows.keys["decision_id"].n_unique(),
        **meta,
        "replay_index_versions": [],
        "replay_seconds": 0.0,
        "positives": {o: int(rows.keys[o].sum()) for o in ("click", "cart", "purchase")},
        "metrics": report.metrics,
        "train_seconds": round(report.seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _examination(attributed, asked: str):
    """(examination by position or None, what the position is learnt as and why)."""
    from apps.position_bias import measured_curve

    if asked not in ("auto", "weights", "feature"):
        raise ValueError(f"position must be auto, weights or feature, got {asked!r}")
    if asked == "feature":
        return None, "feature (asked for)"
    curve, swapped, fewest = measured_curve(attributed)
    # auto weighs only by a curve measured well: a few hundred swapped lists per pair give a
    # curve noisy enough to make a retrained model worse than the position feature (simulator:
    # 258 swapped lists over 9 pairs, CTR 18.3% -> 16.7% after the second retrain).
    if curve is not None and (asked == "weights" or fewest >= MIN_SWAPPED_PER_PAIR):
        return curve, f"weights (examination measured from {swapped:,} swapped lists)"
    if asked == "weights":
        raise ValueError(
            f"the log's {swapped:,} swapped lists do not measure the examination of every "
            "position it shows: set [exploration] swap_share and swap_depth, or train with the "
            "position as a feature"
        )
    return None, (
        f"feature (the log's {swapped:,} swapped lists measure the examination too loosely: "
        f"{fewest:,} for the least swapped pair, auto weighs from {MIN_SWAPPED_PER_PAIR:,})"
    )


def format_report(report: dict) -> str:
    """The model's held-out figures as a table: per objective, NDCG@10 of the model and of the
    retrieval-only blend, AUC, and the largest calibration error over deciles."""
    from ranker.report import summary_lines

    source = (
        f"impressions {report['impressions']}; position as {report['position']}"
        if report.get("source") == "impressions"
        else f"replay indexes {', '.join(report['replay_index_versions'])}"
    )
    head = [
        f"model {report['model']}",
        f"  for index {report['index_version']}; {source}",
        f"  decisions at {', '.join(report['decision_times'])} ({report['label_days']} d labels)"
        if report.get("decision_times")
        else f"  {report.get('mode', 'holdout')} rows ({report.get('mode_why', '')}): "
        f"{report.get('holdout_share', 0):.0%} of each user's items hidden",
        f"  {report['decisions']:,} decisions, {report['row_count']:,} rows; replay "
        f"{report['replay_seconds']} s, training {report['train_seconds']} s",
    ]
    from engine.config import RankerConfig
    from ranker.metrics import helps

    verdict, why = helps(report["metrics"], RankerConfig().objective_weights())
    judged = f"  against the blend: {why} - {'serve it' if verdict else 'keep the blend'}"
    return "\n".join(head + summary_lines(report["metrics"]) + [judged])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a ranker model for an index version by replaying history",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--catalog", type=Path, help="catalogue (replay)")
    p.add_argument("--events", type=Path, help="behaviour log (replay)")
    p.add_argument(
        "--impressions",
        help="train from this impression log (file or postgresql:// URL) instead of replaying "
        "history (needs --store)",
    )
    p.add_argument(
        "--store", help="the engine's event store, file or postgresql:// URL (with --impressions)"
    )
    p.add_argument(
        "--window-hours",
        type=float,
        default=24.0,
        help="attribution window for --impressions (hours)",
    )
    p.add_argument(
        "--position",
        choices=("auto", "weights", "feature"),
        default="auto",
        help="--impressions: learn the position as inverse-examination weights on clicks "
        "(measured from the log's swapped pairs) or as a feature; auto (default): weights when "
        "every pair was swapped in at least 1,000 lists",
    )
    p.add_argument("--index", type=Path, required=True, help="the serving index version (or root)")
    p.add_argument(
        "--out", type=Path, required=True, help="working folder; models go to OUT/models"
    )
    p.add_argument("--label-days", type=float, default=14.0)
    p.add_argument("--decisions", type=int, default=2, help="decision times replayed")
    p.add_argument("--step-days", type=float, default=7.0, help="days between decision times")
    p.add_argument("--users", type=int, default=20_000, help="users sampled per decision time")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="time: replay at decision times; holdout: hide part of each user's items (logs "
        "without a usable clock); auto (default): time when the clock is usable",
    )
    p.add_argument(
        "--holdout-share", type=float, default=0.2, help="--mode holdout: items hidden per user"
    )
    p.add_argument("--engine-config", type=Path, help="TOML of engine settings (retrieval)")
    p.add_argument("--heads", choices=("chained", "independent"), default="chained")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.impressions:
        if not args.store:
            print("crossrec train: --impressions needs --store (where the outcomes are)")
            return 2
        return _finish(
            args,
            lambda: train_from_impressions(
                ImpressionJob(
                    args.impressions,
                    args.store,
                    args.index,
                    args.out,
                    args.window_hours,
                    {"heads": args.heads, "progress": not args.quiet},
                    args.position,
                )
            ),
        )
    if not (args.catalog and args.events):
        print("crossrec train: give --catalog and --events (or --impressions and --store)")
        return 2
    job = TrainJob(
        args.catalog,
        args.events,
        args.index,
        args.out,
        args.label_days,
        args.decisions,
        args.step_days,
        args.users,
        args.engine_config,
        {"heads": args.heads, "progress": not args.quiet},
        not args.quiet,
        mode=args.mode,
        holdout_share=args.holdout_share,
    )
    return _finish(args, lambda: train_ranker(job))


def _finish(args: argparse.Namespace, job) -> int:
    from indexer.errors import ArtifactError, DataValidationError
    from ranker.errors import RankerError

    try:
        report = job()
    except (ArtifactError, DataValidationError, RankerError, ValueError, OSError) as exc:
        print(f"crossrec train: {exc}")
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()
