"""Private statistics (``indexer.privacy``): contribution bounding worked out by hand, noise of the
calibrated scale from both samplers, the budget adding up to what was asked, the threshold
keeping rare pairs out, the popularity clip, the manifest's claim and the pinned defaults (whole
builds: ``test_privacy_build.py``)."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from indexer.privacy.bounding import bound_events, pair_counts, pair_items, user_transitions
from indexer.privacy.config import BUDGET_SHARES, CLIP_QUANTILE, PrivacyConfig, clip_candidates
from indexer.privacy.mechanisms import Budget, Noise, epsilon_of
from indexer.privacy.release import (
    last_touches,
    private_behaviour,
    shopper_popularity,
)
from indexer.transitions import item_counts, sessionise

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
#: rows a0 b1 (X), c2 d3 (Y), e4 (Z); category codes X 0, Y 1, Z 2
CATALOG = pl.DataFrame({"item_id": list("abcde"), "category": ["X", "X", "Y", "Y", "Z"]})


def events() -> pl.DataFrame:
    """u1: a cart of c, views of d and e three hours before T0, then 10,000 views of a (one a
    second from two hours before: a new session); u2: a view of a, a minute later a purchase of
    c, a day before T0."""
    rows = [
        ("u1", "c", "cart", T0 - timedelta(hours=3)),
        ("u1", "d", "view", T0 - timedelta(hours=3) + timedelta(minutes=1)),
        ("u1", "e", "view", T0 - timedelta(hours=3) + timedelta(minutes=2)),
    ]
    rows += [
        ("u1", "a", "view", T0 - timedelta(hours=2) + timedelta(seconds=k)) for k in range(10_000)
    ]
    rows += [
        ("u2", "a", "view", T0 - timedelta(days=1)),
        ("u2", "c", "purchase", T0 - timedelta(days=1) + timedelta(minutes=1)),
    ]
    return pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": [r[3] for r in rows],
        }
    )


BOUNDS = PrivacyConfig(epsilon=1.0, max_events_per_item=2, max_items_per_user=3)


def test_a_shopper_with_10000_events_moves_each_count_by_at_most_the_bounds():
    bounded = bound_events(sessionise(events(), CATALOG), BOUNDS)
    counts = item_counts(bounded, CATALOG)
    # u1's items by last touch: a, e, d, c -> a, e, d kept (c's cart dropped); 2 of a's views
    assert counts["views"].to_list() == [2 + 1, 0, 0, 1, 1]
    assert counts["carts"].to_list() == [0, 0, 0, 0, 0]
    assert counts["purchases"].to_list() == [0, 0, 1, 0, 0]  # u2's
    # the kept views of a are u1's two most recent
    kept = bounded.filter((pl.col("row") == 0) & (pl.col("user") == 0))["ts"].to_list()
    last = T0 - timedelta(hours=2) + timedelta(seconds=9_999)
    assert kept == [last - timedelta(seconds=1), last]


def test_transitions_and_pairs_are_counted_in_shoppers_within_their_bounds():
    bounded = bound_events(sessionise(events(), CATALOG), BOUNDS)
    # u1's first session after bounding: d (Y) then e (Z); the second: a alone. u2: a (X), c (Y).
    made = user_transitions(bounded, 10)
    assert made.rows() == [(0, 1, 1), (1, 2, 1)]
    # u1 pairs its items a, d, e; u2 a, c: keys i * 5 + j for i < j
    keys, counts = pair_counts(pair_items(bounded, 8), 5)
    assert keys.tolist() == [0 * 5 + 2, 0 * 5 + 3, 0 * 5 + 4, 3 * 5 + 4]
    assert counts.tolist() == [1, 1, 1, 1]
    # two items per shopper: u1's two most recent (a, e), u2's (c, a)
    keys, _ = pair_counts(pair_items(bounded, 2), 5)
    assert keys.tolist() == [0 * 5 + 2, 0 * 5 + 4]
    # one transition per shopper: ties of one session each go to the lower codes
    assert user_transitions(bounded, 1).rows() == [(0, 1, 1), (1, 2, 1)]


def test_a_shopper_counts_the_transitions_made_in_most_sessions():
    # one shopper: session 0 goes 2 -> 0, sessions 1 and 2 go 1 -> 2
    frame = pl.DataFrame(
        {
            "session": [0, 0, 1, 1, 2, 2],
            "user": [0] * 6,
            "row": [0] * 6,
            "category": [2, 0, 1, 2, 1, 2],
            "action": [0] * 6,
            "ts": [T0 + timedelta(minutes=k) for k in range(6)],
        }
    )
    assert user_transitions(frame, 1).rows() == [(1, 2, 1)]
    assert user_transitions(frame, 2).rows() == [(1, 2, 1), (2, 0, 1)]


def test_the_budget_adds_up_to_what_was_asked_and_each_scale_spends_its_share():
    config = PrivacyConfig(epsilon=2.0, delta=1e-6, seed=0)
    budget = Budget(config, list(BUDGET_SHARES))
    noise = Noise(budget)
    noise.gaussian("item_actions", np.zeros(10, np.int64), 8.5)
    noise.threshold("pairs", np.arange(3, dtype=np.int64), np.ones(3, np.int64), 28)
    for name in ("item_windows", "item_popularity", "category_users", "transitions", "item_users"):
        noise.gaussian(name, np.zeros(5), 2.0)
    noise.quantile("popularity_clip", np.ones(9), [0.5, 1.5], 0.5)
    epsilon, delta = noise.spent()
    assert epsilon == pytest.approx(2.0, rel=1e-5)
    assert delta == pytest.approx(1e-6)
    actions = noise.releases[0]
    # an integer release: sensitivity rounded up to 9; sigma = 9 / sqrt(2 rho)
    assert actions.sensitivity == 9.0
    assert actions.rho == pytest.approx(budget.rho * 0.15)
    assert actions.scale == pytest.approx(9.0 / math.sqrt(2 * actions.rho))
    pairs = noise.releases[1]
    assert pairs.delta == pytest.approx(0.5e-6)
    assert pairs.scale == pytest.approx(math.sqrt(28 / (2 * pairs.rho)))
    assert epsilon_of(budget.rho, budget.conversion_delta) == pytest.approx(2.0, rel=1e-5)
    clip = noise.releases[-1]
    # report-noisy-max with Gumbel noise: rho = (sensitivity / scale)^2 / 2
    assert (clip.mechanism, clip.sensitivity) == ("exponential", 1.0)
    assert clip.rho == pytest.approx(budget.rho * 0.02)
    assert clip.scale == pytest.approx(1.0 / math.sqrt(2 * clip.rho))


@pytest.mark.parametrize("seed", [None, 3])
def test_the_private_median_finds_the_median_candidate(seed):
    """With a large budget the choice is the candidate nearest the median (41 values: 20 below
    1.0, one at it, 20 above); with a tiny one it is anywhere among the candidates."""
    values = np.r_[np.full(20, 0.4), 1.0, np.full(20, 3.0)]
    candidates = [0.25, 0.5, 0.75, 1.0, 1.25, 2.0, 3.5]
    big = Noise(Budget(PrivacyConfig(epsilon=500.0, seed=seed), ["popularity_clip"]))
    assert [big.quantile("popularity_clip", values, candidates, 0.5) for _ in range(5)] == [1.0] * 5
    small = Noise(Budget(PrivacyConfig(epsilon=0.01, seed=seed), ["popularity_clip"]))
    drawn = {small.quantile("popularity_clip", values, candidates, 0.5) for _ in range(200)}
    assert len(drawn) >= 4  # noisy choices spread over the candidates
    assert drawn <= set(candidates)


@pytest.mark.parametrize("seed", [None, 11])
def test_noise_has_the_calibrated_scale(seed):
    """Both samplers: the empirical standard deviation of 40,000 draws within 3% of the planned
    one (the standard error of a standard deviation from n draws is sigma / sqrt(2n): 0.35%)."""
    noise = Noise(Budget(PrivacyConfig(epsilon=1.0, seed=seed), ["item_actions"]))
    zeros = np.zeros(40_000, np.int64)
    drawn = noise.gaussian("item_actions", zeros, 4.0)
    planned = noise.releases[0].scale
    assert planned == pytest.approx(4.0 / math.sqrt(2 * noise.budget.rho))
    assert drawn.std() == pytest.approx(planned, rel=0.03)
    assert abs(drawn.mean()) < 4 * planned / math.sqrt(len(drawn))
    assert drawn.dtype == np.int64
    floats = noise.gaussian("item_actions", np.zeros(40_000), 4.0)
    assert floats.std() == pytest.approx(planned, rel=0.03)


@pytest.mark.parametrize("seed", [None, 5])
def test_pairs_few_shoppers_made_are_not_published(seed):
    noise = Noise(Budget(PrivacyConfig(epsilon=1.0, seed=seed), ["pairs"]))
    keys = np.arange(20_000, dtype=np.int64)
    counts = np.where(keys < 10_000, 1, 100_000).astype(np.int64)
    kept, noisy = noise.threshold("pairs", keys, counts, 28)
    tau = noise.releases[0].threshold
    assert tau > 5 * noise.releases[0].scale  # delta 5e-7 over 28 pairs of one shopper
    assert kept.tolist() == list(range(10_000, 20_000))  # no pair of a single shopper
    assert (noisy >= tau).all()


def test_the_popularity_counts_shoppers_decayed_from_their_last_touch_by_hand():
    bounded = bound_events(sessionise(events(), CATALOG), BOUNDS)
    end = datetime(2026, 3, 2, tzinfo=UTC)  # the end of T0's day
    touches = last_touches(bounded, end)
    got = shopper_popularity(touches, 5, clip=math.sqrt(20))  # no shopper's norm reaches it
    # a: u1's last view at T0 - 2 h + 9,999 s, u2's a day before T0; d and e: u1 three hours
    # before T0; c: u2's purchase (u1's cart was bounded away); b: nobody
    day = 86_400.0

    def decay(seconds_before_end: float) -> float:
        return 0.5 ** (seconds_before_end / day / 14)

    to_end = 12 * 3600.0  # T0 is noon
    a = decay(to_end + 2 * 3600 - 9_999) + decay(to_end + day)
    c = decay(to_end + day - 60)
    d = decay(to_end + 3 * 3600 - 60)
    e = decay(to_end + 3 * 3600 - 120)
    assert got == pytest.approx([a, 0.0, c, d, e], rel=1e-12)  # the last touch, to the second
    # u1 (a, d, e) and u2 (a, c): their norms, and u1 clipped to 1 (each weight / its norm)
    u2_a, u2_c = decay(to_end + day), c
    u1_a = a - u2_a
    n1, n2 = math.hypot(u1_a, d, e), math.hypot(u2_a, u2_c)
    assert touches.norms.tolist() == pytest.approx([n1, n2], rel=1e-12)
    clipped = shopper_popularity(touches, 5, clip=1.0)
    assert clipped == pytest.approx(
        [u1_a / n1 + u2_a / n2, 0.0, u2_c / n2, d / n1, e / n1], rel=1e-12
    )


class _Silent:
    """A generator whose noise is zero: what is left is the releases' arithmetic."""

    def normal(self, loc, scale, size):
        return np.zeros(size)

    def gumbel(self, loc, scale, size):
        return np.zeros(size)


