"""Exploration: the propensities logged for a shown list, by hand and against the sampler itself,
and the candidates an exploration slot draws from."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.config import ExplorationConfig as Exploration
from engine.retrieval.explore import exploration_pool, explore

CHOSEN = np.array([10, 11, 12, 13, 14])  # the engine's order (candidate indices)
POOL = np.array([20, 21, 22, 23])
#: 3 pairs (0,1) (1,2) (2,3); slots at positions 2, 3, 4; a pool of 4.
SETTING = Exploration(swap_share=0.2, swap_depth=4, slot_share=0.1, slot_from=2, slot_pool=4)


def test_propensities_of_each_kind_of_list_by_hand():
    # staying at p: 0.7 + 0.2 x (1 - pairs touching p / 3) + 0.1 x (1 - [p is a slot] / 3)
    stay = [
        0.7 + 0.2 * (2 / 3) + 0.1,
        0.7 + 0.2 * (1 / 3) + 0.1,
        0.7 + 0.2 * (1 / 3) + 0.1 * (2 / 3),
        0.7 + 0.2 * (2 / 3) + 0.1 * (2 / 3),
        0.7 + 0.2 + 0.1 * (2 / 3),
    ]
    kinds = {}
    for seed in range(200):
        shown = explore(CHOSEN, POOL, SETTING, np.random.default_rng(seed))
        kinds.setdefault(shown.draw.kind, shown)
    plain, swap, slot = kinds["none"], kinds["swap"], kinds["slot"]
    assert plain.order.tolist() == CHOSEN.tolist()
    assert plain.propensities == pytest.approx(stay)
    j = swap.draw.at
    assert swap.order[j] == CHOSEN[j + 1]
    assert swap.order[j + 1] == CHOSEN[j]
    expected = list(stay)
    expected[j] = expected[j + 1] = 0.2 / 3
    assert swap.propensities == pytest.approx(expected)
    q = slot.draw.at
    assert q >= 2
    assert slot.order[q] in POOL
    expected = list(stay)
    expected[q] = 0.1 / (3 * 4)
    assert slot.propensities == pytest.approx(expected)


def test_logged_propensities_match_how_often_the_sampler_shows_each_item_there():
    rng = np.random.default_rng(7)
    draws = 40_000
    seen: Counter = Counter()
    logged: dict = {}
    for _ in range(draws):
        shown = explore(CHOSEN, POOL, SETTING, rng)
        for position, (item, p) in enumerate(zip(shown.order, shown.propensities, strict=True)):
            seen[item, position] += 1
            logged[item, position] = p
    for key, p in logged.items():
        rate = seen[key] / draws
        tolerance = 4 * np.sqrt(p * (1 - p) / draws) + 1e-9
        assert abs(rate - p) <= tolerance, (key, rate, p)
    # every (item, position) the sampler can produce was seen and logged
    assert len(logged) == 5 + 2 * 3 + 3 * 4


def test_no_exploration_and_branches_that_cannot_act_show_the_engine_order():
    off = explore(CHOSEN, POOL, Exploration(), np.random.default_rng(0))
    assert off.order.tolist() == CHOSEN.tolist()
    assert off.propensities.tolist() == [1.0] * 5
    assert off.draw.kind == "none"
    assert not Exploration().active
    # a one-item list has no pair and no slot: always the engine's order, probability 1
    for seed in range(20):
        one = explore(CHOSEN[:1], POOL, SETTING, np.random.default_rng(seed))
        assert one.order.tolist() == [10]
        assert one.propensities == pytest.approx([1.0])
    # no pool: slot lists show the engine's order; only swaps remain
    kinds = {
        explore(CHOSEN, POOL[:0], SETTING, np.random.default_rng(s)).draw.kind for s in range(300)
    }
    assert kinds == {"none", "swap"}


def test_the_pool_is_the_best_candidates_below_the_list_from_categories_it_does_not_show():
    # candidates 0..7 ranked 3, 0, 5, 1, 7, 2, 6, 4; the list is 3, 0 (categories 0 and 1)
    category = np.array([1, 2, 0, 0, 3, 1, 2, 4])
    order = np.array([3, 0, 5, 1, 7, 2, 6, 4])
    pool = exploration_pool(order, np.array([3, 0]), category, 2)
    assert pool.tolist() == [1, 7]  # 5 is category 1, shown already; then 1 (2), 7 (4)
    # the shopper touched category 2 (candidates 1, 6): 7 (4), then 2 is category 0 (shown), 4 (3)
    new_to_user = category != 2
    pool = exploration_pool(order, np.array([3, 0]), category, 2, new_to_user)
    assert pool.tolist() == [7, 4]


def test_the_defaults_of_exploration_are_pinned():
    from engine.config import EngineConfig

    section = EngineConfig().exploration
    assert (section.swap_share, section.swap_depth, section.slot_share) == (0.0, 4, 0.0)
    assert (section.slot_from, section.slot_pool, section.arm_names) == (2, 20, ("a", "b"))


def test_the_logged_draw_rebuilds_every_items_chance_at_every_position():
    from engine.retrieval.explore import Draw, marginals

    shown = explore(CHOSEN, POOL, SETTING, np.random.default_rng(1))
    draw = Draw.from_json(shown.draw.to_json())
    assert draw == shown.draw
    assert Draw.from_json("") is None
    ranks, pooled, slots = marginals(draw, 5)
    # every rank is shown somewhere unless a slot replaced it: rows sum to 1 - e x [slot] / S
    assert ranks.sum(axis=1) == pytest.approx([1, 1, 1 - 0.1 / 3, 1 - 0.1 / 3, 1 - 0.1 / 3])
    # each position holds one item: an engine rank or one of the 4 pool items
    assert ranks.sum(axis=0) + 4 * pooled * np.isin(np.arange(5), slots) == pytest.approx(1.0)
    assert ranks[0, 1] == pytest.approx(0.2 / 3)  # rank 0 swapped down
    assert ranks[0, 2] == 0.0
    assert pooled == pytest.approx(0.1 / 12)
    assert slots.tolist() == [2, 3, 4]


def test_an_explored_slot_shows_a_category_neither_the_list_nor_the_shopper_has(tiny_version):
    from helpers_tiny import profile_of, settings

    from engine.retrieval.query import Query
    from engine.retrieval.recommend import Recommender

    recommender = Recommender(tiny_version, settings())
    # the shopper viewed t0 (Tents) and g0 (Tools); the ranking alone (no split) shows p0 (row 3,
    # Pans) and g1 (row 8, Tools); below the list: t1, t2 (Tents: touched) and k0, k1 (Knives)
    profile = profile_of(recommender.items, tiny_version, ("t0", "view"), ("g0", "view"))
    assert recommender.recommend(profile, Query(k=2, cross_share=None)).rows.tolist() == [3, 8]
    every_slot = Exploration(slot_share=1.0, slot_from=0)
    shown = set()
    for seed in range(40):
        recommender.explore_rng = np.random.default_rng(seed)
        result = recommender.recommend(
            profile, Query(k=2, cross_share=None, exploration=every_slot)
        )
        shown.add(tuple(result.rows.tolist()))
        assert '"pool":2' in result.exploration  # k0 and k1, not the tents
    assert shown == {(5, 8), (6, 8), (3, 5), (3, 6)}
