"""``crossrec bench retrieval`` at a tiny size: the engine's cross-category queries, exact truth,
every method's points in the JSON it writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from apps.bench.retrieval import best_at, recall


def test_recall_by_hand():
    truth = np.array([[1, 2, 3, -1], [4, 5, 6, 7]])
    found = np.array([[3, 9, 1, 2], [7, 4, 0, 0]])
    # Query 1 at k=2: truth {1, 2}, found {3, 9}: 0 of 2; query 2: truth {4, 5}, found {7, 4}: 1.
    assert recall(found, truth, 2) == 1 / 4
    # k=4: query 1's truth has 3 rows (one padded), all found; query 2: {4, 7} of 4.
    assert recall(found, truth, 4) == (3 + 2) / (3 + 4)


def test_best_at_picks_the_fastest_point_over_the_target_per_method():
    points = [
        {"method": "a", "k": 10, "qps": 100.0, "recall": 0.99},
        {"method": "a", "k": 10, "qps": 300.0, "recall": 0.96},
        {"method": "a", "k": 10, "qps": 900.0, "recall": 0.90},
        {"method": "b", "k": 10, "qps": 50.0, "recall": 0.5},
        {"method": "a", "k": 100, "qps": 999.0, "recall": 1.0},
    ]
    best = best_at(points, 0.95, 10)
    assert best["a"]["qps"] == 300.0
    assert best["b"] is None


def test_the_command_writes_every_method_at_every_depth(tiny_built, tmp_path, capsys):
    from clients.cli import main

    start = datetime(2026, 3, 1, tzinfo=UTC)
    # Users who only touched "Alpha > X" (items i00-i03): their cross-category queries search
    # "Alpha > Y" and "Beta".
    pl.DataFrame(
        {
            "user_id": [f"u{i % 5}" for i in range(40)],
            "item_id": [f"i{i % 4:02d}" for i in range(40)],
            "action": ["view", "click"] * 20,
            "ts": [start + timedelta(minutes=i) for i in range(40)],
        }
    ).write_parquet(tmp_path / "events.parquet")
    out = tmp_path / "rb"
    argv = ["bench", "retrieval", str(tiny_built), "--events", str(tmp_path / "events.parquet")]
    assert main([*argv, "--users", "5", "--k", "2,4", "--out", str(out)]) == 0
    result = json.loads((out / "retrieval.json").read_text())
    assert result["items"] == 12
    assert result["queries"] >= 5
    assert result["ks"] == [2, 4]
    assert result["allowed_items_mean"] == 8.0  # Alpha > Y and Beta, 4 items each
    methods = {(p["method"], p["k"]) for p in result["points"]}
    assert {m for m, _ in methods} == {
        "crossrec-shards",
        "faiss-hnsw-filtered",
        "faiss-ivf-filtered",
        "usearch-postfilter",  # the bench extra installs usearch
        "hnswlib-filtered",  # and builds hnswlib
    }
    assert result["not_installed"] == []
    usearch = [p for p in result["points"] if p["method"] == "usearch-postfilter"]
    assert usearch[-1]["recall"] == 1.0  # oversampled past all 12 items: the exact answer
    # At ef >= 16 over 12 items the filtered graph search is exhaustive: the exact answer.
    assert all(p["recall"] == 1.0 for p in result["points"] if p["method"] == "hnswlib-filtered")
    shards = [p for p in result["points"] if p["method"] == "crossrec-shards"]
    assert [p["recall"] for p in shards] == [1.0, 1.0]  # exact shards find the exact top k
    assert all(0.0 <= p["recall"] <= 1.0 and p["qps"] > 0 for p in result["points"])
    assert result["stamp"]["versions"]["faiss-cpu"] != "not installed"
    # Batched, at the smallest k: every method answers all queries at once, exact here too.
    batched = {p["method"]: p for p in result["batched"]}
    assert set(batched) == {m for m, _ in methods}
    assert all(p["k"] == 2 for p in batched.values())
    assert batched["crossrec-shards"]["recall"] == 1.0
    assert batched["crossrec-shards"]["qps"] > 0
    assert (out / "retrieval.png").stat().st_size > 1000
    assert "k=2, recall >= 0.95, crossrec-shards" in capsys.readouterr().out


def test_the_index_benchmark_times_every_stage(tmp_path, capsys):
    from clients.cli import main

    out = tmp_path / "ib"
    assert main(["bench", "index", "--items", "300", "--no-text", "--out", str(out)]) == 0
    result = json.loads((out / "index-bench.json").read_text())
    assert result["items"] == 300
    assert not result["text"]
    assert {"read", "encode_attributes", "fuse", "behaviour", "shards", "write"} <= set(
        result["stages"]
    )
    # The stages add up to no more than the whole build (each rounded to the millisecond).
    stages = result["stages"].values()
    assert sum(s["seconds"] for s in stages) <= result["seconds"] + 0.001 * len(stages) + 0.01
    assert all(s["seconds"] >= 0 for s in result["stages"].values())
    assert result["stamp"]["cpus"] >= 1
    assert (out / "index-bench.png").stat().st_size > 1000
    assert "300 items built in" in capsys.readouterr().out
