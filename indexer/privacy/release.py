"""The behaviour statistics of a private build, released under the budget of its
:class:`~indexer.privacy.config.PrivacyConfig` - the same files, columns and types as a build
without privacy, so that the engine reads them unchanged.

What each file holds under privacy (``M``, ``N``, ``P``, ``m``: the bounds of
:mod:`indexer.privacy.bounding`; "noisy": Gaussian noise at the sensitivity given, clamped at 0):

``items.parquet``      noisy ``views, clicks, carts, purchases`` (one vector, L2 sensitivity
                       ``sqrt(M) N``), ``events_7d, events_28d`` (``sqrt(2M) N``); ``events``
                       their sum, the funnel rates from the noisy counts; ``popularity`` its own
                       release of *shoppers* per item, each weighted by the decay of their last
                       touch and each shopper's weights scaled to an L2 norm of at most the clip
                       (:func:`shopper_popularity`; sensitivity: the clip, at most ``sqrt(M)``;
                       the clip is the private median of the shoppers' norms unless set: the
                       popular source ranks by it, so it gets the most budget at the least
                       sensitivity - decayed action-weighted events would carry the purchase
                       weight 8 in theirs);
                       ``age_days`` not published (a first event is one shopper's)
``categories.parquet`` ``sessions`` counts *shoppers* per category (noisy with the shoppers in
                       all, ``sqrt(M + 1)``), ``session_share`` their share; ``events`` and
                       ``purchases`` sums of the items' noisy counts
``transitions.parquet`` ``sessions`` counts shoppers who went from A to B (noisy over every
                       ordered pair of categories, ``sqrt(P)``), published from
                       :data:`PUBLISH_SIGMAS` noise deviations up; probability and lift from them
``neighbours.npz``     shrunk cosine of noisy shopper counts: per pair through the threshold
                       mechanism (``m (m - 1) / 2`` pairs per shopper), per item (``sqrt(m)``)

The windows and the popularity decay count back from the end of the day of the newest event,
and the manifest's event window gives days, not instants: the collection period is taken as
public (the shop knows when its export ran), the instants of single events are not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import cast

import numpy as np
import polars as pl
from scipy import sparse

from indexer.manifest import EventsWindow
from indexer.neighbours import ItemNeighbours, NeighbourConfig, describe, gram_neighbours
from indexer.privacy.bounding import bound_events, pair_counts, pair_items, user_transitions
from indexer.privacy.config import CLIP_QUANTILE, PrivacyConfig, clip_candidates
from indexer.privacy.mechanisms import Budget, Noise
from indexer.transitions import (
    POPULARITY_HALF_LIFE_DAYS,
    RECENT_WINDOWS_DAYS,
    BehaviourStats,
    category_codes,
    item_counts,
    with_funnel,
)

#: A transition is published when its noisy shopper count reaches this many noise deviations
#: (post-processing: a pair no shopper made is published with probability ~2%).
PUBLISH_SIGMAS = 2.0
ACTION_COLUMNS = ("views", "clicks", "carts", "purchases")
WINDOW_COLUMNS = tuple(f"events_{d}d" for d in RECENT_WINDOWS_DAYS)


@dataclass
class PrivateBehaviour:
    """What a private build publishes from behaviour, and the manifest's ``privacy`` entry."""

    stats: BehaviourStats
    neighbours: ItemNeighbours | None
    neighbour_report: dict | None
    window: EventsWindow
    manifest: dict


