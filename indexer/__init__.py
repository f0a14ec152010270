"""Batch side of crossrec: data contracts, synthetic data, and the index build.

Public readers: :func:`read_catalog`, :func:`read_events`, and ``indexer.artifact.open_index`` for
index versions.
"""

from __future__ import annotations

from indexer.catalog import read_catalog
from indexer.errors import DataValidationError, IndexerError, Problem
from indexer.events import ACTIONS, read_events

__all__ = [
    "ACTIONS",
    "DataValidationError",
    "IndexerError",
    "Problem",
    "read_catalog",
    "read_events",
]
