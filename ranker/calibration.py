"""Isotonic calibration of a head's probabilities: the map from a model's score to the rate at which
that score's rows were observed positive, fitted on the ``valid`` part of the time split.

Isotonic regression finds the non-decreasing ``f`` minimising ``sum_i w_i (y_i - f(s_i))^2`` over
rows sorted by score ``s``. *Pool adjacent violators* solves it exactly: walk the rows in score
order keeping a stack of blocks (weighted mean label, weight); a new row whose mean is not above the
top block's is merged with it, repeatedly, so block means end strictly increasing and every row's
fitted value is its block's mean. Rows with equal scores are pooled before the walk (equal scores
must get equal probabilities).

How the fit is stored and applied, and why:

=================================  ================================================================
choice                             why
=================================  ================================================================
a knot per block at its centre     knot (mean score, mean label): between knots ``np.interp`` is
                                   strictly increasing (block means strictly increase), so distinct
                                   scores keep their order inside the fitted range; the step
                                   function would tie every row of a block
flat beyond the end knots          a probability stays a probability (and is clipped to [0, 1])
mix in ``eps * s``, eps = 1e-6     ``(1 - eps) f(s) + eps s`` is strictly increasing everywhere:
                                   rows beyond the end knots (often the top of a list) keep the
                                   model's order; no probability moves by more than 1e-6
identity without both classes      nothing to fit against when the fitting part lacks a positive
                                   or a negative; the manifest says so
=================================  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Weight of the raw score mixed into the calibrated one, so that the map is strictly increasing.
TIE_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """A fitted monotone map from raw probability to calibrated probability.

    ``x``: (m,) strictly increasing knot scores; ``y``: (m,) non-decreasing knot probabilities;
    ``identity``: no fit (``note`` says why); ``rows``/``positives``: what it was fitted on.
    """

    x: np.ndarray
    y: np.ndarray
    identity: bool = False
    note: str = ""
    rows: int = 0
    positives: int = 0

    @classmethod
    def identity_map(cls, note: str, rows: int = 0, positives: int = 0) -> Calibration:
        return cls(np.zeros(0), np.zeros(0), True, note, rows, positives)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """(n,) float64 calibrated probabilities of (n,) raw probabilities."""
        raw = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if self.identity:
            return raw
        fitted = np.clip(np.interp(raw, self.x, self.y), 0.0, 1.0)
        return (1.0 - TIE_EPS) * fitted + TIE_EPS * raw

    def to_manifest(self) -> dict:
        return {
            "method": "identity" if self.identity else "isotonic",
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "tie_eps": 0.0 if self.identity else TIE_EPS,
            "note": self.note,
            "rows": self.rows,
            "positives": self.positives,
        }

    @classmethod
    def from_manifest(cls, entry: dict) -> Calibration:
        """The inverse of :meth:`to_manifest`; raises ``ValueError`` on knots that are not a
        monotone map into [0, 1]."""
        method = entry.get("method")
        rows, positives = int(entry.get("rows", 0)), int(entry.get("positives", 0))
        if method == "identity":
            return cls.identity_map(entry.get("note", ""), rows, positives)
        if method != "isotonic":
            raise ValueError(f"unknown calibration method {method!r}")
        if entry.get("tie_eps") != TIE_EPS:
            raise ValueError(
                f"calibration mixes eps {entry.get('tie_eps')!r}, this reads {TIE_EPS}"
            )
        x = np.asarray(entry["x"], dtype=np.float64)
        y = np.asarray(entry["y"], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or len(x) == 0:
            raise ValueError(f"calibration knots of shapes {x.shape} and {y.shape}")
        if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
            raise ValueError("calibration knots are not increasing in x, non-decreasing in [0, 1]")
        return cls(x, y, False, entry.get("note", ""), rows, positives)


def pool_adjacent_violators(
    y: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotonic regression of ``y`` (already in score order) by pool adjacent violators.

    Returns ``(means, weights, sizes)`` of the blocks, left to right: block ``b`` covers the next
    ``sizes[b]`` inputs and fits them all with ``means[b]``; means are strictly increasing.
    ``np.repeat(means, sizes)`` is the fitted value of every input.
    """
    values = np.asarray(y, dtype=np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    means: list[float] = []
    totals: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), w.tolist()):
        mean, total, size = value, weight, 1
        while means and means[-1] >= mean:
            # The top block is not below the new one: pool them (weighted mean).
            top_mean, top_total, top_size = means.pop(), totals.pop(), sizes.pop()
            mean = (top_mean * top_total + mean * total) / (top_total + total)
            total += top_total
            size += top_size
        means.append(mean)
        totals.append(total)
        sizes.append(size)
    return np.array(means), np.array(totals), np.array(sizes, dtype=np.int64)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit the calibration of (n,) raw probabilities against (n,) 0/1 labels (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        what = "no positive" if positives == 0 else "no negative"
        return Calibration.identity_map(
            f"{what} among {len(y)} fitting rows: identity calibration", len(y), positives
        )
    distinct, counts = np.unique(s, return_counts=True)
    starts = np.cumsum(counts) - counts  # where each distinct score begins in score order
    rates = np.add.reduceat(y[np.argsort(s, kind="stable")], starts) / counts
    means, _, sizes = pool_adjacent_violators(rates, counts)
    # A block's knot sits at the row-weighted mean of its distinct scores.
    block_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    block_rows = np.add.reduceat(counts, block_starts)
    knot_x = np.add.reduceat(distinct * counts, block_starts) / block_rows
    # Rounding must not push a knot outside its block (knots must stay strictly increasing).
    knot_x = np.clip(knot_x, distinct[block_starts], distinct[block_starts + sizes - 1])
    return Calibration(
        knot_x,
        np.clip(means, 0.0, 1.0),
        note=f"isotonic, {len(means)} knots",
        rows=len(y),
        positives=positives,
    )
