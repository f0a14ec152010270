"""The index build end to end: artifact contents, retrieval, complement adaptation, and the reader
refusing anything incomplete, altered or of an unknown format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from PIL import Image

from clients.cli import main
from indexer.artifact import LATEST, file_entry, open_index, read_manifest
from indexer.build import BuildConfig, build_index
from indexer.errors import ArtifactError, DataValidationError
from indexer.neighbours import ItemNeighbours
from indexer.transitions import BehaviourStats, item_behaviour, sessionise


@pytest.fixture(scope="module")
def version(built_index):
    return open_index(built_index.path)


def test_manifest_records_what_the_engine_needs(built_index, version):
    m = version.manifest
    assert m["format_version"] == 1 and m["items"] == 2_000 and m["dim"] == 384 + 64 + 64
    assert [e["name"] for e in m["encoders"]] == ["text", "attributes"]
    assert m["encoders"][0]["model"] == "all-MiniLM-L6-v2" and m["encoders"][0]["dim"] == 384
    assert [p["name"] for p in m["fusion"]["parts"]] == ["text", "attributes"]
    assert m["adaptation"]["share"] == 0.8 and m["adaptation"]["report"]["pairs"] > 1_000
    assert len(m["category_shards"]) == 64 and sum(s["count"] for s in m["shards"]) == 2_000
    assert all(len(s["sha256"]) == 64 and s["factory"] == "Flat" for s in m["shards"])
    assert set(m["build"]["stages"]) >= {
        "read",
        "encode_text",
        "fuse",
        "behaviour",
        "neighbours",
        "adapt",
        "shards",
    }
    assert (
        m["files"]["neighbours"]["file"] == "neighbours.npz"
        and len(m["files"]["neighbours"]["sha256"]) == 64
    )
    assert (built_index.path.parent / LATEST).read_text().strip() == built_index.path.name


def test_items_vectors_and_shards_line_up(version):
    assert version.items["item_id"].is_unique().all()
    assert version.vectors.shape == (2_000, version.dim)
    assert np.allclose(np.linalg.norm(version.vectors, axis=1), 1, atol=1e-4)
    for category, shard_ids in version.manifest["category_shards"].items():
        rows = np.flatnonzero(version.items["shard"].is_in(shard_ids).to_numpy())
        assert (version.items["category"].gather(rows) == category).all()
    assert version.transitions.height > 0 and {"source", "target", "probability", "lift"} <= set(
        version.transitions.columns
    )
    assert version.items["popularity"].max() > 0


def test_every_item_is_retrievable_from_its_shard_by_its_own_vector(version):
    shard = version.items["shard"].to_numpy()
    for shard_id in np.unique(shard):
        rows = np.flatnonzero(shard == shard_id)
        _, found = version.search(shard_id, np.asarray(version.vectors[rows]), 1)
        assert np.array_equal(found[:, 0], rows), shard_id


def planted_complement_share(
    vectors: np.ndarray, categories: np.ndarray, complements: set, queries: np.ndarray
) -> float:
    """Share of each query item's 10 nearest items outside its own category that lie in a planted
    complement category of it (either direction)."""
    scores = vectors[queries] @ vectors.T
    scores[categories[queries][:, None] == categories[None, :]] = -np.inf
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    return float(
        np.mean(
            [
                [(categories[q], categories[j]) in complements for j in row]
                for q, row in zip(queries, top)
            ]
        )
    )


def test_adaptation_moves_planted_complements_close(small_shop_dir, version):
    truth = json.loads((small_shop_dir / "ground_truth.json").read_text())
    complements = {(e["source"], e["target"]) for e in truth["complements"]}
    complements |= {(b, a) for a, b in complements}
    categories = version.items["category"].to_numpy()
    vectors = np.asarray(version.vectors)
    share = version.manifest["adaptation"]["share"]
    content_dim = version.manifest["adaptation"]["content_dim"]
    # The adapted vector is [sqrt(1-share) content ; sqrt(share) behaviour]: its head is the
    # content.
    content = vectors[:, :content_dim] / np.sqrt(1 - share)
    queries = np.random.default_rng(0).choice(len(vectors), 400, replace=False)
    with_content = planted_complement_share(content, categories, complements, queries)
    adapted = planted_complement_share(vectors, categories, complements, queries)
    # 2-3 complement categories out of 63 others: about 0.06 by chance. Measured here:
    # ~0.05 -> ~0.7.
    assert with_content < 0.15
    assert adapted > 0.4 and adapted > 4 * with_content
    # Items without behaviour get their vector from content through the projection alone.
    cold_rows = np.flatnonzero(version.items["events"].to_numpy() == 0)
    hit = version.manifest["adaptation"]["report"]["heldout_category_hit_at_10"]
    assert hit["adapted"] > 3 * hit["content"]
    assert len(cold_rows) > 0


def test_neighbours_link_engaged_items_across_categories(small_shop_dir, version):
    nb = version.neighbours
    assert isinstance(nb, ItemNeighbours) and nb.n_items == 2_000
    lengths = np.diff(nb.indptr)
    events = version.items["events"].to_numpy()
    # Items engaged 5+ times nearly all share a shopper with some other item.
    assert (lengths[events >= 5] > 0).mean() > 0.95
    assert (lengths[events == 0] == 0).all() and lengths.max() <= 100
    source = np.repeat(np.arange(nb.n_items), lengths)
    assert not (nb.rows == source).any()
    # Best first within each item.
    assert (np.diff(nb.scores)[np.diff(source) == 0] <= 0).all()
    categories = version.items["category"].to_numpy()
    other = categories[source] != categories[nb.rows]
    entry = version.manifest["neighbours"]
    assert entry["items_with_neighbours"] == int((lengths > 0).sum()) and entry["links"] == len(
        nb.rows
    )
    assert entry["other_category_share"] == pytest.approx(other.mean(), abs=1e-4)
    # Measured here: ~0.87 of the links cross categories.
    assert other.mean() > 0.5
    # Cross-category neighbours find the planted complements: of each item's best 10 links into
    # other categories, the share in a planted complement category (chance ~0.08; measured ~0.47).
    truth = json.loads((small_shop_dir / "ground_truth.json").read_text())
    complements = {(e["source"], e["target"]) for e in truth["complements"]} | {
        (e["target"], e["source"]) for e in truth["complements"]
    }
    hits = []
    for row in np.flatnonzero(lengths >= 10)[:300]:
        rows, _ = nb.of(row)
        rows = rows[categories[rows] != categories[row]][:10]
        hits += [(categories[row], categories[j]) in complements for j in rows]
    assert np.mean(hits) > 0.3


def test_items_carry_behaviour_columns(version):
    items = version.items
    assert {
        "views",
        "clicks",
        "carts",
        "purchases",
        "events_7d",
        "events_28d",
        "click_rate",
        "cart_rate",
        "purchase_rate",
    } <= set(items.columns)
    assert (
        items["views"] + items["clicks"] + items["carts"] + items["purchases"] == items["events"]
    ).all()
    assert (items["events_7d"] <= items["events_28d"]).all() and (
        items["events_28d"] <= items["events"]
    ).all()
    assert items["events_7d"].sum() > 0
    for rate in ("click_rate", "cart_rate", "purchase_rate"):
        assert items[rate].is_between(0, 1).all() and items[rate].n_unique() > 100


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
    assert leftovers and all(p.name.startswith(".building-") for p in leftovers)
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


def test_build_with_images_and_precomputed_vectors(small_shop_dir, tiny_clip, tmp_path):
    catalog = pl.read_parquet(small_shop_dir / "catalog.parquet").head(300)
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    images = []
    for i in range(300):
        if i % 3 == 0:
            images.append(None)  # no image
        else:
            Image.fromarray((rng.random((24, 24, 3)) * 255).astype("uint8")).save(
                tmp_path / "img" / f"{i}.png"
            )
            images.append(f"img/{i}.png")
    vectors = [None if i % 5 == 0 else rng.standard_normal(8).tolist() for i in range(300)]
    catalog.with_columns(
        pl.Series("image", images), pl.Series("embedding", vectors, dtype=pl.List(pl.Float64))
    ).write_parquet(tmp_path / "catalog.parquet")
    config = BuildConfig(
        text=False, image_model=tiny_clip, vector_column="embedding", progress=False
    )
    report = build_index(tmp_path / "catalog.parquet", tmp_path / "index", None, config)
    encoders = {e["name"]: e for e in report.manifest["encoders"]}
    assert encoders["image"]["items_without_image"] == 100 and encoders["image"]["dim"] == 16
    assert (
        encoders["precomputed"]["items_without_vector"] == 60
        and encoders["precomputed"]["dim"] == 8
    )
    assert report.manifest["dim"] == 16 + 8 + 64 and report.manifest["adaptation"] is None
    assert report.manifest["neighbours"] is None and "neighbours" not in report.manifest["files"]
    version = open_index(report.path)
    assert version.neighbours is None and version.items["click_rate"].to_list() == [0.0] * 300
    assert np.allclose(np.linalg.norm(version.vectors, axis=1), 1, atol=1e-4)
    # Items without an image have zeros in the image block and still a unit vector from the rest.
    assert (
        not np.asarray(version.vectors)[0, :16].any() and np.asarray(version.vectors)[1, :16].any()
    )


T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def event_frame(rows: list[tuple[str, str, str, float]], **extra) -> pl.DataFrame:
    """(user, item, action, days before T0) -> an event frame."""
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": [T0 - timedelta(days=r[3]) for r in rows],
            **extra,
        }
    )


def test_sessionise_codes_and_splits_by_hand():
    catalog = pl.DataFrame({"item_id": ["a", "b", "c"], "category": ["Y > Q", "X > P", "X > P"]})
    minute = 1 / 1440
    table = event_frame(
        [
            ("u2", "c", "cart", 100 * minute),
            ("u1", "a", "view", 100 * minute),
            ("u1", "b", "click", 90 * minute),  # 10 minutes later: same session
            ("u1", "c", "view", 50 * minute),  # 40 minutes later: a new session
            ("u2", "a", "purchase", 0),  # 100 minutes later: a new session
        ]
    )
    sessions = sessionise(table, catalog)
    assert sessions.columns == ["session", "user", "row", "category", "action", "ts"]
    assert [str(t) for t in sessions.dtypes[:5]] == [
        "UInt32",
        "UInt32",
        "UInt32",
        "UInt32",
        "UInt8",
    ]
    # Sorted by session then time; u1's first session holds a, b; categories coded in sorted order.
    by_session = sessions.group_by("session", maintain_order=True).agg(
        "row", "action", "category", "user"
    )
    assert sorted(map(tuple, by_session["row"].to_list())) == [(0,), (0, 1), (2,), (2,)]
    pair = by_session.filter(pl.col("row").list.len() == 2)
    assert pair["action"].to_list() == [[0, 1]] and pair["category"].to_list() == [[1, 0]]
    assert sessions["session"].n_unique() == 4 and sessions["user"].n_unique() == 2
    assert (sessions["session"].diff().drop_nulls() >= 0).all()
    # A given session_id wins over the 30-minute rule: all of u1's events in one session.
    with_ids = sessionise(
        table.with_columns(pl.Series("session_id", [None, "s1", "s1", "s1", None])), catalog
    )
    assert with_ids["session"].n_unique() == 3


def test_funnel_rates_window_counts_and_popularity_by_hand():
    catalog = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["X", "X", "Y", "X"]})
    table = event_frame(
        [
            ("u1", "a", "view", d) for d in (0, 1, 6, 7, 27)
        ]  # exactly 7 days old: not in the last 7 days
        + [("u1", "a", "click", d) for d in (0, 1, 30)]
        + [("u1", "a", "cart", 0), ("u1", "a", "cart", 40), ("u1", "a", "purchase", 0)]
        + [("u2", "b", "view", 14), ("u2", "b", "click", 14)]
        + [("u3", "c", "view", 0), ("u3", "c", "view", 0)]
    )
    items = item_behaviour(sessionise(table, catalog), catalog)
    assert items["item_id"].to_list() == ["a", "b", "c", "d"]
    assert items["views"].to_list() == [5, 1, 2, 0] and items["clicks"].to_list() == [3, 1, 0, 0]
    assert items["carts"].to_list() == [2, 0, 0, 0] and items["purchases"].to_list() == [1, 0, 0, 0]
    assert items["events"].to_list() == [11, 2, 2, 0]
    assert items["events_7d"].to_list() == [7, 0, 2, 0] and items["events_28d"].to_list() == [
        9,
        2,
        2,
        0,
    ]
    # b: a view and a click 14 days back, one half-life: (1 + 2) x 0.5.
    assert items["popularity"][1] == pytest.approx(1.5)
    # Global: views 8, clicks 4, carts 2, purchases 1 -> every global rate 0.5. With a = 10:
    # category X (a, b, d): views 6, clicks 4, carts 2, purchases 1 ->
    #   p_X = (4 + 5) / 16, q_X = (2 + 5) / 14 = 0.5, r_X = (1 + 5) / 12 = 0.5
    # category Y (c): views 2 -> p_Y = (0 + 5) / 12, q_Y = 5 / 10, r_Y = 5 / 10.
    p_x, p_y = 9 / 16, 5 / 12
    assert items["click_rate"].to_list() == pytest.approx(
        [(3 + 10 * p_x) / 15, (1 + 10 * p_x) / 11, 10 * p_y / 12, p_x]
    )
    assert items["cart_rate"].to_list() == pytest.approx([(2 + 5) / 13, 5 / 11, 0.5, 0.5])
    assert items["purchase_rate"].to_list() == pytest.approx([(1 + 5) / 12, 0.5, 0.5, 0.5])


def test_a_build_without_events_has_zero_behaviour():
    catalog = pl.DataFrame({"item_id": ["a", "b"], "category": ["X", "Y"]})
    stats = BehaviourStats.without_events(catalog)
    items = stats.items
    assert items["item_id"].to_list() == ["a", "b"]
    for column in (
        "events",
        "views",
        "clicks",
        "carts",
        "purchases",
        "events_7d",
        "events_28d",
        "popularity",
        "click_rate",
        "cart_rate",
        "purchase_rate",
    ):
        assert items[column].to_list() == [0, 0], column
    assert stats.transitions.height == 0 and stats.categories["items"].to_list() == [1, 1]


def test_events_for_unknown_items_stop_the_build(small_shop_dir, tmp_path):
    events = pl.read_parquet(small_shop_dir / "events.parquet").head(5)
    events = events.with_columns(
        pl.when(pl.int_range(5) == 2)
        .then(pl.lit("nope"))
        .otherwise(pl.col("item_id"))
        .alias("item_id")
    )
    events.write_parquet(tmp_path / "events.parquet")
    with pytest.raises(
        DataValidationError, match="row 3, column 'item_id': item 'nope' is not in the catalogue"
    ):
        build_index(
            small_shop_dir / "catalog.parquet",
            tmp_path / "index",
            tmp_path / "events.parquet",
            BuildConfig(text=False, progress=False),
        )
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_cli_build_and_inspect(small_shop_dir, built_index, tmp_path, capsys):
    rows = pl.read_parquet(small_shop_dir / "catalog.parquet").head(400)
    rows.write_csv(tmp_path / "catalog.csv")
    code = main(
        [
            "index",
            "build",
            "--catalog",
            str(tmp_path / "catalog.csv"),
            "--out",
            str(tmp_path / "idx"),
            "--version",
            "v1",
            "--quiet",
            "--exact-max",
            "10",
            "--json",
            str(tmp_path / "report.json"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "version v1 (format 1): 400 items" in out and "HNSW: " in out and "encode text:" in out
    assert json.loads((tmp_path / "report.json").read_text())["stages"]["write"]["seconds"] >= 0
    assert main(["index", "inspect", str(tmp_path / "idx"), "--verify"]) == 0
    assert "verified: every file matches its sha256" in capsys.readouterr().out
    path, manifest = read_manifest(tmp_path / "idx")
    assert path.name == "v1" and all(s["recall_at_10"] >= 0.95 for s in manifest["shards"])
    # Versions are immutable: building v1 again is refused.
    assert (
        main(
            [
                "index",
                "build",
                "--catalog",
                str(tmp_path / "catalog.csv"),
                "--out",
                str(tmp_path / "idx"),
                "--version",
                "v1",
                "--quiet",
            ]
        )
        == 2
    )
    assert "version already exists" in capsys.readouterr().err
