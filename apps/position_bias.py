"""Position bias from swapped pairs (``crossrec report --position-bias``): how much less a shopper
examines each position than the top one, measured from the lists that explored by swapping an
adjacent pair (``[exploration] swap_share``; engine/retrieval/explore.py).

Under the position-based model a shown item is clicked with probability ``theta_p x rho_i``
(examination of position ``p`` times the item's appeal to the user). Let ``A`` and ``B`` be the
items the engine ranks at ``j`` and ``j + 1``. Lists that did not explore show A at j, B at j + 1;
lists that swapped pair j show B at j, A at j + 1, and which lists swapped was drawn at random, so
A and B are alike in both groups. With ``c_X(q)`` the click rate at position ``q`` in group X
(``u``: not explored, ``s``: swapped j)::

    c_s(j+1) + c_u(j+1)     theta_{j+1} (rho_A + rho_B)     theta_{j+1}
    -------------------  =  ---------------------------  =  -----------
      c_u(j) + c_s(j)         theta_j (rho_A + rho_B)         theta_j

and ``theta_p / theta_0`` is the product of those ratios down to ``p`` (the curve starts at 1 at
the top). Intervals: percentile bootstrap over lists (all lists resampled together, the curve
recomputed). Lists that explored a slot are left out (their positions hold other items). The
inverse of the curve is the propensity exposure-aware training can weight by.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from engine.retrieval.explore import Draw

#: Kind codes: a list that did not explore, one that explored otherwise (slot).
_PLAIN, _OTHER = -1, -2


def swap_clicks(attributed: pl.DataFrame, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per list of ``attributed`` (impression rows with ``recommendation_id``, ``position``,
    ``exploration``, ``click``): its kind (-1 not explored, j for pair j swapped, -2 otherwise), its
    clicks at positions 0..depth-1 (n, depth) int8 and which of them it showed (n, depth) bool."""
    rows = attributed.filter(pl.col("position") < depth)
    lists = rows.select("recommendation_id", "exploration").unique("recommendation_id")
    lists = lists.sort("recommendation_id")
    index = {r: i for i, r in enumerate(lists["recommendation_id"].to_list())}
    kind = np.array([_kind(e) for e in lists["exploration"].to_list()], dtype=np.int64)
    clicks = np.zeros((len(lists), depth), np.int8)
    shown = np.zeros((len(lists), depth), bool)
    at = np.array([index[r] for r in rows["recommendation_id"].to_list()], dtype=np.int64)
    position = rows["position"].to_numpy()
    shown[at, position] = True
    clicks[at, position] = rows["click"].to_numpy()
    return kind, clicks, shown


def examination_curve(
    kind: np.ndarray,
    clicks: np.ndarray,
    shown: np.ndarray,
    resamples: int = 1_000,
    seed: int = 0,
) -> pl.DataFrame:
    """``position``, ``examination`` (theta_p / theta_0, the module docstring), ``low`` /
    ``high`` (95% bootstrap interval) and ``swapped_lists`` (lists that swapped the pair above
    the position) for the positions the swaps reach; NaN where a pair has no swapped or no plain
    list, or no clicks to compare."""
    depth = int(kind.max()) + 2 if (kind >= 0).any() else 1
    pairs = [
        (np.flatnonzero(kind == j), np.flatnonzero((kind == _PLAIN) & shown[:, j + 1]))
        for j in range(depth - 1)
    ]
    point = _curve(pairs, clicks, np.ones(len(kind)))
    rng = np.random.default_rng(seed)
    draws = np.array(
        [
            _curve(
                pairs,
                clicks,
                np.bincount(rng.integers(len(kind), size=len(kind)), minlength=len(kind)),
            )
            for _ in range(resamples)
        ]
    ).reshape(resamples, depth)
    with warnings.catch_warnings():  # a position no resample could estimate stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0) if resamples else (point, point)
    return pl.DataFrame(
        {
            "position": np.arange(depth),
            "examination": point,
            "low": low,
            "high": high,
            "swapped_lists": [0] + [len(swapped) for swapped, _ in pairs],
        }
    )


def _curve(pairs: list, clicks: np.ndarray, weights: np.ndarray) -> np.ndarray:
    theta = np.ones(len(pairs) + 1)
    for j, (swapped, plain) in enumerate(pairs):
        ws, wp = weights[swapped], weights[plain]
        if ws.sum() == 0 or wp.sum() == 0:
            theta[j + 1 :] = np.nan
            break
        below = ws @ clicks[swapped, j + 1] / ws.sum() + wp @ clicks[plain, j + 1] / wp.sum()
        above = wp @ clicks[plain, j] / wp.sum() + ws @ clicks[swapped, j] / ws.sum()
        theta[j + 1] = theta[j] * below / above if above > 0 else np.nan
    return theta


def measured_curve(attributed: pl.DataFrame) -> tuple[np.ndarray | None, int, int]:
    """The examination curve of a log's attributed impressions over every position shown (None
    when its swaps do not measure them all), the swapped lists, and the fewest for one pair."""
    depth = int(attributed["position"].max()) + 1
    kind, clicks, shown = swap_clicks(attributed, depth)
    curve = examination_curve(kind, clicks, shown, resamples=0)["examination"].to_numpy()
    swapped = kind[kind >= 0]
    fewest = int(np.bincount(swapped, minlength=max(depth - 1, 1)).min())
    measured = len(curve) >= depth and np.isfinite(curve).all() and (curve > 0).all()
    return (curve if measured else None), len(swapped), fewest


def format_curve(curve: pl.DataFrame) -> str:
    """The curve as a table, one line per position."""
    lines = ["position  examination vs top [95% CI]   lists that swapped the pair above"]
    for row in curve.iter_rows(named=True):
        value = f"{row['examination']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
        lines.append(f"{row['position']:>8}  {value:<28} {row['swapped_lists']:>10,}")
    return "\n".join(lines)


def _kind(exploration: str) -> int:
    draw = Draw.from_json(exploration)
    if draw is None or draw.kind == "none":
        return _PLAIN
    return draw.at if draw.kind == "swap" else _OTHER
