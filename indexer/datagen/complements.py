"""The planted complement graph between leaf categories.

Each leaf gets a few directed edges to leaves drawn uniformly at random, with Dirichlet weights.
Drawing them at random is deliberate: nothing in the names or texts of two categories tells whether
they are complements, so whatever finds them learnt them from behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.datagen.config import ShopConfig


@dataclass(frozen=True)
class ComplementGraph:
    """Directed, weighted edges between leaf categories (``src[i] -> dst[i]`` with ``weight[i]``;
    each source's weights sum to 1). Drawn uniformly at random, so nothing about the names or texts
    of two categories tells whether they are complements: only behaviour does."""

    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray

    def table(self, n_leaves: int) -> tuple[np.ndarray, np.ndarray]:
        """(targets, weights), each ``(n_leaves, max_degree)``; row c lists leaf c's edges, padded
        with its last target and weight 0."""
        deg = np.bincount(self.src, minlength=n_leaves)
        width = int(deg.max())
        targets = np.zeros((n_leaves, width), dtype=np.int64)
        weights = np.zeros((n_leaves, width))
        for c in range(n_leaves):
            sel = self.src == c
            targets[c, : deg[c]] = self.dst[sel]
            targets[c, deg[c] :] = self.dst[sel][-1]
            weights[c, : deg[c]] = self.weight[sel]
        return targets, weights

    def padded(self, n_leaves: int) -> tuple[np.ndarray, np.ndarray]:
        """(targets, cumulative weights), each ``(n_leaves, max_degree)``; rows padded with the
        last target and cumulative weight 1."""
        targets, weights = self.table(n_leaves)
        cum = np.cumsum(weights, axis=1)
        cum[weights == 0] = 1.0
        cum[:, -1] = 1.0
        return targets, cum


def plant_complements(cfg: ShopConfig, n_leaves: int, rng: np.random.Generator) -> ComplementGraph:
    src, dst, weight = [], [], []
    for c in range(n_leaves):
        degree = int(rng.integers(cfg.min_complements, cfg.max_complements + 1))
        others = np.delete(np.arange(n_leaves), c)
        targets = rng.choice(others, size=degree, replace=False)
        src += [c] * degree
        dst += targets.tolist()
        weight += rng.dirichlet(np.full(degree, 2.0)).tolist()
    return ComplementGraph(np.array(src), np.array(dst), np.array(weight))
