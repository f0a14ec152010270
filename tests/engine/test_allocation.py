"""Slot allocation (engine.retrieval.allocate) on hand-made masks: every expected plan and pick is
written out."""

from __future__ import annotations

import numpy as np
import pytest

from engine.retrieval.allocate import Group, Plan, allocate, plan_slots, shortfall
from engine.retrieval.query import Query

CODES = {"a": 0, "b": 1, "c": 2, "d": 3}
ALL = np.array([True, True, True, True])


def mask(*codes: int) -> np.ndarray:
    out = np.zeros(4, dtype=bool)
    out[list(codes)] = True
    return out


def groups_of(plan: Plan) -> list[tuple[list[int], int]]:
    """(category codes, slots) of each group, in plan order."""
    return [(np.flatnonzero(g.categories).tolist(), g.slots) for g in plan.groups]


# --- plan_slots ---------------------------------------------------------------------------------


def test_quotas_are_exact_groups_and_the_remainder_goes_to_the_other_allowed_categories():
    query = Query(k=5, quotas=((frozenset({"a", "b"}), 2), (frozenset({"d"}), 1)))
    allowed = mask(0, 2, 3)  # b is not allowed: its quota group keeps only a
    plan = plan_slots(query, allowed, mask(0), CODES.__getitem__)
    assert plan.exact is True
    assert groups_of(plan) == [([0], 2), ([3], 1), ([2], 2)]
    assert plan.categories.tolist() == [True, False, True, True]


def test_quotas_that_use_every_slot_leave_no_free_group():
    query = Query(k=3, quotas=((frozenset({"a"}), 1), (frozenset({"b", "c"}), 2)))
    plan = plan_slots(query, ALL, mask(), CODES.__getitem__)
    assert plan.exact is True
    assert groups_of(plan) == [([0], 1), ([1, 2], 2)]


def test_quotas_ignore_the_cross_share():
    query = Query(k=2, quotas=((frozenset({"c"}), 2),), cross_share=0.0)
    plan = plan_slots(query, ALL, mask(2), CODES.__getitem__)
    assert groups_of(plan) == [([2], 2)]
    assert plan.exact


def test_cross_share_splits_k_between_new_and_touched_categories():
    # k=5, share 0.4: 2 slots to categories never touched (b, c, d), 3 to the touched one (a).
    plan = plan_slots(Query(k=5, cross_share=0.4), ALL, mask(0), CODES.__getitem__)
    assert plan.exact is False
    assert groups_of(plan) == [([1, 2, 3], 2), ([0], 3)]


def test_cross_share_rounds_to_the_nearest_slot():
    plan = plan_slots(Query(k=10, cross_share=0.26), ALL, mask(0, 1), CODES.__getitem__)
    assert groups_of(plan) == [([2, 3], 3), ([0, 1], 7)]


def test_cross_share_only_counts_allowed_categories():
    plan = plan_slots(Query(k=4, cross_share=0.5), mask(0, 1, 3), mask(0), CODES.__getitem__)
    assert groups_of(plan) == [([1, 3], 2), ([0], 2)]


@pytest.mark.parametrize(("share", "expected"), [(1.0, [([1, 2, 3], 4)]), (0.0, [([0], 4)])])
def test_share_one_or_zero_gives_one_side_every_slot(share, expected):
    plan = plan_slots(Query(k=4, cross_share=share), ALL, mask(0), CODES.__getitem__)
    assert groups_of(plan) == expected
    assert plan.exact is False


def test_no_share_is_one_group_of_every_allowed_category():
    plan = plan_slots(Query(k=6, cross_share=None), mask(1, 2), mask(1), CODES.__getitem__)
    assert groups_of(plan) == [([1, 2], 6)]
    assert plan.exact is False


