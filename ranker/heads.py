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
from collections.abc import Callable
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
    x: np.ndarray | Callable[[np.ndarray], np.ndarray],
    labels: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    features: list[str],
    config: TrainConfig,
    decisions: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> TrainedHead:
    """Fit one head. ``x``: (n, F) float32 of every row, or a function giving the rows of a
    boolean mask (features kept on disk: :meth:`ranker.rows.TrainingRows.take`; only the head's
    train and valid rows are ever in memory); ``labels``: objective -> (n,) 0/1;
    ``masks``: part -> (n,) bool (:mod:`ranker.split`); ``weights``: (n,) per row, applied to the
    head over every candidate only (the rows' ``weight`` column: inverse examination of clicked
    rows, :func:`apps.online.exposure_rows`), which must then be pointwise (LightGBM's lambdarank
    reads a weight per list, not per row). Raises :class:`RankerError` (reason ``data``) when the
    head's train rows lack a positive or a negative."""
    take = (lambda mask: x[mask]) if isinstance(x, np.ndarray) else x
    n = len(labels[spec.target])
    subset = np.ones(n, dtype=bool) if spec.given is None else labels[spec.given] == 1
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
    ranking = spec.given is None and config.first_objective == "lambdarank"
    if spec.given is not None:
        weights = None  # after the click, the position no longer decides
    elif weights is not None and ranking:
        raise ValueError("row weights need first_objective 'binary' (lambdarank weighs lists)")
    if ranking:
        if decisions is None:
            raise ValueError("a lambdarank head needs the rows' decision ids")
        params.update(objective="lambdarank", metric="ndcg", eval_at=[10])
    # The datasets are binned before training (below): with every parameter training would have
    # binned them with, so the model is the same.
    dataset_params = {**params, "max_bin": config.max_bin, "verbosity": -1}
    base = None
    x_train = take(train_rows)
    if spec.given is None and config.base_feature in features:
        j = features.index(config.base_feature)
        coef, intercept = fit_logistic(x_train[:, j], y[train_rows])
        base = {"feature": config.base_feature, "coef": coef, "intercept": intercept}
    margin = base_margin(base, x_train, features)
    train_set = lgb.Dataset(
        x_train,
        y[train_rows],
        feature_name=features,
        params=dataset_params,
        init_score=margin,
        group=_group_sizes(decisions, train_rows) if ranking and decisions is not None else None,
        weight=None if weights is None else weights[train_rows],
    )
    # Bin the rows now and let the float copies go: at tens of millions of candidates they are
    # gigabytes, the binned datasets a quarter of that.
    train_set.construct()
    del x_train
    early = valid_pos >= config.min_valid_positives and valid_pos < valid_n
    callbacks: list[Any] = []
    valid_sets = None
    if early:
        x_valid = take(valid_rows)
        valid_margin = base_margin(base, x_valid, features)
        valid_sets = [
            train_set.create_valid(
                x_valid,
                y[valid_rows],
                weight=None if weights is None else weights[valid_rows],
                init_score=valid_margin,
                params=dataset_params,
                group=(
                    _group_sizes(decisions, valid_rows)
                    if ranking and decisions is not None
                    else None
                ),
            )
        ]
        valid_sets[0].construct()
        del x_valid
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
        "base": base,
        "objective": params["objective"],
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


def _group_sizes(decisions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows per decision for a ranking objective, in row order (a decision's rows must be
    contiguous, as the replay writes them)."""
    ids = decisions[rows]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if len(starts) != len(np.unique(ids)):
        raise ValueError("a ranking head needs each decision's rows together")
    return np.diff(np.r_[starts, len(ids)])


def fit_logistic(values: np.ndarray, labels: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """(coef, intercept) of ``P(y = 1) = sigmoid(coef * value + intercept)``: Newton's method with
    step halving (each step must raise the log-likelihood), from the base rate; a tiny ridge keeps
    it finite when one value separates the classes."""
    v = np.nan_to_num(values.astype(np.float64))
    y = labels.astype(np.float64)
    rate = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    design = np.column_stack([v, np.ones_like(v)])
    ridge = np.diag([1e-6 * len(v), 0.0])

    def objective(w: np.ndarray) -> float:
        z = design @ w
        return float((y * z - np.logaddexp(0.0, z)).sum() - 0.5 * w @ ridge @ w)

    w = np.array([0.0, np.log(rate / (1 - rate))])
    best = objective(w)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (y - p) - ridge @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        for _ in range(30):  # halve until the likelihood rises
            candidate = w + step
            value = objective(candidate)
            if value >= best:
                break
            step /= 2
        else:
            break
        w, improved, best = candidate, value - best, value
        if improved < 1e-10 * max(1.0, abs(best)):
            break
    return float(w[0]), float(w[1])


def base_margin(base: dict | None, x: np.ndarray, features: list[str]) -> np.ndarray | None:
    """(n,) the starting log-odds of a head with a ``base`` record (None without one)."""
    if base is None:
        return None
    column = np.nan_to_num(x[:, features.index(base["feature"])].astype(np.float64))
    return base["coef"] * column + base["intercept"]


def _progress_bar(name: str, total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"head {name}", unit="tree", leave=False)
