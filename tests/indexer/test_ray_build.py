"""The build on Ray (indexer/ray_build.py): the same artifact as the local build of the same
inputs, apart from timings, with vectors equal within float tolerance."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from crossrec.versions import without_timings
from indexer.shards import ShardPolicy

#: Manifest entries that say how a build ran (stages, encoder executors, its name), not what it
#: built; the adaptation's report is compared on its own, below. Timings at any depth go through
#: ``without_timings``.
HOW_IT_RAN = {"build", "encode_timing", "version", "adaptation"}


def _comparable(manifest: dict) -> dict:
    manifest = without_timings(manifest)
    out = {k: v for k, v in manifest.items() if k not in HOW_IT_RAN}
    out["shards"] = [
        {k: v for k, v in s.items() if k not in ("sha256", "bytes")} for s in manifest["shards"]
    ]
    # Vectors and the files written from them differ in the last float bits; compared below.
    out["files"] = {
        name: {k: v for k, v in entry.items() if k not in ("sha256", "bytes")}
        for name, entry in manifest["files"].items()
    }
    return out


def _flat(value, prefix=""):
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()
        }
    return {prefix: value}


def _same_adaptation(a: dict, b: dict) -> None:
    """Counts, settings and steps exactly; losses and hit rates within 0.01: the training's float
    sums depend on the driver's thread count, and the content vectors differ in the last bits."""
    fa, fb = _flat(without_timings(a)), _flat(without_timings(b))
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        if isinstance(value, float):
            assert fb[key] == pytest.approx(value, abs=0.01), key
        else:
            assert fb[key] == value, key


def test_the_ray_build_writes_what_the_local_build_writes(
    ray_cluster, built_index, small_shop_dir, tmp_path
):
    from indexer.artifact import open_index
    from indexer.build import BuildConfig, build_index
    from indexer.ray_build import RayOptions

    report = build_index(
        small_shop_dir / "catalog.parquet",
        tmp_path / "ray",
        small_shop_dir / "events.parquet",
        BuildConfig(progress=False, ray=RayOptions(encode_batch=300)),
    )
    local, remote = built_index.manifest, report.manifest
    assert _comparable(remote) == _comparable(local)
    _same_adaptation(remote["adaptation"], local["adaptation"])
    assert remote["encode_timing"]["text"]["executor"] == "ray"
    assert remote["encode_timing"]["text"]["actors"] >= 1
    a, b = open_index(built_index.path), open_index(report.path)
    assert np.allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-4)
    assert a.items.equals(b.items)
    for shard_id, index in a.shards.items():
        assert index.ntotal == b.shards[shard_id].ntotal
    # Every shard answers the same nearest item for its own items.
    for entry in local["shards"][:10]:
        rows = np.flatnonzero(a.items["shard"].to_numpy() == entry["id"])[:5]
        queries = np.asarray(a.vectors[rows])
        assert (
            a.search(entry["id"], queries, 1)[1].tolist()
            == b.search(entry["id"], queries, 1)[1].tolist()
        )
    assert (tmp_path / "ray" / "LATEST").read_text().strip() == report.path.name
    json.dumps(remote, default=str)


def test_a_failed_ray_build_leaves_no_version(ray_cluster, small_shop_dir, tmp_path):
    from indexer.build import BuildConfig, build_index
    from indexer.errors import EncoderError
    from indexer.ray_build import RayOptions

    with pytest.raises(EncoderError, match="text fields not in the catalogue"):
        build_index(
            small_shop_dir / "catalog.parquet",
            tmp_path / "index",
            None,
            BuildConfig(progress=False, text_fields=("title", "nope"), ray=RayOptions()),
        )
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_index_build_takes_ray_from_the_command_line(ray_cluster, tiny_built, tmp_path, capsys):
    from clients.cli import main
    from indexer.artifact import open_index, read_manifest

    catalog = tiny_built.parent / "catalog.parquet"
    out = tmp_path / "index"
    args = ["index", "build", "--catalog", str(catalog), "--out", str(out), "--quiet"]
    assert main([*args, "--no-text", "--ray", "--version", "r1"]) == 0
    assert "written to" in capsys.readouterr().out
    _, manifest = read_manifest(out)
    assert manifest["version"] == "r1"
    assert manifest["items"] == 12
    assert sorted(open_index(out).shards) == sorted(open_index(tiny_built).shards)


@dataclasses.dataclass(frozen=True)
class _DiesOnce(ShardPolicy):
    """A shard policy whose first reader (a shard task's worker) kills its own process, once: the
    marker file says it happened."""

    marker: str = ""
    always: bool = False

    def __getattribute__(self, name):
        marker = object.__getattribute__(self, "marker")
        if name == "exact_max" and marker:
            dies = object.__getattribute__(self, "always") or not os.path.exists(marker)
            if dies:
                open(marker, "w").close()
                os._exit(1)  # the worker dies mid-build, as on a lost node
        return object.__getattribute__(self, name)


def test_a_shard_task_whose_worker_dies_is_retried_and_a_lost_one_leaves_no_version(
    ray_cluster, tiny_built, tmp_path
):
    from ray import cloudpickle

    from indexer.artifact import open_index
    from indexer.build import BuildConfig, build_index
    from indexer.ray_build import RayOptions

    # Ray workers cannot import this test module: ship the policy class by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "died"

    def build(root, always):
        policy = _DiesOnce(marker=str(marker), always=always)
        return build_index(
            tiny_built.parent / "catalog.parquet",
            root,
            None,
            BuildConfig(text=False, progress=False, ray=RayOptions(), policy=policy),
        )

    try:
        report = build(tmp_path / "index", always=False)
        assert marker.exists()  # a worker did die
        assert sorted(open_index(report.path).shards) == sorted(open_index(tiny_built).shards)
        # A shard whose every attempt dies fails the build, and no version is left behind.
        with pytest.raises(Exception, match=r"died|crashed|exit"):
            build(tmp_path / "failed", always=True)
        assert not (tmp_path / "failed").exists() or not any((tmp_path / "failed").iterdir())
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_private_ray_build_writes_what_a_private_local_build_writes(
    ray_cluster, small_shop_dir, tmp_path
):
    import hashlib

    from indexer.build import BuildConfig, build_index
    from indexer.privacy.config import PrivacyConfig
    from indexer.ray_build import RayOptions

    private = PrivacyConfig(epsilon=4.0, seed=3)
    reports = [
        build_index(
            small_shop_dir / "catalog.parquet",
            tmp_path / name,
            small_shop_dir / "events.parquet",
            BuildConfig(text=False, progress=False, privacy=private, ray=ray),
        )
        for name, ray in (("local", None), ("ray", RayOptions()))
    ]
    local, remote = reports
    for name in ("items.parquet", "categories.parquet", "transitions.parquet", "neighbours.npz"):
        digests = {hashlib.sha256((r.path / name).read_bytes()).hexdigest() for r in reports}
        assert len(digests) == 1, name
    assert remote.manifest["privacy"] == local.manifest["privacy"]
    assert remote.manifest["privacy"]["differentially_private"] is True
