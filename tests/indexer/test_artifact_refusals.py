"""The index reader refuses every kind of broken version with the right ``reason``, path and
message. On the 12-item ``tiny_built`` version (tests/conftest.py)."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
from helpers_artifact import check, manifest_of, refused, rewrite, save_manifest

from indexer.artifact import (
    open_index,
    sha256_of,
)


def test_missing_folder_version_or_file(root):
    assert refused(root / "nope").reason == "missing"
    (root / "LATEST").write_text("v9\n")
    error = refused(root)
    assert error.reason == "missing"
    assert "v9" in str(error)
    (root / "LATEST").write_text("v1\n")
    (root / "v1" / "shards" / "s0001.faiss").unlink()
    error = refused(root)
    assert error.reason == "missing"
    assert error.path == str(root / "v1" / "shards" / "s0001.faiss")


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
    assert error.reason == "checksum"
    assert "size" in str(error)
    assert error.path == str(shard)


def test_same_size_altered_byte_is_refused_by_sha256_only_when_verifying(root):
    vectors = root / "v1" / "vectors.npy"
    data = bytearray(vectors.read_bytes())
    original = np.load(vectors)
    data[-1] ^= 0x40  # the last vector's last float changes, the size does not
    vectors.write_bytes(bytes(data))
    error = refused(root)
    assert error.reason == "checksum"
    assert "sha256" in str(error)
    assert error.path == str(vectors)
    unchecked = open_index(root, verify=False)
    assert unchecked.vectors[-1, -1] != original[-1, -1]
    assert np.array_equal(unchecked.vectors[:-1], original[:-1])


def test_vectors_of_another_shape_or_dtype_are_refused(root):
    version = root / "v1"
    good = np.load(version / "vectors.npy")
    rewrite(version, "vectors", lambda p: np.save(p, good[:, :-1]))
    error = refused(root)
    assert error.reason == "shape"
    assert f"(12, {good.shape[1]})" in str(error)
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
    assert error.reason == "shape"
    assert "11 rows" in str(error)


def test_shards_must_match_their_counts_and_add_up(root):
    version = root / "v1"
    manifest = manifest_of(version)
    manifest["shards"][1]["count"] = 5
    save_manifest(version, manifest)
    error = refused(root)
    assert error.reason == "shape"
    assert "s0001" in str(error)
    assert error.path == str(version / "shards" / "s0001.faiss")
    manifest["shards"][1]["count"] = 4
    manifest["shards"] = manifest["shards"][:2]
    save_manifest(version, manifest)
    error = refused(root)
    assert error.reason == "shape"
    assert "add up" in str(error)


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
    assert error.reason == "format"
    assert error.path == str(root / "v1" / "manifest.json")


@pytest.mark.parametrize("content", [b'{"format": ', b"\xff\xfe not text"])
def test_unreadable_manifest_is_refused(root, content):
    (root / "v1" / "manifest.json").write_bytes(content)
    assert refused(root).reason == "manifest"


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
    assert (error.reason, error.path) == ("manifest", str(path))
    assert str(error).startswith(f"{path}: manifest.json is not valid JSON: ")
    path.unlink()
    check(
        refused(root / "v1"),
        "incomplete",
        version,
        "no manifest.json: not a complete index version",
    )


@pytest.mark.parametrize("name", ["../../outside.bin", "/etc/hostname", "link/outside.bin"])
def test_a_file_entry_outside_the_version_folder_is_refused_without_looking_at_it(root, name):
    outside = root.parent / "outside.bin"
    outside.write_bytes(b"x" * 12_345)
    (root / "v1" / "link").symlink_to(root.parent, target_is_directory=True)
    manifest = manifest_of(root / "v1")
    manifest["files"]["categories"]["file"] = name
    save_manifest(root / "v1", manifest)
    error = refused(root)
    assert error.reason == "manifest"
    assert "outside the version folder" in str(error)
    assert "12345" not in str(error)
    assert "12,345" not in str(error)
