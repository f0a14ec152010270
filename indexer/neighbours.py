"""Item-to-item co-engagement neighbours: for each item, the items the same shoppers engaged with.

From the sessionised events (:func:`indexer.transitions.sessionise`) we build a user x item matrix

    x_ui = damp( sum over u's events on i of  w(action) * 0.5 ** (age / half_life) )

(``w``: view 1, click 2, cart 4, purchase 8; ``age`` back from the newest event) and score item
pairs by a shrunk cosine

    sim(i, j) = (X^T X)_ij / (||x_i|| ||x_j|| + shrinkage)

keeping each item's ``top_n`` best other items, in any category. Stored as CSR-like arrays
(``neighbours.npz``: ``indptr`` int64 (n+1), ``rows`` int32, ``scores`` float32; item i's neighbours
are ``rows[indptr[i]:indptr[i+1]]``, best first).

Knobs (default in brackets) and why:

``half_life_days`` (365): which items go together changes slowly; a year keeps multi-year
    histories in play while still favouring recent pairs (on the 12-week synthetic shop 60 days
    and no decay scored the same Recall@10, 0.120).
``dampen`` (``log1p``): ``x_ui`` grows with repeat events; log1p keeps one user's 30 views of an
    item from outweighing 10 users' single views.
``cap`` (none): a hard ceiling on ``x_ui`` after dampening, for shops with bots or power users.
``shrinkage`` (5.0): plain cosine gives 1.0 to two items seen once by the same single shopper; in
    units of ``||x_i|| ||x_j||`` (one fresh view is log1p(1) = 0.69), 5 turns that pair's 1.0
    into 0.09 while pairs whose norms multiply to 50 or more keep over 90% of their cosine.
``top_n`` (100): what a candidate source needs; at most 800 bytes per item on disk.
``chunk_items`` (16,384): most item rows per ``X^T[chunk] @ X`` product: bounds the memory of the
    pair scores (fewer where the one-key sort below needs it).

Each chunk's pairs are put best first per item with one sort of 64-bit keys packing
(row in chunk, float32 score bits inverted, neighbour row), so ties go to the lower neighbour row;
past ~8M items, where not even 1,024-row chunks leave the three room in 64 bits, a lexsort does
the same, about 3x slower. Cost: the products number ``sum_u (items of u)^2``; at 1M items / 11.6M
events the stage takes under a minute on one core, its memory bounded by one chunk's pairs plus the
kept top-N.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from indexer.errors import ArtifactError
from indexer.transitions import ACTION_WEIGHTS

log = logging.getLogger(__name__)

DAMPENINGS = ("none", "log1p")


@dataclass(frozen=True)
class NeighbourConfig:
    """Knobs of the co-engagement neighbours; see the module docstring. ``top_n = 0`` turns the
    stage off."""

    top_n: int = 100
    half_life_days: float = 365.0
    dampen: str = "log1p"
    cap: float | None = None
    shrinkage: float = 5.0
    chunk_items: int = 16_384

    def __post_init__(self) -> None:
        if self.dampen not in DAMPENINGS:
            raise ValueError(f"dampen must be one of {DAMPENINGS}, got {self.dampen!r}")
        if self.top_n < 0 or self.half_life_days <= 0 or self.shrinkage < 0 or self.chunk_items < 1:
            raise ValueError(f"invalid neighbour settings: {self}")


@dataclass(frozen=True, eq=False)
class ItemNeighbours:
    """Each item's co-engagement neighbours. ``indptr`` int64 (n+1,); ``rows`` int32 and ``scores``
    float32 (indptr[-1],): item row i's neighbours are ``rows[indptr[i]:indptr[i+1]]``, best
    first."""

    indptr: np.ndarray
    rows: np.ndarray
    scores: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    def of(self, item_row: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour rows, scores) of one item, best first."""
        lo, hi = self.indptr[item_row], self.indptr[item_row + 1]
        return self.rows[lo:hi], self.scores[lo:hi]

    def gather(
        self, item_rows: np.ndarray, weights: np.ndarray, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from several source items: ``(rows int64, scores float64)``, best first, where
        a candidate's score is ``sum over sources s of weights[s] * sim(s, candidate)`` (a candidate
        reached from several sources appears once). Sources are not removed from the candidates
        (one source may be another's neighbour); ``limit`` keeps the best ``limit``."""
        item_rows = np.asarray(item_rows, dtype=np.int64).ravel()
        weights = np.asarray(weights, dtype=np.float64).ravel()
        if item_rows.shape != weights.shape:
            raise ValueError(
                f"item_rows and weights differ in length: {item_rows.shape} vs {weights.shape}"
            )
        starts, lengths = (
            self.indptr[item_rows],
            self.indptr[item_rows + 1] - self.indptr[item_rows],
        )
        total = int(lengths.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        # Positions of every source's slice in one array: start of its slice + offset within it.
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.repeat(starts, lengths) + offsets
        candidates, inverse = np.unique(self.rows[positions], return_inverse=True)
        scores = np.bincount(
            inverse,
            weights=self.scores[positions] * np.repeat(weights, lengths),
            minlength=len(candidates),
        )
        order = np.argsort(-scores, kind="stable")
        if limit is not None:
            order = order[:limit]
        return candidates[order].astype(np.int64), scores[order]

    def save(self, path: str | Path) -> None:
        np.savez(path, indptr=self.indptr, rows=self.rows, scores=self.scores)

    @classmethod
    def load(cls, path: str | Path, n_items: int) -> ItemNeighbours:
        """Read ``neighbours.npz`` and check it against ``n_items``; a malformed file raises
        :class:`ArtifactError` with reason ``shape``."""
        try:
            with np.load(path) as data:
                neighbours = cls(data["indptr"], data["rows"], data["scores"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"neighbours file unreadable: {exc}", path, "shape") from exc
        problem = neighbours.problem(n_items)
        if problem:
            raise ArtifactError(problem, path, "shape")
        return neighbours

    def problem(self, n_items: int) -> str | None:
        """What is wrong with these arrays for a catalogue of ``n_items`` items, or None."""
        indptr, rows, scores = self.indptr, self.rows, self.scores
        if indptr.ndim != 1 or len(indptr) != n_items + 1 or indptr.dtype != np.int64:
            return (
                f"indptr has shape {indptr.shape} {indptr.dtype}, expected ({n_items + 1},) int64"
            )
        if (
            rows.ndim != 1
            or scores.ndim != 1
            or rows.dtype != np.int32
            or scores.dtype != np.float32
            or len(rows) != len(scores)
        ):
            return (
                f"rows {rows.shape} {rows.dtype} and scores {scores.shape} {scores.dtype} "
                "must be 1-d int32 and float32 of one length"
            )
        if indptr[0] != 0 or indptr[-1] != len(rows) or (np.diff(indptr) < 0).any():
            return f"indptr must rise from 0 to {len(rows)} without falling"
        if len(rows) and (rows.min() < 0 or rows.max() >= n_items):
            return f"neighbour rows must lie in [0, {n_items})"
        return None


def engagement_matrix(
    sessions: pl.DataFrame, n_items: int, config: NeighbourConfig = NeighbourConfig()
):
    """The user x item matrix ``X`` of the module docstring (scipy CSR, float32, users x n_items)
    from the :func:`indexer.transitions.sessionise` frame (dense ``user`` codes)."""
    from scipy import sparse

    n_users = int(cast(int, sessions["user"].max())) + 1 if sessions.height else 0
    if sessions.height == 0:
        return sparse.csr_matrix((0, n_items), dtype=np.float32)
    ts = sessions["ts"].dt.epoch("us").to_numpy()
    age_days = (ts.max() - ts) / 86_400e6
    weight = ACTION_WEIGHTS[sessions["action"].to_numpy()] * 0.5 ** (
        age_days / config.half_life_days
    )
    x = sparse.csr_matrix(
        (weight.astype(np.float32), (sessions["user"].to_numpy(), sessions["row"].to_numpy())),
        shape=(n_users, n_items),
    )
    x.sum_duplicates()  # one entry per (user, item): the sum over the user's events on the item
    if config.dampen == "log1p":
        np.log1p(x.data, out=x.data)
    if config.cap is not None:
        np.minimum(x.data, config.cap, out=x.data)
    return x


def item_neighbours(
    sessions: pl.DataFrame,
    n_items: int,
    config: NeighbourConfig = NeighbourConfig(),
    progress: bool = False,
) -> ItemNeighbours:
    """Each item's ``config.top_n`` most similar other items; see the module docstring."""
    x = engagement_matrix(sessions, n_items, config)
    xt = x.T.tocsr()  # items x users
    norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel())
    return gram_neighbours(lambda lo, hi: xt[lo:hi] @ x, norms, config, progress)


def gram_neighbours(
    rows_of: Callable[[int, int], object],
    norms: np.ndarray,
    config: NeighbourConfig = NeighbourConfig(),
    progress: bool = False,
) -> ItemNeighbours:
    """Each item's ``config.top_n`` best other items by the shrunk cosine of the module docstring,
    from the co-engagement products: ``rows_of(lo, hi)`` gives rows ``lo:hi`` of ``X^T X`` (scipy
    sparse, all items as columns), ``norms`` (n_items,) the items' norms."""
    n_items = len(norms)
    counts, rows, scores = [], [], []
    bar = _progress(n_items, progress)
    step = _chunk_rows(n_items, config.chunk_items)
    for lo in range(0, n_items, step):
        hi = min(lo + step, n_items)
        c, r, s = _top_neighbours(rows_of(lo, hi), lo, norms, config)
        counts.append(c)
        rows.append(r)
        scores.append(s)
        bar.update(hi - lo)
    bar.close()
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    if n_items:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    return ItemNeighbours(
        indptr,
        np.concatenate(rows).astype(np.int32) if rows else np.empty(0, dtype=np.int32),
        np.concatenate(scores).astype(np.float32) if scores else np.empty(0, dtype=np.float32),
    )


def _top_neighbours(
    block, lo: int, norms: np.ndarray, config: NeighbourConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of ``X^T X`` (items lo..lo+len, all items; CSR) -> per-row neighbour counts, rows
    and shrunk-cosine scores (float32) of the best ``top_n`` other items, best first (ties: lower
    row first)."""
    block = block.tocsr()
    n_rows, n_items = block.shape
    source = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(block.indptr))
    target = block.indices.astype(np.int64)
    keep = target != source + lo  # an item is not its own neighbour
    source, target = source[keep], target[keep]
    score = (block.data[keep] / (norms[source + lo] * norms[target] + config.shrinkage)).astype(
        np.float32
    )
    order = best_first_order(source, score, target, n_rows, n_items)
    source = source[order]
    rank = np.arange(len(source)) - np.searchsorted(source, np.arange(n_rows))[source]
    top = rank < config.top_n
    kept = order[top]
    return np.bincount(source[top], minlength=n_rows), target[kept], score[kept]


def best_first_order(
    source: np.ndarray, score: np.ndarray, target: np.ndarray, n_rows: int, n_items: int
) -> np.ndarray:
    """The order sorting entries by (source, score descending, target); ``score`` float32 >= 0,
    ``source`` < n_rows, ``target`` < n_items. One argsort of packed unique 64-bit keys where they
    fit (the bits of a non-negative float32 order as its value), else a lexsort."""
    row_bits, target_bits = _bits(n_rows), _bits(n_items)
    if row_bits + 31 + target_bits > 64:
        return np.lexsort((target, -score, source))
    inverted = np.uint64(0x7FFFFFFF) - score.view(np.uint32).astype(np.uint64)
    key = (
        (source.astype(np.uint64) << np.uint64(31 + target_bits))
        | (inverted << np.uint64(target_bits))
        | target.astype(np.uint64)
    )
    return np.argsort(key)


def _bits(n: int) -> int:
    """Bits to hold the values 0 .. n-1."""
    return max(1, int(n - 1).bit_length())


def _chunk_rows(n_items: int, most: int) -> int:
    """Rows per product: at most ``most``, fewer so that the packed sort key fits, but not under
    1,024."""
    fits = 1 << max(0, 33 - _bits(n_items))
    return min(most, max(fits, 1_024))


def describe(
    neighbours: ItemNeighbours, categories: np.ndarray, config: NeighbourConfig, seconds: float
) -> dict:
    """The manifest entry: settings and what came out (items with neighbours, mean neighbours per
    item and per item that has any, share of neighbour links into another category)."""
    lengths = np.diff(neighbours.indptr)
    with_neighbours = int((lengths > 0).sum())
    source = np.repeat(np.arange(neighbours.n_items), lengths)
    other = (
        float((categories[source] != categories[neighbours.rows]).mean()) if len(source) else 0.0
    )
    return {
        "method": "shrunk-cosine",
        "config": asdict(config),
        "items_with_neighbours": with_neighbours,
        "mean_neighbours_per_item": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
        "mean_neighbours_per_item_with_neighbours": round(float(lengths[lengths > 0].mean()), 2)
        if with_neighbours
        else 0.0,
        "links": len(neighbours.rows),
        "other_category_share": round(other, 4),
        "seconds": round(seconds, 2),
    }


def build_neighbours(
    sessions: pl.DataFrame,
    categories: np.ndarray,
    config: NeighbourConfig = NeighbourConfig(),
    progress: bool = False,
) -> tuple[ItemNeighbours, dict]:
    """:func:`item_neighbours` plus its manifest entry; ``categories`` are the catalogue rows'
    category codes (any comparable array)."""
    started = time.perf_counter()
    neighbours = item_neighbours(sessions, len(categories), config, progress)
    report = describe(neighbours, categories, config, time.perf_counter() - started)
    log.info("neighbours: %s", report)
    return neighbours, report


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="neighbours", unit="item", unit_scale=True, disable=not enabled)


def top_neighbours(
    rows_of: Callable[[int, int], np.ndarray],
    items: np.ndarray,
    n_items: int,
    top_n: int,
    block: int = 1_024,
) -> ItemNeighbours:
    """The ``top_n`` largest positive entries of each row of an item-item score matrix over the
    catalogue rows ``items`` (m,), best first (ties: lower row), as :class:`ItemNeighbours` over
    all ``n_items`` rows (items outside ``items`` have none). ``rows_of(lo, hi)`` returns rows
    ``lo:hi`` as a dense (hi - lo, m) array whose diagonal entries are <= 0 (no item is its own
    neighbour); it is called ``block`` rows at a time, so memory stays bounded at any m."""
    m = len(items)
    k = min(top_n, max(m - 1, 0))
    counts = np.zeros(n_items, np.int64)
    targets: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for lo in range(0, m if k else 0, block):
        rows = rows_of(lo, min(lo + block, m))
        part = np.argpartition(-rows, k - 1, axis=1)[:, :k]
        source = np.repeat(np.arange(len(rows), dtype=np.int64), k)
        target = part.ravel().astype(np.int64)
        score = rows[source, target]
        keep = score > 0
        source, target, score = source[keep], target[keep], score[keep].astype(np.float32)
        order = best_first_order(source, score, target, len(rows), m)
        counts[items[lo : lo + len(rows)]] = np.bincount(source, minlength=len(rows))
        targets.append(items[target[order]].astype(np.int32))
        scores.append(score[order])
    indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return ItemNeighbours(
        indptr,
        np.concatenate(targets) if targets else np.zeros(0, np.int32),
        np.concatenate(scores) if scores else np.zeros(0, np.float32),
    )
