"""``python -m apps.bench.device`` (what scripts/gpu-check measures) on this machine's CPU: it
runs, says which device it measured and writes its JSON."""

from __future__ import annotations

import json

import pytest


@pytest.mark.integration
def test_the_device_benchmark_writes_what_it_measured(tmp_path):
    from apps.bench.device import main

    args = ["--out", str(tmp_path), "--titles", "64", "--items", "2000", "--queries", "50"]
    assert main([*args, "--scan-items", "1000"]) == 0
    result = json.loads((tmp_path / "device.json").read_text())
    assert set(result) == {"machine", "encode", "shard_search", "behaviour_scan"}
    scan = result["behaviour_scan"]
    assert scan["identical_lists"] == 1.0  # torch on this CPU lists what numpy lists
    assert scan["items"] == 1000
    assert scan["numpy"]["queries_per_s"] > 0
    assert set(result["encode"]) == {"library", "pipelined"}
    for feed in result["encode"].values():
        assert feed["items_per_s"] > 0
        assert 0 <= feed["outside_model_share"] <= 1
    search = result["shard_search"]
    assert search["cpu"]["queries_per_s"] > 0
    if not result["machine"]["faiss_sees_gpu"]:
        assert search["gpu"] is None
