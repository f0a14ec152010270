"""crossrec as a method of ``crossrec eval``: one request per K, shares, and the common
post-filter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import polars as pl
import pytest

from apps.evaluation import run as run_module
from apps.evaluation.methods import ENGINE_DEFAULT, parse_share, share_label
from apps.evaluation.run import EvalConfig, evaluate
from apps.evaluation.split import SplitConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeSession:
    """Answers like an engine whose k=10 list is not the first 10 of its k=100 list."""

    target: str = ""
    progress: bool = False
    setup_seconds: float = 0.0
    asked: list[tuple[str, int, object]] = field(default_factory=list)

    def start(self, data) -> None:
        pass

    def recommend(self, user_id: str, k: int, share) -> list[str]:
        self.asked.append((user_id, k, share))
        if k == 10:  # the positive first, behind an item the user touched and an unknown id
            return ["i0", "nope", "i9"]
        return [f"i{n}" for n in range(10, 19)] + ["i0"]

    def close(self) -> None:
        pass


@pytest.fixture
def tiny_shop(tmp_path):
    pl.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(20)],
            "title": ["t"] * 20,
            "category": [f"c{n % 4}" for n in range(20)],
        }
    ).write_parquet(tmp_path / "catalog.parquet")
    pl.DataFrame(
        {
            "user_id": ["u", "u"],
            "item_id": ["i0", "i9"],
            "action": ["view", "click"],
            "ts": [T0, T0 + timedelta(days=20)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    ).write_parquet(tmp_path / "events.parquet")
    return tmp_path


def tiny_config(shop, **changes) -> EvalConfig:
    """crossrec alone on the tiny shop, its last 10 days the test period."""
    return EvalConfig(
        shop / "catalog.parquet",
        shop / "events.parquet",
        shop / "out",
        split=SplitConfig("time", test_days=10),
        methods=("crossrec",),
        bootstrap=0,
        progress=False,
        **changes,
    )


def test_crossrec_is_asked_once_per_cutoff_and_its_lists_are_filtered_like_the_baselines(
    tiny_shop, monkeypatch
):
    # u views i0 on day 0 and clicks i9 on day 20: with a 10-day test period, i9 is the positive
    sessions: list[FakeSession] = []

    def fake(target, progress=True):
        sessions.append(FakeSession(target, progress))
        return sessions[-1]

    monkeypatch.setattr(run_module, "RemoteSession", fake)
    config = tiny_config(tiny_shop, crossrec_shares=(0.5, None), target="fake:1")
    result = evaluate(config)
    [session] = sessions
    assert session.asked == [("u", 10, 0.5), ("u", 100, 0.5), ("u", 10, None), ("u", 100, None)]
    row = result["methods"]["crossrec (share 0.5)"]
    # k=10: i0 (touched before the cut) and the unknown id go, i9 is first: a perfect list
    assert row["metrics"]["@10"]["recall"]["mean"] == 1.0
    assert row["metrics"]["@10"]["ndcg"]["mean"] == 1.0
    # k=100: i9 is not in it; i0 is dropped; nine items remain
    assert row["metrics"]["@100"]["recall"]["mean"] == 0.0
    assert row["mean_list_length"] == 9.0
    assert list(result["methods"]) == ["crossrec (share 0.5)", "crossrec (no split)"]


def test_shares_parse_and_name_their_rows():
    assert parse_share("default") == ENGINE_DEFAULT
    assert parse_share("none") is None
    assert parse_share("0.3") == 0.3
    with pytest.raises(ValueError, match=r"must be within \[0, 1\], got 1\.5"):
        parse_share("1.5")
    assert [share_label(s) for s in (ENGINE_DEFAULT, None, 1.0, 0.5)] == [
        "crossrec",
        "crossrec (no split)",
        "crossrec (share 1.0)",
        "crossrec (share 0.5)",
    ]


def test_the_in_process_engine_is_asked_at_the_splits_cut_not_the_wall_clock(
    tiny_shop, tiny_built, monkeypatch
):
    from engine.core import Engine

    asked_at: list[int | None] = []
    real = Engine.recommend

    def spy(self, *args, now_us=None, **kwargs):
        asked_at.append(now_us)
        return real(self, *args, now_us=now_us, **kwargs)

    monkeypatch.setattr(Engine, "recommend", spy)
    config = tiny_config(tiny_shop, artifact=tiny_built / "v1")
    evaluate(config)
    # the test period is the last 10 days of a log whose last event is on day 20
    assert len(asked_at) == 2  # k = 10 and 100
    assert set(asked_at) == {int((T0 + timedelta(days=10)).timestamp() * 1e6)}


def test_over_grpc_the_training_events_end_at_the_engines_now(server, monkeypatch):
    """A request over gRPC has no time of its own: the events are sent shifted by now - cut."""
    import time

    from apps.evaluation import methods as methods_module
    from apps.evaluation.methods import RemoteSession

    day_us = 86_400 * 1_000_000
    view = int(T0.timestamp() * 1e6)
    events = pl.DataFrame(
        {"user_id": ["eval-shift"], "item_id": ["x"], "action": ["view"], "ts_us": [view],
         "session_id": [""]}
    )  # fmt: skip
    monkeypatch.setattr(methods_module, "training_events", lambda data: events)
    cut = T0 + timedelta(days=10)
    data = SimpleNamespace(split=SimpleNamespace(cut_us=int(cut.timestamp() * 1e6)))
    before = time.time() * 1e6
    session = RemoteSession(server.target, progress=False)
    session.start(data)
    after = time.time() * 1e6
    session.close()
    engine = server.engine
    [stored] = engine.store.history(engine.user_key("eval-shift"), 10)
    # the view was 10 days before the cut: it reaches the engine 10 days before now
    assert before - 10 * day_us <= stored.ts_us <= after - 10 * day_us
