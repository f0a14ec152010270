"""The ranker's training rows, by replaying history through the engine's own request path.

At each *decision time* ``t``, every sampled user's state is rebuilt from their events before ``t``
(the newest ``history_events``, as the event store hands them to a request), the recommender
gathers candidates and features exactly as it does for a request at ``t``
(:meth:`engine.retrieval.recommend.Recommender.gather`), and each candidate is labelled with what
the user did with it in ``[t, t + label_days)``:

=============  ==============================================================================
``click``      clicked, carted or bought it (the eval's positives: intent, not a view)
``cart``       carted or bought it
``purchase``   bought it
=============  ==============================================================================

Why replay rather than random negatives: the candidates are the engine's own (the hard choices the
ranker faces when serving), and the same code computes every feature, so training and serving rows
cannot drift apart.

No future reaches a row: the profile sees only events before ``t``, and the index version's
statistics (popularity, funnel rates, transitions, neighbours, adaptation) must come from events
before ``t`` too. :func:`replay` checks the version's recorded event window and refuses a decision
time the index has already seen past (build the replay index from events before the earliest
decision; ``crossrec train`` does).

Decision users are those with history before ``t`` who came back in the label window (any event):
the shoppers a list would have been shown to. ``users`` of them are sampled per decision (seeded).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from crossrec.vocabulary import OBJECTIVES, US_PER_DAY
from engine.config import EngineConfig
from engine.core import profile_of
from engine.retrieval.features import FEATURES
from engine.retrieval.query import Query
from engine.retrieval.ranking import BLEND_COLUMN
from engine.retrieval.recommend import Recommender
from engine.state.profile import ProfileEvent
from indexer.manifest import IndexManifest

log = logging.getLogger(__name__)

#: How far each action takes an item along the funnel (labels: objective i when level >= i + 1).
_LEVEL = {"view": 0, "click": 1, "cart": 2, "purchase": 3}


class ReplayError(ValueError):
    """A replay that would leak the future or has nothing to replay."""


@dataclass(frozen=True)
class ReplayConfig:
    """``label_days``: the window after each decision whose actions label its candidates.
    ``users``: decision users sampled per decision time. ``k``: the list length the candidates are
    gathered for (candidates barely depend on it). ``seed``: the user draw. ``part_decisions``:
    decisions per part handed out by :func:`replay_parts` (a part of 2,000 decisions of ~1,000
    candidates is ~300 MB of rows)."""

    label_days: float = 14.0
    users: int = 20_000
    k: int = 10
    seed: int = 0
    part_decisions: int = 2_000

    def __post_init__(self) -> None:
        if self.label_days <= 0 or self.users < 1 or self.k < 1 or self.part_decisions < 1:
            raise ValueError(f"label_days, users and k must be positive, got {self}")


def replay(
    recommender: Recommender,
    config: EngineConfig,
    events: pl.DataFrame,
    decision_times_us: list[int],
    replay_config: ReplayConfig = ReplayConfig(),
    progress: bool = False,
    first_id: int = 0,
) -> pl.DataFrame:
    """Training rows (the ``ranker.rows`` format: ``decision_id`` from ``first_id`` on,
    ``decision_ts_us``, ``item_id``, ``price``, ``blend_score``, one Int8 column per objective,
    then ``FEATURES`` as Float32) for every decision time, in one frame. ``events``: ``user_id``,
    ``item_id``, ``action``, and ``ts`` (datetime) or ``ts_us``."""
    return _whole(
        replay_parts(
            recommender, config, events, decision_times_us, replay_config, progress, first_id
        ),
        "no decision had candidates: are there users before and after it?",
    )


def replay_parts(
    recommender: Recommender,
    config: EngineConfig,
    events: pl.DataFrame,
    decision_times_us: list[int],
    replay_config: ReplayConfig = ReplayConfig(),
    progress: bool = False,
    first_id: int = 0,
) -> Iterator[pl.DataFrame]:
    """The rows of :func:`replay` as they are made: parts of whole decisions, at most
    ``replay_config.part_decisions`` each, ids consecutive across parts (for writing them out
    without holding them all; an empty replay yields nothing). The leak check runs at the
    call."""
    known_until = index_events_until_us(recommender.version.info)
    for t in decision_times_us:
        if known_until is not None and known_until >= t:
            raise ReplayError(
                f"index version {recommender.version.version} holds events up to "
                f"{_iso(known_until)}, not before the decision time {_iso(t)}: its statistics "
                "would leak the labels' period; build the replay index from earlier events"
            )
    return _time_parts(
        recommender,
        config,
        _event_frame(events),
        decision_times_us,
        replay_config,
        progress,
        first_id,
    )


def _time_parts(
    recommender: Recommender,
    config: EngineConfig,
    frame: pl.DataFrame,
    decision_times_us: list[int],
    replay_config: ReplayConfig,
    progress: bool,
    first_id: int,
) -> Iterator[pl.DataFrame]:
    next_id = first_id
    for t in sorted(decision_times_us):
        end = t + int(replay_config.label_days * US_PER_DAY)
        before = frame.filter(pl.col("ts_us") < t)
        window = frame.filter((pl.col("ts_us") >= t) & (pl.col("ts_us") < end))
        for part in _decision_rows(
            recommender, config, before, window, t, replay_config, next_id, progress
        ):
            next_id += part["decision_id"].n_unique()
            yield part


def index_events_until_us(manifest: IndexManifest) -> int | None:
    """The newest event an index version's statistics know (µs; from its manifest), None when it
    records none."""
    window = manifest.sources.events_window if manifest.sources else None
    return None if window is None else window.last_us


def _event_frame(events: pl.DataFrame) -> pl.DataFrame:
    ts = pl.col("ts").dt.epoch("us") if "ts" in events.columns else pl.col("ts_us")
    return events.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("action").cast(pl.String),
        ts.alias("ts_us"),
    )


def replay_holdout(
    recommender: Recommender,
    config: EngineConfig,
    visible: pl.DataFrame,
    hidden: pl.DataFrame,
    replay_config: ReplayConfig = ReplayConfig(),
    progress: bool = False,
    first_id: int = 0,
) -> pl.DataFrame:
    """Training rows for a log without a usable clock: one decision per user who has both
    ``visible`` and ``hidden`` events (a per-user holdout of their items), the profile from the
    visible events, the candidates labelled by what the user did with the hidden items. The
    decision time is just after the newest visible event, so every visible event counts and the
    profile's decay is the same for all.

    No hidden event may reach a row: the index version must be built from ``visible`` alone
    (``crossrec train --mode holdout`` does); a version whose recorded window ends after the
    newest visible event is refused. Same row format as :func:`replay`."""
    return _whole(
        replay_holdout_parts(
            recommender, config, visible, hidden, replay_config, progress, first_id
        ),
        "no user has both visible and hidden events with candidates",
    )


def replay_holdout_parts(
    recommender: Recommender,
    config: EngineConfig,
    visible: pl.DataFrame,
    hidden: pl.DataFrame,
    replay_config: ReplayConfig = ReplayConfig(),
    progress: bool = False,
    first_id: int = 0,
) -> Iterator[pl.DataFrame]:
    """The rows of :func:`replay_holdout` as they are made, in parts (as :func:`replay_parts`).
    The checks run at the call."""
    frame_visible, frame_hidden = _event_frame(visible), _event_frame(hidden)
    if frame_visible.height == 0:
        raise ReplayError("no visible events to build profiles from")
    t = int(cast(int, frame_visible["ts_us"].max())) + 1
    known_until = index_events_until_us(recommender.version.info)
    if known_until is not None and known_until >= t:
        raise ReplayError(
            f"index version {recommender.version.version} holds events up to "
            f"{_iso(known_until)}, after the newest visible event: build it from the visible "
            "events only"
        )
    return _decision_rows(
        recommender, config, frame_visible, frame_hidden, t, replay_config, first_id, progress
    )


def _decision_rows(
    recommender: Recommender,
    config: EngineConfig,
    before: pl.DataFrame,
    window: pl.DataFrame,
    t: int,
    replay_config: ReplayConfig,
    first_id: int,
    progress: bool,
) -> Iterator[pl.DataFrame]:
    """One decision per user in both ``before`` (their history) and ``window`` (their labels) at
    time ``t``, in parts of ``replay_config.part_decisions`` decisions."""
    users = sorted(set(before["user_id"].unique()) & set(window["user_id"].unique()))
    if len(users) > replay_config.users:
        rng = np.random.default_rng([replay_config.seed, t % (2**32)])
        users = sorted(rng.choice(users, replay_config.users, replace=False).tolist())
    # The newest ``history_events`` per user, oldest first, as the store hands them to a request.
    history = (
        before.filter(pl.col("user_id").is_in(users))
        .sort("user_id", "ts_us", maintain_order=True)
        .group_by("user_id", maintain_order=True)
        .tail(config.profile.history_events)
    )
    levels = (
        window.filter(pl.col("user_id").is_in(users))
        .with_columns(pl.col("action").replace_strict(_LEVEL, return_dtype=pl.Int8).alias("level"))
        .group_by("user_id", "item_id")
        .agg(pl.col("level").max())
        .filter(pl.col("level") > 0)
    )
    taken: dict[str, dict[str, int]] = {}
    for user, item, level in levels.iter_rows():
        taken.setdefault(user, {})[item] = level
    query = Query(k=replay_config.k, cross_share=config.retrieval.default_cross_category_share)
    items = recommender.items
    part: list[tuple] = []
    by_user = history.partition_by("user_id", as_dict=True, maintain_order=True)
    decision, row_count = first_id, 0
    for (user,), frame in tqdm(
        by_user.items(), desc=f"replay {_iso(t)[:10]}", unit="user", disable=not progress
    ):
        profile_events = [
            ProfileEvent(i, a, ts) for i, a, ts in frame.select("item_id", "action", "ts_us").rows()
        ]
        profile = profile_of(recommender, config.profile, profile_events, t)
        gathered = recommender.gather(profile, query, t)
        if not len(gathered.candidates):
            continue
        item_ids = items.item_ids[gathered.candidates.rows].astype(str)
        user_taken = taken.get(user, {})
        level = np.fromiter((user_taken.get(i, 0) for i in item_ids), np.int8, len(item_ids))
        part.append((decision, item_ids, gathered.candidates.rows, gathered.features, level))
        decision += 1
        row_count += len(item_ids)
        if len(part) == replay_config.part_decisions:
            yield _part_frame(part, items.price, t)
            part = []
    if part:
        yield _part_frame(part, items.price, t)
    log.info("decision %s: %d users, %d rows", _iso(t), decision - first_id, row_count)


def _part_frame(part: list[tuple], price: np.ndarray, t: int) -> pl.DataFrame:
    """Rows of (decision id, item ids, item rows, features, funnel level) per decision."""
    decisions, ids, item_rows, features, levels = zip(*part, strict=True)
    level = np.concatenate(levels)
    matrix = np.concatenate(features)
    return pl.DataFrame(
        {
            "decision_id": np.repeat(np.asarray(decisions, np.int64), [len(i) for i in ids]),
            "decision_ts_us": np.full(len(level), t, np.int64),
            "item_id": np.concatenate(ids).tolist(),
            "price": price[np.concatenate(item_rows)].astype(np.float64),
            "blend_score": matrix[:, BLEND_COLUMN].astype(np.float64),
            **{o: (level >= i + 1).astype(np.int8) for i, o in enumerate(OBJECTIVES)},
            **{name: matrix[:, j] for j, name in enumerate(FEATURES)},
        }
    )


def _whole(parts: Iterator[pl.DataFrame], nothing: str) -> pl.DataFrame:
    """Every part in one frame; :class:`ReplayError` saying ``nothing`` when there is none."""
    frames = [p for p in parts if p.height]
    if not frames:
        raise ReplayError(nothing)
    return pl.concat(frames)


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()
