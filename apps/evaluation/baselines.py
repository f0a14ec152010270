"""The baselines crossrec is measured against, each fitted on the training split only.

Each baseline: the score of an item for a user; why it is here.

``popularity``: sum of its training events' action weights (view 1, click 2, cart 4, purchase 8),
    each halved every 14 days back from the cut; the floor every recommender must clear.
``cooccurrence``: sum of its cosine similarities (binary user-item matrix, best ``neighbours``
    per item kept) to the user's training items; the classic item-to-item kNN, strong on
    same-category repeats.
``content``: inner product with the action-weighted mean of the user's items' *content* vectors
    from the served index; what content alone finds, without behaviour.
``als``: ``implicit`` ALS (factors 64, regularisation 0.05, 15 iterations), confidence
    ``1 + alpha * action weight``; the standard collaborative-filtering model.

Items without evidence (no training event for popularity, no similar item for co-occurrence, no
vector for content) are never recommended, so lists may be shorter than K. Scores are computed for
chunks of test users at once (dense (chunk, n_items) blocks, sparse products) and cut by
:func:`~apps.evaluation.dataset.top_k_unseen`, which drops train-touched items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm.auto import tqdm

from apps.evaluation.dataset import EvalSet, top_k_unseen
from indexer.artifact import content_part, read_index_manifest
from indexer.transitions import POPULARITY_HALF_LIFE_DAYS

log = logging.getLogger(__name__)

#: Test users scored per dense block: 256 x 50k items x 4 bytes = 51 MB.
CHUNK_USERS = 256


class Method(Protocol):
    """A recommender under evaluation: ``recommend`` returns (n_test, k) item codes, best first,
    -1 padded, with the test users' training items excluded."""

    name: str

    def recommend(self, data: EvalSet, k: int) -> np.ndarray: ...


def score_in_chunks(
    data: EvalSet,
    k: int,
    scores: Callable[[int, int], np.ndarray],
    desc: str,
    progress: bool = True,
) -> np.ndarray:
    """Run ``scores(start, stop)`` -> (stop - start, n_items) over chunks of test users; cut each
    block to its best ``k`` unseen items."""
    out = np.empty((data.n_test, k), dtype=np.int64)
    for start in tqdm(
        range(0, data.n_test, CHUNK_USERS), desc=desc, unit="chunk", disable=not progress
    ):
        stop = min(start + CHUNK_USERS, data.n_test)
        out[start:stop] = top_k_unseen(scores(start, stop), data.seen[start:stop], k)
    return out


@dataclass(frozen=True)
class Popularity:
    """Time-decayed, action-weighted popularity; the same list for everyone minus what they
    touched."""

    half_life_days: float = POPULARITY_HALF_LIFE_DAYS
    name: str = "popularity"
    progress: bool = True

    def item_scores(self, data: EvalSet) -> np.ndarray:
        """(n_items,) decayed score; -inf for items without training events."""
        decay = data.train["weight"].to_numpy() * 0.5 ** (
            data.train["age_days"].to_numpy() / self.half_life_days
        )
        score = np.bincount(data.train["i"].to_numpy(), weights=decay, minlength=data.n_items)
        return np.where(score > 0, score, -np.inf)

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        score = self.item_scores(data).astype(np.float32)
        return score_in_chunks(
            data,
            k,
            lambda a, b: np.broadcast_to(score, (b - a, data.n_items)),
            self.name,
            self.progress,
        )


def item_cosine(user_items: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """(n_items, n_items) cosine similarity of the columns of a (users, items) matrix (binary or
    weighted), diagonal zero, each row keeping its ``neighbours`` largest entries (ties: lower item
    code)."""
    x = user_items.astype(np.float32).tocsc()
    counts = np.asarray(x.multiply(x).sum(axis=0)).ravel()  # squared column norms
    inv = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0).astype(
        np.float32
    )
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    co.sort_indices()
    rows = np.repeat(np.arange(co.shape[0]), np.diff(co.indptr))
    sim = co.data * inv[rows] * inv[co.indices]
    order = np.lexsort((co.indices, -sim, rows))
    rank = np.arange(len(order)) - co.indptr[rows[order]]
    keep = np.sort(order[rank < neighbours])
    top = sp.csr_matrix((sim[keep], (rows[keep], co.indices[keep])), shape=co.shape)
    top.sort_indices()
    return top


@dataclass(frozen=True)
class CoOccurrence:
    """Item-item kNN on co-occurrence: cosine over all training users' binary item sets."""

    neighbours: int = 200
    name: str = "cooccurrence"
    progress: bool = True

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        sim = item_cosine(data.user_items("binary"), self.neighbours)
        log.info("co-occurrence: %d item pairs kept", sim.nnz)
        profile = data.seen.astype(np.float32)

        def scores(a: int, b: int) -> np.ndarray:
            s = (profile[a:b] @ sim).toarray()
            s[s <= 0] = -np.inf
            return s

        return score_in_chunks(data, k, scores, self.name, self.progress)


def content_vectors(artifact: str | Path, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The content part of an index version's item vectors, aligned to ``item_ids``:
    ((n, d) float32 unit rows, (n,) present). With complement adaptation the stored vector is
    ``[sqrt(0.2) c ; sqrt(0.8) e]``; the behaviour block ``e`` (the last ``adaptation.dim``
    columns) is sliced off and ``c`` renormalised."""
    path, manifest = read_index_manifest(artifact)
    content = content_part(np.load(path / manifest.files["vectors"].file, mmap_mode="r"), manifest)
    index_ids = pl.read_parquet(path / manifest.files["items"].file, columns=["item_id"])[
        "item_id"
    ].to_list()
    row_of = {item: r for r, item in enumerate(index_ids)}
    rows = np.array([row_of.get(i, -1) for i in item_ids.tolist()], dtype=np.int64)
    present = rows >= 0
    out = np.zeros((len(item_ids), content.shape[1]), dtype=np.float32)
    out[present] = content[rows[present]]
    return out, present


@dataclass(frozen=True)
class ContentKNN:
    """Nearest items to the user's action-weighted mean content vector (inner product)."""

    artifact: str
    name: str = "content"
    progress: bool = True

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        vectors, present = content_vectors(self.artifact, data.item_ids)
        weights = data.user_items("weight", rows=data.test_rows)
        profiles = np.asarray(weights @ vectors, dtype=np.float32) / np.maximum(
            weights.sum(axis=1).A, 1e-12
        ).astype(np.float32)
        missing = ~present

        def scores(a: int, b: int) -> np.ndarray:
            s = profiles[a:b] @ vectors.T
            s[:, missing] = -np.inf
            return s

        return score_in_chunks(data, k, scores, self.name, self.progress)


@dataclass(frozen=True)
class ALS:
    """``implicit``'s CPU ALS on confidences ``1 + alpha * w`` (w: summed action weights)."""

    factors: int = 64
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 1.0
    seed: int = 0
    name: str = "als"
    progress: bool = True

    def fit(self, data: EvalSet) -> tuple[np.ndarray, np.ndarray]:
        """(user factors (n_train_users, f), item factors (n_items, f))."""
        from indexer.factors import FactorsConfig, fit_als

        config = FactorsConfig(
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            alpha=self.alpha,
            seed=self.seed,
        )
        return fit_als(data.user_items("weight"), config)

    def recommend(self, data: EvalSet, k: int) -> np.ndarray:
        users, items = self.fit(data)
        test = users[data.test_rows]
        return score_in_chunks(data, k, lambda a, b: test[a:b] @ items.T, self.name, self.progress)


BASELINES = ("popularity", "cooccurrence", "content", "als")
