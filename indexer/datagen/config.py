"""Settings of the synthetic shop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class ShopConfig:
    """Everything that shapes a synthetic shop; the same config and seed give the same files.

    Defaults give a shop the demo builds in seconds. Rates are per user or per event as named.
    """

    items: int = 5_000
    #: Which family of shop (indexer/datagen/families.py): ``default``, ``baskets``, ``itemitem``.
    family: str = "default"
    #: Defaults to ``items // 2``.
    users: int | None = None
    seed: int = 0
    weeks: int = 8
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)

    #: Out-degree range of the planted complement graph (inclusive).
    min_complements: int = 2
    max_complements: int = 3
    #: Item popularity is log-normal with this sigma: about 2 puts 30-50% of interactions on the
    #: top 1% of items, as in real shops.
    popularity_sigma: float = 2.0
    in_stock_rate: float = 0.92
    #: Share of items launched during the window (the rest exist from the start).
    launch_rate: float = 0.2

    #: Share of users seen once: one session, one view.
    single_event_user_rate: float = 0.25
    #: Share of users one of whose interests is replaced by a new one part-way through the window.
    drift_user_rate: float = 0.3
    #: Mean sessions of a returning user (1 + geometric).
    mean_sessions: float = 4.0
    #: Mean distinct items per session (1 + Poisson).
    mean_session_items: float = 5.0
    #: Each next item of a session: stay in the category, follow a complement edge, return to
    #: another of the user's interests, or wander to a random category. The rest of the mass stays.
    p_complement: float = 0.3
    p_other_interest: float = 0.12
    p_random: float = 0.04
    #: Share of items given 1-3 specific partner items in the complement categories of their leaf
    #: (the case that fits this phone).
    partner_share: float = 0.3
    #: When a session follows a complement edge from an item with a partner in the target category,
    #: the chance that the next item is that partner rather than a draw by popularity.
    partner_take: float = 0.6

    @property
    def n_users(self) -> int:
        return self.users if self.users is not None else max(self.items // 2, 1)

    def validate(self) -> None:
        from indexer.datagen.families import FAMILIES

        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.items < 200:
            raise ValueError(
                "items must be >= 200 (every one of the 64 categories needs a few), "
                f"got {self.items}"
            )
        if self.n_users < 1:
            raise ValueError(f"users must be >= 1, got {self.n_users}")
        if self.weeks < 1:
            raise ValueError(f"weeks must be >= 1, got {self.weeks}")
        if not 1 <= self.min_complements <= self.max_complements <= 8:
            raise ValueError("need 1 <= min_complements <= max_complements <= 8")
        moves = self.p_complement + self.p_other_interest + self.p_random
        if moves > 1:
            raise ValueError(
                f"p_complement + p_other_interest + p_random must be <= 1, got {moves}"
            )
        for name in ("partner_share", "partner_take"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
