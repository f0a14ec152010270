"""The index reader refuses every kind of broken version with the right ``reason``; the writer
stages and commits atomically. A 12-item version (3 categories, attribute vectors only) built
once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from indexer.artifact import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactError,
    VersionWriter,
    new_version_name,
    open_index,
    read_manifest,
    remove_abandoned_builds,
    resolve_version,
    sha256_of,
)

CATEGORIES = ["Alpha > X"] * 4 + ["Alpha > Y"] * 4 + ["Beta"] * 4


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory) -> Path:
    """The index root of a 12-item catalogue built without events or text (version ``v1``)."""
    from indexer.build import BuildConfig, build_index

    folder = tmp_path_factory.mktemp("tiny-built")
    pl.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(12)],
            "title": [f"thing {i}" for i in range(12)],
            "category": CATEGORIES,
            "brand": [f"brand{i}" for i in range(12)],
            "price": [float(i) for i in range(12)],
            "in_stock": [True] * 12,
        }
    ).write_parquet(folder / "catalog.parquet")
    build_index(
        folder / "catalog.parquet",
        folder / "index",
        None,
        BuildConfig(text=False, progress=False, version="v1"),
    )
    return folder / "index"


@pytest.fixture
def root(tiny_built, tmp_path) -> Path:
    """A private copy of the built index root, free to tamper with."""
    return Path(shutil.copytree(tiny_built, tmp_path / "index"))


def manifest_of(version: Path) -> dict:
    return json.loads((version / "manifest.json").read_text())


def save_manifest(version: Path, manifest: dict) -> None:
    (version / "manifest.json").write_text(json.dumps(manifest))


def rewrite(version: Path, key: str, write) -> None:
    """Replace the file of ``manifest["files"][key]`` through ``write(path)`` and record its new
    size and sha256, so only the content checks can refuse it."""
    manifest = manifest_of(version)
    entry = manifest["files"][key]
    path = version / entry["file"]
    write(path)
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    save_manifest(version, manifest)


def refused(path, **kwargs) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        open_index(path, **kwargs)
    return info.value


# --- reading a good version ---------------------------------------------------------------------


def test_open_index_gives_what_the_manifest_records(root):
    version = open_index(root)  # through LATEST
    assert version.path == root / "v1" and version.version == "v1"
    assert (root / "LATEST").read_text() == "v1\n"
    assert version.items["item_id"].to_list() == [f"i{i:02d}" for i in range(12)]
    assert version.items["shard"].to_list() == ["s0000"] * 4 + ["s0001"] * 4 + ["s0002"] * 4
    assert version.vectors.shape == (12, version.dim) and version.vectors.dtype == np.float32
    assert sorted(version.shards) == ["s0000", "s0001", "s0002"]
    assert [version.shards[s].ntotal for s in sorted(version.shards)] == [4, 4, 4]
    assert version.shards_of("Alpha > Y") == ["s0001"] and version.shards_of("Alpha") == []
    assert version.projection is None and version.neighbours is None
    assert version.categories["category"].sort().to_list() == ["Alpha > X", "Alpha > Y", "Beta"]
    # Every item is its own nearest neighbour in its shard (ids are item rows).
    scores, rows = version.search("s0002", np.asarray(version.vectors[8:12]), 1)
    assert rows.ravel().tolist() == [8, 9, 10, 11] and scores.ravel() == pytest.approx(
        [1, 1, 1, 1], abs=1e-5
    )
    with pytest.raises(ValueError, match="queries must have shape"):
        version.search("s0000", np.zeros((1, version.dim + 1), np.float32), 1)
    assert open_index(root / "v1").manifest == version.manifest


def test_read_manifest_and_resolve_version(root):
    path, manifest = read_manifest(root)
    assert (
        path == root / "v1"
        and manifest["format"] == FORMAT
        and manifest["format_version"] == FORMAT_VERSION
    )
    assert manifest["items"] == 12 and manifest["version"] == "v1"
    assert resolve_version(root) == root / "v1" and resolve_version(root / "v1") == root / "v1"


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
    assert opened.neighbours.indptr.tolist() == [0] * 12 + [
        2
    ] and opened.neighbours.rows.tolist() == [1, 2]


# --- refusals -----------------------------------------------------------------------------------


def test_missing_folder_version_or_file(root):
    assert refused(root / "nope").reason == "missing"
    (root / "LATEST").write_text("v9\n")
    error = refused(root)
    assert error.reason == "missing" and "v9" in str(error)
    (root / "LATEST").write_text("v1\n")
    (root / "v1" / "shards" / "s0001.faiss").unlink()
    error = refused(root)
    assert error.reason == "missing" and error.path == str(root / "v1" / "shards" / "s0001.faiss")


def test_unfinished_build_or_no_manifest_is_incomplete(root):
    staged = root / ".building-v2-123"
    shutil.copytree(root / "v1", staged)
    assert refused(staged).reason == "incomplete"
    (root / "v1" / "manifest.json").unlink()
    assert refused(root / "v1").reason == "incomplete"


def test_truncated_file_is_refused_by_its_size(root):
    shard = root / "v1" / "shards" / "s0000.faiss"
    shard.write_bytes(shard.read_bytes()[:-1])
    error = refused(root, verify=False)  # the size check needs no hashing
    assert error.reason == "checksum" and "size" in str(error) and error.path == str(shard)


def test_same_size_altered_byte_is_refused_by_sha256_only_when_verifying(root):
    vectors = root / "v1" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    original = np.load(vectors)
    data[-1] ^= 0x40  # the last vector's last float changes, the size does not
    vectors.write_bytes(bytes(data))
    error = refused(root)
    assert error.reason == "checksum" and "sha256" in str(error) and error.path == str(vectors)
    unchecked = open_index(root, verify=False)
    assert unchecked.vectors[-1, -1] != original[-1, -1] and np.array_equal(
        unchecked.vectors[:-1], original[:-1]
    )


def test_vectors_of_another_shape_or_dtype_are_refused(root):
    version = root / "v1"
    good = np.load(version / "vectors.npy")
    rewrite(version, "vectors", lambda p: np.save(p, good[:, :-1]))
    error = refused(root)
    assert error.reason == "shape" and f"(12, {good.shape[1]})" in str(error)
    rewrite(version, "vectors", lambda p: np.save(p, good[:-1]))
    assert refused(root).reason == "shape"
    rewrite(version, "vectors", lambda p: np.save(p, good.astype(np.float64)))
    assert refused(root).reason == "shape"
    rewrite(version, "vectors", lambda p: np.save(p, good))
    assert open_index(root).vectors.shape == good.shape


def test_items_of_another_length_are_refused(root):
    version = root / "v1"
    items = pl.read_parquet(version / "items.parquet")
    rewrite(version, "items", lambda p: items.head(11).write_parquet(p))
    error = refused(root)
    assert error.reason == "shape" and "11 rows" in str(error)


def test_shards_must_match_their_counts_and_add_up(root):
    version = root / "v1"
    manifest = manifest_of(version)
    manifest["shards"][1]["count"] = 5
    save_manifest(version, manifest)
    error = refused(root)
    assert (
        error.reason == "shape"
        and "s0001" in str(error)
        and error.path == str(version / "shards" / "s0001.faiss")
    )
    manifest["shards"][1]["count"] = 4
    manifest["shards"] = manifest["shards"][:2]
    save_manifest(version, manifest)
    error = refused(root)
    assert error.reason == "shape" and "add up" in str(error)


def test_shard_of_another_dimension_is_refused(root):
    import faiss

    version = root / "v1"
    manifest = manifest_of(version)
    entry = manifest["shards"][0]
    index = faiss.IndexIDMap(faiss.IndexFlatIP(manifest["dim"] + 1))
    index.add_with_ids(np.zeros((4, manifest["dim"] + 1), np.float32), np.arange(4))
    faiss.write_index(index, str(version / entry["file"]))
    entry["bytes"] = (version / entry["file"]).stat().st_size
    entry["sha256"] = sha256_of(version / entry["file"])
    save_manifest(version, manifest)
    assert refused(root).reason == "shape"


@pytest.mark.parametrize(
    "change",
    [
        {"format": "something-else"},
        {"format_version": 2},
        {"format_version": None},
        {"format": None},
    ],
)
def test_unknown_format_is_refused(root, change):
    manifest = manifest_of(root / "v1")
    manifest.update(change)
    save_manifest(root / "v1", {k: v for k, v in manifest.items() if v is not None})
    error = refused(root)
    assert error.reason == "format" and error.path == str(root / "v1" / "manifest.json")


@pytest.mark.parametrize("content", [b'{"format": ', b"\xff\xfe not text"])
def test_unreadable_manifest_is_refused(root, content):
    (root / "v1" / "manifest.json").write_bytes(content)
    assert refused(root).reason == "manifest"


# --- writing ------------------------------------------------------------------------------------


def test_writer_commits_atomically_and_points_latest_at_the_new_version(root):
    writer = VersionWriter(root, "v2")
    assert writer.dir == root / f".building-v2-{os.getpid()}" and (writer.dir / "shards").is_dir()
    assert writer.path("x.bin") == writer.dir / "x.bin"
    writer.path("x.bin").write_bytes(b"abc")
    entry = writer.entry("x.bin", rows=3)
    assert entry == {
        "file": "x.bin",
        "bytes": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "rows": 3,
    }
    final = writer.commit({"items": 0, "files": {}})
    assert final == root / "v2" and not writer.dir.exists()
    assert manifest_of(final) == {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": "v2",
        "items": 0,
        "files": {},
    }
    assert writer.manifest["version"] == "v2"
    assert (root / "LATEST").read_text() == "v2\n" and not (root / ".LATEST.tmp").exists()
    assert (final / "x.bin").read_bytes() == b"abc"


def test_writer_refuses_bad_or_existing_names_and_abort_leaves_nothing(root):
    for name in ("a/b", ".hidden"):
        with pytest.raises(ArtifactError) as info:
            VersionWriter(root, name)
        assert info.value.reason == "manifest"
    with pytest.raises(ArtifactError) as info:
        VersionWriter(root, "v1")
    assert info.value.reason == "exists"
    writer = VersionWriter(root / "new-root")
    assert re.fullmatch(r"v\d{8}T\d{12}Z", writer.version)
    writer.abort()
    assert list((root / "new-root").iterdir()) == []


def test_abandoned_builds_of_dead_processes_are_removed(root):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = root / f".building-v3-{done.stdout.strip()}"
    alive = root / f".building-v4-{os.getpid()}"
    odd = root / ".building-v5-abc"
    for folder in (dead, alive, odd):
        folder.mkdir()
    assert remove_abandoned_builds(root) == [dead]
    assert not dead.exists() and alive.exists() and odd.exists()


def test_sha256_of_reads_in_chunks(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 7)
    expected = hashlib.sha256(b"0123456789" * 7).hexdigest()
    assert sha256_of(path) == expected and sha256_of(path, chunk=4) == expected
    assert re.fullmatch(r"v\d{8}T\d{12}Z", new_version_name())


# --- exact messages, paths and the remaining reader details ---------------------------------------


def check(error: ArtifactError, reason: str, path: Path, message: str) -> None:
    assert (error.reason, error.path, str(error)) == (reason, str(path), f"{path}: {message}")


def test_every_refusal_names_its_file_and_says_why(root):
    version = root / "v1"
    check(refused(root / "nope"), "missing", root / "nope", "no such index folder")
    (root / "LATEST").write_text("v9\n")
    check(refused(root), "missing", root / "v9", "LATEST names 'v9', which does not exist")
    (root / "LATEST").write_text("v1\n")
    staged = root / ".building-v2-123"
    staged.mkdir()
    check(refused(staged), "incomplete", staged, "an unfinished build, not an index version")

    shard = version / "shards" / "s0002.faiss"
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes() + b"\0")
    check(
        refused(root),
        "checksum",
        shard,
        f"size {size + 1} bytes, manifest says {size} (truncated or replaced)",
    )
    data = bytearray(shard.read_bytes()[:-1])
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    check(
        refused(root),
        "checksum",
        shard,
        "sha256 does not match the manifest (file altered or corrupted)",
    )
    shard.unlink()
    check(refused(root), "missing", shard, "file listed in the manifest is missing")


def test_shape_refusals_say_what_was_found_and_expected(root):
    version = root / "v1"
    good = np.load(version / "vectors.npy")
    dim = good.shape[1]
    rewrite(version, "vectors", lambda p: np.save(p, good[:, :-1]))
    check(
        refused(root),
        "shape",
        version,
        f"vectors have shape (12, {dim - 1}) float32, manifest says (12, {dim}) float32",
    )
    rewrite(version, "vectors", lambda p: np.save(p, good))
    items = pl.read_parquet(version / "items.parquet")
    rewrite(version, "items", lambda p: items.head(11).write_parquet(p))
    check(refused(root), "shape", version, "items.parquet has 11 rows, manifest says 12")
    rewrite(version, "items", lambda p: items.write_parquet(p))
    manifest = manifest_of(version)
    manifest["shards"][1]["count"] = 5
    save_manifest(version, manifest)
    check(
        refused(root),
        "shape",
        version / "shards" / "s0001.faiss",
        f"shard s0001 holds 4 vectors of dim {dim}, manifest says 5 of dim {dim}",
    )
    manifest["shards"][1]["count"] = 4
    del manifest["shards"][2]
    save_manifest(version, manifest)
    check(refused(root), "shape", version, "shard counts do not add up to the item count")


def test_manifest_refusals_name_the_manifest(root):
    version = root / "v1"
    path = version / "manifest.json"
    good = manifest_of(version)
    save_manifest(version, {**good, "format": "other"})
    check(refused(root), "format", path, "not a crossrec index (format 'other')")
    save_manifest(version, {**good, "format_version": 2})
    check(
        refused(root), "format", path, "format version 2 is not supported (this crossrec reads [1])"
    )
    path.write_text("{")
    error = refused(root)
    assert (error.reason, error.path) == ("manifest", str(path)) and str(error).startswith(
        f"{path}: manifest.json is not valid JSON: "
    )
    path.unlink()
    check(
        refused(root / "v1"),
        "incomplete",
        version,
        "no manifest.json: not a complete index version",
    )


def test_vectors_are_memory_mapped_and_tables_read(root):
    version = open_index(root)
    assert isinstance(version.vectors, np.memmap)
    assert (
        version.transitions.columns[:3] == ["source", "target", "sessions"]
        and version.transitions.height == 0
    )
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
    assert all(not isinstance(s, tuple) for s in open_index(root).shards.values()) and moved == []
    shards = open_index(root, gpu=True).shards
    assert len(moved) == 3 and all(s[0] == "on-gpu" and s[1].ntotal == 4 for s in shards.values())


def test_search_accepts_float64_queries(root):
    version = open_index(root)
    queries = np.asarray(version.vectors[:2], dtype=np.float64)
    _, rows = version.search("s0000", queries, 1)
    assert rows.ravel().tolist() == [0, 1]


def test_writer_details(root, tmp_path):
    writer = VersionWriter(tmp_path / "a" / "b", "v1")  # creates missing parents
    assert writer.manifest == {}
    final = writer.commit({"files": {}})
    assert (final / "manifest.json").read_text() == json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "version": "v1", "files": {}}, indent=2
    )
    writer.abort()  # nothing left to remove: no error
    check(
        pytest.raises(ArtifactError, VersionWriter, root, "a/b").value,
        "manifest",
        "a/b",
        "version names may not contain '/' or start with '.'",
    )
    check(
        pytest.raises(ArtifactError, VersionWriter, root, "v1").value,
        "exists",
        root / "v1",
        "version already exists (versions are immutable)",
    )


def test_checking_for_abandoned_builds_leaves_live_processes_alone(root):
    # SIGHUP back to its default (a nohup'd run would pass on "ignore"): any signal would end it.
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
        "print('ready', flush=True); time.sleep(30)"
    )
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "ready\n"
        folder = root / f".building-v6-{live.pid}"
        folder.mkdir()
        assert remove_abandoned_builds(root) == [] and folder.exists()
        with pytest.raises(subprocess.TimeoutExpired):  # asking whether it lives sent it no signal
            live.wait(timeout=0.5)
    finally:
        live.kill()
        live.wait()


def test_version_names_are_utc_whatever_the_local_zone(monkeypatch):
    import time
    from datetime import datetime

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        name = new_version_name()
        stamp = datetime.strptime(name, "v%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    finally:
        monkeypatch.undo()
        time.tzset()


# --- typed accessors and the content part of adapted vectors -------------------------------------


def test_version_accessors_read_the_manifest(root):
    version = open_index(root)
    assert version.item_count == 12
    assert version.category_names == ["Alpha > X", "Alpha > Y", "Beta"]
    assert version.behaviour_dim == 0 and version.content_dim == version.dim
    content = version.content_vectors()
    assert content.shape == (12, version.dim) and content.dtype == np.float32
    assert np.linalg.norm(content, axis=1) == pytest.approx(np.ones(12), abs=1e-6)


def test_content_part_slices_off_the_behaviour_block_and_renormalises():
    from indexer.artifact import content_part

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
    assert (
        plain.shape == (3, 3)
        and plain[1].tolist() == [0, 0, 1]
        and plain[0] == pytest.approx(np.array([3, 4, 7]) / np.sqrt(74))
    )
    assert plain[2] == pytest.approx([0.6, 0.8, 0])
    assert content_part(vectors, {}).shape == (3, 3)
    with pytest.raises(ArtifactError) as info:
        content_part(vectors, {"adaptation": {"dim": 3}})
    assert (
        info.value.reason == "shape"
        and str(info.value) == ": behaviour block of 3 columns leaves no content in 3"
    )
    assert content_part(vectors, {"adaptation": {"dim": 2}}).tolist() == [[1], [0], [1]]


def test_adapted_version_reports_its_blocks(root):
    version = dataclasses.replace(
        open_index(root), manifest={**open_index(root).manifest, "adaptation": {"dim": 4}}
    )
    assert version.behaviour_dim == 4 and version.content_dim == version.dim - 4
    assert version.content_vectors().shape == (12, version.dim - 4)
