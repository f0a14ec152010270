"""Contribution bounding: what one shopper may put into a private build's statistics.

Each rule reads only the shopper's own events, so it is a per-shopper transformation and the
sensitivities below hold whatever the other shoppers did. On the session frame
(:func:`indexer.transitions.sessionise`):

1. per (shopper, item) the ``max_events_per_item`` most recent events;
2. per shopper the ``max_items_per_user`` items touched most recently (the last event counts).

A shopper then moves any item's counts by at most ``N = max_events_per_item`` in all, on at most
``M = max_items_per_user`` items. Category transitions are counted in shoppers (did this shopper
go from A to B in some session), at most ``max_transitions_per_user`` pairs per shopper: those
made in most sessions, ties to the lower (A, B) codes. Co-engagement pairs are counted in
shoppers too, among each shopper's ``max_pair_items`` most recent bounded items.

Ties between events of one time go to the later position in the frame, so the same events give
the same bounded frame.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from indexer.privacy.config import PrivacyConfig


def bound_events(sessions: pl.DataFrame, config: PrivacyConfig) -> pl.DataFrame:
    """The session frame with rules 1 and 2 of the module docstring applied, in its own order."""
    ev = sessions.with_row_index("_pos")
    newest_first = ev.sort(
        ["user", "row", "ts", "_pos"], descending=[False, False, True, True], maintain_order=True
    )
    per_item = newest_first.filter(
        pl.int_range(pl.len()).over("user", "row") < config.max_events_per_item
    )
    last = per_item.group_by("user", "row").agg(
        pl.col("ts").max().alias("_last"), pl.col("_pos").max().alias("_last_pos")
    )
    kept = last.sort(
        ["user", "_last", "_last_pos"], descending=[False, True, True], maintain_order=True
    ).filter(pl.int_range(pl.len()).over("user") < config.max_items_per_user)
    return (
        per_item.join(kept.select("user", "row"), on=["user", "row"], how="semi")
        .sort("_pos")
        .drop("_pos")
    )


def user_transitions(bounded: pl.DataFrame, most: int) -> pl.DataFrame:
    """(``source``, ``target``) category codes and ``users``: how many shoppers went from
    ``source`` to ``target`` in some session (engaged with ``source`` first), each shopper
    counting at most ``most`` pairs (those in most of their sessions, ties to the lower codes)."""
    firsts = bounded.group_by("session", "user", "category").agg(pl.col("ts").min().alias("first"))
    pairs = (
        firsts.join(firsts.select("session", "category", "first"), on="session", suffix="_b")
        .filter(pl.col("first") < pl.col("first_b"))
        .group_by("user", pl.col("category").alias("source"), pl.col("category_b").alias("target"))
        .agg(pl.len().alias("sessions"))
        .sort(
            ["user", "sessions", "source", "target"],
            descending=[False, True, False, False],
        )
        .filter(pl.int_range(pl.len()).over("user") < most)
    )
    return (
        pairs.group_by("source", "target")
        .agg(pl.len().cast(pl.Int64).alias("users"))
        .sort("source", "target")
    )


def pair_items(bounded: pl.DataFrame, most: int) -> pl.DataFrame:
    """(``user``, ``row``): each shopper's ``most`` most recently touched items of the bounded
    frame (ties to the later position), one row per (shopper, item)."""
    last = (
        bounded.with_row_index("_pos")
        .group_by("user", "row")
        .agg(pl.col("ts").max().alias("_last"), pl.col("_pos").max().alias("_last_pos"))
    )
    return (
        last.sort(["user", "_last", "_last_pos"], descending=[False, True, True])
        .filter(pl.int_range(pl.len()).over("user") < most)
        .select("user", "row")
        .sort("user", "row")
    )


def pair_counts(items: pl.DataFrame, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """From :func:`pair_items`: every item pair ``i < j`` some shopper has both of, as keys
    ``i * n_items + j`` (int64, ascending) and the number of such shoppers."""
    from scipy import sparse

    users = items["user"].to_numpy().astype(np.int64)
    rows = items["row"].to_numpy().astype(np.int64)
    n_users = int(users.max()) + 1 if len(users) else 0
    x = sparse.csr_matrix((np.ones(len(users), np.int64), (users, rows)), shape=(n_users, n_items))
    gram = sparse.triu(x.T @ x, k=1).tocoo()
    keys = gram.row.astype(np.int64) * n_items + gram.col.astype(np.int64)
    order = np.argsort(keys)
    return keys[order], gram.data[order].astype(np.int64)
