"""Private builds end to end (``crossrec index build --dp-epsilon``): a seeded build repeats byte
for byte and its manifest states each statistic's sensitivity, ``index inspect`` says what a
version is, a build without privacy is unchanged byte for byte, and the ranker's replay index
for a private version is private too."""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

import polars as pl
import pytest

from indexer.privacy.config import clip_candidates


def _digests(path) -> dict[str, str]:
    return {
        f.relative_to(path).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != "manifest.json"
    }


def test_a_seeded_private_build_repeats_byte_for_byte_and_says_what_it_is(small_shop_dir, tmp_path):
    from clients.cli import main
    from indexer.artifact import read_manifest

    def build(out, seed):
        args = ["index", "build", "--catalog", str(small_shop_dir / "catalog.parquet")]
        args += ["--events", str(small_shop_dir / "events.parquet"), "--no-text", "--quiet"]
        args += ["--out", str(out), "--dp-epsilon", "4", "--dp-seed", str(seed)]
        assert main(args) == 0
        return read_manifest(out)

    first, again, other = (build(tmp_path / n, s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert _digests(first[0]) == _digests(again[0])
    assert _digests(first[0])["items.parquet"] != _digests(other[0])["items.parquet"]
    manifest = first[1]
    privacy = manifest["privacy"]
    assert privacy["differentially_private"] is True
    assert privacy["epsilon"] == pytest.approx(4.0, rel=1e-5)
    # each statistic's L2 sensitivity at the default bounds (M 20, N 2, P 10, m 8; 64 categories)
    assert {s["name"]: s["sensitivity"] for s in privacy["statistics"]} == pytest.approx(
        {
            "item_actions": math.ceil(math.sqrt(20) * 2),
            "item_windows": math.ceil(math.sqrt(2 * 20) * 2),
            "item_popularity": privacy["bounds"]["popularity_clip"],
            "popularity_clip": 1,
            "category_users": math.ceil(math.sqrt(20 + 1)),
            "transitions": math.ceil(math.sqrt(10)),
            "pairs": math.sqrt(8 * 7 / 2),
            "item_users": math.ceil(math.sqrt(8)),
        }
    )
    assert privacy["bounds"]["popularity_clip"] in clip_candidates(20)
    assert privacy["popularity_clip_chosen_by"] == "private median of the shoppers' norms"
    assert set(manifest["files"]) == {"items", "vectors", "transitions", "categories", "neighbours"}
    assert manifest["adaptation"] is None


def test_inspect_states_the_privacy_of_a_version(small_shop_dir, tmp_path, capsys):
    from clients.cli import main

    args = ["index", "build", "--catalog", str(small_shop_dir / "catalog.parquet")]
    args += ["--events", str(small_shop_dir / "events.parquet"), "--no-text", "--quiet"]
    args += ["--out", str(tmp_path), "--dp-epsilon", "2", "--dp-seed", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["index", "inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "privacy: (2, 1e-06)-differentially private per shopper; noise numpy-seeded" in out
    assert "pairs: rho" in out
    assert "published from" in out
    assert "popularity_clip: rho" in out
    assert "a choice by the exponential mechanism (score sensitivity 1, Gumbel scale" in out


def test_a_build_without_privacy_is_unchanged_byte_for_byte(built_index):
    """The behaviour files of the small shop's build, pinned: a build without ``--dp-epsilon``
    writes what it wrote before private builds existed."""
    digests = _digests(built_index.path)
    assert {k: digests[k][:16] for k in PINNED} == PINNED


PINNED = {
    "items.parquet": "f6b3a1ac7db5bd9e",
    "categories.parquet": "39215ce1d2c6b287",
    "transitions.parquet": "22cf7e2f1d9b69ba",
    "neighbours.npz": "17c5feca7b8adcde",
}


def test_a_private_versions_replay_index_is_private_too(small_shop_dir, tmp_path):
    """The ranker's replay index for a private serving version is built with the same budget and
    bounds (its features then carry the noise the served ones carry)."""
    from apps.training import TrainJob
    from apps.training_rows import _replay_index
    from clients.cli import main
    from indexer.artifact import read_index_manifest

    serving = tmp_path / "serving"
    args = ["index", "build", "--catalog", str(small_shop_dir / "catalog.parquet"), "--quiet"]
    args += ["--events", str(small_shop_dir / "events.parquet"), "--no-text", "--out", str(serving)]
    assert main([*args, "--dp-epsilon", "3", "--dp-max-items", "12", "--dp-seed", "2"]) == 0
    version = next(serving.glob("v*"))
    events = pl.read_parquet(small_shop_dir / "events.parquet")
    job = TrainJob(small_shop_dir / "catalog.parquet", small_shop_dir / "events.parquet",
                   version, tmp_path / "job", progress=False)  # fmt: skip
    visible = events.filter(pl.col("ts") < events["ts"].max() - timedelta(days=7))
    prepared = _replay_index(job, visible, tmp_path / "replay", version)
    _, manifest = read_index_manifest(prepared.path)
    release = manifest.report("privacy")
    assert release["differentially_private"] is True
    assert release["epsilon"] == pytest.approx(3.0, rel=1e-5)
    assert release["bounds"]["max_items_per_user"] == 12
    assert release["noise"] == "opendp"
    # The same events asked for without privacy never reuse the private index (nor the reverse).
    from apps.evaluation.index import prepare_index, write_train_events

    path, digest = write_train_events(visible, tmp_path / "replay")
    catalog = small_shop_dir / "catalog.parquet"
    plain = prepare_index(catalog, path, digest, tmp_path / "replay", progress=False,
                          reuse_content=version)  # fmt: skip
    assert plain.built
    assert read_index_manifest(plain.path)[1].report("privacy") is None
