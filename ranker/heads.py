"""The LightGBM heads of a model: which rows each one learns from and how it is fitted.

=============  ==============================  ===============  ==================================
mode           head (target)                   rows             probability it gives
=============  ==============================  ===============  ==================================
chained        ``click``                       all              P(click)
chained        ``cart``                        ``click == 1``   P(cart | click)
chained        ``purchase``                    ``cart == 1``    P(purchase | cart)
independent    ``click``, ``cart``, ...        all              P(objective), each on its own
=============  ==============================  ===============  ==================================

Chained heads are the default: the deeper objectives are rare (a purchase per few hundred
candidates), and a head conditioned on the step before learns from the rows where the question is
open, where a head on all rows mostly relearns what makes a click. Their product is
``P(purchase) = P(click) P(cart | click) P(purchase | cart)``, nested by construction.

Each head is a binary LightGBM model (log-loss) fitted on the ``train`` rows of its subset, with
early stopping on the ``valid`` rows of the same subset; only the trees up to the best iteration are
kept. A head that cannot stop early (too few ``valid`` positives) is fitted with a fixed, small
number of rounds, and its record says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from crossrec.vocabulary import OBJECTIVES
from ranker.config import TrainConfig
from ranker.errors import RankerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSpec:
    """One head: it predicts ``target`` on the rows where the label ``given`` is 1 (all rows when
    ``given`` is None)."""

    target: str
    given: str | None = None

    @property
    def condition(self) -> str:
        return "all rows" if self.given is None else f"{self.given} == 1"


def head_specs(mode: str) -> dict[str, HeadSpec]:
    """Head name -> spec; a head is named after its target."""
    if mode == "chained":
        givens = (None, *OBJECTIVES[:-1])
        return {o: HeadSpec(o, g) for o, g in zip(OBJECTIVES, givens)}
    if mode == "independent":
        return {o: HeadSpec(o) for o in OBJECTIVES}
    raise ValueError(f"unknown head mode {mode!r}")


@dataclass(frozen=True)
class TrainedHead:
    """A fitted head: the booster trimmed to its best iteration, and what the manifest records."""

    spec: HeadSpec
    booster: lgb.Booster
    record: dict


def train_head(
    spec: HeadSpec,
    x: np.ndarray,
    labels: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    features: list[str],
    config: TrainConfig,
) -> TrainedHead:
    """Fit one head. ``x``: (n, F) float32 of every row; ``labels``: objective -> (n,) 0/1;
    ``masks``: part -> (n,) bool (:mod:`ranker.split`). Raises :class:`RankerError` (reason
    ``data``) when the head's train rows lack a positive or a negative."""
    subset = np.ones(len(x), dtype=bool) if spec.given is None else labels[spec.given] == 1
    train_rows = masks["train"] & subset
    valid_rows = masks["valid"] & subset
    y = labels[spec.target].astype(np.float32)
    if config.negative_share < 1 and spec.given is None:
        # Conditional heads (cart | click, ...) learn from few rows, half of them positive: only
        # heads over every candidate thin their negatives.
        keep = np.random.default_rng([config.seed, OBJECTIVES.index(spec.target)]).random(len(y))
        train_rows &= (y == 1) | (keep < config.negative_share)
    train_pos, valid_pos = int(y[train_rows].sum()), int(y[valid_rows].sum())
    train_n, valid_n = int(train_rows.sum()), int(valid_rows.sum())
    if train_pos == 0 or train_pos == train_n:
        raise RankerError(
            f"head {spec.target!r} ({spec.condition}) has {train_pos} positive(s) among "
            f"{train_n} train rows: it needs both classes",
            "",
            "data",
        )
    params = config.lightgbm_params()
    dataset_params = {"max_bin": config.max_bin, "verbosity": -1}
    train_set = lgb.Dataset(
        x[train_rows], y[train_rows], feature_name=features, params=dataset_params
    )
    early = valid_pos >= config.min_valid_positives and valid_pos < valid_n
    callbacks: list[Any] = []
    valid_sets = None
    if early:
        valid_sets = [train_set.create_valid(x[valid_rows], y[valid_rows])]
        callbacks.append(
            lgb.early_stopping(config.early_stopping_rounds, first_metric_only=True, verbose=False)
        )
    rounds = config.max_rounds if early else min(config.fallback_rounds, config.max_rounds)
    bar = _progress_bar(spec.target, rounds, config.progress)
    if bar is not None:
        callbacks.append(lambda env: bar.update(1))
    try:
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=rounds,
            valid_sets=valid_sets,
            valid_names=["valid"] if early else None,
            callbacks=callbacks,
        )
    finally:
        if bar is not None:
            bar.close()
    best = booster.best_iteration if early and booster.best_iteration > 0 else rounds
    trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    record = {
        "target": spec.target,
        "given": spec.given,
        "condition": spec.condition,
        "early_stopping": early,
        "rounds_limit": rounds,
        "best_iteration": int(best),
        "trees": int(trimmed.num_trees()),
        "train_rows": train_n,
        "train_positives": train_pos,
        "valid_rows": valid_n,
        "valid_positives": valid_pos,
    }
    if not early:
        record["note"] = (
            f"{valid_pos} valid positive(s) among {valid_n} rows: no early stopping, "
            f"{rounds} fixed rounds"
        )
        log.warning("head %s: %s", spec.target, record["note"])
    log.info(
        "head %s (%s): %d trees, %d train rows (%d positive)",
        spec.target,
        spec.condition,
        record["trees"],
        train_n,
        train_pos,
    )
    return TrainedHead(spec, trimmed, record)


def _progress_bar(name: str, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"head {name}", unit="tree", leave=False)
