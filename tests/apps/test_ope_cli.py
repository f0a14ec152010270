"""``crossrec ope`` end to end on the tiny built index: an engine that explores logs its lists, a
shopper model with a known click rate per item and position answers them, and the estimate for
the engine's own order covers the rate that order truly earns; a candidate the log cannot support
is refused with the reason."""

from __future__ import annotations

import json

import numpy as np
from helpers_engine import engine_config
from helpers_tiny import NOW

from engine.core import Engine
from engine.retrieval.explore import Draw
from engine.retrieval.query import Query
from engine.state.store import SQLiteEventStore, StoredEvent

THETA = 1 / np.log2(np.arange(4) + 2)  # examination by position


def appeal(item: str) -> float:
    return 0.2 + 0.05 * int(item[1:])  # i00 0.20 ... i11 0.75


def test_ope_estimates_the_engines_own_order_and_refuses_what_it_cannot_see(root, tmp_path, capsys):
    from clients.cli import main

    store = tmp_path / "events.sqlite"
    config = engine_config(store, exploration={"swap_share": 0.3, "slot_share": 0.2})
    engine = Engine(config, SQLiteEventStore(store))
    served = engine.versions.load(str(root / "v1"), model="")
    served.recommender.explore_rng = np.random.default_rng(1)  # a repeatable run
    rng = np.random.default_rng(5)
    plain = None
    for i in range(1_500):
        user = f"user{i}"
        rec = engine.recommend(user, [], Query(k=4, cross_share=None), now_us=NOW + i * 1000)
        if Draw.from_json(rec.result.exploration).kind == "none":
            plain = rec.item_ids
        key = engine.user_key(user)
        clicked = [
            item for p, item in enumerate(rec.item_ids) if rng.random() < THETA[p] * appeal(item)
        ]
        events = [
            StoredEvent(
                f"{user}-{item}", key, item, "click", NOW + i * 1000 + 9, "", rec.recommendation_id
            )
            for item in clicked
        ]
        engine.ingest(events)
    assert engine.feedback.impressions.flush()
    engine.close()
    assert plain is not None
    truth = float(np.mean([THETA[p] * appeal(item) for p, item in enumerate(plain)]))

    argv = ["ope", "--impressions", str(tmp_path / "events.impressions.sqlite")]
    argv += ["--store", str(store), "--index", str(root / "v1"), "--quiet", "--resamples", "200"]
    out_json = tmp_path / "ope.json"
    assert main([*argv, "--model", "none", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "candidate retrieval-only" in printed
    report = json.loads(out_json.read_text())
    assert report["lists"] == 1_500
    assert 0.4 * 1_500 < report["explored_lists"] < 0.6 * 1_500
    ctr = report["candidates"]["retrieval-only"]["ctr"]
    assert abs(ctr["support"]["value"] - 1.0) < 0.1  # the engine's own order: all of it loggable
    for estimate in ("ips", "snips", "dr", "pbm-ips", "pbm-snips", "pbm-dr"):
        assert ctr[estimate]["low"] <= truth <= ctr[estimate]["high"], estimate
    assert report["examination"]["source"] == "measured from the log's swapped pairs"
    assert report["examination"]["theta"][0] == 1.0
    assert set(report["logged"]) == {"ctr", "purchase_rate", "rpm"}
    # refused below the support asked for, with the reason
    assert main([*argv, "--candidate", "retrieval-only", "--min-support", "2"]) == 0
    printed = capsys.readouterr().out
    assert "refused" in printed
    assert "no overlap" in printed
    # a bad candidate is one line, exit 2
    assert main([*argv, "--candidate", "share=7"]) == 2
    assert capsys.readouterr().out.startswith("crossrec ope: candidate 'share=7'")


def test_the_defaults_of_crossrec_ope_are_pinned():
    import argparse

    from apps.ope.cli import register
    from apps.training import MIN_SWAPPED_PER_PAIR
    from ranker.train import BLOCK_ROWS

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    args = sub.choices["ope"].parse_args(["--impressions", "l", "--store", "s", "--index", "i"])
    assert (args.min_support, args.examination, args.resamples) == (0.5, "swaps", 500)
    assert args.window_hours == 24.0
    assert (MIN_SWAPPED_PER_PAIR, BLOCK_ROWS) == (1_000, 1_000_000)
