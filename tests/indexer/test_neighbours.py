"""Co-engagement neighbours: the shrunk cosine on hand-computed tables, the top-N cut,
self-exclusion, chunking, and ``ItemNeighbours.gather``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from indexer.neighbours import ItemNeighbours, NeighbourConfig, item_neighbours
from indexer.transitions import sessionise

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
# Items A, B (category X) and C, D (category Y); rows 0-3.
CATALOG = pl.DataFrame({"item_id": ["A", "B", "C", "D"], "category": ["X", "X", "Y", "Y"]})
PLAIN = NeighbourConfig(dampen="none", shrinkage=0.0)


def events(rows: list[tuple[str, str, str, float]]) -> pl.DataFrame:
    """(user, item, action, days before T0) -> an event frame; each user's events are one
    session."""
    return pl.DataFrame(
        {
            "user_id": [u for u, _, _, _ in rows],
            "item_id": [i for _, i, _, _ in rows],
            "action": [a for _, _, a, _ in rows],
            "ts": [T0 - timedelta(days=d, seconds=k) for k, (_, _, _, d) in enumerate(rows)],
        }
    )


def neighbour_dict(nb: ItemNeighbours, row: int) -> dict[int, float]:
    rows, scores = nb.of(row)
    return dict(zip(rows.tolist(), scores.tolist()))


# Weights: view 1, click 2, cart 4, purchase 8. All events fresh (decay 1):
#   u1: A view (1), B click (2)          x_u1 = (A 1, B 2, C 0)
#   u2: A view (1), C view + purchase (9) x_u2 = (A 1, B 0, C 9)
#   u3: B cart (4), C view (1)            x_u3 = (A 0, B 4, C 1)
# ||A|| = sqrt(2), ||B|| = sqrt(20), ||C|| = sqrt(82); A.B = 2, A.C = 9, B.C = 4; D has no events.
HAND = events(
    [
        ("u1", "A", "view", 0),
        ("u1", "B", "click", 0),
        ("u2", "A", "view", 0),
        ("u2", "C", "view", 0),
        ("u2", "C", "purchase", 0),
        ("u3", "B", "cart", 0),
        ("u3", "C", "view", 0),
    ]
)


def test_cosine_by_hand():
    nb = item_neighbours(sessionise(HAND, CATALOG), 4, PLAIN)
    assert nb.rows.dtype == np.int32
    assert nb.scores.dtype == np.float32
    assert nb.indptr.dtype == np.int64
    assert nb.indptr.tolist() == [0, 2, 4, 6, 6]
    a, b, c = 0, 1, 2
    assert nb.of(a)[0].tolist() == [c, b]  # best first
    assert neighbour_dict(nb, a) == pytest.approx(
        {c: 9 / np.sqrt(2 * 82), b: 2 / np.sqrt(2 * 20)}, rel=1e-5
    )
    assert neighbour_dict(nb, b) == pytest.approx(
        {a: 2 / np.sqrt(2 * 20), c: 4 / np.sqrt(20 * 82)}, rel=1e-5
    )
    assert neighbour_dict(nb, c) == pytest.approx(
        {a: 9 / np.sqrt(2 * 82), b: 4 / np.sqrt(20 * 82)}, rel=1e-5
    )
    assert nb.of(3)[0].tolist() == []


def test_shrinkage_by_hand():
    nb = item_neighbours(
        sessionise(HAND, CATALOG), 4, NeighbourConfig(dampen="none", shrinkage=1.0)
    )
    assert neighbour_dict(nb, 0) == pytest.approx(
        {2: 9 / (np.sqrt(2 * 82) + 1), 1: 2 / (np.sqrt(2 * 20) + 1)}, rel=1e-5
    )


def test_log1p_dampening_and_cap_by_hand():
    # u1: A purchase (8), B view (1); u2: A view (1), C view (1).
    table = events(
        [
            ("u1", "A", "purchase", 0),
            ("u1", "B", "view", 0),
            ("u2", "A", "view", 0),
            ("u2", "C", "view", 0),
        ]
    )
    sessions = sessionise(table, CATALOG)
    damped = item_neighbours(sessions, 4, NeighbourConfig(dampen="log1p", shrinkage=0.0))
    # log1p: x_u1 = (A ln 9, B ln 2), x_u2 = (A ln 2, C ln 2); ||A|| = sqrt(ln9^2 + ln2^2).
    norm_a = np.hypot(np.log(9), np.log(2))
    assert neighbour_dict(damped, 0) == pytest.approx(
        {1: np.log(9) / norm_a, 2: np.log(2) / norm_a}, rel=1e-5
    )
    # Without dampening the purchase dominates A's vector: cos(A, B) = 8 / sqrt(65),
    # cos(A, C) = 1 / sqrt(65).
    plain = item_neighbours(sessions, 4, PLAIN)
    assert neighbour_dict(plain, 0) == pytest.approx(
        {1: 8 / np.sqrt(65), 2: 1 / np.sqrt(65)}, rel=1e-5
    )
    # A cap of 1 makes every x_ui 1: cos(A, B) = cos(A, C) = 1 / sqrt(2); ties go to the lower row.
    capped = item_neighbours(sessions, 4, NeighbourConfig(dampen="none", cap=1.0, shrinkage=0.0))
    assert capped.of(0)[0].tolist() == [1, 2]
    assert capped.of(0)[1] == pytest.approx([1 / np.sqrt(2)] * 2, rel=1e-5)


def test_time_decay_by_hand():
    # u1 viewed A 365 days before the newest event (weight 0.5 at the default one-year half-life)
    # and B now; u2 viewed both now. cos(A, B) = (0.5 + 1) / (sqrt(1.25) sqrt(2)).
    table = events(
        [
            ("u1", "A", "view", 365),
            ("u1", "B", "view", 0),
            ("u2", "A", "view", 0),
            ("u2", "B", "view", 0),
        ]
    )
    sessions = sessionise(table, CATALOG)
    assert NeighbourConfig().half_life_days == 365
    nb = item_neighbours(sessions, 4, PLAIN)
    assert neighbour_dict(nb, 0) == pytest.approx({1: 1.5 / np.sqrt(1.25 * 2)}, rel=1e-4)
    # At a half-life of half a year the old view weighs 0.25: (0.25 + 1) / (sqrt(1.0625) sqrt(2)).
    nb30 = item_neighbours(
        sessions, 4, NeighbourConfig(dampen="none", shrinkage=0.0, half_life_days=182.5)
    )
    assert neighbour_dict(nb30, 0) == pytest.approx({1: 1.25 / np.sqrt(1.0625 * 2)}, rel=1e-4)


def test_top_n_cut_self_exclusion_and_chunking():
    # Item 0 is co-engaged with items 1..6: user k views item 0 k times and item k once, so each
    # pair has its own score.
    n = 7
    catalog = pl.DataFrame({"item_id": [f"i{k}" for k in range(n)], "category": ["X"] * n})
    rows = []
    for k in range(1, n):
        rows += [(f"u{k}", "i0", "view", 0)] * k + [(f"u{k}", f"i{k}", "view", 0)]
    sessions = sessionise(events(rows), catalog)
    full = item_neighbours(sessions, n, NeighbourConfig(dampen="none", shrinkage=0.0, top_n=100))
    # x_u,k: item 0 weighs k, item k weighs 1. ||x_0|| = sqrt(1+4+...+36) = sqrt(91);
    # cos(0, k) = k / sqrt(91).
    assert full.of(0)[0].tolist() == [6, 5, 4, 3, 2, 1]
    assert full.of(0)[1] == pytest.approx([k / np.sqrt(91) for k in (6, 5, 4, 3, 2, 1)], rel=1e-5)
    for row in range(n):
        assert row not in full.of(row)[0].tolist()  # never its own neighbour
    assert full.of(3)[0].tolist() == [0]
    cut = item_neighbours(sessions, n, NeighbourConfig(dampen="none", shrinkage=0.0, top_n=2))
    assert cut.of(0)[0].tolist() == [6, 5]
    assert cut.indptr.tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    # Chunks of 2 item rows (the self-exclusion and row offsets of every chunk) give the same
    # answer.
    chunked = item_neighbours(
        sessions, n, NeighbourConfig(dampen="none", shrinkage=0.0, top_n=2, chunk_items=2)
    )
    assert np.array_equal(chunked.indptr, cut.indptr)
    assert np.array_equal(chunked.rows, cut.rows)
    assert np.allclose(chunked.scores, cut.scores)


def test_no_events_give_no_neighbours():
    nb = item_neighbours(sessionise(HAND.clear(), CATALOG), 4)
    assert nb.indptr.tolist() == [0, 0, 0, 0, 0]
    assert len(nb.rows) == 0
    assert nb.problem(4) is None


# Item 0 -> (1: 0.5, 2: 0.25); item 1 -> (2: 1.0); item 2 -> nothing.
SMALL = ItemNeighbours(
    np.array([0, 2, 3, 3], dtype=np.int64),
    np.array([1, 2, 2], dtype=np.int32),
    np.array([0.5, 0.25, 1.0], dtype=np.float32),
)


def test_gather_by_hand():
    rows, scores = SMALL.gather(np.array([0, 1, 2]), np.array([2.0, 1.0, 5.0]))
    # Candidate 2: 2 x 0.25 + 1 x 1.0 = 1.5; candidate 1: 2 x 0.5 = 1.0.
    assert rows.tolist() == [2, 1]
    assert scores == pytest.approx([1.5, 1.0])
    # A source listed twice counts twice; limit keeps the best.
    rows, scores = SMALL.gather(np.array([0, 0]), np.array([1.0, 3.0]))
    assert rows.tolist() == [1, 2]
    assert scores == pytest.approx([2.0, 1.0])
    assert SMALL.gather(np.array([0, 1]), np.array([2.0, 1.0]), limit=1)[0].tolist() == [2]
    rows, scores = SMALL.gather(np.array([2]), np.array([1.0]))
    assert len(rows) == 0
    assert len(scores) == 0
    with pytest.raises(ValueError, match="differ in length"):
        SMALL.gather(np.array([0, 1]), np.array([1.0]))


@pytest.mark.parametrize(
    ("indptr", "rows", "problem"),
    [
        ([0, 2, 3], [1, 2, 2], "indptr has shape"),  # one entry short for 3 items
        ([0, 2, 1, 3], [1, 2, 2], "without falling"),
        ([0, 2, 3, 4], [1, 2, 2], "without falling"),  # ends beyond the rows
        ([0, 2, 3, 3], [1, 3, 2], r"in \[0, 3\)"),
    ],
)
def test_problems_are_named(indptr, rows, problem):
    bad = ItemNeighbours(
        np.array(indptr, dtype=np.int64),
        np.array(rows, dtype=np.int32),
        np.ones(len(rows), dtype=np.float32),
    )
    assert SMALL.problem(3) is None
    assert re.search(problem, bad.problem(3) or "")


def test_config_refuses_unknown_dampening():
    with pytest.raises(ValueError, match="dampen"):
        NeighbourConfig(dampen="sqrt")


def test_packed_sort_key_agrees_with_lexsort():
    from indexer.neighbours import best_first_order

    rng = np.random.default_rng(0)
    source = rng.integers(0, 50, 5_000)
    target = rng.permutation(100_000)[:5_000]  # one entry per (source, target)
    score = (rng.integers(0, 20, 5_000) / 20).astype(np.float32)  # many ties
    expected = sorted(range(5_000), key=lambda i: (source[i], -score[i], target[i]))
    packed = best_first_order(source, score, target, 50, 100_000)
    fallback = best_first_order(source, score, target, 50, 1 << 40)  # too wide to pack
    assert packed.tolist() == expected
    assert fallback.tolist() == expected
