"""Seeded synthetic training rows with a known answer, and one trained model shared by the ranker
tests.

Each row's label probabilities are set by its features, so the best possible order is known::

    P(click)            = sigmoid(1.5 relevance - 2)
    P(cart | click)     = sigmoid(1.5 cart_signal - 0.5)
    P(purchase | cart)  = sigmoid(1.5 buy_signal - 0.5)

``noise`` carries nothing; ``blend_score`` (the retrieval-only baseline) is a noisy view of
``relevance``. The true unconditional probabilities ride along as ``true_click``, ``true_cart``,
``true_purchase`` (extra columns, which the rows keep).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

FEATURES = ("relevance", "cart_signal", "buy_signal", "noise")
META = {"index_version": "v-index-1", "window": ["2025-01-01", "2025-03-01"]}
TRAINING = {
    "max_rounds": 200,
    "learning_rate": 0.05,
    "progress": False,
    "version": "m1",
    "negative_share": 1.0,
    "first_objective": "binary",
}

_trained: dict = {}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def synthetic_rows(
    decisions: int = 600, items: int = 30, times: int = 4, seed: int = 0
) -> pl.DataFrame:
    """``decisions`` decisions of ``items`` candidates each, spread evenly over ``times`` decision
    times (one hour apart, the latest holding 1 / ``times`` of them)."""
    rng = np.random.default_rng(seed)
    n = decisions * items
    decision = np.repeat(np.arange(decisions, dtype=np.int64) + 1_000, items)
    ts = 1_700_000_000_000_000 + (decision - 1_000) * times // decisions * 3_600_000_000
    item_ids = np.concatenate(
        [rng.choice(500, size=items, replace=False) for _ in range(decisions)]
    )
    x = {f: rng.standard_normal(n) for f in FEATURES}
    p_click = sigmoid(1.5 * x["relevance"] - 2.0)
    q_cart = sigmoid(1.5 * x["cart_signal"] - 0.5)
    q_buy = sigmoid(1.5 * x["buy_signal"] - 0.5)
    click = rng.random(n) < p_click
    cart = click & (rng.random(n) < q_cart)
    purchase = cart & (rng.random(n) < q_buy)
    price = rng.uniform(5.0, 100.0, n)
    price[::17] = np.nan
    return pl.DataFrame(
        {
            "decision_id": decision,
            "decision_ts_us": ts,
            "item_id": [f"i{i:04d}" for i in item_ids],
            "price": price,
            "blend_score": 0.5 * x["relevance"] + rng.standard_normal(n),
            "click": click,
            "cart": cart,
            "purchase": purchase,
            **{f: x[f].astype(np.float32) for f in FEATURES},
            "true_click": p_click,
            "true_cart": p_click * q_cart,
            "true_purchase": p_click * q_cart * q_buy,
        }
    )


def training_rows(**kwargs):
    from ranker.rows import TrainingRows

    return TrainingRows.from_frame(synthetic_rows(**kwargs), FEATURES, META)


def trained(tmp_path_factory):
    """``(rows, report)``: the default synthetic rows and a chained model trained on them (seed 0,
    version ``m1``), once per test session, in a root of its own."""
    if not _trained:
        from ranker.train import TrainConfig, train_model

        rows = training_rows()
        root = Path(tmp_path_factory.mktemp("ranker-models"))
        report = train_model(rows, root, TrainConfig(**TRAINING), meta={"decision_times": 4})
        _trained.update(rows=rows, report=report)
    return _trained["rows"], _trained["report"]


def held_out(rows, report) -> tuple[np.ndarray, pl.DataFrame]:
    """The feature matrix and rows of the report's test part (the latest hour, by hash half)."""
    from ranker.split import split_by_time

    split = split_by_time(rows.frame, seed=0)
    part = split.rows(rows.frame, "test")
    return rows.matrix(report.model.features)[split.masks["test"]], part
