"""The GPU path against the CPU's, on a device (``pytest -m gpu``; skipped where faiss sees none):
a version opened with its shards on the GPU answers as the CPU shards do, and an engine with
``[gpu] shards = true`` serves the same lists."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="session")
def device():
    from indexer import gpu

    if not gpu.available():
        pytest.skip("faiss sees no GPU here")


def test_gpu_shards_answer_as_the_cpu_shards(device, built_index):
    from indexer.artifact import open_index

    cpu = open_index(built_index.path)
    gpu = open_index(built_index.path, gpu=True)
    for shard_id in list(cpu.shards)[:20]:
        rows = np.flatnonzero(cpu.items["shard"].to_numpy() == shard_id)[:8]
        queries = np.asarray(cpu.vectors[rows])
        _, cpu_ids = cpu.search(shard_id, queries, 5)
        _, gpu_ids = gpu.search(shard_id, queries, 5)
        assert gpu_ids.tolist() == cpu_ids.tolist(), shard_id


def test_an_engine_on_the_gpu_serves_the_cpu_engines_lists(
    device, built_index, shop_events, tmp_path
):
    from helpers_engine import lists_at_once, recent_events

    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.retrieval.query import Query
    from engine.state.store import SQLiteEventStore

    recent = recent_events(shop_events, 20)
    query = Query(k=10, cross_share=0.5)  # half the list through the shard searches
    lists = []
    for name, on in (("cpu", False), ("gpu", True)):
        store = tmp_path / f"{name}.sqlite"
        config = EngineConfig().with_changes(store={"path": str(store)}, gpu={"shards": on})
        engine = Engine(config, SQLiteEventStore(store))
        try:
            engine.versions.load(str(built_index.path))
            assert engine.status()["gpu"] is on
            lists.append(lists_at_once(engine, recent, query))  # concurrent: batched on the GPU
        finally:
            engine.close()
    assert lists[0] == lists[1]


def test_the_adaptation_on_the_device_learns_what_it_learns_on_the_cpu(device, small_shop_dir):
    import dataclasses

    import polars as pl
    import torch

    from indexer.adapt import AdaptConfig, train_adaptation
    from indexer.attributes import AttributeEncoder
    from indexer.transitions import sessionise

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    catalog = pl.read_parquet(small_shop_dir / "catalog.parquet")
    sessions = sessionise(pl.read_parquet(small_shop_dir / "events.parquet"), catalog)
    content, _ = AttributeEncoder().encode(catalog)
    reports = [
        train_adaptation(
            content, catalog, sessions, dataclasses.replace(AdaptConfig(), device=d)
        ).report
        for d in ("cpu", "cuda")
    ]
    cpu, gpu = reports
    assert gpu["device"].startswith("cuda")
    assert gpu["steps"] == cpu["steps"]
    assert gpu["loss_last"] == pytest.approx(cpu["loss_last"], abs=0.05)
    for part in ("content", "adapted"):
        hit = cpu["heldout_category_hit_at_10"][part]
        assert gpu["heldout_category_hit_at_10"][part] == pytest.approx(hit, abs=0.02)
