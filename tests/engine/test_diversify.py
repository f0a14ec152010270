"""Diversifying the final list: caps per category and brand, by hand."""

from __future__ import annotations

import numpy as np

from engine.retrieval.diversify import diversify

#: Positions 0-6, best first: categories and brands.
CATS = np.array(["A", "A", "A", "B", "A", "C", "B"])
BRANDS = np.array(["x", "x", "y", "x", "z", "", ""])
ORDER = np.arange(7)


def test_caps_defer_items_behind_every_item_that_fits():
    # k = 4, category cap ceil(0.5 * 4) = 2: the third and fourth A (positions 2, 4) wait.
    out = diversify(ORDER, CATS, BRANDS, 4, category_share=0.5)
    assert out.tolist() == [0, 1, 3, 5, 2, 4, 6]


def test_brand_cap_ignores_items_without_a_brand():
    # k = 5, brand cap ceil(0.4 * 5) = 2: the third x (position 3) waits; no-brand 5, 6 never count.
    out = diversify(ORDER, CATS, BRANDS, 5, brand_share=0.4)
    assert out.tolist() == [0, 1, 2, 4, 5, 3, 6]


def test_both_caps_together_and_a_list_that_cannot_be_diverse_is_still_full():
    out = diversify(ORDER, CATS, BRANDS, 4, category_share=0.25, brand_share=0.25)
    # caps of 1: 0 (A, x) in; 1 (A) out; 2 (A) out; 3 (B, x) out (brand x); 4 (A) out; 5 (C) in;
    # 6 (B, no brand) in; the deferred follow in rank order.
    assert out.tolist() == [0, 5, 6, 1, 2, 3, 4]
    one = diversify(np.arange(3), np.array(["A"] * 3), np.array(["x"] * 3), 3, 0.34, 0.34)
    assert one.tolist() == [0, 1, 2]


def test_shares_of_one_change_nothing():
    order = np.array([4, 2, 0, 6, 1, 3, 5])
    assert diversify(order, CATS, BRANDS, 3).tolist() == order.tolist()
    assert diversify(order, CATS, BRANDS, 3, 1.0, 1.0).tolist() == order.tolist()
