"""``python -m apps.bench.device --out DIR``: what a device does for crossrec, in one JSON.

Run by ``scripts/gpu-check`` on a machine with a GPU (it also runs on a CPU, where it says so and
measures the CPU). Three measurements on a synthetic catalogue:

- **text encoding**: items/s and the share of the time outside the model, for the library's
  ``encode`` and for the pipelined feed (:mod:`indexer.text_feed`), on the device torch sees;
- **shard search**: one exact shard of ``--items`` vectors, batches of ``--queries`` queries, on the
  CPU and (where faiss sees a GPU) on the GPU, with the overlap of their top-10s;
- **behaviour scan**: the cross-category scan with re-rank (engine/retrieval/shard_search.py) of a
  batch of ``--queries`` queries over one shard of ``--scan-items`` items, numpy on the CPU (as an
  engine without a GPU runs it) against torch on the device (engine/retrieval/device_scan.py,
  what a batch of requests costs on a GPU engine), with the share of identical top-50s;
- **the machine**: torch / faiss devices and versions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def encode_rates(n: int, seed: int = 0) -> dict:
    """Items/s and the share outside the model, per feed, over ``n`` synthetic titles."""
    import polars as pl

    from indexer.encoders import EncodeTiming, TextEncoder

    rng = np.random.default_rng(seed)
    words = np.array(
        [
            "red",
            "blue",
            "light",
            "heavy",
            "two",
            "person",
            "tent",
            "stove",
            "knife",
            "pan",
            "boots",
            "jacket",
        ]
    )
    titles = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(n)]
    catalog = pl.DataFrame({"title": titles})
    out = {}
    for feed in ("library", "pipelined"):
        encoder = TextEncoder(feed=feed)
        encoder.encode(catalog.head(256))  # warm-up: kernels, allocator
        encoder.timing = EncodeTiming()
        encoder.encode(catalog)
        out[feed] = {
            "device": str(encoder._model.device),
            "batch_size": encoder.batch_size,
            **encoder.timing.as_dict(),
        }
    return out


def shard_search(items: int, queries: int, dim: int = 384, seed: int = 0) -> dict:
    """Queries/s of one exact inner-product shard on the CPU and on the GPU, and the top-10
    overlap between them."""
    import faiss

    from indexer import gpu

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(items, queries, replace=False)] + 0.1 * rng.standard_normal((queries, dim))
    q = q.astype(np.float32)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(x)
    out: dict = {"items": items, "queries": queries, "dim": dim}
    results = {}
    for name, index in (("cpu", cpu), ("gpu", gpu.to_gpu(cpu) if gpu.available() else None)):
        if index is None:
            out[name] = None
            continue
        index.search(q[:100], 10)  # warm-up
        start = time.perf_counter()
        _, ids = index.search(q, 10)
        out[name] = {"queries_per_s": round(queries / (time.perf_counter() - start), 1)}
        results[name] = ids
    if len(results) == 2:
        same = [len(set(a) & set(b)) / 10 for a, b in zip(results["cpu"], results["gpu"])]
        out["top10_overlap"] = round(float(np.mean(same)), 4)
    return out


def behaviour_scan(items: int, queries: int, seed: int = 0) -> dict:
    """Queries/s of the behaviour scan (64-d block, 448-d vectors, top 50 of 200 re-ranked) in
    numpy and in torch on the device torch sees, and the share of queries with identical rows."""
    import torch

    from engine.retrieval.device_scan import DeviceScan
    from engine.retrieval.shard_search import scan_and_rerank

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((items, 448)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.arange(items)
    behaviour = {"s": (rows, np.ascontiguousarray(vectors[:, -64:]))}
    q = vectors[rng.choice(items, queries)] + 0.1 * rng.standard_normal((queries, 448))
    q = q.astype(np.float32)
    k, n = 50, 200
    out: dict = {"items": items, "queries": queries, "k": k, "re_ranked": n}
    found = {}
    for name in ("numpy", "torch"):
        if name == "torch":
            device = "cuda" if torch.cuda.is_available() else "cpu"
            scan = DeviceScan(behaviour, vectors, 64, device)
            scan.search("s", q[:50], k, n)  # warm-up
            start = time.perf_counter()
            _, found[name] = scan.search("s", q, k, n)
        else:
            device = "cpu"
            start = time.perf_counter()
            block = behaviour["s"][1]
            _, found[name] = scan_and_rerank(rows, block, vectors, q, k, n)
        seconds = time.perf_counter() - start
        out[name] = {"device": device, "queries_per_s": round(queries / seconds, 1)}
    same = (found["numpy"] == found["torch"]).all(axis=1)
    out["identical_lists"] = round(float(same.mean()), 4)
    return out


def machine() -> dict:
    import faiss
    import torch

    from indexer import gpu

    return {
        "torch": torch.__version__,
        "torch_cuda": torch.cuda.is_available(),
        "torch_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
        "faiss_sees_gpu": gpu.available(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.bench.device", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("gpu-check"))
    p.add_argument("--titles", type=int, default=20_000, help="titles encoded per feed")
    p.add_argument("--items", type=int, default=200_000, help="vectors in the searched shard")
    p.add_argument("--queries", type=int, default=2_000, help="queries in one batch")
    p.add_argument("--scan-items", type=int, default=50_000, help="items in the scanned shard")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "encode": encode_rates(args.titles),
        "shard_search": shard_search(args.items, args.queries),
        "behaviour_scan": behaviour_scan(args.scan_items, args.queries),
    }
    (args.out / "device.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
