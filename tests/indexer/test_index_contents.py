"""The built index end to end: artifact contents, retrieval, complement adaptation, neighbours,
behaviour columns, and builds with images and precomputed vectors."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from indexer.artifact import LATEST, open_index
from indexer.build import BuildConfig, build_index
from indexer.neighbours import ItemNeighbours


@pytest.fixture(scope="module")
def version(built_index):
    return open_index(built_index.path)


def test_manifest_records_what_the_engine_needs(built_index, version):
    m = version.manifest
    assert m["format_version"] == 1
    assert m["items"] == 2_000
    assert m["dim"] == 384 + 64 + 64
    assert [e["name"] for e in m["encoders"]] == ["text", "attributes"]
    assert m["encoders"][0]["model"] == "all-MiniLM-L6-v2"
    assert m["encoders"][0]["dim"] == 384
    assert [p["name"] for p in m["fusion"]["parts"]] == ["text", "attributes"]
    assert m["adaptation"]["share"] == 0.8
    assert m["adaptation"]["report"]["pairs"] > 1_000
    assert len(m["category_shards"]) == 64
    assert sum(s["count"] for s in m["shards"]) == 2_000
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
    assert m["files"]["neighbours"]["file"] == "neighbours.npz"
    assert len(m["files"]["neighbours"]["sha256"]) == 64
    assert (built_index.path.parent / LATEST).read_text().strip() == built_index.path.name


def test_items_vectors_and_shards_line_up(version):
    assert version.items["item_id"].is_unique().all()
    assert version.vectors.shape == (2_000, version.dim)
    assert np.allclose(np.linalg.norm(version.vectors, axis=1), 1, atol=1e-4)
    for category, shard_ids in version.manifest["category_shards"].items():
        rows = np.flatnonzero(version.items["shard"].is_in(shard_ids).to_numpy())
        assert (version.items["category"].gather(rows) == category).all()
    assert version.transitions.height > 0
    assert {"source", "target", "probability", "lift"} <= set(version.transitions.columns)
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
    assert adapted > 0.4
    assert adapted > 4 * with_content
    # Items without behaviour get their vector from content through the projection alone.
    cold_rows = np.flatnonzero(version.items["events"].to_numpy() == 0)
    hit = version.manifest["adaptation"]["report"]["heldout_category_hit_at_10"]
    assert hit["adapted"] > 3 * hit["content"]
    assert len(cold_rows) > 0


def test_neighbours_link_engaged_items_across_categories(small_shop_dir, version):
    nb = version.neighbours
    assert isinstance(nb, ItemNeighbours)
    assert nb.n_items == 2_000
    lengths = np.diff(nb.indptr)
    events = version.items["events"].to_numpy()
    # Items engaged 5+ times nearly all share a shopper with some other item.
    assert (lengths[events >= 5] > 0).mean() > 0.95
    assert (lengths[events == 0] == 0).all()
    assert lengths.max() <= 100
    source = np.repeat(np.arange(nb.n_items), lengths)
    assert not (nb.rows == source).any()
    # Best first within each item.
    assert (np.diff(nb.scores)[np.diff(source) == 0] <= 0).all()
    categories = version.items["category"].to_numpy()
    other = categories[source] != categories[nb.rows]
    entry = version.manifest["neighbours"]
    assert entry["items_with_neighbours"] == int((lengths > 0).sum())
    assert entry["links"] == len(nb.rows)
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
    assert (items["events_7d"] <= items["events_28d"]).all()
    assert (items["events_28d"] <= items["events"]).all()
    assert items["events_7d"].sum() > 0
    for rate in ("click_rate", "cart_rate", "purchase_rate"):
        assert items[rate].is_between(0, 1).all()
        assert items[rate].n_unique() > 100


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
    assert encoders["image"]["items_without_image"] == 100
    assert encoders["image"]["dim"] == 16
    assert encoders["precomputed"]["items_without_vector"] == 60
    assert encoders["precomputed"]["dim"] == 8
    assert report.manifest["dim"] == 16 + 8 + 64
    assert report.manifest["adaptation"] is None
    assert report.manifest["neighbours"] is None
    assert "neighbours" not in report.manifest["files"]
    version = open_index(report.path)
    assert version.neighbours is None
    assert version.items["click_rate"].to_list() == [0.0] * 300
    assert np.allclose(np.linalg.norm(version.vectors, axis=1), 1, atol=1e-4)
    # Items without an image have zeros in the image block and still a unit vector from the rest.
    assert not np.asarray(version.vectors)[0, :16].any()
    assert np.asarray(version.vectors)[1, :16].any()


def test_the_learned_item_item_tables_are_written_read_and_recorded(built_index, version):
    files = version.manifest["files"]
    for name, table in (("ease", version.ease), ("factors", version.factors)):
        assert isinstance(table, ItemNeighbours), name
        assert table.n_items == 2_000, name
        entry = version.manifest[name]
        assert entry["links"] == len(table.rows) == files[name]["links"] > 0, name
        lengths = np.diff(table.indptr)
        assert lengths.max() <= 100, name
        assert (lengths > 0).sum() <= entry["items"], name
        source = np.repeat(np.arange(table.n_items), lengths)
        assert not (table.rows == source).any(), name
        assert (table.scores > 0).all(), name
    assert version.manifest["factors"]["method"] == "als-fold-in"
    assert version.manifest["factors"]["config"]["factors"] == 64
    assert "factors" in built_index.stages
    assert "ease" in built_index.stages
