"""Opening a good index version: what the reader loads and applies, typed accessors, the content
part of adapted vectors. On the 12-item ``tiny_built`` version (tests/conftest.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers_artifact import manifest_of, save_manifest

from indexer.artifact import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactError,
    open_index,
    read_manifest,
    resolve_version,
    sha256_of,
)


def test_open_index_gives_what_the_manifest_records(root):
    version = open_index(root)  # through LATEST
    assert version.path == root / "v1"
    assert version.version == "v1"
    assert (root / "LATEST").read_text() == "v1\n"
    assert version.items["item_id"].to_list() == [f"i{i:02d}" for i in range(12)]
    assert version.items["shard"].to_list() == ["s0000"] * 4 + ["s0001"] * 4 + ["s0002"] * 4
    assert version.vectors.shape == (12, version.dim)
    assert version.vectors.dtype == np.float32
    assert sorted(version.shards) == ["s0000", "s0001", "s0002"]
    assert [version.shards[s].ntotal for s in sorted(version.shards)] == [4, 4, 4]
    assert version.shards_of("Alpha > Y") == ["s0001"]
    assert version.shards_of("Alpha") == []
    assert version.projection is None
    assert version.neighbours is None
    assert version.categories["category"].sort().to_list() == ["Alpha > X", "Alpha > Y", "Beta"]
    # Every item is its own nearest neighbour in its shard (ids are item rows).
    scores, rows = version.search("s0002", np.asarray(version.vectors[8:12]), 1)
    assert rows.ravel().tolist() == [8, 9, 10, 11]
    assert scores.ravel() == pytest.approx([1, 1, 1, 1], abs=1e-5)
    with pytest.raises(ValueError, match="queries must have shape"):
        version.search("s0000", np.zeros((1, version.dim + 1), np.float32), 1)
    assert open_index(root / "v1").manifest == version.manifest


def test_read_manifest_and_resolve_version(root):
    path, manifest = read_manifest(root)
    assert path == root / "v1"
    assert manifest["format"] == FORMAT
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["items"] == 12
    assert manifest["version"] == "v1"
    assert resolve_version(root) == root / "v1"
    assert resolve_version(root / "v1") == root / "v1"


def test_projection_and_neighbours_are_loaded_when_recorded(root):
    from indexer.neighbours import ItemNeighbours

    version = root / "v1"
    projection = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(version / "adaptation.npz", projection=projection)
    neighbours = ItemNeighbours(
        np.array([0] * 12 + [2], np.int64),
        np.array([1, 2], np.int32),
        np.array([0.5, 0.25], np.float32),
    )
    neighbours.save(version / "neighbours.npz")
    manifest = manifest_of(version)
    for key, name in (("adaptation", "adaptation.npz"), ("neighbours", "neighbours.npz")):
        path = version / name
        manifest["files"][key] = {
            "file": name,
            "bytes": path.stat().st_size,
            "sha256": sha256_of(path),
        }
    save_manifest(version, manifest)
    opened = open_index(version)
    assert opened.projection.tolist() == projection.tolist()
    assert opened.neighbours.indptr.tolist() == [0] * 12 + [2]
    assert opened.neighbours.rows.tolist() == [1, 2]


def test_vectors_are_memory_mapped_and_tables_read(root):
    version = open_index(root)
    assert isinstance(version.vectors, np.memmap)
    assert version.transitions.columns[:3] == ["source", "target", "sessions"]
    assert version.transitions.height == 0
    assert version.categories.height == 3


def test_recorded_search_params_are_applied(root):
    import faiss

    version = root / "v1"
    manifest = manifest_of(version)
    entry = manifest["shards"][0]
    vectors = np.load(version / "vectors.npy")[:4]
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], 2, faiss.METRIC_INNER_PRODUCT)
    ivf.train(np.repeat(vectors, 20, axis=0))
    index = faiss.IndexIDMap(ivf)
    index.add_with_ids(vectors, np.arange(4))
    faiss.write_index(index, str(version / entry["file"]))
    entry.update(
        bytes=(version / entry["file"]).stat().st_size,
        sha256=sha256_of(version / entry["file"]),
        search_params={"nprobe": 2},
    )
    save_manifest(version, manifest)
    opened = open_index(root)
    assert faiss.downcast_index(opened.shards["s0000"].index).nprobe == 2
    del manifest["shards"][1]["search_params"]  # manifests may omit them
    save_manifest(version, manifest)
    assert open_index(root).shards["s0001"].ntotal == 4


def test_shards_go_to_the_gpu_only_when_asked(root, monkeypatch):
    from indexer import gpu

    moved = []
    monkeypatch.setattr(gpu, "to_gpu", lambda index: moved.append(index) or ("on-gpu", index))
    assert all(not isinstance(s, tuple) for s in open_index(root).shards.values())
    assert moved == []
    shards = open_index(root, gpu=True).shards
    assert len(moved) == 3
    assert all(s[0] == "on-gpu" and s[1].ntotal == 4 for s in shards.values())


def test_search_accepts_float64_queries(root):
    version = open_index(root)
    queries = np.asarray(version.vectors[:2], dtype=np.float64)
    _, rows = version.search("s0000", queries, 1)
    assert rows.ravel().tolist() == [0, 1]


def test_version_accessors_read_the_manifest(root):
    version = open_index(root)
    assert version.item_count == 12
    assert version.category_names == ["Alpha > X", "Alpha > Y", "Beta"]
    assert version.behaviour_dim == 0
    assert version.content_dim == version.dim
    content = version.content_vectors()
    assert content.shape == (12, version.dim)
    assert content.dtype == np.float32
    assert np.linalg.norm(content, axis=1) == pytest.approx(np.ones(12), abs=1e-6)


def test_content_part_slices_off_the_behaviour_block_and_renormalises():
    from indexer.artifact import content_part
    from indexer.manifest import IndexManifest

    vectors = np.array(
        [[3, 4, 7], [0, 0, 1], [0.3, 0.4, 0]], np.float64
    )  # norms of the content 5, 0, .5
    adapted = content_part(vectors, {"adaptation": {"dim": 1}})
    assert adapted.dtype == np.float32
    assert adapted.tolist() == [
        pytest.approx([0.6, 0.8]),
        [0, 0],
        pytest.approx([0.6, 0.8]),
    ]  # a zero row stays zero
    plain = content_part(vectors, {"adaptation": None})
    assert plain.shape == (3, 3)
    assert plain[1].tolist() == [0, 0, 1]
    assert plain[0] == pytest.approx(np.array([3, 4, 7]) / np.sqrt(74))
    assert plain[2] == pytest.approx([0.6, 0.8, 0])
    assert content_part(vectors, {}).shape == (3, 3)
    with pytest.raises(ArtifactError) as info:
        content_part(vectors, {"adaptation": {"dim": 3}})
    assert info.value.reason == "shape"
    assert str(info.value) == ": behaviour block of 3 columns leaves no content in 3"
    assert content_part(vectors, {"adaptation": {"dim": 2}}).tolist() == [[1], [0], [1]]
    # The typed manifest gives the same answer as its document.
    typed = IndexManifest(version="v", items=3, dim=3, extra={"adaptation": {"dim": 2}})
    assert content_part(vectors, typed).tolist() == [[1], [0], [1]]
    assert content_part(vectors, IndexManifest(version="v", items=3, dim=3)).shape == (3, 3)


def test_adapted_version_reports_its_blocks(root):
    version = dataclasses.replace(
        open_index(root), manifest={**open_index(root).manifest, "adaptation": {"dim": 4}}
    )
    assert version.behaviour_dim == 4
    assert version.content_dim == version.dim - 4
    assert version.content_vectors().shape == (12, version.dim - 4)
