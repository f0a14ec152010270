"""Profiles (decayed weights, interests, ties) and pseudonyms, with expected values worked out by
hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_tiny import NOW

from engine.state.profile import ProfileEvent, build_profile
from engine.state.pseudonym import pseudonymise

DAY_US = 86_400 * 1_000_000


def test_default_profile_keeps_the_four_heaviest_categories_ties_by_name():
    # One item per category; rows deliberately not in category order.
    categories = np.array(["c", "d", "e", "a", "b"])
    row_of = {"c1": 0, "d1": 1, "e1": 2, "a1": 3, "b1": 4}
    vectors = np.eye(5, dtype=np.float32)
    events = [
        ProfileEvent("a1", "click", NOW),  # 2
        ProfileEvent("b1", "view", NOW + DAY_US),  # from the future: counts as now, 1
        ProfileEvent("b1", "view", NOW - 14 * DAY_US),  # one half-life: .5  -> b 1.5
        ProfileEvent("c1", "cart", NOW - 28 * DAY_US),  # 4 * .25 = 1
        ProfileEvent("d1", "view", NOW),  # 1: ties with c, c comes first by name
        ProfileEvent("e1", "view", NOW - 14 * DAY_US),  # .5: fifth, no interest of its own
    ]
    p = build_profile(events, row_of, vectors, categories, NOW)
    assert p.interest_categories == ["a", "b", "c", "d"]
    assert p.interest_weights == pytest.approx(np.array([2, 1.5, 1, 1]) / 5.5)
    assert p.category_weights == pytest.approx(
        {"a": 2 / 6, "b": 1.5 / 6, "c": 1 / 6, "d": 1 / 6, "e": 0.5 / 6}
    )
    assert p.interests.tolist() == np.eye(5)[[3, 4, 0, 1]].tolist()
    assert p.interests.dtype == np.float32
    assert p.interest_items == [[3], [4], [0], [1]]
    assert p.item_rows.tolist() == [3, 4, 0, 1, 2]
    assert p.item_weights == pytest.approx([2, 1.5, 1, 1, 0.5])
    assert p.purchased_rows == set()
    assert p.seen_rows == {0, 1, 2, 3, 4}
    assert p.events_used == 6
    assert not p.empty
    assert p.touched_categories == {"a", "b", "c", "d", "e"}


def test_interest_vector_is_the_normalised_weighted_mean_of_its_items():
    categories = np.array(["x", "x", "x"])
    vectors = np.array(
        [[1, 0], [0, 1], [3, 4]], np.float32
    )  # the third is not unit: mean, then normalise
    row_of = {"i0": 0, "i1": 1, "i2": 2}
    events = [
        ProfileEvent("i0", "purchase", NOW),
        ProfileEvent("i1", "cart", NOW),
        ProfileEvent("i2", "view", NOW - 7 * DAY_US),
    ]
    p = build_profile(events, row_of, vectors, categories, NOW, half_life_days=7)
    v = np.array([8 + 1.5, 4 + 2.0])  # 8*(1,0) + 4*(0,1) + .5*(3,4)
    assert p.interests[0] == pytest.approx(v / np.linalg.norm(v), abs=1e-6)
    assert p.interest_items == [[0, 1, 2]]
    assert p.purchased_rows == {0}
    assert p.interest_weights.tolist() == [1.0]
    assert build_profile(
        events, row_of, vectors, categories, NOW, max_interests=1
    ).interest_categories == ["x"]


def test_profile_of_unknown_items_only_is_empty():
    p = build_profile(
        [ProfileEvent("nope", "purchase", NOW)],
        {"i0": 0},
        np.eye(3, dtype=np.float32),
        np.array(["x"]),
        NOW,
    )
    assert p.empty
    assert p.interests.shape == (0, 3)
    assert p.category_weights == {}
    assert p.events_used == 0
    assert p.item_rows.tolist() == []
    assert p.seen_rows == set()
    assert build_profile([], {}, np.eye(2, dtype=np.float32), np.array([]), NOW).empty


def test_profile_skips_unknown_items_anywhere_and_normalises_light_interests():
    categories = np.array(["x", "y"])
    vectors = np.array([[3, 4], [0, 1]], np.float32)
    events = [
        ProfileEvent("gone", "purchase", NOW),
        ProfileEvent("i0", "view", NOW - 28 * DAY_US),
        ProfileEvent("i1", "view", NOW - 14 * DAY_US),
    ]
    p = build_profile(events, {"i0": 0, "i1": 1}, vectors, categories, NOW)
    # Weights .25 and .5: the interests are still unit vectors.
    assert p.interest_categories == ["y", "x"]
    assert p.interests.tolist() == [[0, 1], pytest.approx([0.6, 0.8])]
    assert p.events_used == 3
    assert p.seen_rows == {0, 1}


def test_events_too_old_to_weigh_anything_give_an_empty_profile():
    ancient = [
        ProfileEvent("i0", "purchase", NOW - 200 * 365 * DAY_US)
    ]  # 0.5 ** 5000 underflows to 0
    p = build_profile(ancient, {"i0": 0}, np.eye(2, dtype=np.float32), np.array(["x"]), NOW)
    assert p.empty
    assert p.category_weights == {}
    assert p.events_used == 0
    assert p.interests.shape == (0, 2)
    assert p.interests.dtype == np.float32
    assert p.interest_weights.shape == (0,)


def test_equally_heavy_items_keep_the_order_they_were_first_seen():
    pattern = [1, 2, 1, 4, 2, 1, 4, 1, 2, 2, 1, 4, 1, 2, 4, 1, 2, 1, 4, 2]  # 20 items, many ties
    actions = {1: "view", 2: "click", 4: "cart"}
    ids = [f"i{n:02d}" for n in range(20)]
    events = [ProfileEvent(i, actions[w], NOW) for i, w in zip(ids, pattern)]
    p = build_profile(
        events,
        {i: n for n, i in enumerate(ids)},
        np.eye(20, dtype=np.float32),
        np.array(["x"] * 20),
        NOW,
    )
    assert p.item_rows.tolist() == [
        3,
        6,
        11,
        14,
        18,
        1,
        4,
        8,
        9,
        13,
        16,
        19,
        0,
        2,
        5,
        7,
        10,
        12,
        15,
        17,
    ]
    # interest_items is heaviest first too, but its order within a tie is not specified (argsort
    # default).
    items = p.interest_items[0]
    assert [set(items[:5]), set(items[5:12]), set(items[12:])] == [
        {3, 6, 11, 14, 18},
        {1, 4, 8, 9, 13, 16, 19},
        {0, 2, 5, 7, 10, 12, 15, 17},
    ]


def test_pseudonym_is_hmac_sha256_hex():
    # RFC 4231, test case 2.
    assert (
        pseudonymise("what do ya want for nothing?", b"Jefe")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert (
        pseudonymise("zoë", b"k")
        == "c86b6f8d5ce7f258f00ea18b8a7113a603f84267f0f4895d0a31b1559ed06978"
    )  # utf-8
