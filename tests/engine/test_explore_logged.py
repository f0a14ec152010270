"""Exploration through the engine: an exploring arm's lists reach the impression log with their
propensities and kind, the other arm's stay deterministic, and a log written before propensities
existed is upgraded in place and reads as deterministic lists."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from helpers_tiny import NOW
from test_feedback_engine import RECENT, make_engine

from apps.impression_log import read_log
from engine.core import ARM_A, ARM_B
from engine.retrieval.explore import Draw
from engine.retrieval.query import Query


def seeded(engine, seed: int = 0):
    """The engine with its exploration draws repeatable."""
    for served in engine.versions.current().values():
        if served is not None:
            served.recommender.explore_rng = np.random.default_rng(seed)
    return engine


def test_an_exploring_arm_logs_its_propensities_and_the_other_arm_does_not(tmp_path, tiny_version):
    engine = seeded(
        make_engine(
            tmp_path,
            tiny_version,
            arms=(ARM_A, ARM_B),
            split={"b_share": 0.5},
            exploration={"swap_share": 0.5, "slot_share": 0.5, "slot_from": 1, "arms": "b"},
        )
    )
    try:
        by_arm: dict[str, list] = {ARM_A: [], ARM_B: []}
        for n in range(60):
            rec = engine.recommend(f"user-{n}", RECENT, Query(k=3), now_us=NOW + n)
            by_arm[rec.arm].append(rec)
        assert engine.feedback.impressions.flush()
    finally:
        engine.close()
    assert by_arm[ARM_A]
    assert by_arm[ARM_B]
    lists, shown = read_log(tmp_path / "events.impressions.sqlite")
    kinds = dict(zip(lists["recommendation_id"], lists["exploration"], strict=True))
    for rec in by_arm[ARM_A]:
        assert kinds[rec.recommendation_id] == ""
        assert rec.result.propensities is None
    draws = [Draw.from_json(rec.result.exploration) for rec in by_arm[ARM_B]]
    # with shares summing to 1 every list of arm b that can explore does
    assert {d.kind for d in draws} == {"swap", "slot"}
    assert {(d.swap_share, d.slot_share, d.slot_from) for d in draws} == {(0.5, 0.5, 1)}
    propensity = {
        (r, p): v
        for r, p, v in shown.select("recommendation_id", "position", "propensity").iter_rows()
    }
    for rec in by_arm[ARM_B]:
        assert kinds[rec.recommendation_id] == rec.result.exploration
        for position, p in enumerate(rec.result.propensities):
            assert propensity[rec.recommendation_id, position] == pytest.approx(p)
            assert 0 < p < 1
    for rec in by_arm[ARM_A]:
        assert all(propensity[rec.recommendation_id, q] == 1.0 for q in range(len(rec.items)))


def test_a_log_of_version_one_gains_the_columns_and_reads_as_deterministic(tmp_path, tiny_version):
    path = tmp_path / "events.impressions.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE lists (recommendation_id TEXT PRIMARY KEY, user_key TEXT NOT NULL,
          ts_us INTEGER NOT NULL, arm TEXT NOT NULL, index_version TEXT NOT NULL,
          model_version TEXT NOT NULL, features TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE shown (recommendation_id TEXT NOT NULL, position INTEGER NOT NULL,
          item_id TEXT NOT NULL, category TEXT NOT NULL, cross_category INTEGER NOT NULL,
          sources TEXT NOT NULL, score REAL NOT NULL, price REAL, vector BLOB,
          PRIMARY KEY (recommendation_id, position)) WITHOUT ROWID;
        CREATE TABLE feature_lists (schema TEXT PRIMARY KEY, names TEXT NOT NULL) WITHOUT ROWID;
        INSERT INTO lists VALUES ('old', 'k', 1, 'a', 'tiny', 'retrieval-only', 's');
        INSERT INTO shown VALUES ('old', 0, 't0', 'c', 0, 'popular', 0.5, 10.0, NULL);
        """
    )
    old.close()
    lists, shown = read_log(path)  # read-only: read as it is
    assert lists["exploration"].to_list() == [""]
    assert shown["propensity"].to_list() == [1.0]
    engine = make_engine(tmp_path, tiny_version, exploration={"swap_share": 1.0})
    try:
        rec = engine.recommend("u1", RECENT, Query(k=3), now_us=NOW)
        assert engine.feedback.impressions.flush()
    finally:
        engine.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    db.close()
    lists, shown = read_log(path)
    kinds = dict(zip(lists["recommendation_id"], lists["exploration"], strict=True))
    assert kinds["old"] == ""
    assert Draw.from_json(kinds[rec.recommendation_id]).kind == "swap"
    old_rows = shown.filter(shown["recommendation_id"] == "old")
    assert old_rows["propensity"].to_list() == [1.0]


