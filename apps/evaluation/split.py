"""Splitting events into a training part and a test part, and choosing who is tested on what.

Each split: its test part; why.

``time``: events in the last ``test_days`` days before the newest event; what serving
    faces: learn from the past, predict the next weeks.
``holdout``: a seeded ``holdout_share`` of each user's distinct items (users with >= 2 items), all
    their events; for data whose times mean nothing (shuffled logs, one-day dumps).
``auto`` (default): ``time`` when the clock is usable, else ``holdout`` (:func:`choose_split`; the
    summary says which and why).

A user's **positives** are the items they clicked, carted or bought in the test part and never
touched (any action) in the training part: predicting a re-visit is easy and not what a
recommender is for. When the data holds no click, cart or purchase at all (view-only logs), any
action counts. **Test users** are ``users`` users (seeded) among those with at least one training
event and at least one positive. A positive is **cross-category** when its category is none of the
categories the user touched in training.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from indexer.events import ACTIONS

log = logging.getLogger(__name__)

#: Actions that show intent; a test item only counts as a positive through one of them.
INTENT_ACTIONS = ("click", "cart", "purchase")
SPLITS = ("time", "holdout", "auto")


@dataclass(frozen=True)
class SplitConfig:
    """``method``: ``auto`` (default), ``time`` or ``holdout``. ``test_days``: length of the test
    period (days, time split; default 14). ``holdout_share``: share of each user's distinct items
    held out (holdout split; default 0.2, at least one item and never all). ``users``: test users
    drawn (default 3,000; all candidates when fewer). ``seed`` drives the holdout draw and the
    user draw."""

    method: str = "auto"
    test_days: float = 14.0
    holdout_share: float = 0.2
    users: int = 3_000
    seed: int = 0
    #: Why ``auto`` chose the method it did (set by :func:`split_events`).
    why: str = ""

    def __post_init__(self) -> None:
        if self.method not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.method!r}")
        if self.test_days <= 0:
            raise ValueError(f"test_days must be > 0, got {self.test_days}")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in (0, 1), got {self.holdout_share}")
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")


@dataclass(frozen=True)
class Split:
    """``train`` / ``test``: the input's event rows, partitioned. ``cut``: the reference time of
    training (time split: the start of the test period; holdout: the newest training event), from
    which popularity decays. ``positives``: (user_id, item_id, category, cross) for the test users,
    one row per pair. ``test_users``: sorted. ``positive_actions``: the actions that made
    positives."""

    config: SplitConfig
    train: pl.DataFrame
    test: pl.DataFrame
    cut: datetime
    positives: pl.DataFrame
    test_users: list[str]
    candidate_users: int
    positive_actions: tuple[str, ...]

    @property
    def cut_us(self) -> int:
        """The cut in µs since the epoch (a naive cut read as UTC): the time the engine is asked
        at when it is evaluated or tuned on this split, as a shop would have asked then."""
        cut = self.cut if self.cut.tzinfo else self.cut.replace(tzinfo=UTC)
        return int(cut.timestamp() * 1_000_000)

    def summary(self) -> dict:
        """Counts for reports: events, users, positives and their cross-category share."""
        cross = self.positives["cross"]
        per_user = self.positives.group_by("user_id").agg(pl.col("cross").any())
        return {
            **asdict(self.config),
            "cut": self.cut.isoformat(),
            "train_events": self.train.height,
            "test_events": self.test.height,
            "train_users": self.train["user_id"].n_unique(),
            "candidate_users": self.candidate_users,
            "test_users": len(self.test_users),
            "positives": self.positives.height,
            "positives_per_user": round(self.positives.height / max(len(self.test_users), 1), 3),
            "cross_category_share": round(float(cross.mean()), 4) if len(cross) else 0.0,
            "users_with_cross_category_positive": int(per_user["cross"].sum()),
            "positive_actions": list(self.positive_actions),
        }


def split_events(
    events: pl.DataFrame, catalog: pl.DataFrame, config: SplitConfig = SplitConfig()
) -> Split:
    """Split validated events (``indexer.events.read_events``) against the catalogue's categories.

    Deterministic in ``config``. Events on items missing from the catalogue count for splitting but
    cannot be cross-category positives (they have no category); validate the files first."""
    if config.method == "auto":
        method, why = choose_split(events)
        log.info("split auto: %s (%s)", method, why)
        config = replace(config, method=method, why=why)
    if config.method == "time":
        train, test, cut = time_split(events, config.test_days)
    else:
        train, test, cut = holdout_split(events, config.holdout_share, config.seed)
    actions = positive_actions(events)
    pairs = positive_pairs(train, test, actions)
    candidates = (
        pairs.select("user_id")
        .unique()
        .join(train.select("user_id").unique(), on="user_id")["user_id"]
        .sort()
    )
    chosen = draw_users(candidates.to_list(), config.users, config.seed)
    positives = mark_cross_category(
        pairs.filter(pl.col("user_id").is_in(chosen)),
        train.filter(pl.col("user_id").is_in(chosen)),
        catalog,
    )
    log.info(
        "split %s: %d train events, %d test users, %d positives",
        config.method,
        train.height,
        len(chosen),
        positives.height,
    )
    return Split(config, train, test, cut, positives, chosen, candidates.len(), actions)


def choose_split(events: pl.DataFrame) -> tuple[str, str]:
    """(``time`` or ``holdout``, why). The clock is usable when the events span at least 7 days and
    at least one event in five has a timestamp of its own (a basket log stamps whole baskets, a
    dump a day)."""
    span = events["ts"].max() - events["ts"].min()
    distinct = events["ts"].n_unique() / max(events.height, 1)
    if span < timedelta(days=7):
        return "holdout", f"the events span {span}, under 7 days"
    if distinct < 0.2:
        return "holdout", f"only {distinct:.0%} of events have a timestamp of their own"
    return "time", f"the events span {span.days} days, {distinct:.0%} of timestamps distinct"


def time_split(
    events: pl.DataFrame, test_days: float
) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """Events before ``newest - test_days`` train; the rest (from the cut on) test."""
    cut = events["ts"].max() - timedelta(days=test_days)
    is_test = pl.col("ts") >= cut
    return events.filter(~is_test), events.filter(is_test), cut


def holdout_split(
    events: pl.DataFrame, share: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """Per user with n >= 2 distinct items, ``clip(round(share * n), 1, n - 1)`` of them (seeded,
    uniformly) go to test with all their events; the cut is the newest training event."""
    pairs = events.select("user_id", "item_id").unique().sort("user_id", "item_id")
    key = np.random.default_rng(seed).random(pairs.height)
    n = pl.len().over("user_id")
    held = (
        pairs.with_columns(pl.Series("key", key))
        .with_columns(
            pl.col("key").rank("ordinal").over("user_id").alias("rank"),
            pl.when(n >= 2)
            .then(((n * share + 0.5).floor()).clip(1, n - 1))
            .otherwise(0)
            .alias("n_test"),
        )
        .filter(pl.col("rank") <= pl.col("n_test"))
        .select("user_id", "item_id")
    )
    test = events.join(held, on=["user_id", "item_id"], how="semi", maintain_order="left")
    train = events.join(held, on=["user_id", "item_id"], how="anti", maintain_order="left")
    return train, test, train["ts"].max()


def positive_actions(events: pl.DataFrame) -> tuple[str, ...]:
    """:data:`INTENT_ACTIONS`, or every action when the data has none of them (view-only logs)."""
    if events["action"].cast(pl.String).is_in(INTENT_ACTIONS).any():
        return INTENT_ACTIONS
    log.warning("no click, cart or purchase in the events: any test action makes a positive")
    return ACTIONS


def positive_pairs(
    train: pl.DataFrame, test: pl.DataFrame, actions: tuple[str, ...]
) -> pl.DataFrame:
    """(user_id, item_id) taken in test through ``actions`` and never touched in train; sorted."""
    touched = train.select("user_id", "item_id").unique()
    return (
        test.filter(pl.col("action").cast(pl.String).is_in(actions))
        .select("user_id", "item_id")
        .unique()
        .join(touched, on=["user_id", "item_id"], how="anti")
        .sort("user_id", "item_id")
    )


def draw_users(candidates: list[str], n: int, seed: int) -> list[str]:
    """``n`` of the (sorted) ``candidates`` without replacement, seeded; all when fewer; sorted."""
    if len(candidates) <= n:
        return sorted(candidates)
    # A stream apart from the holdout draw's, so that changing --users leaves the split alone.
    rng = np.random.default_rng([seed, 1])
    picked = rng.choice(len(candidates), size=n, replace=False)
    return sorted(candidates[i] for i in picked)


def mark_cross_category(
    pairs: pl.DataFrame, train: pl.DataFrame, catalog: pl.DataFrame
) -> pl.DataFrame:
    """Add ``category`` and ``cross`` (the category is none the user touched in ``train``)."""
    categories = catalog.select("item_id", "category")
    touched = (
        train.select("user_id", "item_id")
        .join(categories, on="item_id")
        .select("user_id", "category")
        .unique()
        .with_columns(pl.lit(True).alias("seen"))
    )
    return (
        pairs.join(categories, on="item_id", how="left")
        .join(touched, on=["user_id", "category"], how="left")
        .with_columns((pl.col("seen").is_null() & pl.col("category").is_not_null()).alias("cross"))
        .drop("seen")
        .sort("user_id", "item_id")
    )
