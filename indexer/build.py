"""The batch index build: catalogue (+ events) -> one immutable index version.

Stages: read and validate -> encode (text, images, attributes, precomputed vectors) -> fuse ->
(with events: sessionise once -> behaviour statistics -> co-engagement neighbours -> complement
adaptation) -> shards -> write. Each stage's wall
time and the process's memory after it are recorded in the manifest and printed at the end.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from indexer.adapt import AdaptConfig, train_adaptation
from indexer.artifact import VersionWriter, remove_abandoned_builds
from indexer.catalog import read_catalog
from indexer.ease import EaseConfig, build_ease_neighbours
from indexer.errors import DataValidationError
from indexer.events import read_events, unknown_item_problems
from indexer.factors import FactorsConfig, build_factor_neighbours
from indexer.fusion import Fusion, FusionPart
from indexer.manifest import EventsWindow, Sources
from indexer.neighbours import (
    ItemNeighbours,
    NeighbourConfig,
    build_neighbours,
    engagement_matrix,
)
from indexer.parts import content_parts
from indexer.privacy.config import PrivacyConfig
from indexer.privacy.release import private_behaviour
from indexer.ray_build import RayOptions, RayRunner, ray_session
from indexer.shards import ShardPolicy, build_shard, plan_shards
from indexer.transitions import BehaviourStats, behaviour_stats, category_codes, sessionise
from indexer.write import BuiltIndex, write_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """How to build. Weights are each part's share of the fused inner product (see fusion.py).

    ``text_model`` defaults to the packaged all-MiniLM-L6-v2; ``text=False`` skips the text
    encoder (for catalogues that bring ``vectors``). ``vectors`` is a Parquet of (item_id, vector);
    ``vector_column`` a catalogue column of float lists. ``image_model`` turns on image encoding of
    the ``image`` column. ``neighbours`` sets the co-engagement neighbours, ``ease`` and
    ``factors`` the learned item-item neighbours (:mod:`indexer.ease`, :mod:`indexer.factors`;
    ``top_n = 0`` turns any of them off).
    ``reuse_content``: an index version of the same catalogue whose fused content vectors are
    reused instead of encoding again (the encoder settings above are then ignored; its encoders
    and fusion are recorded): a point-in-time rebuild with older events (the ranker's replay
    index) costs the behaviour stages only.
    """

    text: bool = True
    text_model: str | None = None
    text_fields: tuple[str, ...] = ("title",)
    text_max_seq_length: int = 64
    image_model: str | None = None
    vectors: str | None = None
    vector_column: str | None = None
    text_weight: float = 1.0
    image_weight: float = 0.5
    attribute_weight: float = 0.5
    precomputed_weight: float = 1.0
    adapt: AdaptConfig = AdaptConfig()
    neighbours: NeighbourConfig = NeighbourConfig()
    ease: EaseConfig = EaseConfig()
    factors: FactorsConfig = FactorsConfig()
    policy: ShardPolicy = ShardPolicy()
    seed: int = 0
    version: str | None = None
    progress: bool = True
    reuse_content: str | None = None
    #: Run encoding and shard building on Ray (indexer/ray_build.py); None: in this process.
    ray: RayOptions | None = None
    #: User-level differential privacy for every behaviour statistic (indexer/privacy/); the
    #: behaviour-trained parts (adaptation, EASE, factors) are then not built.
    privacy: PrivacyConfig | None = None


@dataclass
class BuildReport:
    path: Path
    manifest: dict
    stages: dict[str, dict] = field(default_factory=dict)


class _Stages:
    """Times stages and notes memory after each (current and peak RSS, MB)."""

    def __init__(self) -> None:
        self.done: dict[str, dict] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        start = time.perf_counter()
        yield
        self.done[name] = {
            "seconds": round(time.perf_counter() - start, 3),
            "rss_mb": round(_rss_mb(), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def build_index(
    catalog_path: str | Path,
    out_root: str | Path,
    events_path: str | Path | None = None,
    config: BuildConfig = BuildConfig(),
) -> BuildReport:
    """Build one index version under ``out_root`` and point ``out_root/LATEST`` at it."""
    if config.ray is None:
        return _build(catalog_path, out_root, events_path, config, None)
    with ray_session(config.ray) as runner:
        return _build(catalog_path, out_root, events_path, config, runner)


def _build(
    catalog_path: str | Path,
    out_root: str | Path,
    events_path: str | Path | None,
    config: BuildConfig,
    ray: RayRunner | None,
) -> BuildReport:
    stage = _Stages()
    started = time.perf_counter()
    remove_abandoned_builds(out_root)
    with stage("read"):
        catalog = read_catalog(catalog_path)
        events = read_events(events_path) if events_path is not None else None
        if events is not None:
            problems = unknown_item_problems(events, catalog)
            if problems:
                raise DataValidationError(cast(Path, events_path), problems)

    window = _event_window(events)
    if config.reuse_content is not None:
        with stage("reuse_content"):
            content, fusion, encoders = _reused_content(config.reuse_content, catalog)
        timings: dict[str, dict] = {}
    else:
        content, fusion, encoders, timings = _encode(config, catalog, catalog_path, stage, ray)

    adaptation = neighbour_report = None
    learned_reports: dict[str, dict | None] = {"ease": None, "factors": None}
    item_item: dict[str, ItemNeighbours] = {}
    privacy = None
    with stage("behaviour"):
        if events is None:
            sessions, stats = None, BehaviourStats.without_events(catalog)
        else:
            # Sessionised once into integer codes; every behaviour stage below reads this frame.
            sessions = sessionise(events, catalog)
            del events
            if config.privacy is None:
                stats = behaviour_stats(sessions, catalog)
            else:
                private = private_behaviour(sessions, catalog, config.privacy, config.neighbours)
                # Only the private releases leave this block: no stage below sees the events.
                sessions, stats, window = None, private.stats, private.window
                neighbour_report, privacy = private.neighbour_report, private.manifest
                if private.neighbours is not None:
                    item_item["neighbours"] = private.neighbours
        transitions, categories, popularity = stats.transitions, stats.categories, stats.items
    if sessions is not None and config.neighbours.top_n > 0:
        with stage("neighbours"):
            item_item["neighbours"], neighbour_report = build_neighbours(
                sessions,
                category_codes(catalog)[1].to_numpy(),
                config.neighbours,
                progress=config.progress,
            )
    # The learned item-item models: EASE on who took what (co-occurrence, not intensity), the
    # factor model on engagement weights (its confidences).
    learned: tuple[tuple[str, Any, Callable, bool], ...] = (
        ("ease", config.ease, build_ease_neighbours, True),
        ("factors", config.factors, build_factor_neighbours, False),
    )
    for name, settings, fit, binary in learned:
        if sessions is None or settings.top_n == 0:
            continue
        with stage(name):
            x = engagement_matrix(sessions, catalog.height, config.neighbours)
            if binary:
                x.data[:] = 1.0
            table, learned_reports[name] = fit(x, settings)
            del x
            if table is not None:
                item_item[name] = table
    if sessions is not None:
        with stage("adapt"):
            adaptation = train_adaptation(
                content, catalog, sessions, config.adapt, progress=config.progress
            )
            del sessions
            vectors = adaptation.apply(content, np.arange(catalog.height))
    else:
        vectors = content
    del content

    with stage("shards"):
        specs = plan_shards(catalog["category"], catalog["item_id"], config.policy)
        if ray is not None:
            shards = ray.shards(specs, vectors, config.policy, config.seed)
        else:
            from tqdm.auto import tqdm

            # Each shard its own seed, so that a parallel build draws exactly the same samples.
            shards = [
                build_shard(spec, vectors, config.policy, np.random.default_rng([config.seed, i]))
                for i, spec in enumerate(
                    tqdm(specs, desc="shards", unit="shard", disable=not config.progress)
                )
            ]

    built = BuiltIndex(
        catalog=catalog,
        vectors=vectors,
        popularity=popularity,
        transitions=transitions,
        categories=categories,
        shards=shards,
        fusion=fusion,
        encoders=encoders,
        adaptation=adaptation,
        item_item=item_item,
        reports={"neighbours": neighbour_report, **learned_reports},
        sources=Sources(
            str(catalog_path),
            None if events_path is None else str(events_path),
            window,
        ),
        encode_timing=timings,
        shard_policy=asdict(config.policy),
        privacy=privacy,
    )
    with stage("write"):
        writer = VersionWriter(out_root, config.version)
        try:
            # The write stage itself cannot be in the file it writes; the returned report has it.
            build = {
                "stages": dict(stage.done),
                "seconds_before_write": round(time.perf_counter() - started, 3),
            }
            path, _ = write_version(writer, built, build)
            manifest = writer.manifest
        except BaseException:
            writer.abort()
            raise
    return BuildReport(
        path,
        manifest,
        {**stage.done, "total": {"seconds": round(time.perf_counter() - started, 3)}},
    )


def _encode(
    config: BuildConfig, catalog: pl.DataFrame, catalog_path, stage: _Stages, ray: RayRunner | None
):
    """Encode every content part and fuse: (content, fusion, encoder records, timings). With
    ``ray``, the model parts (text, images) run on its actor pools."""
    blocks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    parts: list[FusionPart] = []
    encoders: list[dict] = []
    timings: dict[str, dict] = {}
    for part in content_parts(config, catalog_path):
        timing = None
        with stage(part.stage):
            columns = (
                part.columns(catalog.columns)
                if ray is not None and part.columns is not None
                else None
            )
            if ray is not None and columns is not None:
                vectors, present, timing = ray.encode(part.model, catalog, columns)
                blocks[part.name] = vectors, present
            else:
                blocks[part.name] = part.encoder.encode(catalog)
        vectors, present = blocks[part.name]
        parts.append(FusionPart(part.name, vectors.shape[1], part.weight))
        encoders.append(part.describe(present))
        if (timing := timing or part.timing()) is not None:
            timings[part.name] = timing
    with stage("fuse"):
        fusion = Fusion(tuple(parts))
        content = fusion.fuse(blocks)
    return content, fusion, encoders, timings


def _reused_content(path: str | Path, catalog: pl.DataFrame):
    """The fused content of another version of the same catalogue: (content, fusion, encoders)."""
    from indexer.artifact import content_part, open_index

    version = open_index(path, verify=True)
    if version.items["item_id"].to_list() != catalog["item_id"].to_list():
        raise ValueError(
            f"reuse_content: index {version.version} was built from another catalogue "
            "(its item ids differ from this one's, in order)"
        )
    encoders = [{**e, "reused_from": version.version} for e in version.info.encoders]
    content = content_part(np.asarray(version.vectors), version.manifest)
    return content, Fusion.from_manifest(version.info.fusion), encoders


def _event_window(events: pl.DataFrame | None) -> EventsWindow | None:
    """The events' count and time span (ISO 8601, UTC): which past an index version knows."""
    if events is None or events.height == 0:
        return None
    first, last = cast(datetime, events["ts"].min()), cast(datetime, events["ts"].max())
    return EventsWindow(events.height, first.isoformat(), last.isoformat())


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")
