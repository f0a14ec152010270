"""Training a model version from training rows: split, heads, calibration, metrics, write.

==========  =========================================================  ============================
step        what                                                       module
==========  =========================================================  ============================
split       decisions by time into train / valid / test                :mod:`ranker.split`
heads       one LightGBM head per objective (chained by default),      :mod:`ranker.heads`
            early stopping on valid
calibrate   isotonic map per objective of its final probability,       :mod:`ranker.calibration`
            fitted on valid
measure     NDCG@10, Recall@10 (model and blend order), AUC,           :mod:`ranker.metrics`
            calibration deciles, feature gain, on test only
write       heads, reliability plot, manifest; atomic, ``LATEST``      :mod:`ranker.model`
==========  =========================================================  ============================

The test part is never used to fit or choose anything, so its figures estimate what the model does
on decisions after the data it saw. Interrupting (Ctrl-C) leaves no model version behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from crossrec.vocabulary import OBJECTIVES
from ranker.calibration import fit_isotonic
from ranker.config import TrainConfig
from ranker.heads import head_specs, train_head
from ranker.metrics import evaluate, gain_shares
from ranker.model import RankerModel, write_model
from ranker.plot import write_reliability_plot
from ranker.report import summary_lines
from ranker.rows import TrainingRows, schema_hash
from ranker.split import split_by_time

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainReport", "train_model"]

#: Rows scored at a time when predicting the valid and test parts.
BLOCK_ROWS = 1_000_000


@dataclass(frozen=True)
class TrainReport:
    """What :func:`train_model` wrote: the version folder ``path``, its ``version``, the test
    ``metrics`` (as in the manifest), the ``split`` counts per part, the wall-clock ``seconds``,
    and the ``model`` as trained, in memory (it predicts exactly as the written version loads)."""

    path: Path
    version: str
    metrics: dict
    split: dict
    seconds: float
    model: RankerModel


def train_model(
    rows: TrainingRows,
    out_root: str | Path,
    config: TrainConfig = TrainConfig(),
    meta: dict | None = None,
) -> TrainReport:
    """Train, calibrate and measure a model on ``rows`` and write it as a new version under
    ``out_root`` (``LATEST`` then points at it). ``meta`` (JSON-serialisable: the index version,
    the data window, ...) is stored, over the rows' own ``meta``, as the manifest's
    ``trained_on``. Raises :class:`ranker.errors.RankerError` (reason ``data``) when a head's
    training rows lack a positive or a negative, ``ValueError`` for unknown ``drop_features``."""
    started = time.perf_counter()
    unknown = sorted(set(config.drop_features) - set(rows.features))
    if unknown:
        raise ValueError(f"drop_features names features the rows lack: {unknown}")
    features = [f for f in rows.features if f not in set(config.drop_features)]
    split = split_by_time(rows.keys, config.seed, config.validation_share)

    # The features of the rows a step needs, in memory (or read from the parts on disk) only
    # while it needs them.
    def x(mask: np.ndarray) -> np.ndarray:
        return rows.take(mask, features)

    labels = {o: rows.keys[o].to_numpy() for o in OBJECTIVES}

    weights = rows.keys["weight"].to_numpy() if "weight" in rows.keys.columns else None
    decisions = rows.keys["decision_id"].to_numpy()
    heads = {
        name: train_head(spec, x, labels, split.masks, features, config, decisions, weights)
        for name, spec in head_specs(config.heads).items()
    }
    boosters = {name: head.booster for name, head in heads.items()}
    core = {
        "version": config.version or "(training)",
        "objectives": list(OBJECTIVES),
        "head_mode": config.heads,
        "features": features,
        "schema_hash": schema_hash(features),
        "heads": {name: head.record for name, head in heads.items()},
    }
    valid = split.masks["valid"]
    raw = _in_blocks(RankerModel(core, boosters, num_threads=config.threads).uncalibrated, x, valid)
    calibration = {o: fit_isotonic(raw[o], labels[o][valid]) for o in OBJECTIVES}
    for objective, fitted in calibration.items():
        log.info("calibration of %s: %s", objective, fitted.note)
    model = RankerModel(core, boosters, calibration, num_threads=config.threads)

    test = split.masks["test"]
    metrics = evaluate(split.rows(rows.keys, "test"), _in_blocks(model.predict, x, test))
    metrics["importance"] = gain_shares(
        {name: b.feature_importance(importance_type="gain") for name, b in boosters.items()},
        features,
    )
    _log_metrics(metrics)

    manifest = {
        **{k: v for k, v in core.items() if k != "version"},
        "created_at": datetime.now(UTC).isoformat(),
        "crossrec_version": _crossrec_version(),
        "calibration": {o: c.to_manifest() for o, c in calibration.items()},
        "metrics": metrics,
        "training": {
            "config": config.to_manifest(),
            "lightgbm": config.lightgbm_params(),
            "split": {"rule": split.rule, "parts": split.counts},
            "rows_schema_hash": rows.schema_hash,
            "rows_features": list(rows.features),
            "seconds_before_write": round(time.perf_counter() - started, 3),
        },
        "trained_on": {**rows.meta, **(meta or {})},
    }
    path, written = write_model(
        out_root,
        config.version,
        boosters,
        manifest,
        plot=lambda target: write_reliability_plot(metrics, target),
    )
    seconds = round(time.perf_counter() - started, 3)
    log.info("model %s trained and written in %.1f s", written["version"], seconds)
    model = RankerModel(written, boosters, calibration, path, config.threads)
    return TrainReport(path, written["version"], metrics, split.counts, seconds, model)


def _in_blocks(
    score: Callable[[np.ndarray], dict[str, np.ndarray]],
    x: Callable[[np.ndarray], np.ndarray],
    mask: np.ndarray,
) -> dict[str, np.ndarray]:
    """``score`` of the rows where ``mask`` (their features from ``x``), ``BLOCK_ROWS`` at a
    time: never the whole part at once (at tens of millions of rows it alone is gigabytes)."""
    rows = np.flatnonzero(mask)
    blocks = []
    for i in range(0, max(len(rows), 1), BLOCK_ROWS):
        block = np.zeros(len(mask), dtype=bool)
        block[rows[i : i + BLOCK_ROWS]] = True
        blocks.append(score(x(block)))
    return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}


def _log_metrics(metrics: dict) -> None:
    log.info(
        "test part, %d decisions, %d rows:\n%s",
        metrics["decisions"],
        metrics["rows"],
        "\n".join(summary_lines(metrics)),
    )


def _crossrec_version() -> str:
    try:
        return package_version("crossrec")
    except PackageNotFoundError:
        return "unknown"
