"""Training on seeded synthetic rows whose label probabilities are known (tests/helpers_ranker.py):
the model orders better than the blend and close to the truth, its probabilities nest and are
calibrated, the heads learn from their conditions, and a training run is reproducible."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_ranker import FEATURES, META, TRAINING, held_out, trained, training_rows

from ranker import OBJECTIVES, RankerError
from ranker.metrics import ranking_metrics
from ranker.model import RankerModel
from ranker.rows import TrainingRows
from ranker.split import split_by_time
from ranker.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return trained(tmp_path_factory)


def test_the_model_orders_better_than_the_blend_and_near_the_truth(fitted):
    rows, report = fitted
    x, test = held_out(rows, report)
    decisions, items = test["decision_id"].to_numpy(), test["item_id"].to_numpy()
    predicted = report.model.predict(x)
    rng = np.random.default_rng(0)
    for objective in OBJECTIVES:
        labels = test[objective].to_numpy()
        metrics = report.metrics[objective]
        model, blend = metrics["ndcg@10"]["model"], metrics["ndcg@10"]["blend"]
        truth = ranking_metrics(decisions, items, test[f"true_{objective}"].to_numpy(), labels)
        chance = ranking_metrics(decisions, items, rng.random(len(labels)), labels)
        assert model > blend + 0.1, objective
        assert model > chance["ndcg"] + 0.2, objective
        assert model > 0.9 * truth["ndcg"], objective
        assert metrics["recall@10"]["model"] > metrics["recall@10"]["blend"] + 0.1, objective
        assert metrics["auc"]["model"] > metrics["auc"]["blend"] + 0.1, objective
        # The reported figures are those of the model on the test part.
        again = ranking_metrics(decisions, items, predicted[objective], labels)
        assert again["ndcg"] == pytest.approx(model)
        assert again["recall"] == pytest.approx(metrics["recall@10"]["model"])
        assert metrics["decisions_with_positive"] == again["decisions"] > 30


def test_chained_probabilities_nest_along_the_funnel(fitted):
    rows, report = fitted
    probabilities = report.model.predict(rows.matrix())
    raw = report.model.uncalibrated(rows.matrix())
    for p in (probabilities, raw):
        assert np.all(p["purchase"] <= p["cart"])
        assert np.all(p["cart"] <= p["click"])
        assert all(np.all((p[o] >= 0) & (p[o] <= 1)) for o in OBJECTIVES)
    # Calibration moves the deeper objectives far from the raw chain's scale only if it must.
    assert np.mean(raw["purchase"]) == pytest.approx(np.mean(probabilities["purchase"]), rel=0.3)


def test_calibrated_probabilities_match_observed_and_true_rates_on_test(fitted):
    rows, report = fitted
    x, test = held_out(rows, report)
    predicted = report.model.predict(x)
    for objective in OBJECTIVES:
        calibration = report.metrics[objective]["calibration"]
        observed = test[objective].mean()
        assert calibration["observed_rate"] == pytest.approx(observed)
        assert calibration["predicted_rate"] == pytest.approx(observed, rel=0.15), objective
        assert calibration["max_relative_error"] is not None, objective
        assert calibration["max_relative_error"] < 0.4, objective
        truth = test[f"true_{objective}"].to_numpy()
        # Much nearer the true probabilities than the base rate is (which knows no row apart).
        error = np.mean(np.abs(predicted[objective] - truth))
        assert error < 0.4 * np.mean(np.abs(truth.mean() - truth)), objective
    manifest = report.model.manifest
    assert all(manifest["calibration"][o]["method"] == "isotonic" for o in OBJECTIVES)
    assert manifest["calibration"]["click"]["rows"] == report.split["valid"]["rows"]


def test_heads_learn_from_their_condition_and_stop_early(fitted):
    rows, report = fitted
    train = split_by_time(rows.frame, 0).rows(rows.frame, "train")
    heads = report.model.manifest["heads"]
    assert heads["click"]["train_rows"] == train.height
    assert heads["cart"]["train_rows"] == train["click"].sum()
    assert heads["purchase"]["train_rows"] == train["cart"].sum()
    assert heads["purchase"]["train_positives"] == train["purchase"].sum()
    assert [heads[o]["condition"] for o in OBJECTIVES] == ["all rows", "click == 1", "cart == 1"]
    for objective in OBJECTIVES:
        head = heads[objective]
        assert head["early_stopping"]
        assert 0 < head["best_iteration"] < TRAINING["max_rounds"]
        assert head["trees"] == head["best_iteration"]
        assert report.model.boosters[objective].num_trees() == head["trees"]


def test_each_head_leans_on_the_feature_that_drives_it(fitted):
    _, report = fitted
    importance = report.metrics["importance"]
    drivers = {"click": "relevance", "cart": "cart_signal", "purchase": "buy_signal"}
    for head, feature in drivers.items():
        shares = importance["heads"][head]
        assert max(shares, key=shares.get) == feature, head
        assert sum(shares.values()) == pytest.approx(1.0)
    combined = importance["combined"]
    assert combined[-1]["feature"] == "noise"
    assert sum(c["share"] for c in combined) == (pytest.approx(1.0))


def test_the_split_and_the_training_are_recorded(fitted):
    _rows, report = fitted
    manifest = json.loads((report.path / "manifest.json").read_text())
    assert report.path.name == report.version == "m1"
    assert report.split["train"]["decisions"] == 450  # 3 of the 4 hours
    assert report.split["valid"]["decisions"] + report.split["test"]["decisions"] == 150
    assert manifest["training"]["split"]["parts"] == report.split
    assert manifest["training"]["split"]["rule"].startswith("latest decision time")
    assert manifest["training"]["config"]["max_rounds"] == TRAINING["max_rounds"]
    assert manifest["training"]["lightgbm"]["deterministic"] is True
    assert manifest["trained_on"] == {**META, "decision_times": 4}
    assert manifest["metrics"] == json.loads(json.dumps(report.metrics))
    assert manifest["features"] == list(FEATURES)
    assert report.seconds > 0
    assert (report.path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert manifest["files"]["reliability_plot"]["file"] == "reliability.png"


def test_training_is_reproducible_with_the_same_seed(fitted, tmp_path):
    rows, report = fitted
    again = train_model(rows, tmp_path, TrainConfig(**TRAINING))
    x = rows.matrix()
    first, second = report.model.predict(x), again.model.predict(x)
    assert all(np.array_equal(first[o], second[o]) for o in OBJECTIVES)
    for objective in OBJECTIVES:
        assert (report.path / f"head-{objective}.txt").read_bytes() == (
            again.path / f"head-{objective}.txt"
        ).read_bytes()


def test_independent_heads_without_early_stopping_and_dropped_features(tmp_path):
    rows = training_rows(decisions=200, items=20, seed=1)
    config = TrainConfig(
        heads="independent",
        min_valid_positives=10**6,  # no head can stop early
        fallback_rounds=7,
        drop_features=("noise",),
        progress=False,
        negative_share=1.0,
    )
    report = train_model(rows, tmp_path, config)
    heads = report.model.manifest["heads"]
    assert report.model.features == ("relevance", "cart_signal", "buy_signal")
    for objective in OBJECTIVES:
        head = heads[objective]
        assert (head["given"], head["condition"]) == (None, "all rows")
        assert head["train_rows"] == report.split["train"]["rows"]
        assert not head["early_stopping"]
        assert head["trees"] == 7
        assert "7 fixed rounds" in head["note"]
    p = report.model.predict(rows.matrix(report.model.features))
    assert np.all(p["purchase"] <= p["cart"])
    assert np.all(p["cart"] <= p["click"])
    assert report.model.manifest["training"]["rows_features"] == list(FEATURES)
    with pytest.raises(ValueError, match="nonsense"):
        train_model(rows, tmp_path, TrainConfig(drop_features=("nonsense",), progress=False))


def test_a_head_without_positives_cannot_train_and_nothing_is_written(tmp_path):
    rows = training_rows(decisions=60, items=10, seed=2)
    frame = rows.frame.with_columns(purchase=rows.frame["purchase"] * 0)
    with pytest.raises(RankerError) as info:
        train_model(TrainingRows.from_frame(frame, FEATURES), tmp_path, TrainConfig(progress=False))
    assert info.value.reason == "data"
    assert "'purchase'" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_config_is_checked():
    for bad, message in (
        ({"heads": "stacked"}, "heads must be one of"),
        ({"max_rounds": 0}, "max_rounds must be at least 1, got 0"),
        ({"validation_share": 1.0}, r"validation_share must be in \(0, 1\), got 1\.0"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)


def test_negative_sampling_thins_train_negatives_only_and_calibration_undoes_it(tmp_path):
    rows = training_rows(decisions=400, items=30, seed=2)
    report = train_model(rows, tmp_path, TrainConfig(progress=False, negative_share=0.25))
    click = report.model.manifest["heads"]["click"]
    train = report.split["train"]
    negatives = train["rows"] - train["positives"]["click"]
    # Every positive stays; about a quarter of the negatives (a seeded draw) join them.
    assert click["train_positives"] == train["positives"]["click"]
    kept = click["train_rows"] - click["train_positives"]
    assert 0.2 * negatives < kept < 0.3 * negatives
    assert click["valid_rows"] == report.split["valid"]["rows"]  # valid keeps every row
    # The raw click scores are inflated by the draw; calibrated, they match the test rate.
    test = report.metrics["click"]["calibration"]
    assert test["predicted_rate"] == pytest.approx(test["observed_rate"], rel=0.25)
    raw = report.model.uncalibrated(rows.matrix(report.model.features))["click"]
    assert raw.mean() > 1.5 * test["observed_rate"]


def test_the_base_margin_is_the_logistic_fit_of_its_feature_by_hand():
    from ranker.heads import fit_logistic

    # value 0: 1 positive in 4 -> 0.25; value 1: 3 in 4 -> 0.75. The exact fit: intercept
    # logit(.25) = -ln 3, coefficient logit(.75) - logit(.25) = 2 ln 3.
    values = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32)
    labels = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    coef, intercept = fit_logistic(values, labels)
    assert coef == pytest.approx(2 * np.log(3), rel=1e-3)
    assert intercept == pytest.approx(-np.log(3), rel=1e-3)


def test_heads_boost_from_the_base_feature_and_contributions_add_up(tmp_path):
    rows = training_rows(decisions=300, items=20, seed=3)
    config = TrainConfig(progress=False, base_feature="relevance", negative_share=1.0)
    report = train_model(rows, tmp_path, config)
    click = report.model.manifest["heads"]["click"]
    assert click["base"]["feature"] == "relevance"
    assert click["base"]["coef"] > 0.5
    assert report.model.manifest["heads"]["cart"]["base"] is None  # conditional heads: none
    x = rows.matrix(report.model.features)[:50]
    raw = report.model.uncalibrated(x)["click"]
    contributions = report.model.contributions(x, "click")
    # A row's contributions (base included) sum to its log-odds.
    assert contributions.sum(axis=1) == pytest.approx(np.log(raw / (1 - raw)), rel=1e-6)
    j = report.model.features.index("relevance")
    assert np.corrcoef(contributions[:, j], x[:, j])[0, 1] > 0.9


def test_a_lambdarank_first_head_orders_decisions_and_is_calibrated(tmp_path):
    rows = training_rows(decisions=400, items=20, seed=4)
    config = TrainConfig(progress=False, first_objective="lambdarank", negative_share=1.0)
    report = train_model(rows, tmp_path, config)
    heads = report.model.manifest["heads"]
    assert heads["click"]["objective"] == "lambdarank"
    assert heads["cart"]["objective"] == "binary"
    click = report.metrics["click"]
    assert click["ndcg@10"]["model"] > click["ndcg@10"]["blend"] + 0.1
    # Calibration turns the ranking scores into probabilities near the test rate.
    calibration = click["calibration"]
    assert calibration["predicted_rate"] == pytest.approx(calibration["observed_rate"], rel=0.3)
    loaded = RankerModel.load(report.path)
    x = rows.matrix(loaded.features)[:40]
    assert loaded.predict(x)["click"] == pytest.approx(report.model.predict(x)["click"])


def test_row_weights_reach_the_head_over_every_candidate_and_need_a_pointwise_one():
    from ranker.heads import HeadSpec, train_head

    rng = np.random.default_rng(4)
    n = 4_000
    x = rng.random((n, 1)).astype(np.float32)  # a feature that says nothing
    click = (rng.random(n) < 0.1).astype(np.int8)
    labels = {"click": click, "cart": click * 0, "purchase": click * 0}
    masks = {"train": np.arange(n) < 3_000, "valid": np.arange(n) >= 3_000}
    masks["test"] = ~masks["train"] & ~masks["valid"]
    decisions = np.arange(n) // 10
    config = TrainConfig(first_objective="binary", negative_share=1.0, progress=False)
    weights = np.where(click == 1, 5.0, 1.0)  # every click as if seen a fifth of the time

    def mean_prediction(w) -> float:
        head = train_head(HeadSpec("click"), x, labels, masks, ["f"], config, decisions, w)
        return float(head.booster.predict(x[:200], raw_score=False).mean())

    base = click[masks["train"]].mean()
    # LightGBM fits the weighted click rate: 5p / (5p + 1 - p), not p
    assert mean_prediction(None) == pytest.approx(base, abs=0.03)
    assert mean_prediction(weights) == pytest.approx(5 * base / (5 * base + 1 - base), abs=0.05)
    with pytest.raises(ValueError, match="first_objective 'binary'"):
        train_head(
            HeadSpec("click"),
            x,
            labels,
            masks,
            ["f"],
            TrainConfig(progress=False),
            decisions,
            weights,
        )
