"""A low-rank item-item model: ALS item factors folded into top neighbours per item.

Matrix factorisation (implicit-feedback ALS, Hu, Koren & Volinsky 2008) learns item vectors ``V``
(m, f) from the user x item confidences ``1 + alpha * w``. A user who engaged with the items of a
0/1 row ``x`` is folded in by ridge regression on those vectors, ``u = (V^T V + mu I)^-1 V^T x``,
and scores item j by ``v_j . u``. That is linear in ``x``::

    score(j) = sum_i x_i S_ij        S = V (V^T V + mu I)^-1 V^T      (symmetric, rank f)

so the factor model is an item-item model like EASE (:mod:`indexer.ease`), and its ``top_n``
largest entries per row serve through the same neighbour tables and source as the other item-item
models, with no user vectors kept anywhere. Measured on the shop families of ``crossrec eval``
(``BENCHMARKS.md``), the truncated table recalls at least as much as the full ALS model it comes
from: the factors generalise across items that never met in one basket, where co-occurrence and
EASE (both limited to observed pairs' neighbourhoods) cannot.

Scale: fitting is O(nnz f^2 + m f^3) per iteration (``implicit``, all cores); the top-neighbour
cut costs O(m^2 f), done in row blocks, so ``max_items`` (default 50,000, those with most users)
bounds it at ~4 minutes on two cores; items beyond the cap keep the co-engagement neighbours.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from indexer.ease import model_items
from indexer.neighbours import ItemNeighbours, top_neighbours

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FactorsConfig:
    """``factors``, ``regularization``, ``iterations``, ``alpha``: the ALS fit (confidence ``1 +
    alpha * w``). ``fold_in``: the ridge ``mu`` of the fold-in. ``max_items``: most items in the
    model (those with most users); ``min_users``: fewer users keeps an item out. ``top_n``:
    neighbours kept per item (0 turns the stage off). ``seed``: the factors' initialisation."""

    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 1.0
    fold_in: float = 1.0
    max_items: int = 50_000
    min_users: int = 2
    top_n: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1 or self.max_items < 1 or self.min_users < 1:
            raise ValueError(f"invalid factor settings: {self}")
        if self.regularization < 0 or self.alpha < 0 or self.fold_in <= 0 or self.top_n < 0:
            raise ValueError(f"invalid factor settings: {self}")


def fit_als(x: sp.csr_matrix, config: FactorsConfig) -> tuple[np.ndarray, np.ndarray]:
    """(user factors (users, f), item factors (items, f)), float32, of ALS on ``x`` (users x
    items, engagement weights >= 0; confidence ``1 + alpha * w`` where w > 0). Deterministic for
    a seed and thread count."""
    from implicit.cpu.als import AlternatingLeastSquares  # loads its BLAS: import before limiting
    from threadpoolctl import threadpool_limits

    confidence = x.tocsr().astype(np.float32, copy=True)
    confidence.data = 1.0 + config.alpha * confidence.data
    # implicit parallelises over users itself; a multi-threaded BLAS underneath only contends.
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            iterations=config.iterations,
            random_state=config.seed,
            num_threads=min(os.cpu_count() or 1, 8),
        )
        model.fit(confidence, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )


def fit_item_factors(x: sp.csr_matrix, config: FactorsConfig) -> np.ndarray:
    """(x.shape[1], factors) float32 item factors of :func:`fit_als`."""
    return fit_als(x, config)[1]


def fold_in_weights(item_factors: np.ndarray, fold_in: float) -> np.ndarray:
    """``W = V (V^T V + mu I)^-1`` (m, f) float32, so that ``S = W V^T`` (module docstring)."""
    v = item_factors.astype(np.float64)
    gram = v.T @ v + fold_in * np.eye(v.shape[1])
    return np.linalg.solve(gram, v.T).T.astype(np.float32)


def factor_neighbours(
    item_factors: np.ndarray, items: np.ndarray, n_items: int, config: FactorsConfig
) -> ItemNeighbours:
    """The ``top_n`` largest positive entries of each row of ``S`` (module docstring) among the
    model's catalogue rows ``items``, as :class:`ItemNeighbours` over all ``n_items`` rows."""
    w = fold_in_weights(item_factors, config.fold_in)

    def rows_of(lo: int, hi: int) -> np.ndarray:
        block = w[lo:hi] @ item_factors.T
        block[np.arange(hi - lo), np.arange(lo, hi)] = 0.0  # no item is its own neighbour
        return block

    return top_neighbours(rows_of, items, n_items, config.top_n, block=512)


def build_factor_neighbours(
    x: sp.csr_matrix, config: FactorsConfig = FactorsConfig()
) -> tuple[ItemNeighbours | None, dict]:
    """Fit ALS on the model items of ``x`` (users x catalogue rows, engagement weights) and keep
    each item's best ``top_n`` neighbours; returns (neighbours or None when fewer than two items
    qualify, the manifest entry)."""
    started = time.perf_counter()
    items = model_items(x, config.min_users, config.max_items)
    report: dict = {"method": "als-fold-in", "config": asdict(config), "items": len(items)}
    if len(items) < 2 or config.top_n == 0:
        return None, report
    factors = fit_item_factors(x[:, items], config)
    neighbours = factor_neighbours(factors, items, x.shape[1], config)
    seconds = round(time.perf_counter() - started, 2)
    report |= {"links": len(neighbours.rows), "seconds": seconds}
    log.info("factors: %s", report)
    return neighbours, report
