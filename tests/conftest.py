from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pytest

if TYPE_CHECKING:
    from engine.retrieval.items import ItemTable

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shop():
    """The default synthetic shop (5,000 items, seed 0), generated once."""
    from indexer.datagen.config import ShopConfig
    from indexer.datagen.shop import generate_shop

    return generate_shop(ShopConfig())


@pytest.fixture(scope="session")
def shop_stats(shop):
    from indexer.datagen.stats import shop_stats

    return shop_stats(shop.catalog.frame, shop.events, sorted(shop.complement_pairs()))


@pytest.fixture(scope="session")
def small_shop_dir(tmp_path_factory):
    """A 2,000-item synthetic shop on disk (seed 0)."""
    from indexer.datagen.config import ShopConfig
    from indexer.datagen.shop import generate_shop, write_shop

    out = tmp_path_factory.mktemp("shop") / "shop"
    write_shop(generate_shop(ShopConfig(items=2_000)), out)
    return out


@pytest.fixture(scope="session")
def text_encoder():
    """The packaged all-MiniLM-L6-v2, loaded once."""
    from indexer.encoders import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def built_index(small_shop_dir, tmp_path_factory):
    """An index version of the small shop, built with its events (text + attributes, adapted)."""
    from indexer.build import BuildConfig, build_index

    root = tmp_path_factory.mktemp("index")
    report = build_index(
        small_shop_dir / "catalog.parquet",
        root,
        small_shop_dir / "events.parquet",
        BuildConfig(progress=False),
    )
    return report


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A seeded, randomly initialised CLIP (~10k parameters, 32 px) saved as a model folder that
    sentence-transformers loads through its real image path. Built here: nothing is downloaded."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=0,
            eos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    # transformers 5 ignores vocab_file/merges_file here: pass the vocabulary itself.
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=32,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
    )
    path = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


# The tiny hand-built index version (tests/engine/test_targets_and_filters.py,
# test_candidates_and_ranking.py, test_sources.py and test_recommender.py compute their answers by
# hand).
TINY_CATEGORIES = [
    "Garden > Tools",
    "Home > Kitchen > Knives",
    "Home > Kitchen > Pans",
    "Outdoors > Tents",
]


@pytest.fixture(scope="session")
def tiny_version():
    """An :class:`~indexer.artifact.IndexVersion` of 9 items in 4 categories (codes 0-3 in sorted
    order: Tools, Knives, Pans, Tents), one exact faiss shard per category, 4-d vectors.

    ========  =========  ==========  =====================  =====  ========  =====
    row       category   popularity  vector                 price  in_stock  brand
    ========  =========  ==========  =====================  =====  ========  =====
    0 t0      Tents      6           (1, 0, 0, 0)           100    yes       acme
    1 t1      Tents      3           (.8, 0, 0, .6)         50     yes       zeta
    2 t2      Tents      1           (0, 0, 0, 1)           None   yes       acme
    3 p0      Pans       9           (.6, .8, 0, 0)         20     yes       acme
    4 p1      Pans       1           (.8, .6, 0, 0)         30     no        zeta
    5 k0      Knives     4           (0, 1, 0, 0)           10     yes       acme
    6 k1      Knives     0           (.6, 0, .8, 0)         15     yes       zeta
    7 g0      Tools      5           (0, 0, 1, 0)           5      yes       acme
    8 g1      Tools      5           (-.6, 0, .8, 0)        5      yes       zeta
    ========  =========  ==========  =====================  =====  ========  =====

    Session shares: Tools .1, Knives .2, Pans .3, Tents .4; transitions (sessions): Tents->Pans 10,
    Tents->Knives 5, Pans->Knives 5 (plus one row from an unknown category, ignored).
    """
    import faiss
    import numpy as np
    import polars as pl

    from indexer.artifact import IndexVersion

    tools, knives, pans, tents = TINY_CATEGORIES
    cats = [tents, tents, tents, pans, pans, knives, knives, tools, tools]
    shard_ids = {tools: "s0", knives: "s1", pans: "s2", tents: "s3"}
    items = pl.DataFrame(
        {
            "item_id": ["t0", "t1", "t2", "p0", "p1", "k0", "k1", "g0", "g1"],
            "category": cats,
            "shard": [shard_ids[c] for c in cats],
            "popularity": [6.0, 3.0, 1.0, 9.0, 1.0, 4.0, 0.0, 5.0, 5.0],
            "price": [100.0, 50.0, None, 20.0, 30.0, 10.0, 15.0, 5.0, 5.0],
            "in_stock": [True, True, True, True, False, True, True, True, True],
            "brand": ["acme", "zeta", "acme", "acme", "zeta", "acme", "zeta", "acme", "zeta"],
        }
    )
    vectors = np.array(
        [
            [1, 0, 0, 0],
            [0.8, 0, 0, 0.6],
            [0, 0, 0, 1],
            [0.6, 0.8, 0, 0],
            [0.8, 0.6, 0, 0],
            [0, 1, 0, 0],
            [0.6, 0, 0.8, 0],
            [0, 0, 1, 0],
            [-0.6, 0, 0.8, 0],
        ],
        dtype=np.float32,
    )
    shards, category_shards = {}, {}
    for category, shard_id in shard_ids.items():
        rows = np.array([i for i, c in enumerate(cats) if c == category], dtype=np.int64)
        index = faiss.IndexIDMap(faiss.IndexFlatIP(4))
        index.add_with_ids(vectors[rows], rows)
        shards[shard_id] = index
        category_shards[category] = [shard_id]
    transitions = pl.DataFrame(
        {
            "source": [tents, tents, pans, "Nowhere"],
            "target": [pans, knives, knives, tents],
            "sessions": [10, 5, 5, 100],
        }
    )
    categories = pl.DataFrame(
        {
            "category": [tools, knives, pans, tents],
            "items": [2, 2, 2, 3],
            "session_share": [0.1, 0.2, 0.3, 0.4],
        }
    )
    manifest = {"version": "tiny", "dim": 4, "items": 9, "category_shards": category_shards}
    return IndexVersion(
        path=None,
        manifest=manifest,
        items=items,
        vectors=vectors,
        transitions=transitions,
        categories=categories,
        shards=shards,
    )


