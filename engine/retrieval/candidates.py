"""Candidates as columns: what each source proposed, merged into one set without per-item objects.

Each source returns a :class:`SourceResult` (item rows with its scores, best first). :func:`merge`
unions them: a candidate proposed by several sources appears once and keeps every source's score
and rank; a source that did not propose it leaves score 0 and rank ``NOT_RANKED``. Those columns are
the ranker's first features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rank recorded for a source that did not propose the candidate.
NOT_RANKED = 1_000_000


@dataclass(frozen=True)
class SourceResult:
    """One source's proposals. ``rows`` (item rows) and ``scores`` have the same length;
    ``interest`` (optional) names the profile interest that produced each row (-1: none in
    particular)."""

    name: str
    rows: np.ndarray
    scores: np.ndarray
    interest: np.ndarray | None = None
    #: Shards (or other units) the source searched, for the response's coverage.
    searched: int = 0
    #: Shards asked for that did not answer in time (remote shard groups only).
    late: tuple[str, ...] = ()

    @classmethod
    def empty(cls, name: str) -> SourceResult:
        return cls(name, np.zeros(0, np.int64), np.zeros(0, np.float32))


@dataclass(frozen=True)
class Candidates:
    """``n`` candidates: ``rows`` (n,), ``scores``/``ranks`` (n, len(sources)), ``interest`` (n,).

    ``ranks`` are 0-based within each source; ``interest`` is the interest of the first source (in
    ``sources`` order) that gave one, else -1.
    """

    sources: tuple[str, ...]
    rows: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    interest: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def score(self, source: str) -> np.ndarray:
        return self.scores[:, self.sources.index(source)]

    def take(self, index: np.ndarray) -> Candidates:
        return Candidates(
            self.sources,
            self.rows[index],
            self.scores[index],
            self.ranks[index],
            self.interest[index],
        )


def merge(sources: tuple[str, ...], results: list[SourceResult]) -> Candidates:
    """Union of the results' rows (ascending row order), one column per name in ``sources``.

    A source listing a row twice keeps its best score (and that entry's rank)."""
    present = sorted((r for r in results if len(r.rows)), key=lambda r: sources.index(r.name))
    if not present:
        z = np.zeros(0, np.int64)
        return Candidates(
            sources,
            z,
            np.zeros((0, len(sources)), np.float32),
            np.zeros((0, len(sources)), np.int64),
            z,
        )
    rows, inverse = np.unique(np.concatenate([r.rows for r in present]), return_inverse=True)
    scores = np.zeros((len(rows), len(sources)), np.float32)
    ranks = np.full((len(rows), len(sources)), NOT_RANKED, np.int64)
    interest = np.full(len(rows), -1, np.int64)
    start = 0
    for r in present:
        j = sources.index(r.name)
        at = inverse[start : start + len(r.rows)]
        start += len(r.rows)
        # Best entry first, so the first write per candidate wins (fancy assignment keeps the last:
        # write in reverse order of preference).
        order = np.lexsort((np.arange(len(r.rows)), -r.scores))[::-1]
        scores[at[order], j] = r.scores[order]
        ranks[at[order], j] = np.argsort(np.argsort(-r.scores, kind="stable"), kind="stable")[order]
        if r.interest is not None:
            # Sources come in ``sources`` order: an earlier source's interest is never replaced.
            fill = np.full(len(rows), -1, np.int64)
            fill[at[order]] = r.interest[order]
            interest = np.where(interest < 0, fill, interest)
    return Candidates(sources, rows, scores, ranks, interest)
