"""Item-level structure: specific partner items in the complement categories of an item's leaf.

Categories say that phones go with cases; they do not say *which* case fits *this* phone. A share
of items gets 1-3 partners, each in a different complement target of its leaf, and a session that
follows a complement edge from an item into a leaf where it has a partner usually lands on that
partner (``ShopConfig.partner_take``); everything else is still drawn by popularity.

Choices, and why:

- Target leaves by edge weight (Gumbel top-k): partners sit on the complement edges sessions use
  most, so most of them get seen.
- At most one partner per target leaf: "the partner in this leaf" is then one item, one lookup.
- The partner is uniform among the target leaf's items, not popularity-biased: fit belongs to the
  pair, not to popularity. A popularity-biased draw would make most partners their leaf's
  bestsellers, which category complements plus popularity already recommend, so item-level
  learning could not be told apart from category-level learning.
- The partner launched no later than its item: wherever a session can see the item, its partner
  exists too, so no event touches an item before its launch without any check at walk time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from indexer.datagen.catalog import SyntheticCatalog
from indexer.datagen.complements import ComplementGraph
from indexer.datagen.config import ShopConfig


@dataclass(frozen=True)
class PartnerPairs:
    """Planted directed pairs ``item[i] -> partner[i]`` (catalogue row indices; ``leaf[i]`` is the
    partner's leaf), sorted by item then leaf. An item has at most one partner per leaf."""

    item: np.ndarray
    partner: np.ndarray
    leaf: np.ndarray
    n_leaves: int

    def __len__(self) -> int:
        return len(self.item)

    def partner_in(self, item: np.ndarray, leaf: np.ndarray) -> np.ndarray:
        """The partner of each ``item`` in ``leaf`` (row index), or -1 where it has none there."""
        if len(self.item) == 0:
            return np.full(len(item), -1, dtype=np.int64)
        keys = self.item * self.n_leaves + self.leaf  # sorted by construction
        want = item * self.n_leaves + leaf
        pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        return np.where(keys[pos] == want, self.partner[pos], -1)


def plant_partners(
    cfg: ShopConfig,
    catalog: SyntheticCatalog,
    graph: ComplementGraph,
    n_leaves: int,
    rng: np.random.Generator,
) -> PartnerPairs:
    """Give about ``cfg.partner_share`` of items 1-3 partners in the complement targets of their
    leaf (fewer where the leaf has fewer edges). Vectorised: a million items take about a second."""
    n = len(catalog.leaf)
    targets, weights = graph.table(n_leaves)
    has = np.flatnonzero(rng.random(n) < cfg.partner_share)
    count = rng.integers(1, 4, len(has))
    src_leaf = catalog.leaf[has]

    # Distinct target leaves per item, in proportion to edge weight (Gumbel top-k); padded slots
    # (weight 0, key -inf) rank last and are never taken.
    w = weights[src_leaf]
    with np.errstate(divide="ignore"):
        keys = np.log(w) + rng.gumbel(size=w.shape)
    ranked = np.argsort(-keys, axis=1)
    taken = np.arange(w.shape[1])[None, :] < np.minimum(count, (w > 0).sum(axis=1))[:, None]
    item = np.broadcast_to(has[:, None], taken.shape)[taken]
    leaf = np.take_along_axis(targets[src_leaf], ranked, axis=1)[taken]

    # Uniform among the target leaf's items launched no later than the item: with items sorted by
    # (leaf, launch time) those are a prefix of the leaf's block. Every leaf's most popular item
    # launches at the start, so the prefix is never empty.
    span = float(catalog.launch_s.max()) + 1.0
    order = np.lexsort((catalog.launch_s, catalog.leaf))
    sorted_key = catalog.leaf[order] * span + catalog.launch_s[order]
    first = np.searchsorted(sorted_key, np.arange(n_leaves) * span)
    eligible = (
        np.searchsorted(sorted_key, leaf * span + catalog.launch_s[item], side="right")
        - first[leaf]
    )
    partner = order[first[leaf] + np.floor(rng.random(len(item)) * eligible).astype(np.int64)]

    by_key = np.argsort(item * n_leaves + leaf, kind="stable")
    return PartnerPairs(item[by_key], partner[by_key], leaf[by_key], n_leaves)
