"""Writing one index version: the files every reader opens, and the typed manifest that names
them (:mod:`indexer.manifest`), committed last by :class:`indexer.artifact.VersionWriter`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from indexer.adapt import Adaptation
from indexer.artifact import VersionWriter
from indexer.fusion import Fusion
from indexer.manifest import FileEntry, IndexManifest, ShardEntry, Sources
from indexer.neighbours import ItemNeighbours
from indexer.shards import BuiltShard

#: The catalogue columns the version's item table keeps (beside the shard and the statistics).
ITEM_COLUMNS = ("item_id", "title", "category", "brand", "price", "in_stock")


@dataclass
class BuiltIndex:
    """Everything a build computed, ready to be written as one version."""

    catalog: pl.DataFrame
    #: (items, dim) float32, the served vectors (adapted when there were events).
    vectors: np.ndarray
    #: Per-item statistics (``item_id`` + the columns of :mod:`indexer.transitions`).
    popularity: pl.DataFrame
    transitions: pl.DataFrame
    categories: pl.DataFrame
    shards: list[BuiltShard]
    fusion: Fusion
    #: One record per content encoder.
    encoders: list[dict[str, Any]]
    adaptation: Adaptation | None
    #: "neighbours", "ease", "factors" -> the item-item table (absent when its stage did not run).
    item_item: dict[str, ItemNeighbours]
    #: The behaviour stages' reports ("neighbours", "ease", "factors"; None when not run).
    reports: dict[str, dict | None]
    sources: Sources
    encode_timing: dict[str, dict]
    shard_policy: dict[str, Any]
    #: The private releases' record (indexer/privacy/release.py); None: no privacy asked for.
    privacy: dict[str, Any] | None = None


def write_version(
    writer: VersionWriter, built: BuiltIndex, build: dict
) -> tuple[Path, IndexManifest]:
    """Write ``built``'s files into ``writer``'s folder and commit its manifest (``build``: the
    stage timings so far); returns the version's folder and the manifest as written."""
    files, shards, category_shards = _write_files(writer, built)
    adaptation = built.adaptation
    manifest = IndexManifest(
        version=writer.version,
        items=built.catalog.height,
        dim=int(built.vectors.shape[1]),
        files=files,
        shards=tuple(shards),
        category_shards={k: tuple(v) for k, v in category_shards.items()},
        encoders=tuple(built.encoders),
        fusion=built.fusion.to_manifest(),
        sources=built.sources,
        encode_timing=built.encode_timing,
        build=build,
        extra={
            "created_at": datetime.now(UTC).isoformat(),
            "crossrec_version": package_version("crossrec"),
            "metric": "inner_product",
            "adaptation": None
            if adaptation is None
            else {
                "method": "contrastive-projection",
                "content_dim": built.fusion.dim,
                "dim": adaptation.config.dim,
                "share": adaptation.config.share,
                "report": adaptation.report,
            },
            **built.reports,
            "shard_policy": built.shard_policy,
            **({} if built.privacy is None else {"privacy": _privacy(built)}),
        },
    )
    return writer.commit(manifest.to_json()), manifest


def _privacy(built: BuiltIndex) -> dict[str, Any]:
    """The manifest's privacy entry: the releases, and whether the whole version may be called
    differentially private - only when nothing in it derives from behaviour outside them."""
    uncovered: list[str] = [name for name in ("ease", "factors") if name in built.item_item]
    if built.adaptation is not None:
        uncovered.append("adaptation")
    return {
        **(built.privacy or {}),
        "differentially_private": not uncovered,
        "not_covered": uncovered,
    }


def _write_files(
    writer: VersionWriter, built: BuiltIndex
) -> tuple[dict[str, FileEntry], list[ShardEntry], dict[str, list[str]]]:
    import faiss

    catalog = built.catalog
    shard_of = np.empty(catalog.height, dtype=object)
    shards: list[ShardEntry] = []
    category_shards: dict[str, list[str]] = {}
    for shard in built.shards:
        name = f"shards/{shard.spec.shard_id}.faiss"
        faiss.write_index(shard.index, str(writer.path(name)))
        shard_of[shard.spec.rows] = shard.spec.shard_id
        category_shards.setdefault(shard.spec.category, []).append(shard.spec.shard_id)
        entry = writer.entry(name)
        shards.append(
            ShardEntry(
                entry["file"],
                entry["bytes"],
                entry["sha256"],
                id=shard.spec.shard_id,
                category=shard.spec.category,
                part=shard.spec.part,
                count=int(shard.index.ntotal),
                factory=shard.factory,
                search_params=shard.params,
                recall_at_10=shard.recall_at_k,
                build_seconds=round(shard.build_s, 3),
                note=shard.note or "",
            )
        )
    columns = [c for c in ITEM_COLUMNS if c in catalog.columns]
    items = (
        catalog.select(columns)
        .with_columns(pl.Series("shard", shard_of.tolist(), dtype=pl.String))
        .join(built.popularity, on="item_id", how="left", maintain_order="left")
    )
    items.write_parquet(writer.path("items.parquet"))
    vectors = built.vectors
    np.save(writer.path("vectors.npy"), np.ascontiguousarray(vectors, dtype=np.float32))
    built.transitions.write_parquet(writer.path("transitions.parquet"))
    built.categories.write_parquet(writer.path("categories.parquet"))
    entries = {
        "items": writer.entry("items.parquet", rows=items.height),
        "vectors": writer.entry("vectors.npy", shape=list(vectors.shape), dtype="float32"),
        "transitions": writer.entry("transitions.parquet", rows=built.transitions.height),
        "categories": writer.entry("categories.parquet", rows=built.categories.height),
    }
    if built.adaptation is not None:
        np.savez(writer.path("adaptation.npz"), projection=built.adaptation.projection)
        entries["adaptation"] = writer.entry("adaptation.npz")
    for name, table in built.item_item.items():  # "neighbours", "ease", "factors"
        table.save(writer.path(f"{name}.npz"))
        entries[name] = writer.entry(f"{name}.npz", items=table.n_items, links=len(table.rows))
    files = {name: FileEntry.from_json(e) for name, e in entries.items()}
    return files, shards, category_shards
