"""``crossrec eval`` end to end on the small synthetic shop (index built without the text model)."""

from __future__ import annotations

import json

import pytest

from clients.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def evaluated(small_shop_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = [
        "eval",
        "--catalog",
        str(small_shop_dir / "catalog.parquet"),
        "--events",
        str(small_shop_dir / "events.parquet"),
        "--out",
        str(out),
        "--no-text",
        "--users",
        "200",
        "--bootstrap",
        "200",
        "--crossrec-shares",
        "1.0,0.5",
        "--json",
        str(out / "eval.json"),
        "--png",
        str(out / "eval.png"),
        "--no-progress",
    ]
    assert main(argv) == 0
    return out, json.loads((out / "eval.json").read_text()), argv


def test_every_method_is_scored_with_sane_figures(evaluated, capsys):
    out, result, _ = evaluated
    methods = result["methods"]
    assert list(methods) == [
        "popularity",
        "cooccurrence",
        "content",
        "als",
        "ease",
        "itemknn",
        "crossrec (share 1.0)",
        "crossrec (share 0.5)",
    ]
    split = result["split"]
    assert split["test_users"] == 200
    assert split["positives"] >= 200
    assert 0.0 < split["cross_category_share"] < 1.0
    n_items = 2_000
    # a random list of 10 unseen items finds about 10 / n_items of a user's positives
    random_recall = 10 / n_items
    assert methods["popularity"]["metrics"]["@10"]["recall"]["mean"] > random_recall
    assert methods["cooccurrence"]["metrics"]["@10"]["recall"]["mean"] > 5 * random_recall
    for name, r in methods.items():
        for k in ("@10", "@100"):
            m = r["metrics"][k]
            for metric in ("recall", "cross_recall", "ndcg", "hit_rate"):
                iv = m[metric]
                assert 0.0 <= iv["low"] <= iv["mean"] <= iv["high"] <= 1.0, (name, k, metric)
            assert 0.0 < m["coverage"] <= 1.0
        assert r["metrics"]["@100"]["recall"]["mean"] >= r["metrics"]["@10"]["recall"]["mean"]
        assert 0 < r["mean_list_length"] <= 100
    # the share reaches the engine: all ten slots cross-category find more cross-category positives
    at10 = {
        name: methods[name]["metrics"]["@10"]
        for name in ("crossrec (share 1.0)", "crossrec (share 0.5)")
    }
    assert (
        at10["crossrec (share 1.0)"]["cross_recall"]["mean"]
        > at10["crossrec (share 0.5)"]["cross_recall"]["mean"]
    )
    # every crossrec row against every baseline, paired on the same users at the smallest cut-off
    paired = result["paired"]
    assert set(paired) == {"crossrec (share 1.0)", "crossrec (share 0.5)"}
    tail_users = methods["popularity"]["tail"]["users"]
    for against in paired.values():
        assert against["k"] == 10
        assert set(against) == {"k", "recall", "ndcg", "tail_recall", "tail_ndcg", "cross_recall"}
        cross_users = result["split"]["users_with_cross_category_positive"]
        for metric in ("recall", "ndcg", "tail_recall", "tail_ndcg", "cross_recall"):
            assert set(against[metric]) == set(list(methods)[:6])
            for d in against[metric].values():
                # the tail view pairs the users with a positive beyond the head, as its table;
                # cross-category recall those with a cross-category positive
                n = {"tail_recall": tail_users, "tail_ndcg": tail_users}.get(metric, 200)
                assert d["n"] == (cross_users if metric == "cross_recall" else n)
                assert d["low"] <= d["mean"] <= d["high"]
    # the strong baselines chose their settings on the training data and say what they chose
    assert methods["ease"]["chosen"]["lambda"] in (2.0, 10.0, 50.0, 200.0, 1000.0, 5000.0)
    assert methods["itemknn"]["chosen"]["weighting"] in ("binary", "bm25")
    # the tail view: the 1% most popular items (20 of 2,000) out of lists and positives
    assert result["head"] == {"share": 0.01, "items": 20}
    for name, r in methods.items():
        tail = r["tail"]
        assert 0 < tail["users"] <= 200
        assert 0.0 <= tail["@10"]["recall"]["mean"] <= 1.0, name
    assert result["index"]["built"] is True
    assert (out / "train_events.parquet").is_file()
    assert (out / "split.json").is_file()
    assert (out / "eval.png").stat().st_size > 10_000


def test_table_is_printed(evaluated, capsys):
    # the module fixture printed on its first use; rerun only the cheap methods to see the output
    _, _, argv = evaluated
    argv = [a for a in argv if a not in ("--json", "--png")]
    argv = [
        *argv[: argv.index("--crossrec-shares")],
        "--methods",
        "popularity,content",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test users" in printed
    assert "Recall@10 [95% CI]" in printed
    assert "tail R@10 [95% CI]" in printed
    assert "popularity" in printed
    assert "content" in printed
    assert "reused" in printed  # same training split, same settings: the index is not rebuilt


def test_a_running_engine_over_grpc_scores_the_same_as_the_in_process_one(evaluated, tmp_path):
    from helpers_engine import engine_config

    from engine.api.server import BackgroundServer

    _, result, argv = evaluated
    config = engine_config(tmp_path / "events.sqlite", result["index"]["path"])
    remote_json = tmp_path / "remote.json"
    base = argv[: argv.index("--crossrec-shares")]
    with BackgroundServer(config) as server:
        remote = [
            *base,
            "--methods",
            "crossrec",
            "--cross-share",
            "0.5",
            "--target",
            server.target,
            "--json",
            str(remote_json),
            "--no-progress",
        ]
        assert main(remote) == 0
        users, events = server.engine.store.counts()
        assert users == result["split"]["test_users"]
        assert events > users
        # a rerun ingests the same events again: acknowledged as duplicates, nothing stored twice
        assert main(remote) == 0
        assert server.engine.store.counts() == (users, events)
    over_grpc = json.loads(remote_json.read_text())
    assert over_grpc["index"] is None  # nothing built: the engine serves its own index
    assert (
        over_grpc["methods"]["crossrec (share 0.5)"]["metrics"]
        == result["methods"]["crossrec (share 0.5)"]["metrics"]
    )


def test_a_run_that_tunes_trains_its_ranker_on_the_tuned_engine(tmp_path):
    from apps.evaluation.run import EvalConfig, ranker_setup

    base = tmp_path / "engine.toml"
    tuned = tmp_path / "tuned.toml"
    both = EvalConfig(None, None, tmp_path, engine_config=base, tune=True, train_ranker=True)
    assert ranker_setup(both, tuned) == (tuned, "tuned + ranker")
    # not tuned, or a model trained elsewhere: the evaluated configuration, the plain label
    assert ranker_setup(both, None) == (base, "+ ranker")
    given = EvalConfig(None, None, tmp_path, engine_config=base, tune=True)
    assert ranker_setup(given, tuned) == (base, "+ ranker")


def test_the_ranker_is_chosen_on_its_own_held_out_decisions_under_the_served_weights(tmp_path):
    from apps.evaluation.run import ranker_choice

    up = {"mean": 0.02, "low": 0.01, "high": 0.03}
    down = {"mean": -0.01, "low": -0.02, "high": 0.0}
    training = {
        "metrics": {"k": 10, "click": {"ndcg_gain@10": up}, "purchase": {"ndcg_gain@10": down}}
    }
    assert ranker_choice(training, None)["helps"] is True  # the engine serves click by default
    served = tmp_path / "engine.toml"
    served.write_text("[ranker]\nobjective_click = 0.0\nobjective_purchase = 1.0\n")
    choice = ranker_choice(training, served)
    assert choice["helps"] is False
    assert choice["row"] == "without the ranker"
    assert choice["why"].startswith("purchase NDCG@10 -0.0100")
    assert ranker_choice(training, None, "tuned + ranker")["row"] == "tuned + ranker"