def test_without_the_noise_the_releases_are_the_bounded_statistics(monkeypatch):
    from indexer.neighbours import NeighbourConfig
    from indexer.privacy import mechanisms, release

    monkeypatch.setattr(mechanisms.np.random, "default_rng", lambda seed: _Silent())
    monkeypatch.setattr(release, "PUBLISH_SIGMAS", 0.0)  # publish every transition made
    config = PrivacyConfig(epsilon=1.0, max_events_per_item=2, max_items_per_user=3, seed=0)

    private = private_behaviour(sessionise(events(), CATALOG), CATALOG, config, NeighbourConfig())
    items = private.stats.items
    assert items["views"].to_list() == [3, 0, 0, 1, 1]
    assert items["events"].to_list() == [3, 0, 1, 1, 1]
    assert items["age_days"].null_count() == 5
    cats = private.stats.categories
    # shoppers per category: X (u1, u2), Y (u1 with d, u2 with c), Z (u1); 2 shoppers in all
    assert cats["sessions"].to_list() == [2, 2, 1]
    assert cats["session_share"].to_list() == pytest.approx([1.0, 1.0, 0.5])
    t = private.stats.transitions
    assert t.select("source", "target", "sessions").rows() == [("X", "Y", 1), ("Y", "Z", 1)]
    assert t["probability"].to_list() == pytest.approx([1.0, 1.0])
    assert t["lift"].to_list() == pytest.approx([1.0, 2.0])
    # the window: whole days, the end of T0's day
    assert private.window.last == "2026-03-02T00:00:00+00:00"
    assert private.window.first == "2026-02-28T00:00:00+00:00"
    assert private.manifest["noise"] == "numpy-seeded"
    # The popularity: u1's three items (a, d, e; c bounded away) and u2's two (a, c), each
    # weighted by the decay of the last touch; the clip is the noise-free median of the two
    # shoppers' norms among 0.25, 0.5, ..., 1.5, sqrt(3): 1.5, between u2's (~1.36) and u1's
    # (~1.70), so u1's weights are scaled to norm 1.5 and u2's kept.
    day, to_end = 86_400.0, 12 * 3600.0

    def decay(seconds_before_end: float) -> float:
        return 0.5 ** (seconds_before_end / day / 14)

    u1 = {
        "a": decay(to_end + 2 * 3600 - 9_999),
        "d": decay(to_end + 3 * 3600 - 60),
        "e": decay(to_end + 3 * 3600 - 120),
    }
    u2 = {"a": decay(to_end + day), "c": decay(to_end + day - 60)}
    norm1, norm2 = math.hypot(*u1.values()), math.hypot(*u2.values())
    assert norm2 < 1.5 < norm1
    assert private.manifest["bounds"]["popularity_clip"] == 1.5
    s = 1.5 / norm1
    want = [u1["a"] * s + u2["a"], 0.0, u2["c"], u1["d"] * s, u1["e"] * s]
    assert items["popularity"].to_list() == pytest.approx(want, rel=1e-12)