@pytest.fixture(scope="module")
def items(tiny_version) -> ItemTable:
    from engine.retrieval.items import ItemTable

    return ItemTable.from_version(tiny_version)


# The 12-item built version of the index reader and writer tests (tests/test_artifact_*.py).
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


# A real engine on a free port, and the shop it serves (tests/engine/test_engine_recommend.py,
# tests/engine/test_engine_service.py).
@pytest.fixture(scope="module")
def server(built_index, tmp_path_factory):
    from engine.api.server import BackgroundServer
    from engine.config import (
        ArmsConfig,
        EngineConfig,
        LimitsConfig,
        RetrievalConfig,
        ServerConfig,
        StoreConfig,
    )

    store = tmp_path_factory.mktemp("store") / "events.sqlite"
    config = EngineConfig(
        arms=ArmsConfig(artifact=str(built_index.path)),
        server=ServerConfig(port=0),
        store=StoreConfig(path=str(store)),
        limits=LimitsConfig(max_message_bytes=256 * 1024, max_k=50),
        retrieval=RetrievalConfig(candidates_per_shard=10),
    )
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    from clients.sdk import CrossrecClient

    with CrossrecClient(server.target, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def shop_events(small_shop_dir):
    return pl.read_parquet(small_shop_dir / "events.parquet")


@pytest.fixture(scope="module")
def catalog(small_shop_dir):
    return pl.read_parquet(small_shop_dir / "catalog.parquet")


def pytest_collection_modifyitems(items) -> None:
    """Every test that needs the session's Ray is in the ``ray`` tier (left out of test-fast)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with this machine's cores (2 here) and Serve without an HTTP proxy, started
    once for the session and shut down after it."""
    ray = pytest.importorskip("ray")
    from ray import serve

    # Ray runs its workers at niceness 15: beside any busy process (another test run, a build)
    # they got ~1% of a core and Serve deployments timed out. Tests want them on equal terms.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    yield ray
    serve.shutdown()
    ray.shutdown()


# A real PostgreSQL server for the shared store (tests/helpers_postgres.py), started once.
@pytest.fixture(scope="session")
def postgres_cluster():
    from helpers_postgres import Cluster

    cluster = Cluster()
    yield cluster
    cluster.remove()


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_cluster.database()
