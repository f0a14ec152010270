"""One evaluation run: read, split, prepare the index, run every method, score every list.

The result is a plain dict (what ``--json`` writes): the settings, the split's counts, the index
used, and per method its metrics at every K (intervals for per-user metrics), its wall time and
the mean length of the lists it returned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from apps.evaluation.baselines import ALS, BASELINES, ContentKNN, CoOccurrence, Method, Popularity
from apps.evaluation.dataset import build_eval_set
from apps.evaluation.index import PreparedIndex, prepare_index, write_train_events
from apps.evaluation.itemitem import EASE, STRONG_BASELINES, TunedItemKNN
from apps.evaluation.methods import (
    ENGINE_DEFAULT,
    Crossrec,
    EngineSession,
    RemoteSession,
    Session,
    Share,
)
from apps.evaluation.metrics import evaluate_lists, mean_list_length, paired_difference, per_user
from apps.evaluation.split import SplitConfig, split_events
from apps.evaluation.tail import head_items, tail_metrics, tail_per_user
from indexer.artifact import resolve_version
from indexer.catalog import read_catalog
from indexer.errors import DataValidationError
from indexer.events import read_events, unknown_item_problems

log = logging.getLogger(__name__)

METHODS = (*BASELINES, *STRONG_BASELINES, "crossrec")
#: The headline cut-off; always evaluated whatever ``ks`` says.
HEADLINE_K = 10


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    ``ks``: cut-offs (10 is always added). ``methods``: names from :data:`METHODS`.
    ``crossrec_shares``: one crossrec row per cross-category share (a float, ``None`` for no split,
    ``"default"`` for the engine's configured default). ``artifact``: index version to use
    (default: build one from the training split into ``out/index``; ``text=False`` skips the text
    model). ``target``: evaluate a running
    engine at ``host:port`` instead of an in-process one. ``bootstrap``: resamples per interval.
    ``neighbours``: co-occurrence neighbours kept per item. ``head_share``: the share of items,
    most popular first, that the tail view leaves out (0: no tail view; see
    :mod:`apps.evaluation.tail`).
    """

    catalog: Path
    events: Path
    out: Path
    split: SplitConfig = field(default_factory=SplitConfig)
    ks: tuple[int, ...] = (10, 100)
    methods: tuple[str, ...] = METHODS
    crossrec_shares: tuple[Share, ...] = (ENGINE_DEFAULT,)
    engine_config: Path | None = None
    target: str | None = None
    artifact: Path | None = None
    text: bool = True
    bootstrap: int = 1_000
    neighbours: int = 200
    head_share: float = 0.01
    progress: bool = True
    #: Also evaluate crossrec with a ranker model: ``model`` (one trained for ``artifact``), or with
    #: ``train_ranker`` one trained here on the training split (``crossrec train`` into
    #: ``out/ranker``; ``ranker_train``: its TrainJob settings, e.g. ``{"users": 5000}``).
    model: Path | None = None
    train_ranker: bool = False
    ranker_train: dict = field(default_factory=dict)
    #: Also evaluate crossrec tuned on the training split (``crossrec tune`` into
    #: ``out/tuned.toml``; ``tune_settings``: its TuneConfig fields, e.g. ``{"users": 500}``).
    tune: bool = False
    tune_settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"cut-offs must be >= 1, got {self.ks}")
        if not 0.0 <= self.head_share < 1.0:
            raise ValueError(f"head_share must be in [0, 1), got {self.head_share}")

    @property
    def cutoffs(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.ks) | {HEADLINE_K}))

    def needs_index(self) -> bool:
        return "content" in self.methods or ("crossrec" in self.methods and self.target is None)