def private_behaviour(
    sessions: pl.DataFrame,
    catalog: pl.DataFrame,
    config: PrivacyConfig,
    neighbour_config: NeighbourConfig,
) -> PrivateBehaviour:
    """The private releases of the module docstring from the session frame."""
    if sessions.height == 0:
        raise ValueError("a private build needs events (there is nothing to protect without)")
    bounded = bound_events(sessions, config)
    end = _day_end(cast(datetime, sessions["ts"].max()))
    start = _day_end(cast(datetime, sessions["ts"].min())) - timedelta(days=1)
    neighbours_on = neighbour_config.top_n > 0
    released = ["item_actions", "item_windows", "item_popularity", "category_users"]
    released += ["popularity_clip"] if config.popularity_clip is None else []
    released += ["transitions"] + (["item_users", "pairs"] if neighbours_on else [])
    noise = Noise(Budget(config, released))
    items, clip = _items(bounded, catalog, end, noise, config)
    names, codes = category_codes(catalog)
    shoppers, share = _category_shoppers(bounded, len(names), noise, config)
    categories = _categories(catalog, names, codes, items, shoppers, share)
    transitions = _transitions(bounded, names, share, noise, config)
    neighbours = report = None
    if neighbours_on:
        neighbours = _neighbours(bounded, catalog.height, noise, config, neighbour_config)
        report = {**describe(neighbours, codes.to_numpy(), neighbour_config, 0.0), "private": True}
    epsilon, delta = noise.spent()
    window = EventsWindow(int(items["events"].sum()), start.isoformat(), end.isoformat())
    manifest = {
        "unit": "shopper (user_id)",
        "epsilon": round(epsilon, 6),
        "delta": delta,
        "accounting": "zCDP composition (rho adds up), threshold delta added, converted by OpenDP",
        "noise": noise.sampler,
        "bounds": {
            "max_events_per_item": config.max_events_per_item,
            "max_items_per_user": config.max_items_per_user,
            "max_transitions_per_user": config.max_transitions_per_user,
            "max_pair_items": config.max_pair_items,
            "popularity_clip": round(clip, 6),
        },
        "popularity_clip_chosen_by": (
            "setting" if config.popularity_clip else "private median of the shoppers' norms"
        ),
        "statistics": [r.to_json() for r in noise.releases],
        "events_window": "days (the collection period, taken as public)",
    }
    return PrivateBehaviour(
        BehaviourStats(transitions, categories, items), neighbours, report, window, manifest
    )


def _day_end(ts: datetime) -> datetime:
    """The end of ``ts``'s UTC day (midnight after it)."""
    return ts.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)


def _items(
    bounded: pl.DataFrame, catalog: pl.DataFrame, end: datetime, noise: Noise, c: PrivacyConfig
) -> tuple[pl.DataFrame, float]:
    """The noisy item statistics and the popularity clip used."""
    m, n = c.max_items_per_user, c.max_events_per_item
    counts = item_counts(bounded, catalog, end)
    size = counts.height

    def noisy(name: str, columns: tuple[str, ...], sensitivity: float) -> np.ndarray:
        values = np.concatenate([counts[col].to_numpy().astype(np.int64) for col in columns])
        return np.maximum(noise.gaussian(name, values, sensitivity), 0).reshape(len(columns), size)

    actions = noisy("item_actions", ACTION_COLUMNS, math.sqrt(m) * n)
    windows = noisy("item_windows", WINDOW_COLUMNS, math.sqrt(2 * m) * n)
    touches = last_touches(bounded, end)
    clip = c.popularity_clip or noise.quantile(
        "popularity_clip", touches.norms, clip_candidates(m), CLIP_QUANTILE
    )
    clip = min(clip, math.sqrt(m))  # no bounded shopper's norm is larger
    decayed = shopper_popularity(touches, size, clip)
    popularity = np.maximum(noise.gaussian("item_popularity", decayed, clip), 0.0)
    frame = with_funnel(
        counts.with_columns(
            *(pl.Series(col, v, pl.UInt32) for col, v in zip(ACTION_COLUMNS, actions, strict=True)),
            *(pl.Series(col, v, pl.UInt32) for col, v in zip(WINDOW_COLUMNS, windows, strict=True)),
            pl.Series("events", actions.sum(axis=0), pl.UInt32),
            pl.Series("popularity", popularity, pl.Float64),
            pl.lit(None, pl.Float32).alias("age_days"),
        )
    )
    return frame, clip


@dataclass(frozen=True)
class Touches:
    """Each (shopper, item)'s weight: ``0.5 ** (days from the shopper's last touch of the item to
    the end / half-life)`` (the non-private popularity's half-life), at most 1; ``user`` codes
    0..n-1, sorted by item then shopper."""

    user: np.ndarray
    row: np.ndarray
    weight: np.ndarray

    @cached_property
    def norms(self) -> np.ndarray:
        """Each shopper's L2 norm of their weights (one value per shopper code)."""
        return np.sqrt(np.bincount(self.user, weights=self.weight**2))


def last_touches(bounded: pl.DataFrame, end: datetime) -> Touches:
    # Sorted, so the float sums made of it add in one order and a build repeats byte for byte.
    last = bounded.group_by("user", "row").agg(pl.col("ts").max()).sort("row", "user")
    age_days = (end - last["ts"]).dt.total_microseconds().to_numpy() / 86_400e6
    _, user = np.unique(last["user"].to_numpy(), return_inverse=True)
    weight = 0.5 ** (age_days / POPULARITY_HALF_LIFE_DAYS)
    return Touches(user.astype(np.int64), last["row"].to_numpy().astype(np.int64), weight)


