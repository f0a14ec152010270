"""The complement adaptation finishes for any number of training pairs, with or without a clock
(a build once looped for ever with fewer pairs than a batch, or with one timestamp for all)."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from indexer.adapt import AdaptConfig, train_adaptation

N_ITEMS = 40


def _sessions(pairs: int, clock: bool) -> pl.DataFrame:
    """``pairs`` sessions of two events each, the second in another category: one cross-category
    pair per session (categories: row % 4)."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for s in range(pairs):
        a, b = (2 * s) % N_ITEMS, (2 * s + 1) % N_ITEMS  # a even, b odd: categories differ
        ts = t0 + timedelta(hours=s if clock else 0)
        rows += [(s, a, a % 4, ts), (s, b, b % 4, ts + timedelta(seconds=1 if clock else 0))]
    return pl.DataFrame(
        rows, schema=["session", "row", "category", "ts"], orient="row"
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


@pytest.fixture
def deadline():
    def stop(*_):
        raise TimeoutError("the adaptation did not finish")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("pairs", [1, 2, 255, 256, 257])
@pytest.mark.parametrize("clock", [True, False], ids=["clock", "one-timestamp"])
def test_the_adaptation_finishes_for_any_number_of_pairs(pairs, clock, deadline):
    catalog = pl.DataFrame(
        {
            "item_id": [f"i{r}" for r in range(N_ITEMS)],
            "category": [f"c{r % 4}" for r in range(N_ITEMS)],
        }
    )
    content = np.random.default_rng(0).standard_normal((N_ITEMS, 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    config = AdaptConfig(dim=4, epochs=2)
    adaptation = train_adaptation(content, catalog, _sessions(pairs, clock), config)
    report = adaptation.report
    assert report["pairs"] == pairs
    assert report["train_pairs"] + report["heldout_pairs"] == pairs
    batch = min(256, report["train_pairs"])
    expected = 0 if batch < 2 else 2 * max(1, report["train_pairs"] // batch)
    assert report["steps"] == expected
    assert adaptation.apply(content, np.arange(N_ITEMS)).shape == (N_ITEMS, 8 + 4)


def test_the_adaptation_trains_where_it_is_told_and_refuses_a_device_torch_does_not_see():
    import torch

    from indexer.adapt import training_device

    assert training_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert training_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no such CUDA device"):
            training_device("cuda:0")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        training_device("mps")
