"""The behaviour-space scan with re-rank (engine/retrieval/shard_search.py) in torch, on a device.

On a GPU engine (``[gpu] shards = true``) the faiss shards move to the GPU, but the scan that
answers queries from other categories - a matrix product over a shard's behaviour block, the best
``behaviour_rerank`` re-ranked with the full vectors - is numpy on the CPU. Here the same steps
run in torch wherever the tensors live: every shard's behaviour block and the full vectors of its
items are copied to the device once when the version is opened, and a batch of queries
(engine/retrieval/batching.py) costs two matrix products and two top-k selections there.

The answers are the CPU scan's: the same candidates (the best ``n`` coarse scores), the same
exact scores up to float rounding, the same order but for exact ties (tested against the numpy
scan on the CPU device).
"""

from __future__ import annotations

import numpy as np


class DeviceScan:
    """Each shard's (item rows, behaviour block, full vectors) as tensors on ``device``."""

    def __init__(
        self,
        behaviour: dict[str, tuple[np.ndarray, np.ndarray]],
        vectors: np.ndarray,
        behaviour_dim: int,
        device: str,
    ) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.behaviour_dim = behaviour_dim
        self.shards = {
            shard_id: (
                torch.from_numpy(rows.astype(np.int64)).to(self.device),
                torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).to(self.device),
                torch.from_numpy(np.ascontiguousarray(vectors[rows], dtype=np.float32)).to(
                    self.device
                ),
            )
            for shard_id, (rows, block) in behaviour.items()
        }

    def search(
        self, shard_id: str, queries: np.ndarray, k: int, n_candidates: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, item rows), each ``(len(queries), k)``, re-ranking the best
        ``n_candidates`` coarse scores of each query (``k <= n_candidates <= shard size``)."""
        torch = self.torch
        rows, block, full = self.shards[shard_id]
        with torch.inference_mode():
            q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(self.device)
            coarse = q[:, -self.behaviour_dim :] @ block.T  # (m, n)
            candidates = torch.topk(coarse, n_candidates, dim=1).indices  # (m, c)
            exact = torch.einsum("mcd,md->mc", full[candidates], q)
            scores, best = torch.topk(exact, k, dim=1)
            picked = rows[candidates.gather(1, best)]
            return scores.cpu().numpy(), picked.cpu().numpy()
