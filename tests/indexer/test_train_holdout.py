"""``crossrec train`` on a log without a usable clock: the mode is chosen from the data and the
rows come from a per-user holdout (engine.replay.replay_holdout)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from apps.training import MODES, training_mode
from ranker.row_files import read_rows


def _events(stamps: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u"] * len(stamps),
            "item_id": ["i"] * len(stamps),
            "action": ["view"] * len(stamps),
            "ts": [1_767_225_600_000_000 + s * 86_400_000_000 for s in stamps],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_the_mode_follows_the_clock_unless_asked():
    assert MODES == ("auto", "time", "holdout")
    assert training_mode("auto", _events([0, 3, 9]))[0] == "time"
    mode, why = training_mode("auto", _events([0, 0, 0]))
    assert mode == "holdout"
    assert "under 7 days" in why
    assert training_mode("holdout", _events([0, 3, 9])) == ("holdout", "asked for")
    with pytest.raises(ValueError, match="mode must be one of"):
        training_mode("sometimes", _events([0]))


@pytest.fixture(scope="module")
def basket_shop(tmp_path_factory):
    from indexer.build import BuildConfig, build_index
    from indexer.datagen.families import family_config
    from indexer.datagen.shop import generate_shop, write_shop

    root = tmp_path_factory.mktemp("baskets")
    shop = write_shop(generate_shop(family_config("baskets", items=1_000, seed=2)), root / "shop")
    report = build_index(
        shop / "catalog.parquet",
        root / "index",
        shop / "events.parquet",
        BuildConfig(text=False, progress=False),
    )
    return shop, report.path


@pytest.mark.integration
def test_train_on_a_basket_log_takes_the_holdout_mode_and_trains_a_model(basket_shop, tmp_path):
    from clients.cli import main

    shop, index = basket_shop
    argv = ["train", "--catalog", str(shop / "catalog.parquet"), "--events"]
    argv += [str(shop / "events.parquet"), "--index", str(index), "--out", str(tmp_path)]
    argv += ["--users", "300", "--quiet", "--json", str(tmp_path / "report.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mode"] == "holdout"
    assert "under 7 days" in report["mode_why"]
    assert report["decisions"] > 50
    assert report["holdout_share"] == 0.2
    rows = read_rows(report["rows"]).keys
    assert rows["click"].sum() > 0
    assert rows["decision_ts_us"].n_unique() == 1
    assert (tmp_path / "models" / "LATEST").is_file()
