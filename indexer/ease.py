"""EASE, the closed-form item-item model, and its top neighbours per item.

EASE (Steck, 2019) learns an item-item weight matrix ``B`` from the user x item matrix ``X`` by
ridge regression of every item's column on all the other columns, with a zero diagonal so that no
item explains itself. The solution is closed-form::

    G = X^T X + lambda I          P = G^-1          B_ij = -P_ij / P_jj  (i != j),  B_jj = 0

and a user's score for item j is ``sum_i x_ui B_ij``. Unlike a cosine, ``B`` accounts for the
other items: an item that co-occurs with everything (a best-seller) gets small weights because the
others already explain it, which is why EASE is strong beyond the head.

Cost and scale: ``G`` is dense (n, n) and the inverse is O(n^3). ``max_items`` (default 12,000)
keeps the items with most users: at 12,000 items the float32 Gram matrix and its inverse take
0.6 GB each; at 1M items a dense inverse is out (8 TB), so the items beyond the cap keep
only the co-engagement neighbours (:mod:`indexer.neighbours`). ``min_users`` (2) drops items seen
by a single user, whose rows would only repeat that user's history.

``lambda_``: ridge strength in units of co-occurrence counts; larger favours popular items. Unless
set, it is chosen on the shop's own data (:func:`choose_lambda`, over ``lambdas``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp

from indexer.holdout import holdout
from indexer.neighbours import ItemNeighbours, top_neighbours

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EaseConfig:
    """``lambda_``: ridge strength (None: chosen on the data by :func:`choose_lambda` from
    ``lambdas``). ``max_items``: most items in the model (those with most users). ``min_users``:
    fewer users than this keeps an item out. ``top_n``: neighbours kept per item (0 turns the stage
    off)."""

    lambda_: float | None = None
    lambdas: tuple[float, ...] = (2.0, 10.0, 50.0, 200.0, 1000.0, 5000.0)
    max_items: int = 12_000
    min_users: int = 2
    top_n: int = 100

    def __post_init__(self) -> None:
        if self.lambda_ is not None and self.lambda_ <= 0:
            raise ValueError(f"EASE lambda must be > 0, got {self.lambda_}")
        if not self.lambdas or min(self.lambdas) <= 0:
            raise ValueError(f"EASE lambdas must be > 0, got {self.lambdas}")
        if self.max_items < 1 or self.min_users < 1 or self.top_n < 0:
            raise ValueError(f"invalid EASE settings: {self}")


@dataclass(frozen=True)
class EaseModel:
    """``items`` (m,) int64: the catalogue rows in the model; ``weights`` (m, m) float32: ``B``,
    row i = how much an engagement with ``items[i]`` adds to each item's score."""

    items: np.ndarray
    weights: np.ndarray
    lambda_: float

    def scores(self, x: sp.csr_matrix, n_items: int) -> np.ndarray:
        """(users, n_items) float32 scores for the rows of ``x`` (users x n_items); items outside
        the model score 0."""
        out = np.zeros((x.shape[0], n_items), np.float32)
        out[:, self.items] = np.asarray(x[:, self.items] @ self.weights, dtype=np.float32)
        return out


def model_items(x: sp.csr_matrix, min_users: int, max_items: int) -> np.ndarray:
    """Catalogue rows (columns of ``x``, users x items) with at least ``min_users`` users, the
    ``max_items`` with most users (ties: lower row), ascending."""
    users = np.diff(x.tocsc().indptr)
    eligible = np.flatnonzero(users >= min_users)
    if len(eligible) > max_items:
        order = np.lexsort((eligible, -users[eligible]))[:max_items]
        eligible = np.sort(eligible[order])
    return eligible.astype(np.int64)


def fit_ease(x: sp.csr_matrix, lambda_: float, items: np.ndarray) -> EaseModel:
    """EASE on the columns ``items`` of ``x`` (users x items; binary or weighted). ``G`` is
    symmetric positive definite, so it is inverted through its Cholesky factor (LAPACK ``potrf`` /
    ``potri``, float32: half the time and memory of a general float64 inverse; weights agree with
    float64 to ~1e-5 relative on count matrices)."""
    from scipy.linalg import lapack

    sub = x[:, items].astype(np.float32).tocsc()
    subt = sub.T.tocsr()
    gram = np.empty((len(items), len(items)), np.float32)
    for lo in range(0, len(items), 2_048):  # column blocks: the sparse product stays small
        gram[:, lo : lo + 2_048] = (subt @ sub[:, lo : lo + 2_048]).toarray()
    gram[np.diag_indices_from(gram)] += lambda_
    factor, info = lapack.spotrf(gram, lower=1, overwrite_a=1)
    if info != 0:
        raise ValueError(f"EASE: X^T X + {lambda_:g} I is not positive definite (potrf {info})")
    p, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE: inverse failed (potri {info})")
    p = np.tril(p) + np.tril(p, -1).T  # potri fills one triangle
    b = p / -np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return EaseModel(items, b.astype(np.float32, copy=False), float(lambda_))


def choose_lambda(
    x: sp.csr_matrix, config: EaseConfig, seed: int = 0
) -> tuple[float, dict[str, float]]:
    """The ``config.lambdas`` value with the best Recall@10 on a validation split of ``x`` itself
    (:func:`indexer.holdout.holdout`; ties: the smaller lambda). Returns (lambda, {lambda:
    recall}); with too few users for a split, the middle of the grid and an empty table.

    The split is made among the model's items only (what EASE can recommend at all), so the
    scores are (users, model items) blocks whatever the catalogue size."""
    items = model_items(x, config.min_users, config.max_items)
    split = holdout(x[:, items], seed=seed)
    if split is None:
        return sorted(config.lambdas)[len(config.lambdas) // 2], {}
    every = np.arange(len(items))
    table: dict[str, float] = {}
    for lam in config.lambdas:
        model = fit_ease(split.train, lam, every)
        table[f"{lam:g}"] = split.recall_at(partial(model.scores, n_items=len(every)))
    best = max(config.lambdas, key=lambda lam: (table[f"{lam:g}"], -lam))
    return best, table


def ease_neighbours(
    model: EaseModel, n_items: int, top_n: int, block: int = 1_024
) -> ItemNeighbours:
    """Each model item's ``top_n`` largest positive weights to other items, best first (ties:
    lower row), as :class:`ItemNeighbours` over all ``n_items`` catalogue rows (items outside the
    model have none). Rows are cut ``block`` at a time (bounded memory at any model size)."""
    return top_neighbours(lambda lo, hi: model.weights[lo:hi], model.items, n_items, top_n, block)


def build_ease_neighbours(
    x: sp.csr_matrix, config: EaseConfig = EaseConfig()
) -> tuple[ItemNeighbours | None, dict]:
    """Fit EASE on ``x`` (users x catalogue rows) and keep each item's best ``top_n`` neighbours;
    returns (neighbours or None when fewer than two items qualify, the manifest entry)."""
    started = time.perf_counter()
    n_items = x.shape[1]
    items = model_items(x, config.min_users, config.max_items)
    if len(items) < 2 or config.top_n == 0:
        return None, {"method": "ease", "config": asdict(config), "items": len(items)}
    if config.lambda_ is None:
        lam, table = choose_lambda(x, config)
    else:
        lam, table = config.lambda_, {}
    model = fit_ease(x, lam, items)
    neighbours = ease_neighbours(model, n_items, config.top_n)
    report = {
        "method": "ease",
        "config": asdict(config),
        "items": len(items),
        "lambda": lam,
        "validation_recall_at_10": table,
        "links": len(neighbours.rows),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("ease: %s", report)
    return neighbours, report
