"""An engine in this process, on a throw-away event store, fed a frame of events: what the
evaluation, the complement check and the latency command all start from."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from engine.config import EngineConfig
from engine.core import Engine
from engine.state.store import SQLiteEventStore, StoredEvent


@contextmanager
def engine_with_events(
    artifact: str | Path,
    events: pl.DataFrame,
    engine_config: Path | None = None,
    progress: bool = False,
    model: str | Path | None = None,
    impressions: bool = False,
) -> Iterator[Engine]:
    """Load ``artifact`` (verified) and ``model`` (a ranker model version; default: the configured
    one) into an engine configured by ``engine_config`` (an engine configuration TOML;
    default: the defaults), ingest ``events`` (see :func:`ingest_frame`), yield it, and remove the
    store afterwards. ``impressions``: log every response (next to the throw-away store)."""
    with tempfile.TemporaryDirectory(prefix="crossrec-") as tmp:
        store = f"{tmp}/events.sqlite"
        # No impression log unless asked (to measure its cost): these lists are shown to no one.
        config = EngineConfig.load(
            engine_config,
            {
                "store": {
                    "path": store,
                    "pseudonym_key": "crossrec-in-process-throwaway-pseudonyms",
                },
                "feedback": {"impression_sample_rate": 1.0 if impressions else 0.0},
            },
        )
        engine = Engine(config, SQLiteEventStore(store))
        try:
            engine.versions.load(str(artifact), None if model is None else str(model))
            ingest_frame(engine, events, progress)
            yield engine
        finally:
            engine.close()


def ingest_frame(
    engine: Engine, events: pl.DataFrame, progress: bool = False, batch: int = 20_000
) -> int:
    """Store ``events`` (columns ``user_id``, ``item_id``, ``action``, ``ts`` as a datetime or
    ``ts_us`` in µs, optional ``session_id``) in batches; event ids are row numbers. Returns how
    many were stored."""
    ts = pl.col("ts").dt.epoch("us") if "ts" in events.columns else pl.col("ts_us")
    session = pl.col("session_id").fill_null("") if "session_id" in events.columns else pl.lit("")
    frame = events.select(
        "user_id", "item_id", pl.col("action").cast(pl.String), ts.alias("ts_us"), session
    )
    keys = {u: engine.user_key(u) for u in frame["user_id"].unique().to_list()}
    stored = 0
    starts = range(0, frame.height, batch)
    for start in tqdm(starts, desc="ingest", unit="batch", disable=not progress):
        rows = frame.slice(start, batch).iter_rows()
        stored += engine.ingest(
            [
                StoredEvent(f"e{start + j}", keys[u], i, a, t, s)
                for j, (u, i, a, t, s) in enumerate(rows)
            ]
        ).stored
    return stored