def test_the_manifest_calls_a_version_private_only_when_nothing_else_reads_behaviour():
    from indexer.write import _privacy

    release = {"epsilon": 1.0}
    covered = SimpleNamespace(privacy=release, item_item={"neighbours": 1}, adaptation=None)
    assert _privacy(covered)["differentially_private"] is True
    leaky = SimpleNamespace(privacy=release, item_item={"ease": 1}, adaptation=object())
    out = _privacy(leaky)
    assert out["differentially_private"] is False
    assert out["not_covered"] == ["ease", "adaptation"]


def test_the_defaults_of_a_private_build_are_pinned():
    config = PrivacyConfig(epsilon=1.0)
    assert (config.delta, config.max_items_per_user, config.max_events_per_item) == (1e-6, 20, 2)
    assert (config.max_transitions_per_user, config.max_pair_items, config.seed) == (10, 8, None)
    assert config.popularity_clip is None
    assert CLIP_QUANTILE == 0.5
    assert clip_candidates(20) == pytest.approx([0.25 * i for i in range(1, 18)] + [math.sqrt(20)])
    assert clip_candidates(4) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert BUDGET_SHARES == {
        "popularity_clip": 0.02,
        "item_popularity": 0.33,
        "item_actions": 0.15,
        "item_windows": 0.05,
        "category_users": 0.05,
        "transitions": 0.05,
        "item_users": 0.05,
        "pairs": 0.30,
    }
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        PrivacyConfig(epsilon=0)
    with pytest.raises(ValueError, match="max_pair_items must be >= 1"):
        PrivacyConfig(epsilon=1, max_pair_items=0)
    with pytest.raises(ValueError, match="popularity_clip must be > 0"):
        PrivacyConfig(epsilon=1, popularity_clip=0.0)


