"""Feeding a text model on a device: tokenise ahead in threads while the device runs forward passes.

Measured on an H200 (BENCHMARKS.md, issue figures): with the library's own ``encode`` the GPU sat
idle for 62-92% of the text stage, waiting on tokenisation and Python batching. Here the texts are
sorted by length (longest first, so a batch is padded to titles of about its own length), cut into
batches, and up to ``ahead`` batches are tokenised by a thread pool (the fast tokenisers release
the GIL) while the current one runs on the device - in half precision on CUDA when asked. Each
text's vector lands back at its own position. The vectors are those of the library's ``encode``
within float tolerance (tests/indexer/test_encoders.py).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np


def pipelined_encode(
    model,
    texts: list[str],
    batch_size: int,
    ahead: int = 4,
    workers: int = 2,
    half: bool = False,
) -> np.ndarray:
    """``(len(texts), dim)`` L2-normalised float32 vectors of ``texts`` from a sentence-transformers
    ``model`` (on whatever device it sits), tokenised ``ahead`` batches in advance by ``workers``
    threads; ``half``: forward passes in float16 autocast (CUDA only)."""
    import torch

    dim = int(model.get_embedding_dimension())
    out = np.zeros((len(texts), dim), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    device = model.device
    half = half and device.type == "cuda"
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[np.ndarray, Future]] = deque()
        upcoming = iter(batches)

        def submit() -> None:
            batch = next(upcoming, None)
            if batch is not None:
                pending.append((batch, pool.submit(model.tokenize, [texts[i] for i in batch])))

        for _ in range(ahead):
            submit()
        while pending:
            batch, tokens = pending.popleft()
            submit()
            features = {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in tokens.result().items()
            }
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.float16, enabled=half),
            ):
                vectors = model(features)["sentence_embedding"]
            vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
            out[batch] = vectors.cpu().numpy()
    return out
