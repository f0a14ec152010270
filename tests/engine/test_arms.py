"""A/B arms on the hand-built tiny version: sticky, balanced, redrawn by the salt, and named with
their versions in every response (in process and over gRPC)."""

from __future__ import annotations

import pytest
from helpers_engine import engine_config
from helpers_tiny import NOW, settings
from test_feedback_engine import RECENT, log_rows, make_engine

from engine.core import ARM_A, ARM_B, Served
from engine.retrieval.query import Query
from engine.retrieval.recommend import Recommender


@pytest.fixture
def engine(tmp_path, tiny_version):
    """One arm serving the tiny version (as in test_feedback_engine.py)."""
    e = make_engine(tmp_path, tiny_version)
    yield e
    e.close()


def test_arms_are_sticky_balanced_and_redrawn_by_the_salt(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version, arms=(ARM_A, ARM_B), split={"b_share": 0.3})
    users = [f"user{i}" for i in range(4000)]
    arms = [engine.route(u).arm for u in users]
    share = arms.count(ARM_B) / len(users)
    assert 0.27 < share < 0.33  # binomial sd 0.007
    assert [engine.route(u).arm for u in users] == arms
    engine.close()
    again = make_engine(
        tmp_path / "again", tiny_version, arms=(ARM_A, ARM_B), split={"b_share": 0.3}
    )
    again.pseudonyms = engine.pseudonyms  # same pseudonym key: the same users, the same arms
    assert [again.route(u).arm for u in users] == arms
    again.close()
    salted = make_engine(
        tmp_path / "salted", tiny_version, arms=(ARM_A, ARM_B), split={"b_share": 0.3, "salt": "x2"}
    )
    salted.pseudonyms = engine.pseudonyms
    moved = sum(a != salted.route(u).arm for u, a in zip(users, arms))
    assert 0.35 < moved / len(users) < 0.49  # independent draws differ 2 x 0.3 x 0.7 = 42%
    salted.close()


def test_one_arm_answers_everyone_without_a_split(engine):
    assert {engine.route(f"u{i}").arm for i in range(200)} == {ARM_A}
    assert engine.versions.share(ARM_A) == 1.0


def test_a_response_names_its_arm_and_the_arms_versions(tmp_path, tiny_version):
    engine = make_engine(tmp_path, tiny_version, arms=(ARM_A,))
    other = Recommender(tiny_version, settings())
    other.ranker.model_version = "blend-b"  # a distinguishable pair for arm b
    engine.versions.swap_in(Served(tiny_version, other, 0.0), ARM_B)
    seen = {}
    for i in range(60):
        rec = engine.recommend(f"u{i}", RECENT, Query(k=2), now_us=NOW)
        assert rec.arm == engine.route(f"u{i}").arm
        seen[rec.arm] = rec.model_version
    assert seen == {ARM_A: "retrieval-only", ARM_B: "blend-b"}
    assert engine.feedback.impressions.flush()
    lists, _ = log_rows(tmp_path / "events.impressions.sqlite")
    assert {(r[3], r[5]) for r in lists} == {(ARM_A, "retrieval-only"), (ARM_B, "blend-b")}
    status = engine.status()["arms"]
    assert [(a["arm"], a["model_version"], a["share"]) for a in status] == [
        (ARM_A, "retrieval-only", 0.5),
        (ARM_B, "blend-b", 0.5),
    ]
    engine.close()


def test_over_grpc_each_response_names_its_arm_and_that_arms_versions(root, tiny_built, tmp_path):
    from clients.sdk import CrossrecClient, Event
    from engine.api.server import BackgroundServer
    from indexer.build import BuildConfig, build_index

    catalog = tiny_built.parent / "catalog.parquet"
    build_index(catalog, root, None, BuildConfig(text=False, progress=False, version="v2"))
    config = engine_config(
        tmp_path / "events.sqlite",
        root / "v1",
        arms={"b_artifact": str(root / "v2"), "b_share": 0.5},
    )
    with BackgroundServer(config) as srv, CrossrecClient(srv.target, timeout=10) as client:
        versions = {}
        for i in range(40):
            rec = client.recommend(f"user{i}", k=2)
            assert rec.arm == srv.engine.route(f"user{i}").arm
            versions.setdefault(rec.arm, set()).add(rec.index_version)
        status = client.status()
        result = client.ingest([Event("user1", "i00", "view"), Event("user1", "nope", "view")])
        assert (result.accepted, result.unknown_items) == (2, 1)
    assert versions == {"a": {"v1"}, "b": {"v2"}}
    assert status.arms == {"a": ("v1", "retrieval-only", 0.5), "b": ("v2", "retrieval-only", 0.5)}
