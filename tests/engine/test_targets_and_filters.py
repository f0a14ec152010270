"""The item table, request filters and the category model (transitions, names, weights) on the
hand-built ``tiny_version``.

Every expected value is worked out by hand from the fixture's table (codes and rows: see
tests/helpers_tiny.py).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
from helpers_tiny import (
    KNIVES,
    PANS,
    TENTS,
    TOOLS,
)

from engine.retrieval.filters import allowed_categories, allowed_rows
from engine.retrieval.query import Query
from engine.retrieval.targets import CategoryModel
from engine.state.profile import Profile


def test_item_table_orders_each_category_by_popularity(items):
    assert items.categories == [TOOLS, KNIVES, PANS, TENTS]
    assert items.category_code.tolist() == [3, 3, 3, 2, 2, 1, 1, 0, 0]
    assert [p.tolist() for p in items.popular] == [[7, 8], [5, 6], [3, 4], [0, 1, 2]]
    assert items.popularity_share == pytest.approx([0.6, 0.3, 0.1, 0.9, 0.1, 1, 0, 0.5, 0.5])
    assert items.row_of["k1"] == 6
    assert len(items) == 9
    assert np.isnan(items.price[2])
    assert items.in_stock.tolist()[4] is False


ROWS = np.arange(9)


def no_seen() -> np.ndarray:
    return np.zeros(0, np.int64)


@pytest.mark.parametrize(
    ("query", "excluded", "expected"),
    [
        (Query(k=1), [], [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (Query(k=1), [0, 3], [0, 1, 1, 0, 1, 1, 1, 1, 1]),
        (Query(k=1, exclude_items=frozenset({"t1", "g1"})), [], [1, 0, 1, 1, 1, 1, 1, 1, 0]),
        (Query(k=1, in_stock_only=True), [], [1, 1, 1, 1, 0, 1, 1, 1, 1]),
        # min_price is inclusive (p0 costs exactly 20); t2 has no price and fails any price filter.
        (Query(k=1, min_price=20.0), [], [1, 1, 0, 1, 1, 0, 0, 0, 0]),
        (Query(k=1, max_price=15.0), [], [0, 0, 0, 0, 0, 1, 1, 1, 1]),
        (Query(k=1, min_price=0.0), [], [1, 1, 0, 1, 1, 1, 1, 1, 1]),
        (Query(k=1, brands=frozenset({"zeta"})), [], [0, 1, 0, 0, 1, 0, 1, 0, 1]),
        (Query(k=1, brands=frozenset({"zeta", "acme"})), [], [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        (
            Query(
                k=1, min_price=10.0, max_price=30.0, brands=frozenset({"zeta"}), in_stock_only=True
            ),
            [6],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
        (
            Query(
                k=1,
                min_price=10.0,
                max_price=30.0,
                in_stock_only=True,
                exclude_items=frozenset({"k0"}),
            ),
            [],
            [0, 0, 0, 1, 0, 0, 1, 0, 0],
        ),
    ],
)
def test_allowed_rows_applies_each_filter(items, query, excluded, expected):
    assert (
        allowed_rows(ROWS, query, items, np.array(excluded, np.int64)).astype(int).tolist()
        == expected
    )


def test_allowed_rows_lines_up_with_the_rows_given(items):
    rows = np.array([8, 2, 5, 4])
    query = Query(k=1, max_price=10.0, exclude_items=frozenset({"g1"}))
    assert allowed_rows(rows, query, items, no_seen()).tolist() == [False, False, True, False]
    assert allowed_rows(rows, Query(k=1), items, np.array([5])).tolist() == [
        True,
        True,
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (None, frozenset(), [True, True, True, True]),
        (frozenset({PANS, TENTS}), frozenset(), [False, False, True, True]),
        (None, frozenset({PANS}), [True, True, False, True]),
        (frozenset({PANS, TENTS}), frozenset({PANS}), [False, False, False, True]),
        (frozenset(), frozenset(), [False, False, False, False]),
    ],
)
def test_allowed_categories_include_then_exclude(include, exclude, expected):
    query = Query(k=1, include=include, exclude=exclude)
    assert allowed_categories(query, [TOOLS, KNIVES, PANS, TENTS]).tolist() == expected


def test_allowed_rows_combines_exclusions_and_categories_on_no_codes():
    query = Query(k=1, exclude_items=frozenset({"t1"}))
    assert allowed_rows(np.arange(4), query, ItemTableStub(), np.array([0])).tolist() == [
        False,
        False,
        True,
        True,
    ]
    none = allowed_categories(Query(k=1), [])
    assert none.dtype == bool
    assert none.shape == (0,)


class ItemTableStub:
    item_ids = np.array(["t0", "t1", "t2", "p0"], dtype=object)
    row_of: ClassVar[dict[str, int]] = {"t0": 0, "t1": 1, "t2": 2, "p0": 3}


@pytest.fixture(scope="module")
def model(tiny_version, items) -> CategoryModel:
    return CategoryModel(tiny_version, items.categories)


def test_transition_matrix_is_smoothed_toward_session_share_with_a_zero_diagonal(model):
    # P(B|A) = (count + 5 * share_B) / (row total + 5); shares .1 .2 .3 .4; Tents row total 15,
    # Pans row total 5, the others 0 (they fall back on the shares). "Nowhere" is not a category.
    assert model.share == pytest.approx([0.1, 0.2, 0.3, 0.4])
    expected = [
        [0, 0.2, 0.3, 0.4],
        [0.1, 0, 0.3, 0.4],
        [0.5 / 10, 6 / 10, 0, 2 / 10],
        [0.5 / 20, 6 / 20, 11.5 / 20, 0],
    ]
    assert model.matrix == pytest.approx(np.array(expected))
    assert model.transition(TENTS, PANS) == pytest.approx(0.575)
    assert model.transition(PANS, TENTS) == pytest.approx(0.2)
    assert model.by_popularity.tolist() == [3, 2, 1, 0]


def test_smoothing_is_a_parameter(tiny_version, items):
    m = CategoryModel(tiny_version, items.categories, smoothing=1.0)
    assert m.transition(TENTS, PANS) == pytest.approx(10.3 / 16)
    assert m.transition(TOOLS, PANS) == pytest.approx(0.3)


def test_category_sizes_stand_in_for_session_shares_without_events(tiny_version, items):
    version = dataclasses.replace(
        tiny_version,
        categories=tiny_version.categories.with_columns(pl.lit(0.0).alias("session_share")),
        transitions=tiny_version.transitions.clear(),
    )
    m = CategoryModel(version, items.categories)
    assert m.share == pytest.approx([2 / 9, 2 / 9, 2 / 9, 3 / 9])
    assert m.transition(TOOLS, TENTS) == pytest.approx(3 / 9)
    assert m.by_popularity.tolist() == [3, 0, 1, 2]  # ties keep code order


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Outdoors > Tents", {TENTS}),
        ("Home>Kitchen >Pans", {PANS}),
        ("Home", {KNIVES, PANS}),
        ("Home > Kitchen", {KNIVES, PANS}),
        ("Hom", set()),  # a department is whole segments
        ("Kitchen", set()),
        ("Nowhere", set()),
    ],
)
def test_resolve_names_leaves_and_departments(model, name, expected):
    assert model.resolve(name) == frozenset(expected)


def test_weights_and_transition_scores(model):
    profile = Profile(
        np.zeros((0, 4)), [], np.zeros(0), {TENTS: 0.75, PANS: 0.25, "Gone > Away": 0.1}
    )
    w = model.weights(profile)
    assert w.tolist() == [0, 0, 0.25, 0.75]
    # .25 * Pans row + .75 * Tents row
    assert model.transition_scores(w) == pytest.approx([0.03125, 0.375, 0.43125, 0.05])


def test_categories_missing_from_the_statistics_get_no_share(tiny_version, items):
    version = dataclasses.replace(
        tiny_version, categories=tiny_version.categories.filter(pl.col("category") != TOOLS)
    )
    m = CategoryModel(version, items.categories)
    assert m.share == pytest.approx([0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9])
    assert m.transition(KNIVES, TOOLS) == 0.0


def test_popularity_order_of_categories_keeps_code_order_on_ties():
    names = [f"C{i:02d}" for i in range(20)]
    sessions = [3, 1, 3, 2, 1, 3, 2, 2, 1, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
    stats = SimpleNamespace(
        categories=pl.DataFrame(
            {"category": names, "items": [1] * 20, "session_share": [float(s) for s in sessions]}
        ),
        transitions=pl.DataFrame(
            {"source": [], "target": [], "sessions": []},
            schema={"source": pl.String, "target": pl.String, "sessions": pl.Int64},
        ),
    )
    m = CategoryModel(stats, names)
    assert m.by_popularity.tolist() == [
        0,
        2,
        5,
        9,
        12,
        15,
        18,
        3,
        6,
        7,
        11,
        14,
        17,
        1,
        4,
        8,
        10,
        13,
        16,
        19,
    ]


def test_a_brand_filter_is_a_mask_over_brand_codes_built_once_per_request(items):
    from engine.retrieval.filters import RowFilter

    f = RowFilter(Query(k=1, brands=frozenset({"zeta", "no-such-brand"})), items, no_seen())
    assert f.brand_ok.tolist() == [False] + [b == "zeta" for b in items.brands]  # 0: no brand
    assert f.allowed(ROWS).astype(int).tolist() == [0, 1, 0, 0, 1, 0, 1, 0, 1]
    many = frozenset(f"unknown-{i}" for i in range(1_000))
    assert not RowFilter(Query(k=1, brands=many), items, no_seen()).allowed(ROWS).any()
    # the user's rows and the excluded ids become one sorted row array
    g = RowFilter(Query(k=1, exclude_items=frozenset({"g1", "t1"})), items, np.array([8, 3]))
    assert g.excluded.tolist() == [1, 3, 8]
