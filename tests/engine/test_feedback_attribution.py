"""Attribution of outcomes to shown lists, offline (apps.online, from the impression log and the
event store) and live (engine.feedback.outcomes), on a hand-built log whose answers are worked out
below."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from apps.impression_log import read_log, read_outcome_events
from apps.online import attribute, ratio_interval, summarise
from engine.feedback.impressions import ImpressionLog
from engine.feedback.outcomes import RecentLists
from engine.feedback.shown import Impression
from engine.state.store import SQLiteEventStore, StoredEvent

WINDOW = 100
NAN = float("nan")
NAMES = ("blend", "age_days")

# (recommendation id, user, time, arm, model) -> items (id, price, cross-category, sources)
LISTS = {
    ("r1", "A", 1000, "a", "m1"): [
        ("x", 10.0, False, "popular"),
        ("y", 20.0, True, "neighbours,search"),
        ("w", NAN, True, "popular"),
    ],
    ("r2", "B", 2000, "b", "m2"): [("x", 10.0, False, "popular"), ("z", 5.0, True, "search")],
    ("r3", "", 3000, "a", "m1"): [("y", 20.0, True, "neighbours")],
}
# (user, item, action, time, recommendation id) and whether it counts.
EVENTS = [
    ("A", "x", "click", 1000, "r1"),  # counts: the list's own microsecond
    ("A", "w", "purchase", 1050, "r1"),  # counts; w's price was not known: no revenue
    ("A", "x", "click", 1060, "r1"),  # the same outcome again: once
    ("A", "y", "purchase", 1100, "r1"),  # counts: the window's last microsecond; revenue 20
    ("A", "y", "cart", 1101, "r1"),  # after the window
    ("B", "x", "click", 1010, "r1"),  # another user than the list's
    ("A", "z", "click", 1020, "r1"),  # z was not in r1
    ("B", "z", "click", 1999, "r2"),  # before the list was shown
    ("B", "z", "click", 2001, "r2"),  # counts
    ("C", "y", "click", 3005, "r3"),  # counts: r3 was shown to an anonymous request
    ("A", "x", "view", 1070, "r1"),  # not an outcome
    ("A", "x", "click", 1070, ""),  # quotes no list
]


def impressions() -> list[Impression]:
    out = []
    for (rec, user, ts, arm, model), items in LISTS.items():
        out.append(
            Impression(
                rec,
                user,
                ts,
                arm,
                "v1",
                model,
                [i[0] for i in items],
                ["cat"] * len(items),
                np.array([i[2] for i in items]),
                [tuple(i[3].split(",")) for i in items],
                np.arange(len(items), 0, -1, dtype=np.float64),
                np.array([i[1] for i in items]),
                np.array([[p + 0.5, 7.0] for p in range(len(items))], np.float32),
                NAMES,
            )
        )
    return out


@pytest.fixture
def logged(tmp_path):
    """The lists written by the impression log, the events by the store; both read back."""
    log = ImpressionLog(tmp_path / "imp.sqlite")
    for imp in impressions():
        assert log.offer(imp)
    assert log.flush()
    log.close()
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    store.append([StoredEvent(f"e{i}", *e[:4], "", e[4]) for i, e in enumerate(EVENTS)])
    store.close()
    lists, shown = read_log(tmp_path / "imp.sqlite", vectors=True)
    return lists, shown, read_outcome_events(tmp_path / "events.sqlite")


def test_attribution_counts_each_outcome_once_within_the_window_for_the_lists_user(logged):
    lists, shown, events = logged
    out = attribute(lists, shown, events, WINDOW).sort("recommendation_id", "position")
    got = {
        (r["recommendation_id"], r["item_id"]): (r["click"], r["cart"], r["purchase"], r["revenue"])
        for r in out.iter_rows(named=True)
    }
    assert got == {
        ("r1", "x"): (1, 0, 0, 0.0),
        ("r1", "y"): (0, 0, 1, 20.0),
        ("r1", "w"): (0, 0, 1, 0.0),
        ("r2", "x"): (0, 0, 0, 0.0),
        ("r2", "z"): (1, 0, 0, 0.0),
        ("r3", "y"): (1, 0, 0, 0.0),
    }
    assert out["arm"].to_list() == ["a", "a", "a", "b", "b", "a"]
    assert out["model_version"].to_list() == ["m1", "m1", "m1", "m2", "m2", "m1"]
    assert out["position"].to_list() == [0, 1, 2, 0, 1, 0]
    assert out["category"].to_list() == ["cat"] * 6
    assert out["score"].to_list() == [3.0, 2.0, 1.0, 2.0, 1.0, 1.0]
    assert out["price"].to_list()[2] is None  # logged as unknown, not NaN


def test_rates_per_arm_with_user_clustered_intervals(logged):
    out = attribute(*logged, WINDOW)
    by_arm = {r["arm"]: r for r in summarise(out, ["arm"]).iter_rows(named=True)}
    a, b = by_arm["a"], by_arm["b"]
    # Arm a: r1 (user A: 3 items; x clicked, y bought for 20, w bought at no known price) and r3
    # (anonymous: 1 item, clicked).
    assert (a["lists"], a["impressions"], a["users"]) == (2, 4, 2)
    assert (a["click"], a["cart"], a["purchase"], a["revenue"]) == (2, 0, 2, 20.0)
    # CTR, delta method over the users: y = (1, 1), n = (3, 1), r = 1/2, residuals y - r n =
    # (-1/2, 1/2), variance 1/2 (ddof 1), se = sqrt(1/2 / 2) / (4/2) = 1/4.
    assert a["ctr"] == pytest.approx(0.5)
    assert (a["ctr_low"], a["ctr_high"]) == pytest.approx((0.5 - 1.959964 / 4, 0.5 + 1.959964 / 4))
    assert (a["cart_rate"], a["purchase_rate"]) == (0.0, pytest.approx(0.5))
    # Revenue per impression: y = (20, 0), n = (3, 1), r = 5, residuals (5, -5), variance 50,
    # se = sqrt(50 / 2) / 2 = 2.5; per thousand impressions.
    assert a["rpm"] == pytest.approx(5000.0)
    assert (a["rpm_low"], a["rpm_high"]) == pytest.approx(
        ((5 - 1.959964 * 2.5) * 1000, (5 + 1.959964 * 2.5) * 1000)
    )
    # Arm b: one user, so no interval.
    assert (b["impressions"], b["click"], b["ctr"]) == (2, 1, 0.5)
    assert math.isnan(b["ctr_low"])


def test_rates_per_position_and_source(logged):
    out = attribute(*logged, WINDOW)
    by_position = {
        r["position"]: (r["impressions"], r["click"])
        for r in summarise(out, ["position"]).iter_rows(named=True)
    }
    assert by_position == {0: (3, 2), 1: (2, 1), 2: (1, 0)}
    by_source = {
        r["source"]: (r["impressions"], r["click"], r["purchase"])
        for r in summarise(out, ["source"]).iter_rows(named=True)
    }
    # An item found by two sources counts for both (r1's y: neighbours and search).
    assert by_source == {"popular": (3, 1, 1), "search": (2, 1, 1), "neighbours": (2, 1, 1)}
    cross = {
        r["cross_category"]: r["impressions"]
        for r in summarise(out, ["cross_category"]).iter_rows(named=True)
    }
    assert cross == {False: 2, True: 4}
    by_model = [
        (r["model_version"], r["impressions"])
        for r in summarise(out, ["model_version"]).iter_rows(named=True)
    ]
    assert by_model == [("m1", 4), ("m2", 2)]
    with pytest.raises(ValueError, match="unknown breakdown"):
        summarise(out, ["colour"])


def test_ratio_interval_by_hand():
    r, low, high = ratio_interval(np.array([0.0, 3.0, 1.0]), np.array([1.0, 2.0, 5.0]))
    assert r == pytest.approx(0.5)
    # Residuals y - r n = (-0.5, 2, -1.5), mean 0, sum of squares 6.5, variance 3.25 (ddof 1);
    # se = sqrt(3.25 / 3) / (8 / 3).
    se = math.sqrt(3.25 / 3) / (8 / 3)
    assert (low, high) == pytest.approx((0.5 - 1.959964 * se, 0.5 + 1.959964 * se))
    assert math.isnan(ratio_interval(np.array([1.0]), np.array([2.0]))[1])
    assert all(math.isnan(v) for v in ratio_interval(np.zeros(0), np.zeros(0)))


def test_exposure_rows_carry_the_logged_features_and_the_position(logged):
    from apps.online import exposure_rows

    rows = exposure_rows(attribute(*logged, WINDOW), "v1")
    assert rows.features == (*NAMES, "position")
    frame = rows.frame.sort("decision_ts_us", "position")
    # Each item's logged row was (position + 0.5, 7): blend first, then age_days.
    assert frame["blend"].to_list() == [0.5, 1.5, 2.5, 0.5, 1.5, 0.5]
    assert frame["age_days"].to_list() == [7.0] * 6
    assert frame["position"].to_list() == [0, 1, 2, 0, 1, 0]
    assert frame["blend_score"].to_list() == [0.5, 1.5, 2.5, 0.5, 1.5, 0.5]
    # Labels nested along the funnel: r1's purchases of y and w imply their clicks and carts.
    assert frame.select("click", "cart", "purchase").rows() == [
        (1, 0, 0),
        (1, 1, 1),
        (1, 1, 1),
        (0, 0, 0),
        (1, 0, 0),
        (1, 0, 0),
    ]
    assert frame["decision_id"].n_unique() == 3
    # With an examination curve the position is a weight on clicks, not a feature: a click at
    # position p weighs 1 / examination[p], everything else 1.
    weighted = exposure_rows(attribute(*logged, WINDOW), "v1", np.array([1.0, 0.5, 0.25]))
    assert weighted.features == tuple(NAMES)
    by_position = weighted.keys.sort("decision_ts_us", "blend_score")
    assert by_position["weight"].to_list() == [1.0, 2.0, 4.0, 1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="stops at 2 positions"):
        exposure_rows(attribute(*logged, WINDOW), "v1", np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="no logged impressions"):
        exposure_rows(attribute(*logged, WINDOW), "v9")
    mixed = attribute(*logged, WINDOW).with_columns(
        feature_names=pl.when(pl.col("recommendation_id") == "r2")
        .then(pl.lit('["blend"]'))
        .otherwise(pl.col("feature_names"))
    )
    with pytest.raises(ValueError, match="different feature lists"):
        exposure_rows(mixed, "v1")


def test_live_attribution_applies_the_same_rule():
    recent = RecentLists(WINDOW)
    events = [StoredEvent(f"e{i}", *e[:4], "", e[4]) for i, e in enumerate(EVENTS)]
    # As the engine sees them: lists when shown, events as they arrive, in time order.
    timeline = sorted(
        [(imp.ts_us, 0, imp) for imp in impressions()] + [(e.ts_us, 1, e) for e in events],
        key=lambda entry: entry[:2],
    )
    got = []
    for _, kind, what in timeline:
        if kind == 0:
            recent.add(
                what.recommendation_id,
                what.user_key,
                what.arm,
                what.model_version,
                what.ts_us,
                what.item_ids,
                what.prices,
                what.cross_category,
            )
        else:
            got += [
                (o.arm, o.model_version, o.action, o.cross_category, o.revenue)
                for o in recent.attribute([what])
            ]
    assert got == [
        ("a", "m1", "click", False, 0.0),
        ("a", "m1", "purchase", True, 0.0),  # w: no known price, no revenue
        ("a", "m1", "purchase", True, 20.0),
        ("b", "m2", "click", True, 0.0),
        ("a", "m1", "click", True, 0.0),
    ]
    # Sent again (a retry): nothing counts twice.
    assert recent.attribute(events) == []


def test_live_attribution_takes_a_batch_whole():
    """Events that do not count (no list, not an outcome, unknown list or item, too early or
    late, another user) do not stop the ones after them in the same batch."""
    recent = RecentLists(WINDOW)
    imp = impressions()[0]
    recent.add("r1", "A", "a", "m1", 1000, imp.item_ids, imp.prices, imp.cross_category)
    batch = [
        StoredEvent(f"e{i}", *e[:4], "", e[4])
        for i, e in enumerate(
            [
                ("A", "x", "view", 1001, "r1"),
                ("A", "x", "click", 1001, "nope"),
                ("B", "x", "click", 1001, "r1"),
                ("A", "q", "click", 1001, "r1"),
                ("A", "x", "click", 999, "r1"),
                ("A", "x", "click", 1000, "r1"),
                ("A", "y", "cart", 1101, "r1"),
                ("A", "y", "cart", 1100, "r1"),
            ]
        )
    ]
    assert [(o.action, o.cross_category) for o in recent.attribute(batch)] == [
        ("click", False),
        ("cart", True),
    ]


def test_live_lists_stay_for_exactly_their_window_and_are_forgotten_per_user():
    recent = RecentLists(window_us=100)
    one = (np.array([1.0]), np.array([False]))
    recent.add("r1", "A", "a", "m", 1000, ["x"], *one)
    recent.add("r2", "B", "a", "m", 1100, ["x"], *one)  # r1's window ends at 1100: kept
    assert len(recent) == 2
    recent.add("r3", "A", "a", "m", 1100, ["x"], *one)
    assert recent.forget("A") == 2
    assert len(recent) == 1
    click = StoredEvent("e", "B", "x", "click", 1150, "", "r2")
    assert [o.action for o in recent.attribute([click])] == ["click"]


def test_live_lists_are_forgotten_after_their_window_and_beyond_capacity():
    recent = RecentLists(window_us=100, capacity=2)
    one = (np.array([1.0]), np.array([False]))
    recent.add("r1", "A", "a", "m", 1000, ["x"], *one)
    recent.add("r2", "A", "a", "m", 1050, ["x"], *one)
    assert len(recent) == 2
    recent.add("r3", "A", "a", "m", 1060, ["x"], *one)  # capacity 2: r1 goes
    assert len(recent) == 2
    click = StoredEvent("e", "A", "x", "click", 1070, "", "r1")
    assert recent.attribute([click]) == []
    recent.add("r4", "A", "a", "m", 1200, ["x"], *one)  # r2 and r3 end before 1100
    assert len(recent) == 1


def test_reading_a_missing_log_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.sqlite"):
        read_log(tmp_path / "nothing.sqlite")


def test_outcome_events_are_read_with_their_actions(logged):
    events = logged[2]
    assert set(events["action"]) == {"click", "cart", "purchase"}
    assert events.height == len([e for e in EVENTS if e[4] and e[2] != "view"])
    assert isinstance(events, pl.DataFrame)


def test_crossrec_report_writes_the_table_json_and_plot(logged, tmp_path, capsys):
    from clients.cli import main

    lists_path = tmp_path / "imp.sqlite"
    store = tmp_path / "events.sqlite"
    argv = ["report", "--impressions", str(lists_path), "--store", str(store)]
    assert (
        main(
            [
                *argv,
                "--by",
                "arm",
                "--window-hours",
                str(WINDOW / 3.6e9),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "3 lists, 6 item impressions, 3 attributed clicks" in printed
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [(r["arm"], r["impressions"], r["click"]) for r in report["summary"]] == [
        ("a", 4, 2),
        ("b", 2, 1),
    ]
    assert (tmp_path / "r" / "report.png").stat().st_size > 0
    assert main([*argv, "--by", "colour"]) == 2
    assert "unknown breakdown" in capsys.readouterr().out


def test_crossrec_report_on_damaged_input_says_what_is_wrong_and_exits_2(logged, tmp_path, capsys):
    from clients.cli import main

    store = tmp_path / "events.sqlite"
    good = (tmp_path / "imp.sqlite").read_bytes()
    damaged = {
        "empty": b"",
        "garbage": b"not a database at all " * 64,
        "truncated": good[: len(good) // 3],
        "bit-flipped": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
    }
    for name, content in damaged.items():
        path = tmp_path / f"{name}.sqlite"
        path.write_bytes(content)
        code = main(["report", "--impressions", str(path), "--store", str(store)])
        out = capsys.readouterr().out
        assert code == 2, name
        assert out.startswith("crossrec report: "), name
        assert "Traceback" not in out, name
    bad_store = tmp_path / "bad-store.sqlite"
    bad_store.write_bytes(b"garbage" * 100)
    argv = ["report", "--impressions", str(tmp_path / "imp.sqlite"), "--store", str(bad_store)]
    assert main(argv) == 2
    assert "bad-store.sqlite: not a readable crossrec event store" in capsys.readouterr().out
    for hours in ("-5", "0", "nan"):
        argv = ["report", "--impressions", str(tmp_path / "imp.sqlite"), "--store", str(store)]
        assert main([*argv, "--window-hours", hours]) == 2
        assert "--window-hours must be a positive number" in capsys.readouterr().out


def test_tables_are_read_in_chunks_into_one_frame(tmp_path):
    import sqlite3

    from apps.impression_log import _frame

    db = sqlite3.connect(tmp_path / "t.sqlite")
    db.execute("CREATE TABLE t (a TEXT, b INTEGER)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(f"r{i}", i) for i in range(5)])
    schema = {"a": pl.String, "b": pl.Int64}
    whole = _frame(db, "SELECT a, b FROM t ORDER BY b", schema, chunk=2)  # 2 + 2 + 1 rows
    assert whole.to_dicts() == [{"a": f"r{i}", "b": i} for i in range(5)]
    assert whole.n_chunks() == 1
    empty = _frame(db, "SELECT a, b FROM t WHERE b > 9", schema, chunk=2)
    assert (empty.height, empty.schema) == (0, pl.Schema(schema))
    db.close()


@pytest.mark.parametrize(
    "by", [["arm", "model_version"], ["source"], ["position"], ["explored"], []]
)
def test_the_report_read_a_list_at_a_time_equals_the_report_of_the_whole_log(logged, tmp_path, by):
    from apps.online import over_time, summarise_users, timeline_users_summary
    from apps.report import read_report

    lists, shown, events = logged
    whole = attribute(lists, shown, events, WINDOW)
    users, timeline, swaps = read_report(
        tmp_path / "imp.sqlite", tmp_path / "events.sqlite", by, WINDOW, 60_000_000, 1
    )
    assert swaps is None  # not asked for
    from polars.testing import assert_frame_equal

    assert_frame_equal(summarise_users(users, by), summarise(whole, by))  # NaN equals NaN here
    assert_frame_equal(
        timeline_users_summary(timeline, ["arm"]), over_time(whole, ["arm"], 60_000_000)
    )
    assert int(timeline["lists"].sum()) == 3
