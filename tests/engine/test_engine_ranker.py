"""The ranker in the engine: the objective blend by hand, index + model loaded as one unit, refusals
that keep the old pair serving, objective scores and contributions in responses, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers_engine import engine_config

from engine.core import Engine
from engine.errors import ModelMismatch
from engine.retrieval.features import FEATURES
from engine.retrieval.query import Query
from engine.retrieval.ranking import ModelRanker, normalised_weights
from engine.state.profile import ProfileEvent
from engine.state.store import SQLiteEventStore


class FixedModel:
    """Probabilities given per row; records which objectives each call asked for."""

    version = "fixed"
    features = FEATURES

    def __init__(self, probabilities: dict[str, list[float]]) -> None:
        self.p = {o: np.array(v) for o, v in probabilities.items()}
        self.asked: list = []

    def predict(self, features, objectives=None):
        self.asked.append(None if objectives is None else sorted(objectives))
        return {o: v[: len(features)] for o, v in self.p.items()}

    def contributions(self, features, objective):
        out = np.zeros((len(features), len(FEATURES) + 1))
        out[:, FEATURES.index("blend")] = {"click": 1.0, "cart": 2.0, "purchase": 4.0}[objective]
        return out


P = {"click": [0.4, 0.2, 0.3], "cart": [0.1, 0.2, 0.05], "purchase": [0.05, 0.1, 0.0]}


def test_the_blend_weighs_calibrated_probabilities_and_prices_by_hand():
    model = FixedModel(P)
    ranker = ModelRanker(model, {"click": 1.0, "cart": 0.0, "purchase": 0.0})
    x = np.zeros((3, len(FEATURES)), np.float32)
    prices = np.array([10.0, np.nan, 100.0])
    assert ranker.rank(x, prices, Query(k=3)).tolist() == pytest.approx([0.4, 0.2, 0.3])
    assert model.asked[-1] == ["click"]  # the default blend needs the click head only
    weighted = Query(k=3, objective_weights=(("click", 1.0), ("purchase", 3.0)))
    # (p_click + 3 p_purchase) / 4
    assert ranker.rank(x, prices, weighted) == pytest.approx([0.1375, 0.125, 0.075])
    assert model.asked[-1] == ["click", "purchase"]
    revenue = Query(k=3, objective_weights=(("purchase", 1.0),), weight_by_price=True)
    # Expected revenue; no price scores 0.
    assert ranker.rank(x, prices, revenue) == pytest.approx([0.5, 0.0, 0.0])
    assert ranker.objectives(x) == {o: pytest.approx(v) for o, v in P.items()}
    # Contributions: the objectives' log-odds contributions, weighted like the blend.
    c = ranker.contributions(x, weighted)
    assert c.shape == (3, len(FEATURES))
    assert c[0, FEATURES.index("blend")] == pytest.approx(3.25)


def test_weights_are_normalised_and_bad_ones_refused():
    assert normalised_weights({"click": 1, "cart": 3, "purchase": 0}) == {
        "click": 0.25,
        "cart": 0.75,
    }
    with pytest.raises(ValueError, match="unknown objectives"):
        normalised_weights({"views": 1.0})
    with pytest.raises(ValueError, match="positive weight"):
        normalised_weights({"click": 0.0})


def test_a_model_needing_features_the_engine_lacks_is_refused():
    model = FixedModel(P)
    model.features = (*FEATURES, "moon_phase")
    with pytest.raises(ValueError, match=r"needs features \['moon_phase'\]"):
        ModelRanker(model, {"click": 1.0})


class InputModel:
    """Returns, as P(click), the input column named ``read``; records each input matrix."""

    version = "exposure"

    def __init__(self, features: tuple[str, ...], read: str) -> None:
        self.features = features
        self.read = features.index(read)
        self.inputs: list[np.ndarray] = []

    def predict(self, x, objectives=None):
        self.inputs.append(x.copy())
        return {"click": x[:, self.read].astype(np.float64)}

    def contributions(self, x, objective):
        out = np.zeros((len(x), len(self.features) + 1))
        out[:, : len(self.features)] = x
        return out


def test_a_model_trained_with_positions_scores_every_candidate_at_the_top_position():
    features = ("age_days", "position", "blend")
    model = InputModel(features, "blend")
    ranker = ModelRanker(model, {"click": 1.0})
    x = np.zeros((2, len(FEATURES)), np.float32)
    x[:, FEATURES.index("blend")] = [0.7, 0.2]
    x[:, FEATURES.index("age_days")] = [3.0, 9.0]
    assert ranker.rank(x, np.ones(2), Query(k=2)).tolist() == pytest.approx([0.7, 0.2])
    # The model's input: its own column order, the position neutral (0, the top) for all.
    np.testing.assert_array_equal(
        model.inputs[-1], np.array([[3.0, 0.0, 0.7], [9.0, 0.0, 0.2]], np.float32)
    )
    # Contributions land on the engine's columns; the position has none to land on.
    c = ranker.contributions(x, Query(k=2))
    assert c[:, FEATURES.index("age_days")].tolist() == [3.0, 9.0]
    assert c[:, FEATURES.index("blend")].tolist() == pytest.approx([0.7, 0.2])
    assert np.count_nonzero(c) == 4


def rows_for_engine(seed: int = 0, decisions: int = 300, items: int = 12) -> pl.DataFrame:
    """Engine-shaped training rows: clicks follow popularity_share, carts cart_rate."""
    rng = np.random.default_rng(seed)
    n = decisions * items
    x = {f: rng.random(n).astype(np.float32) for f in FEATURES}
    click = rng.random(n) < 0.05 + 0.5 * x["popularity_share"]
    cart = click & (rng.random(n) < x["cart_rate"])
    purchase = cart & (rng.random(n) < 0.5)
    decision = np.repeat(np.arange(decisions), items)
    return pl.DataFrame(
        {
            "decision_id": decision,
            "decision_ts_us": 1_700_000_000_000_000 + (decision >= decisions // 2) * 86_400_000_000,
            "item_id": [f"i{i % items:02d}" for i in range(n)],
            "price": rng.uniform(1, 50, n),
            "blend_score": rng.random(n),
            "click": click,
            "cart": cart,
            "purchase": purchase,
            **x,
        }
    )


@pytest.fixture(scope="module")
def models(tiny_built, tmp_path_factory):
    """Models for the tiny built index (v1): one paired with it, one paired with another version,
    one trained on a feature this engine does not compute."""
    from ranker.config import TrainConfig
    from ranker.rows import TrainingRows
    from ranker.train import train_model

    root = tmp_path_factory.mktemp("models")
    config = dict(progress=False, max_rounds=20, min_data_in_leaf=5, negative_share=1.0)
    rows = rows_for_engine()
    alien = rows.rename({FEATURES[-1]: "moon_phase"})
    alien_features = (*FEATURES[:-1], "moon_phase")
    out = {}
    for name, index_version, frame, features in (
        ("good", "v1", rows, FEATURES),
        ("other", "v0", rows, FEATURES),
        ("alien", "v1", alien, alien_features),
    ):
        out[name] = train_model(
            TrainingRows.from_frame(frame, features),
            root / name,
            TrainConfig(version=name, **config),
            meta={"index_version": index_version},
        ).path
    return out


@pytest.fixture
def engine(tmp_path):
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    e = Engine(engine_config(tmp_path / "events.sqlite"), store)
    yield e
    e.close()


RECENT = [ProfileEvent("i01", "purchase", 1_700_000_000_000_000)]
NOW_US = 1_700_000_000_000_000 + 3 * 86_400_000_000


def test_index_and_model_load_as_one_unit_and_answer_with_objective_scores(
    engine, tiny_built, models
):
    served = engine.versions.load(str(tiny_built), str(models["good"]))
    assert (served.version.version, served.model_version) == ("v1", "good")
    query = Query(k=4, cross_share=None)
    rec = engine.recommend("", RECENT, query, explain_items=True, now_us=NOW_US)
    assert rec.model_version == "good"
    assert len(rec.items) == 4
    scores = [i.score for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    for item in rec.items:
        p = item.objective_scores
        assert set(p) == {"click", "cart", "purchase"}
        assert 0 <= p["purchase"] <= p["cart"] <= p["click"] <= 1
        assert item.score == pytest.approx(p["click"])  # the default blend: click only
        names = [c[0] for c in item.explanation.contributions]
        assert len(names) == 3
        assert set(names) <= set(FEATURES)
        magnitudes = [abs(c[2]) for c in item.explanation.contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
    # Deterministic: the same request at the same time, the same list and scores (a later time
    # moves the recency features).
    again = engine.recommend("", RECENT, query, explain_items=True, now_us=NOW_US)
    assert [(i.item_id, i.score) for i in again.items] == [(i.item_id, i.score) for i in rec.items]


def test_a_model_for_another_index_or_features_is_refused_and_the_pair_keeps_serving(
    engine, tiny_built, models
):
    engine.versions.load(str(tiny_built), str(models["good"]))
    with pytest.raises(ModelMismatch, match="trained for index version 'v0', not 'v1'"):
        engine.versions.load(str(tiny_built), str(models["other"]))
    assert engine.served.model_version == "good"
    with pytest.raises(ModelMismatch, match=r"needs features \['moon_phase'\]"):
        engine.versions.load(str(tiny_built), str(models["alien"]))
    assert engine.served.model_version == "good"
    assert engine.recommend("", RECENT, Query(k=2)).model_version == "good"
    # A damaged model file is refused the same way (the model reader's checksum).
    from ranker.errors import RankerError

    head = next(models["good"].glob("head-click.txt"))
    original = head.read_bytes()
    try:
        head.write_bytes(original.replace(b"Tree=0", b"Tree=9", 1))
        with pytest.raises(RankerError, match="sha256"):
            engine.versions.load(str(tiny_built), str(models["good"]))
    finally:
        head.write_bytes(original)
    assert engine.served.model_version == "good"


def test_responses_carry_objective_scores_and_contributions(engine, tiny_built, models):
    from crossrec.v1 import recommend_pb2
    from engine.api.responses import to_response

    engine.versions.load(str(tiny_built), str(models["good"]))
    rec = engine.recommend("", RECENT, Query(k=2, cross_share=None), explain_items=True)
    message = to_response(rec)
    first, item = message.items[0], rec.items[0]
    assert message.model_version == "good"
    assert {s.objective: s.score for s in first.objective_scores} == {
        recommend_pb2.OBJECTIVE_CLICK: pytest.approx(item.objective_scores["click"]),
        recommend_pb2.OBJECTIVE_CART: pytest.approx(item.objective_scores["cart"]),
        recommend_pb2.OBJECTIVE_PURCHASE: pytest.approx(item.objective_scores["purchase"]),
    }
    assert [(c.feature, c.contribution) for c in first.explanation.contributions] == [
        (name, pytest.approx(value)) for name, _, value in item.explanation.contributions
    ]


@pytest.mark.integration
def test_over_grpc_objective_weights_steer_the_order_and_bad_ones_are_field_violations(
    tiny_built, models, tmp_path
):
    from datetime import UTC, datetime

    from clients.sdk import CrossrecClient, CrossrecError, Event
    from engine.api.server import BackgroundServer

    config = engine_config(
        tmp_path / "events.sqlite", tiny_built, arms={"model": str(models["good"])}
    )
    recent = [Event("", "i01", "purchase", datetime.now(UTC))]
    with BackgroundServer(config) as server, CrossrecClient(server.target, timeout=10) as client:
        rec = client.recommend(recent_events=recent, k=5, explain=True)
        assert rec.model_version == "good"
        assert rec.index_version == "v1"
        for item in rec.items:
            assert set(item.objective_scores) == {"click", "cart", "purchase"}
            assert item.score == pytest.approx(item.objective_scores["click"])
            assert len(item.explanation["contributions"]) == 3
        by_purchase = client.recommend(
            recent_events=recent, k=5, objective_weights={"purchase": 2.0}
        )
        for item in by_purchase.items:
            assert item.score == pytest.approx(item.objective_scores["purchase"])
        with pytest.raises(CrossrecError) as caught:
            client.recommend(recent_events=recent, k=5, objective_weights={"cart": 0.0})
        assert caught.value.code == "INVALID_ARGUMENT"
        assert caught.value.field_violations == {
            "objective_weights": "all weights are 0: give at least one positive weight"
        }