def shopper_popularity(touches: Touches, n_items: int, clip: float) -> np.ndarray:
    """Per item, the sum of its shoppers' weights, each shopper's weights scaled to an L2 norm of
    at most ``clip``: one shopper moves the vector by at most ``clip`` in L2."""
    scale = np.minimum(1.0, clip / np.maximum(touches.norms, 1e-300))
    weight = touches.weight * scale[touches.user]
    return np.bincount(touches.row, weights=weight, minlength=n_items)


def _category_shoppers(
    bounded: pl.DataFrame, n_categories: int, noise: Noise, c: PrivacyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy shoppers per category code and each category's share of all shoppers."""
    per = bounded.group_by("category").agg(pl.col("user").n_unique().alias("users"))
    values = np.zeros(n_categories + 1, np.int64)
    values[per["category"].to_numpy()] = per["users"].to_numpy()
    values[-1] = bounded["user"].n_unique()
    sensitivity = math.sqrt(min(c.max_items_per_user, n_categories) + 1)
    out = np.maximum(noise.gaussian("category_users", values, sensitivity), 0)
    return out[:-1], out[:-1] / max(int(out[-1]), 1)


def _categories(catalog, names, codes, items, shoppers, share) -> pl.DataFrame:
    sums = (
        items.select("events", "purchases")
        .with_columns(codes)
        .group_by("category")
        .agg(pl.col("events", "purchases").sum().cast(pl.UInt32))
    )
    sizes = pl.DataFrame(codes).group_by("category").agg(pl.len().cast(pl.UInt32).alias("items"))
    return (
        pl.DataFrame(
            {
                "category": names,
                "code": pl.int_range(len(names), dtype=pl.UInt32, eager=True),
                "sessions": pl.Series(shoppers, dtype=pl.UInt32),
                "session_share": share.astype(np.float64),
            }
        )
        .join(sizes, left_on="code", right_on="category")
        .join(sums, left_on="code", right_on="category", how="left")
        .select("category", "items", "events", "purchases", "sessions", "session_share")
        .fill_null(0)
        .sort("category")
    )


def _transitions(
    bounded: pl.DataFrame, names: pl.Series, share: np.ndarray, noise: Noise, c: PrivacyConfig
) -> pl.DataFrame:
    k = len(names)
    counts = np.zeros((k, k), np.int64)
    made = user_transitions(bounded, c.max_transitions_per_user)
    counts[made["source"].to_numpy(), made["target"].to_numpy()] = made["users"].to_numpy()
    source, target = np.nonzero(~np.eye(k, dtype=bool))  # every ordered pair of two categories
    sensitivity = math.sqrt(c.max_transitions_per_user)
    noisy = noise.gaussian("transitions", counts[source, target], sensitivity)
    keep = noisy >= max(PUBLISH_SIGMAS * noise.releases[-1].scale, 1.0)
    frame = pl.DataFrame(
        {
            "source": names.gather(source[keep]),
            "target": names.gather(target[keep]),
            "sessions": pl.Series(noisy[keep], dtype=pl.UInt32),
            "target_share": share[target[keep]],
        }
    )
    return (
        frame.with_columns(
            (pl.col("sessions") / pl.col("sessions").sum().over("source")).alias("probability")
        )
        .with_columns((pl.col("probability") / pl.col("target_share")).alias("lift"))
        .select("source", "target", "sessions", "probability", "lift")
        .sort("source", "probability", "target", descending=[False, True, False])
    )


def _neighbours(
    bounded: pl.DataFrame,
    n_items: int,
    noise: Noise,
    c: PrivacyConfig,
    config: NeighbourConfig,
) -> ItemNeighbours:
    chosen = pair_items(bounded, c.max_pair_items)
    keys, counts = pair_counts(chosen, n_items)
    m = c.max_pair_items
    keys, noisy = noise.threshold("pairs", keys, counts, m * (m - 1) // 2)
    users = np.bincount(chosen["row"].to_numpy().astype(np.int64), minlength=n_items)
    item_users = np.maximum(noise.gaussian("item_users", users.astype(np.int64), math.sqrt(m)), 1)
    i, j = keys // n_items, keys % n_items
    gram = sparse.csr_matrix(
        (np.r_[noisy, noisy].astype(np.float64), (np.r_[i, j], np.r_[j, i])),
        shape=(n_items, n_items),
    )
    norms = np.sqrt(item_users.astype(np.float64))
    return gram_neighbours(lambda lo, hi: gram[lo:hi], norms, config)
