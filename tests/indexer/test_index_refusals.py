"""A built index version that is incomplete, altered, of an unknown format or left by a killed build
is refused by the reader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from indexer.artifact import LATEST, file_entry, open_index
from indexer.build import BuildConfig, build_index
from indexer.errors import ArtifactError


@pytest.fixture
def copied(built_index, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(built_index.path, dst)
    return dst


def edit_manifest(version_dir, edit) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    edit(manifest)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def assert_refused(version_dir, match: str, reason: str) -> ArtifactError:
    with pytest.raises(ArtifactError, match=match) as excinfo:
        open_index(version_dir)
    assert excinfo.value.reason == reason
    return excinfo.value


def test_truncated_shard_is_refused(copied):
    shard = copied / "shards" / "s0000.faiss"
    shard.write_bytes(shard.read_bytes()[:-10])
    error = assert_refused(copied, "truncated or replaced", "checksum")
    assert "s0000.faiss" in error.path


def test_altered_shard_is_refused(copied):
    shard = copied / "shards" / "s0003.faiss"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert_refused(copied, "sha256 does not match", "checksum")


def test_wrong_dimension_is_refused(copied):
    edit_manifest(copied, lambda m: m.update(dim=256))
    assert_refused(copied, r"vectors have shape \(2000, 512\)", "shape")


def test_shard_of_another_dimension_is_refused_even_with_a_matching_checksum(copied):
    import faiss

    from indexer.artifact import file_entry

    path = copied / "shards" / "s0001.faiss"
    count = faiss.read_index(str(path)).ntotal
    other = faiss.IndexIDMap(faiss.IndexFlatIP(16))
    other.add_with_ids(np.zeros((count, 16), dtype=np.float32), np.arange(count, dtype=np.int64))
    faiss.write_index(other, str(path))
    edit_manifest(
        copied,
        lambda m: next(s for s in m["shards"] if s["id"] == "s0001").update(
            file_entry(copied, path)
        ),
    )
    assert_refused(copied, "dim 16", "shape")


def test_altered_neighbours_are_refused(copied):
    path = copied / "neighbours.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    error = assert_refused(copied, "sha256 does not match", "checksum")
    assert error.path.endswith("neighbours.npz")


def rewrite_neighbours(version_dir, **arrays) -> None:
    """Replace arrays of neighbours.npz and record the new file's checksum, as a buggy build
    would."""
    path = version_dir / "neighbours.npz"
    with np.load(path) as data:
        current = {name: data[name] for name in data.files}
    np.savez(path, **{**current, **arrays})
    edit_manifest(
        version_dir, lambda m: m["files"]["neighbours"].update(file_entry(version_dir, path))
    )


def test_neighbours_with_a_wrong_indptr_are_refused(copied):
    with np.load(copied / "neighbours.npz") as data:
        indptr, rows = data["indptr"], data["rows"]
    rewrite_neighbours(copied, indptr=indptr[:-1])
    error = assert_refused(copied, r"indptr has shape \(2000,\)", "shape")
    assert error.path.endswith("neighbours.npz")
    falling = indptr.copy()
    falling[5] = falling[7] + 1
    rewrite_neighbours(copied, indptr=falling)
    assert_refused(copied, "without falling", "shape")
    rewrite_neighbours(
        copied,
        indptr=indptr,
        rows=np.where(np.arange(len(rows)) == 3, 2_000, rows).astype(np.int32),
    )
    assert_refused(copied, r"rows must lie in \[0, 2000\)", "shape")


def test_unknown_format_version_is_refused(copied):
    edit_manifest(copied, lambda m: m.update(format_version=99))
    assert_refused(copied, "format version 99 is not supported", "format")


def test_missing_manifest_and_missing_file_are_refused(copied):
    (copied / "vectors.npy").unlink()
    assert_refused(copied, "missing", "missing")
    (copied / "manifest.json").unlink()
    assert_refused(copied, "no manifest.json", "incomplete")


KILLED_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import faiss
    from indexer.build import BuildConfig, build_index

    when = sys.argv[3]
    real_write, real_rename, written = faiss.write_index, os.rename, []

    def write_index(index, path):  # kill -9 halfway through writing the shards
        real_write(index, path)
        written.append(path)
        if when == "shards" and len(written) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    def rename(src, dst):  # kill -9 with everything written, just before the version appears
        if when == "rename" and Path(src).name.startswith(".building-"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_rename(src, dst)

    faiss.write_index, os.rename = write_index, rename
    build_index(
        sys.argv[1] + "/catalog.parquet", sys.argv[2], None, BuildConfig(progress=False, text=False)
    )
    """
)


@pytest.mark.integration
@pytest.mark.parametrize("when", ["shards", "rename"])
def test_a_killed_build_leaves_no_version_the_reader_accepts(small_shop_dir, tmp_path, when):
    root = tmp_path / "index"
    result = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(small_shop_dir), str(root), when],
        capture_output=True,
    )
    assert result.returncode == -9
    leftovers = list(root.iterdir())
    assert leftovers
    assert all(p.name.startswith(".building-") for p in leftovers)
    with pytest.raises(ArtifactError):
        open_index(root)
    for partial in leftovers:
        with pytest.raises(ArtifactError, match="unfinished build"):
            open_index(partial)
    # The next build clears what the killed one left and succeeds.
    report = build_index(
        small_shop_dir / "catalog.parquet", root, None, BuildConfig(progress=False, text=False)
    )
    assert [p.name for p in root.iterdir() if p.name != LATEST] == [report.path.name]
    assert open_index(root).version == report.path.name
