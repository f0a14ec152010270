"""The time split of training rows into ``train``, ``valid`` and ``test`` decisions.

A model is judged on decisions later than any it learnt from, as it will be used. Whole decisions
go to one part (a list is scored as a whole):

=====================  ===========================================================================
part                   what it is used for
=====================  ===========================================================================
``train``              fitting the heads: every decision before the validation period
``valid``              early stopping and the calibration fit: half the validation period
``test``               the reported metrics only; nothing is fitted on it: the other half
=====================  ===========================================================================

The *validation period* is the latest distinct decision time, when there are at least two and it
holds between ``MIN_PERIOD_SHARE`` and ``MAX_PERIOD_SHARE`` of the decisions (the replay's last
cut-off). Otherwise (one time only, or times nearly all distinct, or a last time holding nearly
everything) it is the latest ``validation_share`` of decisions by time, equal times ordered by a
seeded hash of ``decision_id``. The period is halved by the same hash: sorted by it, the first
``ceil(n / 2)`` decisions are ``valid``, the rest ``test``. The hash is splitmix64 of the id and the
seed, computed in numpy, so a split is the same on every machine and library version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from crossrec.vocabulary import OBJECTIVES

log = logging.getLogger(__name__)

PARTS = ("train", "valid", "test")
MIN_PERIOD_SHARE = 0.1
MAX_PERIOD_SHARE = 0.6


@dataclass(frozen=True)
class Split:
    """Row masks (n,) bool per part, how the validation period was chosen, and counts per part."""

    masks: dict[str, np.ndarray]
    rule: str
    counts: dict[str, dict]

    def rows(self, frame: pl.DataFrame, part: str) -> pl.DataFrame:
        return frame.filter(pl.Series(self.masks[part]))


def decision_hash(decision_ids: np.ndarray, seed: int) -> np.ndarray:
    """(n,) uint64 splitmix64 of each id mixed with ``seed``: a stable pseudo-random order."""
    z = np.asarray(decision_ids).astype(np.uint64) + np.uint64(
        (0x9E3779B97F4A7C15 * (seed + 1)) % (1 << 64)
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_by_time(frame: pl.DataFrame, seed: int = 0, validation_share: float = 0.4) -> Split:
    """Split ``frame`` (training rows) into the parts of the module docstring."""
    decisions = (
        frame.group_by("decision_id").agg(pl.col("decision_ts_us").first()).sort("decision_id")
    )
    ids = decisions["decision_id"].to_numpy()
    times = decisions["decision_ts_us"].to_numpy()
    hashed = decision_hash(ids, seed)
    n = len(ids)
    if n < 3:
        raise ValueError(f"{n} decision(s): a time split needs at least 3")
    distinct = np.unique(times)
    latest_share = float(np.mean(times == distinct[-1]))
    if len(distinct) >= 2 and MIN_PERIOD_SHARE <= latest_share <= MAX_PERIOD_SHARE:
        in_period = times == distinct[-1]
        rule = f"latest decision time ({latest_share:.1%} of decisions)"
    else:
        by_time = np.lexsort((hashed, times))
        period = max(2, int(np.ceil(validation_share * n)))
        in_period = np.zeros(n, dtype=bool)
        in_period[by_time[n - period :]] = True
        rule = (
            f"latest {validation_share:.0%} of decisions by time ({len(distinct)} distinct "
            f"time(s), the latest holding {latest_share:.1%})"
        )
    period_ids = ids[in_period]
    by_hash = period_ids[np.argsort(hashed[in_period], kind="stable")]
    valid_ids = by_hash[: (len(by_hash) + 1) // 2]
    test_ids = by_hash[(len(by_hash) + 1) // 2 :]
    row_ids = frame["decision_id"].to_numpy()
    masks = {
        "train": ~np.isin(row_ids, period_ids),
        "valid": np.isin(row_ids, valid_ids),
        "test": np.isin(row_ids, test_ids),
    }
    counts = {part: _counts(frame, masks[part]) for part in PARTS}
    for part in PARTS:
        c = counts[part]
        log.info(
            "%s: %d decisions, %d rows, positives %s",
            part,
            c["decisions"],
            c["rows"],
            ", ".join(f"{o} {c['positives'][o]}" for o in OBJECTIVES),
        )
    log.info("validation period: %s", rule)
    return Split(masks, rule, counts)


def _counts(frame: pl.DataFrame, mask: np.ndarray) -> dict:
    part = frame.filter(pl.Series(mask))
    times = part["decision_ts_us"]
    return {
        "decisions": int(part["decision_id"].n_unique()),
        "rows": part.height,
        "positives": {o: int(part[o].sum()) for o in OBJECTIVES},
        "first_ts_us": None if part.is_empty() else int(cast(int, times.min())),
        "last_ts_us": None if part.is_empty() else int(cast(int, times.max())),
    }