def evaluate(config: EvalConfig) -> dict:
    """Run the whole evaluation; see the module docstring for the result."""
    started = time.perf_counter()
    catalog = read_catalog(config.catalog)
    events = read_events(config.events)
    problems = unknown_item_problems(events, catalog)
    if problems:
        raise DataValidationError(config.events, problems)
    split = split_events(events, catalog, config.split)
    index = _index(config, split.train)
    data = build_eval_set(split, catalog)
    k_max = max(config.cutoffs)
    head = head_items(data, config.head_share)

    session: Session | None = None
    ranked: EngineSession | None = None
    tuned: EngineSession | None = None
    training: dict | None = None
    tuning: dict | None = None
    ranker_config, variant = config.engine_config, "+ ranker"
    if "crossrec" in config.methods:
        session = (
            RemoteSession(config.target, progress=config.progress)
            if config.target
            else EngineSession(str(index.path), config.engine_config, config.progress)
        )
        model = config.model
        tuned_config = None
        if config.tune and index is not None:
            tuning, tuned_config = _tune(config, index, split.train)
            tuned = EngineSession(str(index.path), tuned_config, config.progress)
        ranker_config, variant = ranker_setup(config, tuned_config)
        if config.train_ranker and index is not None:
            training = _train_ranker(config, index, split.train, ranker_config)
            model = Path(training["model"])
        if model is not None and index is not None:
            ranked = EngineSession(str(index.path), ranker_config, config.progress, str(model))
    results: dict[str, dict] = {}
    #: Method -> per-user Recall@(smallest cut-off), the same users in the same order for all.
    values: dict[str, dict[str, np.ndarray]] = {}
    k_min = min(config.cutoffs)
    try:
        for method in _methods(config, index, session, ranked, tuned, variant):
            if isinstance(method, Crossrec):
                # Timed on its own: load + ingest, shared by the settings.
                method.session.start(data)
            t = time.perf_counter()
            if isinstance(method, Crossrec):  # one request per K (see apps.evaluation.methods)
                lists = {k: method.recommend(data, k) for k in config.cutoffs}
            else:
                lists = dict.fromkeys(config.cutoffs, method.recommend(data, k_max))
            seconds = time.perf_counter() - t
            log.info("%s: %d users in %.1f s", method.name, data.n_test, seconds)
            metrics: dict[str, dict] = {}
            for k in config.cutoffs:
                metrics.update(
                    evaluate_lists(
                        lists[k],
                        data.positives,
                        data.cross_positives,
                        data.item_category,
                        (k,),
                        config.bootstrap,
                        config.split.seed,
                    )
                )
            users = per_user(
                lists[k_min], data.positives, data.cross_positives, data.item_category, k_min
            )
            values[method.name] = {m: users[m] for m in ("recall", "ndcg", "cross_recall")}
            if head.any():
                tail = tail_per_user(lists[k_max], data, head, k_min)
                values[method.name] |= {"tail_recall": tail["recall"], "tail_ndcg": tail["ndcg"]}
            results[method.name] = {
                "metrics": metrics,
                "tail": tail_metrics(
                    lists[k_max], data, head, config.cutoffs, config.bootstrap, config.split.seed
                )
                if head.any()
                else None,
                "seconds": round(seconds, 3),
                "mean_list_length": round(mean_list_length(lists[k_max]), 3),
            }
            if getattr(method, "chosen", None):
                results[method.name]["chosen"] = method.chosen
    finally:
        for s in (session, ranked, tuned):
            if s is not None:
                s.close()
    settings = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "split"
    }
    if isinstance(session, EngineSession):
        settings["engine_default_cross_share"] = session.default_share
    return {
        "settings": {**settings, "cutoffs": list(config.cutoffs)},
        "split": split.summary(),
        "index": None
        if index is None
        else {
            "path": str(index.path),
            "built": index.built,
            "build_seconds": round(index.seconds, 1),
        },
        "head": {"share": config.head_share, "items": int(head.sum())},
        "methods": results,
        "paired": paired_against_baselines(values, k_min, config.bootstrap, config.split.seed),
        "ranker": training,
        "ranker_choice": ranker_choice(training, ranker_config, variant) if training else None,
        "tuning": tuning,
        "crossrec_setup_seconds": None if session is None else round(session.setup_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _index(config: EvalConfig, train) -> PreparedIndex | None:
    if not config.needs_index():
        return None
    if config.artifact is not None:
        return PreparedIndex(resolve_version(config.artifact), False, 0.0)
    path, digest = write_train_events(train, config.out)
    return prepare_index(config.catalog, path, digest, config.out, config.text, config.progress)


def ranker_setup(config: EvalConfig, tuned_config: Path | None) -> tuple[Path | None, str]:
    """The engine configuration the ranker is trained and served with, and its rows' label: the
    tuned one when this run tunes and trains (the ranker then re-ranks the tuned engine's
    candidates and learns from its blend, as a shop would run ``crossrec tune`` then ``crossrec
    train --engine-config tuned.toml``), else the evaluated one (a given ``--model`` was trained
    for that)."""
    if tuned_config is not None and config.train_ranker:
        return tuned_config, "tuned + ranker"
    return config.engine_config, "+ ranker"


def ranker_choice(training: dict, engine_config: Path | None, variant: str = "+ ranker") -> dict:
    """Whether the ranker trained here should serve this shop, judged on its own held-out
    decisions (never the test users): :func:`ranker.metrics.helps` under the served objective
    weights. ``{"helps", "why", "row"}``: the row a user of this shop should read (``variant``:
    the ranked rows' label)."""
    from engine.config import EngineConfig
    from engine.config.file import load
    from ranker.metrics import helps

    weights = load(EngineConfig, engine_config).ranker.objective_weights()
    verdict, why = helps(training["metrics"], weights)
    return {"helps": verdict, "why": why, "row": variant if verdict else "without the ranker"}


def _train_ranker(
    config: EvalConfig, index: PreparedIndex, train, engine_config: Path | None
) -> dict:
    """``crossrec train`` for the evaluated index on the training split only (so no test event
    reaches a row or a label), with ``engine_config`` (:func:`ranker_setup`)."""
    from apps.training import TrainJob, train_ranker

    path, _ = write_train_events(train, config.out)
    settings = dict(config.ranker_train)
    settings["train"] = {"progress": config.progress, **settings.get("train", {})}
    job = TrainJob(
        catalog=config.catalog,
        events=path,
        index=index.path,
        out=config.out / "ranker",
        engine_config=engine_config,
        progress=config.progress,
        **settings,
    )
    return train_ranker(job)


def _tune(config: EvalConfig, index: PreparedIndex, train) -> tuple[dict, Path]:
    """``crossrec tune`` on the training split only (its own validation split inside it), starting
    from the evaluated engine configuration; returns the report and the written settings."""
    from apps.tuning import TuneConfig, tune

    path, _ = write_train_events(train, config.out)
    settings = {"progress": config.progress, "seed": config.split.seed, **config.tune_settings}
    out = config.out / "tuned.toml"
    report = tune(
        config.catalog, path, index.path, out, TuneConfig(**settings), config.engine_config
    )
    summary = {
        "split": report.split,
        "chosen": report.chosen,
        "defaults": report.defaults,
        "default_score": report.default_score,
        "best_score": report.best_score,
        "settings_tried": len(report.tried),
        "seconds": report.seconds,
        "config": str(out),
    }
    return summary, out


def _methods(
    config: EvalConfig,
    index: PreparedIndex | None,
    session: Session | None,
    ranked: Session | None = None,
    tuned: Session | None = None,
    variant: str = "+ ranker",
) -> list[Method]:
    p = config.progress
    made: dict[str, list[Method]] = {
        "popularity": [Popularity(progress=p)],
        "cooccurrence": [CoOccurrence(config.neighbours, progress=p)],
        "content": [ContentKNN(str(index.path), progress=p)] if index is not None else [],
        "als": [ALS(seed=config.split.seed, progress=p)],
        "ease": [EASE(seed=config.split.seed, progress=p)],
        "itemknn": [TunedItemKNN(seed=config.split.seed, progress=p)],
        "crossrec": [Crossrec(session, share, p) for share in config.crossrec_shares]
        if session is not None
        else [],
    }
    if ranked is not None:
        made["crossrec"] += [
            Crossrec(ranked, share, p, variant) for share in config.crossrec_shares
        ]
    if tuned is not None:
        made["crossrec"] += [Crossrec(tuned, share, p, "tuned") for share in config.crossrec_shares]
    return [m for name in config.methods for m in made[name]]


#: The per-user values compared on the same users: Recall@k and NDCG@k, on the full view and on
#: the tail view (``tail_``; absent when no head is set), and cross-category Recall@k (over the
#: users with a cross-category positive).
PAIRED_METRICS = ("recall", "ndcg", "tail_recall", "tail_ndcg", "cross_recall")


def paired_against_baselines(
    values: dict[str, dict[str, np.ndarray]], k: int, resamples: int, seed: int
) -> dict[str, dict]:
    """For every crossrec row, each metric of ``PAIRED_METRICS`` it has minus each baseline's on
    the same users, with a paired bootstrap interval
    (:func:`apps.evaluation.metrics.paired_difference`): ``{crossrec method: {"k": k, metric:
    {baseline: Interval.as_dict()}}}``. An interval above 0 is a lead the test users support; one
    that holds 0 is not."""
    baselines = [m for m in values if not m.startswith("crossrec")]
    return {
        name: {"k": k}
        | {
            metric: {
                b: paired_difference(own[metric], values[b][metric], resamples, seed).as_dict()
                for b in baselines
            }
            for metric in PAIRED_METRICS
            if metric in own
        }
        for name, own in values.items()
        if name.startswith("crossrec")
    }