def test_a_set_popularity_clip_spends_no_budget_on_choosing_one():
    from indexer.neighbours import NeighbourConfig

    config = PrivacyConfig(epsilon=1.0, max_items_per_user=3, popularity_clip=0.5, seed=0)
    private = private_behaviour(sessionise(events(), CATALOG), CATALOG, config, NeighbourConfig())
    stats = {s["name"]: s for s in private.manifest["statistics"]}
    assert "popularity_clip" not in stats
    assert stats["item_popularity"]["sensitivity"] == 0.5
    assert private.manifest["bounds"]["popularity_clip"] == 0.5
    assert private.manifest["popularity_clip_chosen_by"] == "setting"
    assert private.manifest["epsilon"] == pytest.approx(1.0, rel=1e-5)
    # a clip above any bounded shopper's reach (sqrt(M)) is that reach
    wide = PrivacyConfig(epsilon=1.0, max_items_per_user=3, popularity_clip=10.0, seed=0)
    private = private_behaviour(sessionise(events(), CATALOG), CATALOG, wide, NeighbourConfig())
    stats = {s["name"]: s for s in private.manifest["statistics"]}
    assert stats["item_popularity"]["sensitivity"] == pytest.approx(math.sqrt(3))


def test_like_gives_the_settings_behind_a_release():
    from indexer.neighbours import NeighbourConfig

    sessions = sessionise(events(), CATALOG)
    for config in (
        PrivacyConfig(epsilon=2.0, delta=1e-7, max_items_per_user=3, max_pair_items=2, seed=0),
        PrivacyConfig(epsilon=1.0, max_events_per_item=1, popularity_clip=0.5, seed=4),
    ):
        release = private_behaviour(sessions, CATALOG, config, NeighbourConfig()).manifest
        # the same settings; the noise fresh from OpenDP's sampler (no seed)
        assert PrivacyConfig.like(release) == dataclasses.replace(config, seed=None)
    # a version from before the clip existed: its popularity used the bounds' reach, sqrt(M)
    old = {"epsilon": 4.0, "delta": 1e-6, "bounds": {"max_items_per_user": 20,
        "max_events_per_item": 2, "max_transitions_per_user": 10, "max_pair_items": 8}}  # fmt: skip
    assert PrivacyConfig.like(old).popularity_clip == pytest.approx(math.sqrt(20))
