"""``python -m apps.bench.device --out DIR``: what a device does for crossrec, in one JSON.

Run by ``scripts/gpu-check`` on a machine with a GPU (it also runs on a CPU, where it says so and
measures the CPU). Three measurements on a synthetic catalogue:

- **text encoding**: items/s and the share of the time outside the model, for the library's
  ``encode`` and for the pipelined feed (:mod:`indexer.text_feed`), on the device torch sees;
- **shard search**: one exact shard of ``--items`` vectors, batches of ``--queries`` queries, on the
  CPU and (where faiss sees a GPU) on the GPU, with the overlap of their top-10s;
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
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "encode": encode_rates(args.titles),
        "shard_search": shard_search(args.items, args.queries),
    }
    (args.out / "device.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