def test_crossrec_report_shows_the_cost_of_exploring_and_the_position_bias(
    tmp_path, tiny_version, capsys
):
    import json

    from clients.cli import main
    from engine.state.store import StoredEvent

    engine = seeded(
        make_engine(tmp_path, tiny_version, exploration={"swap_share": 0.5, "swap_depth": 3})
    )
    try:
        for n in range(80):
            rec = engine.recommend(f"user-{n}", RECENT, Query(k=3), now_us=NOW + n)
            # every shopper clicks what is on top
            key = engine.user_key(f"user-{n}")
            top = rec.items[0].item_id
            engine.ingest(
                [StoredEvent(f"c{n}", key, top, "click", NOW + n + 5, "", rec.recommendation_id)]
            )
        assert engine.feedback.impressions.flush()
    finally:
        engine.close()
    argv = [
        "report",
        "--impressions",
        str(tmp_path / "events.impressions.sqlite"),
        "--store",
        str(tmp_path / "events.sqlite"),
        "--by",
        "explored",
        "--position-bias",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "none" in out
    assert "swap" in out
    assert "examination vs top" in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {row["explored"] for row in report["summary"]} == {"none", "swap"}
    curve = report["position_bias"]
    assert [row["position"] for row in curve] == [0, 1, 2]
    assert curve[0]["examination"] == 1.0
    # only the top is ever clicked: whatever sits below it is examined "not at all"
    assert curve[1]["examination"] == 0.0
    # a log without swaps says how to get them
    plain = tmp_path / "plain"
    plain.mkdir()
    engine = make_engine(plain, tiny_version)
    try:
        engine.recommend("u1", RECENT, Query(k=3), now_us=NOW)
        assert engine.feedback.impressions.flush()
    finally:
        engine.close()
    argv = ["report", "--impressions", str(plain / "events.impressions.sqlite")]
    assert main([*argv, "--store", str(plain / "events.sqlite"), "--position-bias"]) == 0
    assert "set [exploration] swap_share" in capsys.readouterr().out


def test_training_on_explored_impressions_weights_clicks_by_the_measured_examination(
    root, tmp_path
):
    import dataclasses

    import numpy as np
    from helpers_engine import engine_config

    from apps.training import ImpressionJob, train_from_impressions
    from engine.core import Engine
    from engine.state.store import SQLiteEventStore, StoredEvent
    from ranker.model import RankerModel
    from ranker.row_files import read_rows

    store = tmp_path / "events.sqlite"
    config = engine_config(store, exploration={"swap_share": 0.6, "swap_depth": 4})
    engine = Engine(config, SQLiteEventStore(store))
    served = engine.versions.load(str(root / "v1"), model="")
    served.recommender.explore_rng = np.random.default_rng(1)  # a repeatable run
    rng = np.random.default_rng(0)
    ids = [f"i{i:02d}" for i in range(12)]
    theta = 1 / np.log2(np.arange(4) + 2)
    for i in range(800):
        user = f"user{i}"
        query = Query(k=4, cross_share=None, exclude_items=frozenset(rng.choice(ids, 4)))
        rec = engine.recommend(user, [], query, now_us=NOW + i * 1000)
        key, events = engine.user_key(user), []
        for p, item in enumerate(rec.item_ids):
            if rng.random() >= theta[p] * 0.5:
                continue
            for j, action in enumerate(("click", "cart", "purchase")):
                if j and rng.random() > 0.5:
                    break
                at = NOW + i * 1000 + 9 + j
                rid = rec.recommendation_id
                events.append(
                    StoredEvent(f"{user}-{item}-{action}", key, item, action, at, "", rid)
                )
        engine.ingest(events)
    assert engine.feedback.impressions.flush()
    engine.close()
    job = ImpressionJob(
        tmp_path / "events.impressions.sqlite", store, root / "v1", tmp_path / "w", 24.0
    )
    # ~160 swapped lists per pair: auto keeps the position a feature, and says why
    auto = train_from_impressions(dataclasses.replace(job, out=tmp_path / "auto"))
    assert auto["position"].startswith("feature (the log's")
    assert "auto weighs from 1,000" in auto["position"]
    report = train_from_impressions(dataclasses.replace(job, position="weights"))
    assert report["position"].startswith("weights (examination measured from")
    assert len(report["examination"]) == 4
    model = RankerModel.load(report["model"])
    assert "position" not in model.features
    weights = read_rows(report["rows"]).keys
    clicked = weights.filter(weights["click"] == 1)
    assert (clicked["weight"] >= 1.0).all()
    assert (weights.filter(weights["click"] == 0)["weight"] == 1.0).all()
    # asked for the position as a feature, it is one
    as_feature = train_from_impressions(
        dataclasses.replace(job, out=tmp_path / "f", position="feature")
    )
    assert as_feature["position"] == "feature (asked for)"
    assert RankerModel.load(as_feature["model"]).features[-1] == "position"
