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
                                *below* the list from categories neither the list shows nor
                                the shopper ever touched (new categories and cold items get
                                seen)
otherwise                       the engine's order
==============================  ==============================================================

The logged *propensity* of a shown item is the probability, over that draw, that this item is at
this position (the engine's order being fixed for the request): for the item the engine put at
``p`` and shown there, ``(1 - s - e) + s * (1 - t_p / D) + e * (1 - [p a slot] / S)`` with ``t_p``
the pairs touching ``p``; for a swapped item ``s / D``; for an explored item ``e / (S * P)``
(``s``, ``e``: the shares; a branch that cannot act on this list - no pair, no slot, no pool -
shows the engine's order). A deterministic list logs 1.0 everywhere. Each list's :class:`Draw`
(kind, position, the settings, the pool size) is logged with it, so the probability of *any* item
at *any* position (:func:`marginals`) can be rebuilt from the log - what off-policy evaluation
needs for the items a candidate would move (apps/ope/).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from engine.config import ExplorationConfig


@dataclass(frozen=True)
class Draw:
    """How one list was drawn: ``kind`` ``"none"`` (the engine's order), ``"swap"`` (pair ``at``,
    ``at + 1`` swapped) or ``"slot"`` (position ``at`` explored), the arm's settings then, and
    ``pool``, the exploration candidates this list had. What the impression log keeps
    (:meth:`to_json`), so the whole distribution of the list can be rebuilt later
    (:func:`marginals`; off-policy evaluation needs more than the shown positions)."""

    kind: str
    at: int
    swap_share: float
    swap_depth: int
    slot_share: float
    slot_from: int
    pool: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Draw | None:
        """The draw a log records; None for a list that did not explore (``""``)."""
        return cls(**json.loads(text)) if text else None


@dataclass(frozen=True)
class Explored:
    """The shown list: ``order`` (indices into the candidates, top first), the ``propensities``
    (len(order),) of each shown (item, position), and the ``draw``."""

    order: np.ndarray
    propensities: np.ndarray
    draw: Draw


def marginals(draw: Draw, n: int) -> tuple[np.ndarray, float, np.ndarray]:
    """For a list of ``n`` drawn with ``draw``'s settings: (``ranks``: (n, n) probability that the
    engine's item of rank r is shown at position p; ``pooled``: the probability that a given pool
    item is shown at a given slot position; ``slots``: those positions). The module docstring's
    formulas; a branch that cannot act on the list shows the engine's order."""
    s, e = draw.swap_share, draw.slot_share
    pairs = max(0, min(draw.swap_depth, n) - 1)
    slots = np.arange(draw.slot_from, n) if draw.pool > 0 else np.arange(0)
    ranks = np.eye(n) * (1.0 - s - e)
    if pairs:
        for j in range(pairs):
            ranks[j, j + 1] += s / pairs
            ranks[j + 1, j] += s / pairs
        touching = np.zeros(n)
        touching[:pairs] += 1
        touching[1 : pairs + 1] += 1
        ranks[np.diag_indices(n)] += s * (1.0 - touching / pairs)
    else:
        ranks[np.diag_indices(n)] += s
    if len(slots):
        replaced = np.isin(np.arange(n), slots) / len(slots)
        ranks[np.diag_indices(n)] += e * (1.0 - replaced)
        pooled = e / (len(slots) * draw.pool)
    else:
        ranks[np.diag_indices(n)] += e
        pooled = 0.0
    return ranks, pooled, slots


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
    pool = pool[: exploration.slot_pool]
    settings = (
        exploration.swap_share,
        exploration.swap_depth,
        exploration.slot_share,
        exploration.slot_from,
        len(pool),
    )
    ranks, pooled, slots = marginals(Draw("none", -1, *settings), n)
    pairs = max(0, min(exploration.swap_depth, n) - 1)
    u = rng.random()
    order, shown_rank, kind, at = chosen.copy(), np.arange(n), "none", -1
    if u < exploration.swap_share and pairs:
        kind, at = "swap", int(rng.integers(pairs))
        order[[at, at + 1]] = order[[at + 1, at]]
        shown_rank[[at, at + 1]] = shown_rank[[at + 1, at]]
    elif exploration.swap_share <= u < exploration.swap_share + exploration.slot_share and len(
        slots
    ):
        kind, at = "slot", int(slots[rng.integers(len(slots))])
        order[at] = pool[int(rng.integers(len(pool)))]
    propensities = ranks[shown_rank, np.arange(n)]
    if kind == "slot":
        propensities[at] = pooled
    return Explored(order, propensities, Draw(kind, at, *settings))


def exploration_pool(
    order: np.ndarray,
    chosen: np.ndarray,
    category: np.ndarray,
    size: int,
    new_to_user: np.ndarray | None = None,
) -> np.ndarray:
    """The first ``size`` candidates of the ranked ``order`` that are not in ``chosen``, whose
    category (``category``: per candidate) the list does not show and - where ``new_to_user`` (per
    candidate) is given - whose category the shopper never touched: a slot that showed a category
    the shopper already knows would teach the learner nothing new about the shopper's reach."""
    shown = np.isin(order, chosen) | np.isin(category[order], category[chosen])
    if new_to_user is not None:
        shown |= ~new_to_user[order]
    return order[~shown][:size]
