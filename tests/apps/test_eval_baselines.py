"""Each baseline of ``crossrec eval`` on a tiny shop whose answer is known."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from apps.evaluation.baselines import (
    ALS,
    ContentKNN,
    CoOccurrence,
    Popularity,
    content_vectors,
    item_cosine,
)
from apps.evaluation.dataset import EvalSet, build_eval_set
from apps.evaluation.split import SplitConfig, split_events
from indexer.artifact import FORMAT, FORMAT_VERSION, file_entry
from indexer.events import ACTIONS

CUT = datetime(2026, 3, 1, tzinfo=UTC)


def _eval_set(
    items: list[str], train: list[tuple[str, str, str, float]], test: list[tuple[str, str]]
) -> EvalSet:
    """``train``: (user, item, action, days before the cut); ``test``: (user, item) clicked after
    it."""
    rows = [(u, i, a, CUT - timedelta(days=d)) for u, i, a, d in train]
    rows += [(u, i, "click", CUT + timedelta(days=1)) for u, i in test]
    events = pl.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "action": [r[2] for r in rows],
            "ts": [r[3] for r in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    ).with_columns(pl.col("action").cast(pl.Enum(ACTIONS)))
    catalog = pl.DataFrame({"item_id": items, "category": [f"c{k % 3}" for k in range(len(items))]})
    # The newest event is a day after the cut: a one-day test period puts the cut exactly at CUT.
    split = split_events(events, catalog, SplitConfig("time", test_days=1))
    assert split.cut == CUT
    return build_eval_set(split, catalog)


def _ids(data: EvalSet, lists: np.ndarray) -> list[list[str]]:
    return [[str(data.item_ids[c]) for c in row if c >= 0] for row in lists]


def test_popularity_ranks_by_decayed_action_weight_and_skips_what_the_user_touched():
    items = ["a", "b", "c", "d"]
    train = [
        ("p1", "a", "click", 1.0),  # 2 * 0.5^(1/14) = 1.90
        *[
            (f"q{n}", "b", "purchase", 70.0) for n in range(3)
        ],  # 3 * 8 * 0.5^5 = 0.75: more raw weight, older
        ("p2", "c", "view", 0.5),  # 0.98
        ("t1", "a", "view", 5.0),
        ("t2", "d", "view", 400.0),
    ]
    data = _eval_set(items, train, [("t1", "b"), ("t2", "a")])
    scores = Popularity(progress=False).item_scores(data)
    assert scores[0] == pytest.approx(2 * 0.5 ** (1 / 14) + 0.5 ** (5 / 14))
    assert scores[1] == pytest.approx(24 * 0.5**5)
    lists = _ids(data, Popularity(progress=False).recommend(data, 3))
    assert lists == [["c", "b", "d"], ["a", "c", "b"]]  # t1 touched a; t2 touched d


def test_cooccurrence_recommends_what_co_occurs_with_the_users_items():
    items = ["a", "b", "c", "d", "e"]
    train = [
        ("x1", "a", "view", 3),
        ("x1", "b", "view", 3),
        ("x2", "a", "view", 3),
        ("x2", "b", "view", 3),
        ("x2", "e", "view", 3),
        ("x3", "c", "view", 3),
        ("x3", "d", "view", 3),
        ("t", "a", "view", 2),
    ]
    data = _eval_set(items, train, [("t", "b")])
    sim = item_cosine(data.user_items("binary"), neighbours=10).toarray()
    # a: x1, x2, t; b: x1, x2 -> 2 / sqrt(3 * 2); e: x2 -> 1 / sqrt(3 * 1)
    assert sim[0, 1] == pytest.approx(2 / np.sqrt(6))
    assert sim[0, 4] == pytest.approx(1 / np.sqrt(3))
    assert sim[0, 0] == 0.0
    assert sim[0, 2] == 0.0
    # c and d never co-occur with a: not recommended at all
    assert _ids(data, CoOccurrence(progress=False).recommend(data, 4)) == [["b", "e"]]
    # keeping one neighbour per item keeps a's best (b), so e disappears
    assert _ids(data, CoOccurrence(neighbours=1, progress=False).recommend(data, 4)) == [["b"]]


def test_als_recommends_within_the_users_block():
    rng = np.random.default_rng(0)
    items = [f"i{k:02d}" for k in range(20)]  # block 0: i00-i09, block 1: i10-i19
    train = [
        (f"u{u:02d}", items[10 * (u % 2) + k], "click", 2.0)
        for u in range(60)
        for k in rng.choice(10, 5, replace=False)
    ]
    touched = {(u, i) for u, i, _, _ in train}

    def untouched(user: str, block: int) -> str:
        return next(
            items[10 * block + k] for k in range(10) if (user, items[10 * block + k]) not in touched
        )

    data = _eval_set(items, train, [("u00", untouched("u00", 0)), ("u01", untouched("u01", 1))])
    lists = ALS(factors=4, iterations=10, progress=False).recommend(data, 5)
    assert (lists >= 0).all()  # each user has 5 untouched items in their block
    assert [sorted({int(str(data.item_ids[c])[1:]) // 10 for c in row}) for row in lists] == [
        [0],
        [1],
    ]
    again = ALS(factors=4, iterations=10, progress=False).recommend(data, 5)
    assert np.array_equal(lists, again)  # seeded


def _fake_version(tmp_path, item_ids: list[str], vectors: np.ndarray, behaviour_dim: int) -> str:
    path = tmp_path / "v1"
    path.mkdir()
    np.save(path / "vectors.npy", vectors.astype(np.float32))
    pl.DataFrame({"item_id": item_ids}).write_parquet(path / "items.parquet")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": "v1",
        "items": len(item_ids),
        "dim": vectors.shape[1],
        "files": {
            "vectors": file_entry(path, path / "vectors.npy"),
            "items": file_entry(path, path / "items.parquet"),
        },
        "adaptation": {"dim": behaviour_dim, "content_dim": vectors.shape[1] - behaviour_dim},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return str(path)


def test_content_knn_uses_the_content_block_and_picks_the_nearest_vector(tmp_path):
    items = ["a", "b", "c", "d"]
    c = np.sqrt(0.2)
    e = np.sqrt(0.8)
    # content (3 columns) then behaviour (2 columns). a's content is nearest b's; its behaviour
    # block is nearest c's: a baseline that forgot to slice the behaviour off would pick c.
    vectors = np.array(
        [
            [c * 1.0, 0.0, 0.0, e * 1.0, 0.0],  # a
            [c * 0.9, c * 0.436, 0.0, 0.0, e * 1.0],  # b: content cos(a, b) = 0.9
            [0.0, c * 1.0, 0.0, e * 1.0, 0.0],  # c: content cos(a, c) = 0; behaviour = a's
            [0.0, 0.0, c * 1.0, 0.0, e * 1.0],  # d
        ]
    )
    # The index lists items in another order than the catalogue: alignment is by id.
    order = [2, 0, 3, 1]
    artifact = _fake_version(tmp_path, [items[k] for k in order], vectors[order], behaviour_dim=2)
    content, present = content_vectors(artifact, np.array([*items, "z"], dtype=object))
    assert present.tolist() == [True, True, True, True, False]
    assert content.shape == (5, 3)
    assert np.allclose(np.linalg.norm(content[:4], axis=1), 1.0, atol=1e-3)
    data = _eval_set(items, [("t", "a", "purchase", 1), ("x", "d", "view", 1)], [("t", "c")])
    assert _ids(data, ContentKNN(artifact, progress=False).recommend(data, 2)) == [["b", "c"]]
