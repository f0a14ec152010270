"""crossrec itself as a method under evaluation: through the code that serves, in-process or over
gRPC.

Both sessions feed the engine the test users' *training* events only, then ask for each test user's
list once per cut-off K (``k = K``) with a cross-category share. The share applies to the k slots of
a request and the list comes back in ranking order, so the first 10 of a k=100 list are not what a
k=10 request serves: each K gets its own request. The engine may return fewer than K items and
items the user touched before the cut (it only drops purchases), so its lists go through the same
:func:`~apps.evaluation.dataset.drop_seen` as every baseline's.

A share is a float in [0, 1], ``None`` (no split: the ranking alone fills the k slots) or
:data:`ENGINE_DEFAULT` (whatever the engine's configuration says).

Every list is asked for at the split's cut (``Split.cut``: the start of the test period, or the
newest training event of a holdout split), as a shop would have asked then: the features that
measure time from the request (``category_recency_days``) and the profile's decay then see the
ages the ranker was trained on. Asked at the wall clock instead, a log from months ago puts every
touched category months in the past, outside anything the ranker's replay saw.

- :class:`EngineSession`: ``engine.core.Engine`` on a throw-away SQLite store, loading the
  evaluated index version (:func:`apps.inprocess.engine_with_events`, a throw-away key); each
  request carries the cut as its time.
- :class:`RemoteSession`: a running engine at ``host:port`` through ``clients.sdk.CrossrecClient``.
  A request over gRPC has no time of its own (the engine's clock is "now"), so the training events
  are sent shifted by ``now - cut``: the engine sees the log end as it starts. Event ids are a hash
  of each event as logged, so a rerun's ingestion is acknowledged as duplicates (the first run's
  times stay). The engine should serve an index built from the training events and hold no
  test-period events of these users, or the figures leak.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from apps.evaluation.dataset import EvalSet, drop_seen, lists_from_ids

log = logging.getLogger(__name__)

#: Events per IngestEvents call over gRPC (the engine's default limit is 5,000).
REMOTE_BATCH = 1_000
ENGINE_DEFAULT = "default"
#: A crossrec setting's cross-category share: a float, None (no split) or ENGINE_DEFAULT.
Share = float | str | None


class Session(Protocol):
    """An engine fed with the test users' training events, answering item-id lists."""

    setup_seconds: float

    def start(self, data: EvalSet) -> None: ...

    def recommend(self, user_id: str, k: int, share: Share) -> list[str]: ...

    def close(self) -> None: ...


def training_events(data: EvalSet) -> pl.DataFrame:
    """The test users' training events: user_id, item_id, action, ts_us (µs since the epoch, UTC),
    session_id ("" when absent), sorted by user and time."""
    train = data.split.train.filter(pl.col("user_id").is_in(data.split.test_users))
    session = pl.col("session_id").fill_null("") if "session_id" in train.columns else pl.lit("")
    return train.select(
        "user_id",
        "item_id",
        pl.col("action").cast(pl.String),
        pl.col("ts").dt.epoch("us").alias("ts_us"),
        session.alias("session_id"),
    ).sort("user_id", "ts_us", maintain_order=True)


@dataclass
class EngineSession:
    """An in-process engine on a temporary event store. ``engine_config``: a TOML of
    engine configuration tables (default: the defaults)."""

    artifact: str
    engine_config: Path | None = None
    progress: bool = True
    #: A ranker model version for the artifact (default: the engine configuration's).
    model: str | None = None
    setup_seconds: float = 0.0
    #: The engine's configured share, used when a setting gives none (known once started).
    default_share: float | None = 1.0
    #: The time every request is asked at: the split's cut (µs since the epoch; set by start).
    now_us: int | None = None
    _engine: object = field(default=None, repr=False)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    def start(self, data: EvalSet) -> None:
        if self._engine is not None:
            return
        from apps.inprocess import engine_with_events

        started = time.perf_counter()
        events = training_events(data)
        engine = self._stack.enter_context(
            engine_with_events(self.artifact, events, self.engine_config, self.progress, self.model)
        )
        self._engine = engine
        self.default_share = engine.config.retrieval.default_cross_category_share
        self.now_us = data.split.cut_us
        self.setup_seconds = time.perf_counter() - started
        log.info(
            "engine loaded %s and ingested %d events in %.1f s",
            self.artifact,
            events.height,
            self.setup_seconds,
        )

    def recommend(self, user_id: str, k: int, share: Share) -> list[str]:
        from engine.retrieval.query import Query

        engine = self._engine
        query = Query(k=k, cross_share=self.default_share if share == ENGINE_DEFAULT else share)
        recommendation = engine.recommend(user_id, [], query, now_us=self.now_us)  # type: ignore[attr-defined]
        return list(recommendation.item_ids)

    def close(self) -> None:
        self._stack.close()
        self._engine = None


