"""The settings of a private build (``crossrec index build --dp-...``) and the budget split."""

from __future__ import annotations

from dataclasses import dataclass

#: Each released statistic's share of the budget (zero-concentrated rho); shares of statistics a
#: build does not release (no neighbours, a fixed popularity clip) go to the others in
#: proportion. Why this split: the popular source and the co-engagement neighbours carry most of a
#: list, so they get most of it (measured on the 50k shop at epsilon 4: with exact item statistics
#: and everything else private, Recall@10 0.114 against 0.060 - the popularity's noise was most of
#: the price).
BUDGET_SHARES: dict[str, float] = {
    "popularity_clip": 0.02,  # the median of the shoppers' popularity norms (the clip)
    "item_popularity": 0.33,  # shoppers per item, decayed (what the popular source ranks by)
    "item_actions": 0.15,  # views, clicks, carts, purchases per item
    "item_windows": 0.05,  # events in the last 7 and 28 days per item
    "category_users": 0.05,  # shoppers per category (and in all)
    "transitions": 0.05,  # shoppers per (category A, category B) transition
    "item_users": 0.05,  # shoppers per item among their pair items (the neighbours' norms)
    "pairs": 0.30,  # shoppers per item pair (the co-engagement neighbours)
}

#: The share of ``delta`` the pairs' threshold may spend; the rest goes to converting the
#: zero-concentrated total to (epsilon, delta).
THRESHOLD_DELTA_SHARE = 0.5

#: The popularity clip is this quantile of the shoppers' popularity norms (the median: the usual
#: choice for clipping, which bounds the noise by a typical shopper rather than the heaviest one),
#: chosen privately among :func:`clip_candidates`.
CLIP_QUANTILE = 0.5


def clip_candidates(max_items_per_user: int) -> list[float]:
    """The clips the private median chooses from: 0.25 to ``sqrt(M)`` (the largest norm a bounded
    shopper can have) in steps of 0.25, and ``sqrt(M)`` itself."""
    top = max_items_per_user**0.5
    return [*(0.25 * i for i in range(1, int(top / 0.25) + 1) if 0.25 * i < top), top]


@dataclass(frozen=True)
class PrivacyConfig:
    """``epsilon`` and ``delta``: the whole build's budget, per shopper. The bounds: what one
    shopper may contribute (the most recent events per item, the most recently touched items, the
    category transitions made in most sessions, and - since a shopper's pairs grow with the square
    of their items - the ``max_pair_items`` most recent of those items for the co-engagement
    pairs, at most ``m (m - 1) / 2`` pairs). ``popularity_clip``: each shopper's contribution to the
    popularity (a decayed weight of at most 1 per item) is scaled down to this L2 norm at most, so
    its noise is set by a typical shopper rather than by ``sqrt(M)``; None (the default) takes the
    private median of the shoppers' norms (:data:`CLIP_QUANTILE`, 2% of the budget). ``seed``:
    None draws the noise from OpenDP's
    secure sampler (not reproducible, the release path); an integer draws the same distributions
    from numpy's seeded generator, so that a build can be repeated byte for byte (tests, audits;
    the manifest says which)."""

    epsilon: float
    delta: float = 1e-6
    max_items_per_user: int = 20
    max_events_per_item: int = 2
    max_transitions_per_user: int = 10
    max_pair_items: int = 8
    popularity_clip: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"dp epsilon must be > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp delta must lie in (0, 1), got {self.delta}")
        for name in (
            "max_items_per_user",
            "max_events_per_item",
            "max_transitions_per_user",
            "max_pair_items",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"dp {name} must be >= 1, got {getattr(self, name)}")
        if self.popularity_clip is not None and not self.popularity_clip > 0:
            raise ValueError(f"dp popularity_clip must be > 0, got {self.popularity_clip}")

    @classmethod
    def like(cls, release: dict) -> PrivacyConfig:
        """The settings behind a version's privacy release (its manifest's ``privacy`` entry), to
        build another version the same way - the same budget and bounds, the clip chosen again
        unless it was set, fresh noise from OpenDP's sampler (a ranker's replay indexes)."""
        bounds = release["bounds"]
        chose = release.get("popularity_clip_chosen_by", "setting") != "setting"
        return cls(
            epsilon=float(release["epsilon"]),
            delta=float(release["delta"]),
            max_items_per_user=int(bounds["max_items_per_user"]),
            max_events_per_item=int(bounds["max_events_per_item"]),
            max_transitions_per_user=int(bounds["max_transitions_per_user"]),
            max_pair_items=int(bounds["max_pair_items"]),
            # (a version from before the clip existed used the bounds' own reach, sqrt(M))
            popularity_clip=None
            if chose
            else bounds.get("popularity_clip", int(bounds["max_items_per_user"]) ** 0.5),
        )
