"""Index versions on disk: the immutable artifact the engine serves, its writer and its reader.

Layout of a version folder (one per build, never modified after it appears)::

    manifest.json           format version, encoders, fusion, adaptation, shard table,
                            files + sha256
    items.parquet           one row per item; row i is vector i and faiss id i
    vectors.npy             float32 (items, dim), unit rows: the item vectors of every shard
    transitions.parquet     category -> category transition statistics (source, target, ...)
    categories.parquet      per-category counts and session share
    adaptation.npz          the learnt projection (present when events were given)
    neighbours.npz          item -> co-engagement neighbours, CSR-like (present when events were
                            given)
    ease.npz                item -> learned (EASE) item-item neighbours, the same layout (present
                            when events were given and enough items have 2+ users)
    factors.npz             item -> low-rank (ALS fold-in) item-item neighbours, the same layout
                            and condition
    shards/s0000.faiss ...  one faiss index per shard (ids are item rows)

A root folder holds versions side by side plus ``LATEST``, a one-line pointer to the newest. A build
writes into ``.building-<version>-<pid>/`` and renames it into place only once the manifest (written
last) is on disk, then swaps ``LATEST`` with an atomic rename: a killed build leaves no folder the
reader accepts. That protocol is shared with ranker models and lives in :mod:`crossrec.versions`;
this module adds what is particular to an index.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from crossrec import versions

# Re-exported: the index's callers import the shared protocol's names from here.
from crossrec.versions import (  # noqa: F401
    BUILDING_PREFIX,
    LATEST,
    MANIFEST,
    file_entry,
    new_version_name,
    remove_abandoned_builds,
    sha256_of,
)
from indexer.errors import ArtifactError
from indexer.manifest import FORMAT, FORMAT_VERSION, SUPPORTED_FORMAT_VERSIONS, IndexManifest
from indexer.neighbours import ItemNeighbours

log = logging.getLogger(__name__)

#: The index's kind of version folder (crossrec.versions holds the protocol itself).
INDEX_FORMAT = versions.VersionFormat(
    name=FORMAT,
    version=FORMAT_VERSION,
    supported=SUPPORTED_FORMAT_VERSIONS,
    noun="index",
    subfolders=("shards",),
    error=ArtifactError,
)


class VersionWriter(versions.VersionWriter):
    """Stages one index version (with its ``shards/`` folder); :meth:`commit` makes it appear
    atomically, :meth:`abort` removes it."""

    def __init__(self, root: str | Path, version: str | None = None) -> None:
        super().__init__(INDEX_FORMAT, root, version)


@dataclass
class IndexVersion:
    """A verified index version, ready to search. Built by :func:`open_index`."""

    path: Path
    manifest: dict
    items: pl.DataFrame
    vectors: np.ndarray
    transitions: pl.DataFrame
    categories: pl.DataFrame
    shards: dict[str, Any]
    projection: np.ndarray | None = None
    neighbours: ItemNeighbours | None = None  # None for a build without events
    #: Learned (EASE) item-item neighbours; None without events or with the stage off.
    ease: ItemNeighbours | None = None
    #: Low-rank (ALS fold-in) item-item neighbours (:mod:`indexer.factors`); None likewise.
    factors: ItemNeighbours | None = None
    shard_rows: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def item_count(self) -> int:
        return int(self.manifest["items"])

    @property
    def category_names(self) -> list[str]:
        """Every leaf category, sorted."""
        return sorted(self.manifest["category_shards"])

    @property
    def behaviour_dim(self) -> int:
        """Width of the adapted vectors' behaviour block (the last columns); 0 without
        adaptation."""
        adaptation = self.manifest.get("adaptation")
        return int(adaptation["dim"]) if adaptation else 0

    @property
    def content_dim(self) -> int:
        """Width of the fused content block (the first columns)."""
        return self.dim - self.behaviour_dim

    def content_vectors(self) -> np.ndarray:
        """(items, content_dim) float32 unit rows: see :func:`content_part`."""
        return content_part(self.vectors, self.manifest)

    def shards_of(self, category: str) -> list[str]:
        return list(self.manifest["category_shards"].get(category, []))

    @property
    def shard_total(self) -> int:
        """Shards in the version (whether or not this process loaded them)."""
        return len(self.manifest.get("shards", self.shards))

    def shard_count(self, shard_id: str) -> int:
        """Items in a shard: the loaded shard's, else the manifest's (a process that left the
        shard to remote shard groups)."""
        if shard_id in self.shards:
            return int(self.shards[shard_id].ntotal)
        return self._manifest_counts[shard_id]

    @cached_property
    def _manifest_counts(self) -> dict[str, int]:
        return {e.id: e.count for e in self.info.shards}

    @cached_property
    def info(self) -> IndexManifest:
        """The manifest as typed values (:mod:`indexer.manifest`)."""
        return IndexManifest.from_json(self.manifest)

    def search(self, shard_id: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product top-``k`` of ``queries`` (n, dim) in one shard: (scores, item rows), -1
        rows where the shard holds fewer than ``k`` items."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {q.shape}")
        return self.shards[shard_id].search(q, k)


def content_part(vectors: np.ndarray, manifest: dict | IndexManifest) -> np.ndarray:
    """The fused content part of a version's item vectors, as float32 unit rows. With complement
    adaptation the stored vector is ``[sqrt(s) c ; sqrt(1 - s) e]`` with ``e`` the last
    ``adaptation.dim`` columns; ``c`` is sliced off and renormalised (which removes the scale)."""
    if isinstance(manifest, IndexManifest):
        adaptation = manifest.report("adaptation")
    else:
        adaptation = manifest.get("adaptation")
    behaviour = int(adaptation["dim"]) if adaptation else 0
    if behaviour >= vectors.shape[1]:
        raise ArtifactError(
            f"behaviour block of {behaviour} columns leaves no content in {vectors.shape[1]}",
            "",
            "shape",
        )
    content = np.asarray(vectors[:, : vectors.shape[1] - behaviour], dtype=np.float32)
    return content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)


def resolve_version(path: str | Path) -> Path:
    """A version folder, or a root whose ``LATEST`` names one."""
    return versions.resolve_version(path, INDEX_FORMAT)


def read_manifest(path: str | Path) -> tuple[Path, dict]:
    return versions.read_manifest(path, INDEX_FORMAT)


def read_index_manifest(path: str | Path) -> tuple[Path, IndexManifest]:
    """Like :func:`read_manifest`, the manifest as typed values."""
    folder, manifest = read_manifest(path)
    return folder, IndexManifest.from_json(manifest)


def open_index(
    path: str | Path,
    verify: bool = True,
    gpu: bool = False,
    shards: Collection[str] | None = None,
) -> IndexVersion:
    """Open and check an index version: every file present with its recorded size and sha256
    (``verify``), vectors, items, shards and neighbours of the recorded shapes. Raises
    :class:`ArtifactError` (with a ``reason``) on the first problem. ``gpu`` moves Flat/IVF shards
    onto a GPU when faiss sees one. ``shards``: load only these shards (the others are checked on
    disk but left to whoever searches them, e.g. remote shard groups); None: all."""
    import faiss

    from indexer import gpu as gpu_support
    from indexer.shards import set_search_params

    path, manifest = read_manifest(path)
    entries = list(manifest["files"].values()) + manifest["shards"]
    for entry in entries:
        versions.check_file(path, entry, verify, INDEX_FORMAT)
    n, dim = int(manifest["items"]), int(manifest["dim"])
    vectors = np.load(path / manifest["files"]["vectors"]["file"], mmap_mode="r")
    if vectors.shape != (n, dim) or vectors.dtype != np.float32:
        raise ArtifactError(
            f"vectors have shape {vectors.shape} {vectors.dtype}, "
            f"manifest says ({n}, {dim}) float32",
            path,
            "shape",
        )
    items = pl.read_parquet(path / manifest["files"]["items"]["file"])
    if items.height != n:
        raise ArtifactError(
            f"items.parquet has {items.height} rows, manifest says {n}", path, "shape"
        )
    loaded: dict[str, object] = {}
    for entry in manifest["shards"]:
        if shards is not None and entry["id"] not in shards:
            continue
        index = faiss.read_index(str(path / entry["file"]))
        if index.ntotal != entry["count"] or index.d != dim:
            raise ArtifactError(
                f"shard {entry['id']} holds {index.ntotal} vectors of dim {index.d}, "
                f"manifest says {entry['count']} of dim {dim}",
                path / entry["file"],
                "shape",
            )
        set_search_params(index, entry.get("search_params", {}))
        loaded[entry["id"]] = gpu_support.to_gpu(index) if gpu else index
    if sum(e["count"] for e in manifest["shards"]) != n:
        raise ArtifactError("shard counts do not add up to the item count", path, "shape")
    projection = None
    if "adaptation" in manifest["files"]:
        projection = np.load(path / manifest["files"]["adaptation"]["file"])["projection"]
    item_item = {
        name: ItemNeighbours.load(path / manifest["files"][name]["file"], n)
        for name in ("neighbours", "ease", "factors")
        if name in manifest["files"]
    }
    return IndexVersion(
        path=path,
        manifest=manifest,
        items=items,
        vectors=vectors,
        transitions=pl.read_parquet(path / manifest["files"]["transitions"]["file"]),
        categories=pl.read_parquet(path / manifest["files"]["categories"]["file"]),
        shards=loaded,
        projection=projection,
        neighbours=item_item.get("neighbours"),
        ease=item_item.get("ease"),
        factors=item_item.get("factors"),
    )
