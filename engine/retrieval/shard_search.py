"""Shard search behind one small interface: in this process by default, on Ray Serve beyond one
machine (:mod:`engine.retrieval.ray_shards`); the results are identical either way.

A request's search asks a :class:`ShardSearcher` for several shards at once (one
:class:`ShardAsk` each) with the profile's interest vectors as queries. A searcher answers with
every shard it found in time and names the ones that were late; the caller builds its answer from
what came back and reports the late ones in the response's coverage.

Two kinds of search, both exact over what they scan:

``behaviour``: for queries from other categories. Scan the shard's rows in the adapted vectors'
    behaviour block and re-rank the best ``behaviour_rerank`` (at least 4k) with the full vectors:
    such queries are out of distribution for a category shard's graph or IVF index, while in the
    behaviour space, trained to put complements together, the true neighbours are near the top.
``faiss``: the shard's own faiss index (exact scans or tuned ANN, as the build chose).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from indexer.artifact import IndexVersion


@dataclass(frozen=True)
class ShardAsk:
    """Top-``k`` of one shard; ``behaviour``: the behaviour-space scan with re-rank (else the
    shard's faiss index)."""

    shard_id: str
    k: int
    behaviour: bool


@dataclass
class ShardAnswers:
    """``found``: shard -> (scores, item rows), each ``(len(queries), k)``, -1 rows where the shard
    holds fewer than ``k`` items; ``late``: shards asked for that did not answer in time."""

    found: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)


class ShardSearcher(Protocol):
    def has_behaviour(self, shard_id: str) -> bool:
        """Whether ``shard_id`` can be searched in the behaviour space."""
        ...

    def search(
        self, queries: np.ndarray, asks: list[ShardAsk], deadline: float | None = None
    ) -> ShardAnswers:
        """Answer every ask for ``queries`` (m, dim); ``deadline`` (``time.monotonic()`` seconds)
        bounds the wait for remote shards."""
        ...

    def close(self) -> None:
        """Release what the searcher holds outside this process (nothing for local shards)."""
        ...


class LocalShards:
    """The shards of one index version, searched in this process (all of them, or ``only``)."""

    def __init__(
        self,
        version: IndexVersion,
        shard_of: np.ndarray,
        behaviour_rerank: int = 200,
        only: Collection[str] | None = None,
        device: str | None = None,
    ) -> None:
        """``device``: a torch device (``"cuda"``) for the behaviour scans
        (engine/retrieval/device_scan.py); None: numpy on the CPU."""
        self.version = version
        self.behaviour_rerank = behaviour_rerank
        self.behaviour_dim = version.behaviour_dim if behaviour_rerank > 0 else 0
        # A plain array over the same memory: fancy indexing a np.memmap costs ~0.07 ms of
        # Python per call in its subclass wrapping, several calls a request.
        self.vectors = np.asarray(version.vectors)
        self.behaviour: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.behaviour_dim:
            block = np.asarray(version.vectors[:, -self.behaviour_dim :])
            # Group rows by shard with one sort (not one full scan of the items per shard).
            names, codes = np.unique(shard_of.astype(str), return_inverse=True)
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
            for i, shard_id in enumerate(names.tolist()):
                if shard_id in version.shards and (only is None or shard_id in only):
                    rows = order[bounds[i] : bounds[i + 1]]
                    self.behaviour[shard_id] = (rows, np.ascontiguousarray(block[rows]))
        self.device_scan = None
        if device is not None and self.behaviour:
            from engine.retrieval.device_scan import DeviceScan

            self.device_scan = DeviceScan(self.behaviour, self.vectors, self.behaviour_dim, device)

    def has_behaviour(self, shard_id: str) -> bool:
        return shard_id in self.behaviour

    def close(self) -> None:
        pass

    def search(
        self, queries: np.ndarray, asks: list[ShardAsk], deadline: float | None = None
    ) -> ShardAnswers:
        answers = ShardAnswers()
        for ask in asks:
            if ask.behaviour and ask.shard_id in self.behaviour:
                answers.found[ask.shard_id] = self.behaviour_search(ask.shard_id, queries, ask.k)
            else:
                answers.found[ask.shard_id] = self.version.search(ask.shard_id, queries, ask.k)
        return answers

    def behaviour_search(
        self, shard_id: str, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, item rows), each ``(len(queries), k)``, of a shard for queries from
        other categories: scan the behaviour block, re-rank the best ``behaviour_rerank`` (at least
        4k)."""
        rows, block = self.behaviour[shard_id]
        k = min(k, len(rows))
        n_candidates = min(len(rows), max(self.behaviour_rerank, 4 * k))
        if self.device_scan is not None:
            return self.device_scan.search(shard_id, queries, k, n_candidates)
        return scan_and_rerank(rows, block, self.vectors, queries, k, n_candidates)


def scan_and_rerank(
    rows: np.ndarray,
    block: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    n_candidates: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The behaviour scan in numpy: ``block`` (the shard's ``rows`` in the behaviour space, its
    last columns) against the queries' last columns, the best ``n_candidates`` re-ranked with the
    full ``vectors``; top-``k`` (scores, item rows), each ``(len(queries), k)``."""
    coarse = block @ queries[:, -block.shape[1] :].T  # (n, m)
    if n_candidates < len(rows):
        candidates = np.argpartition(-coarse, n_candidates - 1, axis=0)[:n_candidates].T  # (m, c)
    else:
        candidates = np.broadcast_to(np.arange(len(rows)), (len(queries), len(rows)))
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    out_rows = np.empty((len(queries), k), dtype=np.int64)
    for j, cand in enumerate(candidates):
        exact = vectors[rows[cand]] @ queries[j]
        best = np.argsort(-exact, kind="stable")[:k]
        out_scores[j], out_rows[j] = exact[best], rows[cand[best]]
    return out_scores, out_rows
