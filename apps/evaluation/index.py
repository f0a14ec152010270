"""The index version crossrec and the content baseline are evaluated on: given, or built from the
training events only (an index that saw the test period would leak it).

Under the output folder ``OUT``: ``train_events.parquet`` (the training split), ``index/`` (the
built versions) and ``split.json``, which records the training file's sha256, the build settings
and the version built from it. A later run whose training split hashes the same and asks for the
same settings reuses that version instead of rebuilding (the text encoder takes minutes at 50k
items).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from indexer.artifact import MANIFEST, read_index_manifest, sha256_of
from indexer.errors import ArtifactError

log = logging.getLogger(__name__)

TRAIN_FILE = "train_events.parquet"
SPLIT_FILE = "split.json"
INDEX_DIR = "index"


@dataclass(frozen=True)
class PreparedIndex:
    """``path``: the version folder; ``built``: whether this run built it; ``seconds``: build
    time."""

    path: Path
    built: bool
    seconds: float


def write_train_events(train: pl.DataFrame, out: Path) -> tuple[Path, str]:
    """Write the training split to ``out/train_events.parquet`` (untouched when its bytes would not
    change); return its path and sha256."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / TRAIN_FILE
    tmp = out / f".{TRAIN_FILE}.{os.getpid()}.tmp"
    train.write_parquet(tmp)
    digest = sha256_of(tmp)
    if path.is_file() and sha256_of(path) == digest:
        tmp.unlink()
    else:
        os.replace(tmp, path)
    return path, digest


def prepare_index(
    catalog: Path,
    train_path: Path,
    train_sha256: str,
    out: Path,
    text: bool = True,
    progress: bool = True,
    reuse_content: Path | None = None,
    privacy=None,
) -> PreparedIndex:
    """Reuse ``out/index``'s version built from the same training file and settings, else build one
    (``indexer.build.build_index`` with ``BuildConfig(text=text, reuse_content=...,
    privacy=...)``) and record it in ``split.json``."""
    settings = {
        "train_events_sha256": train_sha256,
        "catalog": str(catalog),
        "text": text,
        "reuse_content": None if reuse_content is None else str(reuse_content),
        # (records from before this key read None: non-private, as they were)
        "privacy": None if privacy is None else dataclasses.asdict(privacy),
    }
    record = out / SPLIT_FILE
    reusable = _reusable(record, settings, train_path)
    if reusable is not None:
        log.info("reusing index %s (training events unchanged)", reusable)
        return PreparedIndex(reusable, False, 0.0)
    from indexer.build import BuildConfig, build_index

    started = time.perf_counter()
    report = build_index(
        catalog,
        out / INDEX_DIR,
        train_path,
        BuildConfig(
            text=text,
            progress=progress,
            reuse_content=None if reuse_content is None else str(reuse_content),
            privacy=privacy,
        ),
    )
    seconds = time.perf_counter() - started
    record.write_text(
        json.dumps(
            {**settings, "index_version": report.path.name, "build_seconds": round(seconds, 1)},
            indent=2,
        )
    )
    return PreparedIndex(report.path, True, seconds)


def _reusable(record: Path, settings: dict, train_path: Path) -> Path | None:
    if not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text())
    except json.JSONDecodeError:
        return None
    if any(saved.get(k) != v for k, v in settings.items()):  # private and not never swapped
        return None
    version = record.parent / INDEX_DIR / str(saved.get("index_version", ""))
    if not (version / MANIFEST).is_file():
        return None
    try:
        _, manifest = read_index_manifest(version)
    except ArtifactError:
        return None
    if manifest.sources is None or manifest.sources.events != str(train_path):
        return None
    return version
