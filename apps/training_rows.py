"""The training rows of ``crossrec train``, by mode (see :mod:`apps.training` for the job):

``time``     replay at decision times before the end of the serving index's window, one replay
             index per decision built from the events before it (:func:`time_rows`)
``holdout``  for logs without a usable clock: hide part of each user's items, one replay index of
             the visible events, labels from the hidden items (:func:`holdout_rows`)
``auto``     ``time`` when the clock is usable, else ``holdout`` (:func:`training_mode`)

Each hands its rows, a few thousand decisions at a time, to a :class:`ranker.row_files.RowWriter`
(never holding them all) and returns (meta for the model and report, index build seconds, replay
seconds).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from crossrec.vocabulary import US_PER_DAY

if TYPE_CHECKING:
    from apps.training import TrainJob
    from indexer.manifest import IndexManifest
    from ranker.row_files import RowWriter

log = logging.getLogger(__name__)

REPLAY_DIR = "replay"
MODES = ("auto", "time", "holdout")


def decision_times(end_us: int, label_days: float, decisions: int, step_days: float) -> list[int]:
    """Decision times (µs), oldest first: ``end - label_days - j * step_days`` for j < decisions."""
    if decisions < 1 or label_days <= 0 or step_days <= 0:
        raise ValueError("decisions, label_days and step_days must be positive")
    latest = end_us - int(label_days * US_PER_DAY)
    return sorted(latest - j * int(step_days * US_PER_DAY) for j in range(decisions))


def training_mode(asked: str, events: pl.DataFrame) -> tuple[str, str]:
    """(``time`` or ``holdout``, why): ``asked`` unless it is ``auto``, which takes ``time`` when
    the clock is usable (:func:`apps.evaluation.split.choose_split`)."""
    from apps.evaluation.split import choose_split

    if asked not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {asked!r}")
    if asked != "auto":
        return asked, "asked for"
    return choose_split(events)


def _replay_index(job: TrainJob, visible: pl.DataFrame, folder: Path, serving_path: Path):
    """An index version of ``visible`` events only, reusing the serving version's content, and
    private as the serving version is (the same budget and bounds, fresh noise): a ranker learns
    from the statistics it will be served with, noisy ones included."""
    from apps.evaluation.index import prepare_index, write_train_events
    from indexer.artifact import read_index_manifest
    from indexer.privacy.config import PrivacyConfig

    _, manifest = read_index_manifest(serving_path)
    release = manifest.report("privacy")
    privacy = PrivacyConfig.like(release) if release else None
    path, digest = write_train_events(visible, folder)
    return prepare_index(
        job.catalog,
        path,
        digest,
        folder,
        progress=job.progress,
        reuse_content=serving_path,
        privacy=privacy,
    )


def time_rows(
    job: TrainJob,
    events: pl.DataFrame,
    serving_path: Path,
    manifest: IndexManifest,
    config,
    writer: RowWriter,
):
    """Replay at decision times before the end of the serving index's window (module docstring)."""
    from engine.replay import ReplayConfig, index_events_until_us, replay_parts
    from engine.retrieval.recommend import Recommender
    from indexer.artifact import open_index

    end_us = index_events_until_us(manifest)
    if end_us is None:
        raise ValueError(
            f"index {serving_path} records no event window (built without events, or by an older "
            "crossrec): rebuild it with events to train a ranker for it"
        )
    end_us += 1  # the window's last event is inside it
    times = decision_times(end_us, job.label_days, job.decisions, job.step_days)
    ts = pl.col("ts").dt.epoch("us")
    replay_versions, index_seconds, replay_seconds = [], 0.0, 0.0
    for t in times:
        before = events.filter(ts < t)
        if before.height == 0:
            raise ValueError(f"no events before the decision time {_iso(t)}")
        replay_index = _replay_index(job, before, job.out / REPLAY_DIR / _iso(t)[:10], serving_path)
        index_seconds += replay_index.seconds
        replay_versions.append(replay_index.path.name)
        log.info("replay index %s (events before %s)", replay_index.path.name, _iso(t))
        recommender = Recommender(open_index(replay_index.path), config.retrieval)
        started_replay = time.perf_counter()
        for part in replay_parts(
            recommender,
            config,
            events.filter(ts < end_us),
            [t],
            ReplayConfig(label_days=job.label_days, users=job.users),
            progress=job.progress,
            first_id=writer.decisions,
        ):
            writer.write(part)
        replay_seconds += time.perf_counter() - started_replay
    meta = {
        "replay_index_versions": replay_versions,
        "decision_times": [_iso(x) for x in times],
        "label_days": job.label_days,
        "events": str(job.events),
        "events_until": _iso(end_us),
    }
    return meta, index_seconds, replay_seconds


def holdout_rows(
    job: TrainJob,
    events: pl.DataFrame,
    serving_path: Path,
    manifest: IndexManifest,
    config,
    writer: RowWriter,
):
    """For logs without a usable clock: hide ``holdout_share`` of each user's items (users with
    two or more, seeded), build a replay index of the rest, and label each user's candidates by
    the hidden items (:func:`engine.replay.replay_holdout`)."""
    from apps.evaluation.split import holdout_split
    from engine.replay import ReplayConfig, replay_holdout_parts
    from engine.retrieval.recommend import Recommender
    from indexer.artifact import open_index

    visible, hidden, _ = holdout_split(events, job.holdout_share, job.seed)
    replay_index = _replay_index(job, visible, job.out / REPLAY_DIR / "holdout", serving_path)
    recommender = Recommender(open_index(replay_index.path), config.retrieval)
    started = time.perf_counter()
    for part in replay_holdout_parts(
        recommender,
        config,
        visible,
        hidden,
        ReplayConfig(users=job.users, seed=job.seed),
        progress=job.progress,
    ):
        writer.write(part)
    meta = {
        "replay_index_versions": [replay_index.path.name],
        "holdout_share": job.holdout_share,
        "events": str(job.events),
    }
    return meta, replay_index.seconds, time.perf_counter() - started


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat()