@pytest.mark.parametrize(
    ("allowed", "touched", "expected"),
    [
        (ALL, ALL, [([0, 1, 2, 3], 5)]),  # nothing new: touched categories take all k
        (mask(0, 1), mask(0, 1, 2), [([0, 1], 5)]),  # the new ones are not allowed
        (ALL, mask(), [([0, 1, 2, 3], 5)]),  # nothing touched: new categories take all k
        (mask(2, 3), mask(0, 1), [([2, 3], 5)]),  # the touched ones are not allowed
    ],
)
def test_when_one_side_is_empty_the_other_takes_every_slot(allowed, touched, expected):
    plan = plan_slots(Query(k=5, cross_share=0.4), allowed, touched, CODES.__getitem__)
    assert groups_of(plan) == expected
    assert plan.exact is False


# --- allocate -----------------------------------------------------------------------------------


def test_each_group_takes_its_best_candidates_and_the_result_is_in_ranking_order():
    plan = Plan((Group(mask(1, 2), 2), Group(mask(0), 2)), exact=False)
    codes = np.array([0, 0, 0, 1, 2, 3, 1])  # category of each candidate, best first
    assert allocate(plan, codes, 4).tolist() == [0, 1, 3, 4]


def test_slots_a_group_cannot_fill_go_to_the_best_remaining_candidates():
    plan = Plan((Group(mask(1, 2), 2), Group(mask(0), 2)), exact=False)
    codes = np.array([1, 0, 1, 1, 3, 2])  # only one candidate of category 0
    # cross takes 0 and 2, same takes 1, the free slot goes to 3; category 3 is in no group.
    assert allocate(plan, codes, 4).tolist() == [0, 1, 2, 3]


def test_exact_plans_never_move_slots_between_groups():
    plan = Plan((Group(mask(1, 2), 2), Group(mask(0), 2)), exact=True)
    codes = np.array([1, 0, 1, 1, 3, 2])
    assert allocate(plan, codes, 4).tolist() == [0, 1, 2]


def test_groups_fill_in_plan_order():
    codes = np.array([1, 0, 2])
    first_wide = Plan((Group(mask(0, 1), 1), Group(mask(1), 1)), exact=True)
    first_narrow = Plan((Group(mask(1), 1), Group(mask(0, 1), 1)), exact=True)
    assert allocate(first_wide, codes, 2).tolist() == [0]  # the wide group took the only b
    assert allocate(first_narrow, codes, 2).tolist() == [0, 1]


def test_refill_stops_at_k_and_at_the_candidates_available():
    plan = Plan((Group(mask(0, 1), 1),), exact=False)
    codes = np.array([2, 0, 1, 1, 0])
    assert allocate(plan, codes, 3).tolist() == [1, 2, 3]
    assert allocate(plan, codes, 9).tolist() == [1, 2, 3, 4]
    assert allocate(plan, np.zeros(0, np.int64), 3).tolist() == []


# --- shortfall ----------------------------------------------------------------------------------


def test_shortfall_names_the_categories_of_groups_without_enough_candidates():
    plan = Plan((Group(mask(0, 1), 2), Group(mask(2), 2)), exact=False)
    assert shortfall(plan, np.array([0, 1, 2])).tolist() == [False, False, True, False]
    assert shortfall(plan, np.array([0, 2, 2, 3])).tolist() == [True, True, False, False]
    assert shortfall(plan, np.array([1, 1, 2, 2])).tolist() == [
        False,
        False,
        False,
        False,
    ]  # exactly enough
    assert shortfall(plan, np.zeros(0, np.int64)).tolist() == [True, True, True, False]


def test_a_single_slot_is_still_a_group():
    quota = plan_slots(Query(k=3, quotas=((frozenset({"a"}), 2),)), ALL, mask(), CODES.__getitem__)
    assert groups_of(quota) == [([0], 2), ([1, 2, 3], 1)]
    share = plan_slots(Query(k=5, cross_share=0.2), ALL, mask(0), CODES.__getitem__)
    assert groups_of(share) == [([1, 2, 3], 1), ([0], 4)]
