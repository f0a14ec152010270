"""A validation split inside a user x item matrix, for choosing a model's settings on the shop's own
data: some users have one item in five (at least one) hidden, a scorer is fitted on the rest and
judged by Recall@10 on the hidden items.

Why this split and not a time split: it needs no clock (basket logs, shuffled dumps), and it is the
same for every setting compared, so the choice is paired. Users need three or more items, so that
two stay visible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Users scored per block: 512 x n_items float32 scores at a time.
BLOCK = 512


@dataclass(frozen=True)
class Holdout:
    """``train``: the matrix with the hidden entries removed (CSR, same shape); ``users`` (n,)
    the validation users' rows, ascending; ``hidden``: per validation user, the hidden columns."""

    train: sp.csr_matrix
    users: np.ndarray
    hidden: list[np.ndarray]

    def recall_at(self, scores_of: Callable[[sp.csr_matrix], np.ndarray], k: int = 10) -> float:
        """Mean over validation users of hits in the top ``k`` / min(hidden, k), where
        ``scores_of(profile rows)`` gives (rows, n_items) scores; items visible to the user are
        never counted."""
        profile = self.train[self.users]
        hits = 0.0
        for lo in range(0, len(self.users), BLOCK):
            block = profile[lo : lo + BLOCK]
            scores = np.array(scores_of(block), dtype=np.float32, copy=True)
            scores[block.nonzero()] = -np.inf
            kk = min(k, scores.shape[1])
            top = (
                np.argpartition(-scores, kk, axis=1)[:, :kk]
                if scores.shape[1] > kk
                else np.argsort(-scores, axis=1)
            )
            for held, row, s in zip(self.hidden[lo : lo + BLOCK], top, scores):
                row = row[np.isfinite(s[row]) & (s[row] > 0)]
                hits += np.isin(held, row).sum() / min(len(held), k)
        return round(float(hits) / max(len(self.users), 1), 4)


def holdout(x: sp.csr_matrix, users: int = 3_000, seed: int = 0) -> Holdout | None:
    """Hide one in five (at least one) of the entries of up to ``users`` rows with 3+ entries,
    seeded; None when fewer than 20 rows qualify."""
    rng = np.random.default_rng(seed)
    x = x.tocsr().astype(np.float32)
    x.sort_indices()
    candidates = np.flatnonzero(np.diff(x.indptr) >= 3)
    if len(candidates) < 20:
        return None
    chosen = np.sort(rng.choice(candidates, min(users, len(candidates)), replace=False))
    train = x.copy()
    hidden = []
    for u in chosen:
        lo, hi = x.indptr[u], x.indptr[u + 1]
        held = rng.choice(np.arange(lo, hi), max(1, (hi - lo) // 5), replace=False)
        train.data[held] = 0.0
        hidden.append(np.sort(x.indices[held]))
    train.eliminate_zeros()
    return Holdout(train, chosen, hidden)
