"""The `crossrec` command line: sub-commands are found, run, and report bad input clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clients.cli import main


def test_datagen_writes_a_shop_and_prints_what_it_planted(tmp_path, capsys):
    assert main(["datagen", "--items", "600", "--seed", "5", "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "600 items in 64 categories" in printed
    assert "Planted complement graph" in printed
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    assert truth["config"]["seed"] == 5
    assert truth["measured"]["items"] == 600


def test_datagen_refuses_a_too_small_shop(tmp_path):
    with pytest.raises(SystemExit, match="items must be >= 200"):
        main(["datagen", "--items", "10", "--out", str(tmp_path / "s")])
    assert not (tmp_path / "s").exists()


def test_validate_accepts_good_files(tmp_path, capsys):
    main(["datagen", "--items", "300", "--out", str(tmp_path / "s")])
    capsys.readouterr()
    shop = tmp_path / "s"
    assert (
        main(
            [
                "validate",
                "--catalog",
                str(shop / "catalog.parquet"),
                "--events",
                str(shop / "events.parquet"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "300 items in 64 categories" in printed
    assert "every event names a catalogue item" in printed


def test_validate_reports_a_bad_file_as_one_clear_message_not_a_traceback(tmp_path):
    bad = tmp_path / "c.csv"
    bad.write_text("item_id,title\n1,a\n")
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "validate", "--catalog", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "column 'category': required column missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_finds_events_for_unknown_items(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("item_id,title,category\nA,a,T\n")
    (tmp_path / "e.csv").write_text(
        "user_id,item_id,action,ts\nu,A,view,2026-01-01T00:00:00Z\nu,Z,view,2026-01-01T00:00:00Z\n"
    )
    code = main(
        ["validate", "--catalog", str(tmp_path / "c.csv"), "--events", str(tmp_path / "e.csv")]
    )
    assert code == 2
    assert "row 2, column 'item_id': item 'Z' is not in the catalogue" in capsys.readouterr().err


@pytest.mark.integration
def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "clients.cli", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        # A guard against a hang, not a speed target: ~2 min on a quiet 2-core box, several times
        # that beside other work (BENCHMARKS.md times the demo).
        timeout=1_800,
    )
    assert result.returncode == 0, result.stderr
    assert "Synthetic shop (seed 0): 5,000 items" in result.stdout
    assert "version v" in result.stdout
    assert "64 categories in 64 shards" in result.stdout
    assert "Nearest items in other categories" in result.stdout
    assert "adapted" in result.stdout
    assert "replayed" in result.stdout
    assert "in a planted complement of what they did" in result.stdout
    assert "engine stopped" in result.stdout
    # The ranker: trained for the demo index, serving in the engine, and evaluated.
    out = result.stdout
    assert "objective   NDCG@10  (blend)" in out
    assert "P(click) 0." in out
    assert "model ranker" not in out
    assert "engine status: index v" in out
    table = out[out.index("== 5/5") :]
    for row in ("popularity", "cooccurrence", "als", "crossrec + ranker", "crossrec (share 0.4)"):
        assert f"\n{row} " in table, row
    assert (tmp_path / "shop" / "catalog.parquet").exists()
    assert (tmp_path / "index" / "LATEST").exists()


def test_ingest_reads_times_by_the_one_rule_the_validator_and_the_build_use():
    from clients.commands import events_from_rows

    rows = [
        {"user_id": "u", "item_id": "i", "action": "view", "ts": ts}
        for ts in ("2026-01-05", "20260105T100000", "2026-W02-1T10:00", "2026-01-05T10:00:00Z")
    ]
    events, problems = events_from_rows(rows)
    assert [e.time.isoformat() for e in events] == ["2026-01-05T10:00:00+00:00"]
    assert [p.split(":")[0] for p in problems] == [
        "row 1, column 'ts'",
        "row 2, column 'ts'",
        "row 3, column 'ts'",
    ]
