"""Names and builders shared by the tests on the hand-built ``tiny_version`` (tests/conftest.py).

Category codes are 0 Tools, 1 Knives, 2 Pans, 3 Tents; item rows 0-2 tents (t0 t1 t2), 3-4 pans
(p0 p1), 5-6 knives (k0 k1), 7-8 tools (g0 g1)."""

from __future__ import annotations

import numpy as np

from engine.config import Blend, RetrievalConfig
from engine.retrieval.items import ItemTable
from engine.state.profile import Profile, ProfileEvent, build_profile

TOOLS, KNIVES, PANS, TENTS = (
    "Garden > Tools",
    "Home > Kitchen > Knives",
    "Home > Kitchen > Pans",
    "Outdoors > Tents",
)


NOW = 1_700_000_000 * 1_000_000


#: The settings every hand computation below assumes (the engine's defaults are tuned elsewhere):
#: affinity = weight + transition score; blend = popular + neighbours + 0.1 x search; the search
#: source scans touched categories too; no diversity caps.
PINNED = {
    "transition_weight": 1.0,
    "category_prior": 0.0,
    "blend": Blend(neighbours=1.0, popular=1.0, search=0.1, ease=0.0, factors=0.0),
    "search_touched": True,
    "max_category_share": 1.0,
    "max_brand_share": 1.0,
}


def settings(**changes) -> RetrievalConfig:
    return RetrievalConfig(**{**PINNED, **changes})


def profile_of(items: ItemTable, tiny_version, *events: tuple[str, str]) -> Profile:
    """A profile from (item_id, action) events, all happening now."""
    return build_profile(
        [ProfileEvent(i, a, NOW) for i, a in events],
        items.row_of,
        np.asarray(tiny_version.vectors),
        items.row_category,
        NOW,
    )


def empty_profile() -> Profile:
    return Profile(np.zeros((0, 4), np.float32), [], np.zeros(0), {})