def event_ids(events: pl.DataFrame) -> list[str]:
    """A stable id per event: hash of its fields and its occurrence number among identical
    events."""
    fields = ["user_id", "item_id", "action", "ts_us", "session_id"]
    occurrence = pl.int_range(pl.len()).over(fields)
    rows = events.select(*fields, occurrence.alias("n")).iter_rows()
    return [
        "eval-" + hashlib.sha256("\x1f".join(map(str, r)).encode()).hexdigest()[:32] for r in rows
    ]


@dataclass
class RemoteSession:
    """A running engine at ``target`` (``host:port``); ``timeout``: seconds per call."""

    target: str
    timeout: float = 30.0
    progress: bool = True
    setup_seconds: float = 0.0
    _client: object = field(default=None, repr=False)

    def start(self, data: EvalSet) -> None:
        if self._client is not None:
            return
        from datetime import datetime

        from clients.sdk import CrossrecClient, Event

        started = time.perf_counter()
        client = CrossrecClient(self.target, timeout=self.timeout)
        events = training_events(data)
        ids = event_ids(events)
        # the log ends at the engine's "now" (module docstring)
        events = events.with_columns(pl.col("ts_us") + (int(time.time() * 1e6) - data.split.cut_us))
        for start in tqdm(
            range(0, events.height, REMOTE_BATCH),
            desc="crossrec ingest",
            unit="batch",
            disable=not self.progress,
        ):
            rows = events.slice(start, REMOTE_BATCH).iter_rows()
            client.ingest(
                [
                    Event(u, i, a, datetime.fromtimestamp(t / 1e6, UTC), s, event_id=ids[start + j])
                    for j, (u, i, a, t, s) in enumerate(rows)
                ]
            )
        self._client = client
        self.setup_seconds = time.perf_counter() - started

    def recommend(self, user_id: str, k: int, share: Share) -> list[str]:
        if share is None:
            raise ValueError(
                "over gRPC a request cannot ask for no split; "
                "configure the engine's default instead"
            )
        remote_share = None if share == ENGINE_DEFAULT else share  # unset: the engine's default
        rec = self._client.recommend(user_id, k=k, cross_category_share=remote_share)  # type: ignore[attr-defined]
        return [item.item_id for item in rec.items]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[attr-defined]
            self._client = None


def share_label(share: Share, variant: str = "") -> str:
    """Row name of a crossrec setting: ``crossrec`` (engine default), ``crossrec (no split)`` or
    ``crossrec (share 0.5)``; a ``variant`` (``+ ranker``) follows the name."""
    name = f"crossrec {variant}".strip()
    if share == ENGINE_DEFAULT:
        return name
    return f"{name} (no split)" if share is None else f"{name} (share {float(share)})"


def parse_share(text: str) -> Share:
    """``default``, ``none`` or a number in [0, 1]."""
    token = text.strip().lower()
    if token in (ENGINE_DEFAULT, "none"):
        return ENGINE_DEFAULT if token == ENGINE_DEFAULT else None
    value = float(token)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a cross-category share must be within [0, 1], got {value}")
    return value


@dataclass
class Crossrec:
    """One crossrec setting (a cross-category share) evaluated through a shared session."""

    session: Session
    share: Share = ENGINE_DEFAULT
    progress: bool = True
    variant: str = ""

    @property
    def name(self) -> str:
        return share_label(self.share, self.variant)

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        self.session.start(data)
        ids = [
            self.session.recommend(u, k, self.share)
            for u in _progress(data.split.test_users, self.name, self.progress)
        ]
        return drop_seen(lists_from_ids(ids, data.code_of(), k), data.seen)


def _progress(users: list[str], desc: str, enabled: bool) -> Iterator[str]:
    return iter(tqdm(users, desc=desc, unit="user", disable=not enabled))
