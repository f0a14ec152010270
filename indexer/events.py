"""The event contract: one row per behaviour event.

Columns (see ARCHITECTURE.md): ``user_id`` (str), ``item_id`` (str), ``action`` (one of
:data:`ACTIONS`), ``ts`` (timestamp, UTC), and optionally ``session_id`` (str) and
``recommendation_id`` (str, the recommendation the event is an outcome of). Other columns are kept.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crossrec.vocabulary import ACTIONS
from indexer.errors import Problem
from indexer.tables import ColumnSpec, read_table, rows_where

# In increasing strength of intent; the order is part of the contract (profiles weight by it).
EVENT_COLUMNS = [
    ColumnSpec("user_id", "string", required=True, nullable=False),
    ColumnSpec("item_id", "string", required=True, nullable=False),
    ColumnSpec("action", "string", required=True, nullable=False),
    ColumnSpec("ts", "timestamp", required=True, nullable=False),
    ColumnSpec("session_id", "string"),
    ColumnSpec("recommendation_id", "string"),
]


def read_events(path: str | Path) -> pl.DataFrame:
    """Read and validate an event file (.parquet, .csv, .jsonl); rows keep file order.

    ``ts`` comes back as ``Datetime("us", "UTC")``. Raises
    :class:`~indexer.errors.DataValidationError` naming each bad row and column.
    """
    frame = read_table(Path(path), EVENT_COLUMNS, check=event_problems)
    return frame.with_columns(pl.col("action").cast(pl.Enum(ACTIONS)))


def event_problems(frame: pl.DataFrame) -> list[Problem]:
    """Rules beyond column types: every action is one of :data:`ACTIONS`."""
    action = frame["action"]
    unknown = action.is_not_null() & ~action.is_in(ACTIONS)
    return rows_where(
        unknown,
        "action",
        lambda r: f"unknown action {action[r]!r}; expected one of {', '.join(ACTIONS)}",
    )


def unknown_item_problems(events: pl.DataFrame, catalog: pl.DataFrame) -> list[Problem]:
    """Events that name items the catalogue does not have."""
    unknown = ~events["item_id"].is_in(catalog["item_id"].implode())
    return rows_where(
        unknown, "item_id", lambda r: f"item {events['item_id'][r]!r} is not in the catalogue"
    )
