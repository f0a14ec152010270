"""The position-based estimators (``pbm-*``): a candidate item counts wherever the logged list
showed it, its reward carried to the candidate's position by the examination curve.

Under the position-based model an item ``i`` shown at ``p`` earns ``theta_p x rho_i``. The logged
list shows ``i`` at ``p`` with probability ``pi(i at p)`` (rebuilt for every position from the
list's logged draw: :func:`engine.retrieval.explore.marginals`), so ``Pi(i) = sum_p pi(i at p)
theta_p`` is how much of ``i`` the log expects to see, and for the candidate's item ``e_q`` at
position ``q`` that the logged list showed at ``p`` with reward ``r``::

    r' = theta_q / theta_p x r        (the reward moved to the candidate's position)
    w  = theta_p / Pi(e_q)            (one over the chance of seeing it, examination-weighted)

``E[w r'] = theta_q rho_i``: unbiased for every candidate item the logging policy *could have
shown at any position* - not only at the candidate's own position, which is all the item-position
estimators can use. These rows go through the same IPS / SNIPS / DR arithmetic
(:mod:`apps.ope.estimators`), ``support`` now counting items rather than item-positions. The
price: the position-based model must hold, and ``theta`` must be known (``crossrec report
--position-bias`` measures it from swapped pairs); its own uncertainty is not in the intervals.
"""

from __future__ import annotations

import numpy as np

from apps.ope.estimators import Logged
from engine.retrieval.explore import Draw, marginals


def seen_share(draw: Draw | None, n: int, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a logged list of ``n`` shown with ``draw`` (None: the engine's order, no exploration):
    (``Pi`` (n,) of the item at each shown position, the engine rank of each shown position, -1
    for an explored pool item)."""
    rank = np.arange(n)
    if draw is None:
        return theta[:n].copy(), rank
    ranks, pooled, slots = marginals(draw, n)
    if draw.kind == "swap":
        rank[[draw.at, draw.at + 1]] = rank[[draw.at + 1, draw.at]]
    elif draw.kind == "slot":
        rank[draw.at] = -1
    seen = np.where(rank >= 0, ranks[np.maximum(rank, 0)] @ theta[:n], 0.0)
    if draw.kind == "slot":
        seen[draw.at] = pooled * theta[slots].sum()
    return seen, rank


def transferred(
    shown: list[list[str]],
    draws: list[str],
    rewards: list[np.ndarray],
    candidate: list[list[str]],
    theta: np.ndarray,
    model_at: list[np.ndarray] | None = None,
    model_candidate: np.ndarray | None = None,
) -> Logged:
    """The position-based rows (module docstring) as :class:`apps.ope.estimators.Logged`: one per
    candidate item the logged list showed. Per logged list: ``shown`` item ids by position, its
    logged draw (JSON or ""), ``rewards`` by position and the ``candidate``'s item ids;
    ``model_at``: per list the reward model of each candidate item at its candidate position."""
    lists, reward, weight, model = [], [], [], []
    for n, (items, text, r, cand) in enumerate(zip(shown, draws, rewards, candidate, strict=True)):
        seen, _ = seen_share(Draw.from_json(text), len(items), theta)
        where = {item: p for p, item in enumerate(items)}
        for q, item in enumerate(cand):
            p = where.get(item)
            if p is None or seen[p] <= 0:
                continue
            lists.append(n)
            reward.append(theta[q] / theta[p] * r[p])
            weight.append(theta[p] / seen[p])
            if model_at is not None:
                model.append(model_at[n][q])
    return Logged(
        np.array(lists, dtype=np.int64),
        np.array(reward, dtype=np.float64),
        1.0 / np.array(weight, dtype=np.float64),
        np.ones(len(lists), bool),
        np.array([len(c) for c in candidate]),
        np.array(model, dtype=np.float64) if model_at is not None else None,
        model_candidate,
    )
