"""Exploration: a known share of lists shown slightly differently from the engine's order, with the
probability of every shown (item, position) logged, so that what was shown can later be learnt
from without the engine's own order fooling the learner.

A list explores in at most one way, drawn per list (``u`` uniform in [0, 1)):

==============================  ==============================================================
draw                            what is shown
==============================  ==============================================================
``u < swap_share``              one adjacent pair ``(j, j + 1)`` of the top ``swap_depth``
                                positions swapped, ``j`` uniform over the ``D`` pairs: position
                                bias is then measurable (the same items at two positions;
                                Joachims et al.'s swap interventions)
``u < swap_share + slot_share`` one position ``q`` of ``[slot_from, n)`` (uniform, ``S`` of them)
                                given to an item drawn uniformly from the ``P`` best candidates
                                *below* the list whose categories the list does not show (new
                                categories and cold items get seen)
otherwise                       the engine's order
==============================  ==============================================================

The logged *propensity* of a shown item is the probability, over that draw, that this item is at
this position (the engine's order being fixed for the request): for the item the engine put at
``p`` and shown there, ``(1 - s - e) + s * (1 - t_p / D) + e * (1 - [p a slot] / S)`` with ``t_p``
the pairs touching ``p``; for a swapped item ``s / D``; for an explored item ``e / (S * P)``
(``s``, ``e``: the shares; a branch that cannot act on this list - no pair, no slot, no pool -
shows the engine's order). A deterministic list logs 1.0 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import ExplorationConfig


@dataclass(frozen=True)
class Explored:
    """The shown list: ``order`` (indices into the candidates, top first), the ``propensities``
    (len(order),) of each shown (item, position), and ``kind``: ``""`` (the engine's order),
    ``"swap:j"`` (pair j, j + 1 swapped) or ``"slot:q"`` (position q explored)."""

    order: np.ndarray
    propensities: np.ndarray
    kind: str = ""


def explore(
    chosen: np.ndarray,
    pool: np.ndarray,
    exploration: ExplorationConfig,
    rng: np.random.Generator,
) -> Explored:
    """Draw how the list ``chosen`` (candidate indices, the engine's order) is shown. ``pool``:
    the exploration candidates (indices, best first; only the first ``slot_pool`` are drawn
    from)."""
    n = len(chosen)
    s, e = exploration.swap_share, exploration.slot_share
    pairs = max(0, min(exploration.swap_depth, n) - 1)
    slots = max(0, n - exploration.slot_from)
    pool = pool[: exploration.slot_pool]
    can_swap, can_slot = pairs > 0, slots > 0 and len(pool) > 0
    # probability that the item at p stays at p
    stay = np.full(n, 1.0 - s - e)
    if can_swap:
        touching = np.zeros(n)
        touching[:pairs] += 1  # pair j touches j and j + 1
        touching[1 : pairs + 1] += 1
        stay += s * (1.0 - touching / pairs)
    else:
        stay += s
    if can_slot:
        stay += e * (1.0 - (np.arange(n) >= exploration.slot_from) / slots)
    else:
        stay += e
    u = rng.random()
    if u < s and can_swap:
        j = int(rng.integers(pairs))
        order = chosen.copy()
        order[[j, j + 1]] = order[[j + 1, j]]
        propensities = stay.copy()
        propensities[[j, j + 1]] = s / pairs
        return Explored(order, propensities, f"swap:{j}")
    if s <= u < s + e and can_slot:
        q = exploration.slot_from + int(rng.integers(slots))
        order = chosen.copy()
        order[q] = pool[int(rng.integers(len(pool)))]
        propensities = stay.copy()
        propensities[q] = e / (slots * len(pool))
        return Explored(order, propensities, f"slot:{q}")
    return Explored(chosen, stay)


def exploration_pool(
    order: np.ndarray, chosen: np.ndarray, category: np.ndarray, size: int
) -> np.ndarray:
    """The first ``size`` candidates of the ranked ``order`` that are not in ``chosen`` and whose
    category (``category``: per candidate) the list does not show."""
    shown = np.isin(order, chosen) | np.isin(category[order], category[chosen])
    return order[~shown][:size]
