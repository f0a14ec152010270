"""Indexer commands of the ``crossrec`` CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from indexer.catalog import read_catalog
from indexer.errors import DataValidationError
from indexer.events import read_events, unknown_item_problems


def register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check catalogue and event files against the data contracts")
    p.add_argument("--catalog", type=Path, help="catalogue file (.parquet, .csv, .jsonl)")
    p.add_argument("--events", type=Path, help="event file (.parquet, .csv, .jsonl)")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every given file is valid (and, with both, every event names a catalogue item)."""
    if args.catalog is None and args.events is None:
        raise SystemExit("crossrec validate: give --catalog and/or --events")
    catalog = events = None
    if args.catalog is not None:
        catalog = read_catalog(args.catalog)
        n_categories = catalog["category"].n_unique()
        print(f"{args.catalog}: ok, {catalog.height:,} items in {n_categories:,} categories")
    if args.events is not None:
        events = read_events(args.events)
        span = f"{events['ts'].min()} .. {events['ts'].max()}"
        print(f"{args.events}: ok, {events.height:,} events from {events['user_id'].n_unique():,} users, {span}")
    if catalog is not None and events is not None:
        problems = unknown_item_problems(events, catalog)
        if problems:
            raise DataValidationError(args.events, problems)
        print("every event names a catalogue item")
    return 0
