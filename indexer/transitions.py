"""Behaviour statistics the engine needs: category transitions and item/category popularity.

A *transition* ``A -> B`` is counted once per session in which the shopper engaged with category A
before category B. ``probability`` is ``P(B | A)`` over the sessions' next categories; ``lift`` is how
much more often B follows A than B's overall session share would predict. Sessions come from the
``session_id`` column, or, where it is missing, from a user's events split at gaps of more than
30 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

SESSION_GAP_S = 30 * 60
ACTION_WEIGHT = {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0}
POPULARITY_HALF_LIFE_DAYS = 14.0


@dataclass(frozen=True)
class BehaviourStats:
    transitions: pl.DataFrame  # source, target, sessions, probability, lift
    categories: pl.DataFrame  # category, items, events, purchases, sessions, session_share
    items: pl.DataFrame  # item_id, events, purchases, popularity

    @classmethod
    def without_events(cls, catalog: pl.DataFrame) -> "BehaviourStats":
        """What a build without events records: no transitions, zero counts."""
        transitions = pl.DataFrame(
            schema={"source": pl.String, "target": pl.String, "sessions": pl.UInt32, "probability": pl.Float64, "lift": pl.Float64}
        )
        zero = pl.lit(0, pl.UInt32)
        categories = (
            catalog.group_by("category")
            .agg(pl.len().alias("items"))
            .with_columns(zero.alias("events"), zero.alias("purchases"), zero.alias("sessions"), pl.lit(0.0).alias("session_share"))
            .sort("category")
        )
        return cls(transitions, categories, item_popularity(catalog.clear(), catalog))


def sessionise(events: pl.DataFrame) -> pl.DataFrame:
    """Add a ``session`` key: ``session_id`` where given, else user + 30-minute inactivity split."""
    events = events.sort("user_id", "ts")
    gap = (pl.col("ts").diff().over("user_id").dt.total_seconds() > SESSION_GAP_S).fill_null(True)
    derived = pl.col("user_id") + "#" + gap.cum_sum().over("user_id").cast(pl.String)
    if "session_id" in events.columns:
        key = pl.when(pl.col("session_id").is_not_null()).then("s#" + pl.col("session_id")).otherwise(derived)
    else:
        key = derived
    return events.with_columns(key.alias("session"))


def behaviour_stats(events: pl.DataFrame, catalog: pl.DataFrame) -> BehaviourStats:
    """Transitions and popularity from validated events and catalogue (events on items missing
    from the catalogue are ignored here; validation reports them)."""
    ev = sessionise(events.join(catalog.select("item_id", "category"), on="item_id", how="inner"))
    firsts = ev.group_by("session", "category").agg(pl.col("ts").min().alias("first"))
    pairs = (
        firsts.join(firsts, on="session", suffix="_b")
        .filter(pl.col("first") < pl.col("first_b"))
        .group_by(pl.col("category").alias("source"), pl.col("category_b").alias("target"))
        .agg(pl.len().alias("sessions"))
    )
    n_sessions = ev["session"].n_unique()
    per_category = firsts.group_by("category").agg(pl.len().alias("sessions"))
    share = per_category.select("category", (pl.col("sessions") / n_sessions).alias("session_share"))
    transitions = (
        pairs.with_columns((pl.col("sessions") / pl.col("sessions").sum().over("source")).alias("probability"))
        .join(share.rename({"category": "target"}), on="target")
        .with_columns((pl.col("probability") / pl.col("session_share")).alias("lift"))
        .drop("session_share")
        .sort("source", "probability", descending=[False, True])
    )
    action = pl.col("action").cast(pl.String)
    counts = ev.group_by("category").agg(
        pl.len().alias("events"), (action == "purchase").sum().alias("purchases")
    )
    categories = (
        catalog.group_by("category").agg(pl.len().alias("items"))
        .join(counts, on="category", how="left")
        .join(per_category, on="category", how="left")
        .join(share, on="category", how="left")
        .fill_null(0)
        .sort("category")
    )
    items = item_popularity(ev, catalog)
    return BehaviourStats(transitions, categories, items)


def item_popularity(events: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    """Per item: event and purchase counts, and ``popularity``: action-weighted events decayed with
    a 14-day half-life back from the newest event (so a recent bestseller outranks an old one)."""
    if events.height == 0:
        return catalog.select("item_id").with_columns(
            pl.lit(0, pl.UInt32).alias("events"), pl.lit(0, pl.UInt32).alias("purchases"), pl.lit(0.0).alias("popularity")
        )
    newest = events["ts"].max()
    age_days = (pl.lit(newest) - pl.col("ts")).dt.total_seconds() / 86_400
    weight = pl.col("action").cast(pl.String).replace_strict(ACTION_WEIGHT, return_dtype=pl.Float64)
    decayed = weight * (0.5 ** (age_days / POPULARITY_HALF_LIFE_DAYS))
    per_item = events.group_by("item_id").agg(
        pl.len().alias("events"),
        (pl.col("action").cast(pl.String) == "purchase").sum().alias("purchases"),
        decayed.sum().alias("popularity"),
    )
    return (
        catalog.select("item_id")
        .join(per_item, on="item_id", how="left")
        .with_columns(pl.col("events", "purchases").fill_null(0), pl.col("popularity").fill_null(0.0))
    )
