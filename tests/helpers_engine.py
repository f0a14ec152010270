"""Helpers for the tests that call a running engine through the SDK."""

from __future__ import annotations

import polars as pl

from clients.sdk import CrossrecClient, Event
from engine.config import EngineConfig


def events_of(frame: pl.DataFrame, user_prefix: str = "") -> list[Event]:
    return [
        Event(
            user_prefix + r["user_id"],
            r["item_id"],
            r["action"],
            r["ts"],
            r["session_id"] or "",
            event_id=f"{user_prefix}{i}-{r['user_id']}",
        )
        for i, r in enumerate(frame.iter_rows(named=True))
    ]


def categories_of(catalog: pl.DataFrame, item_ids) -> list[str]:
    lookup = dict(zip(catalog["item_id"], catalog["category"]))
    return [lookup[i] for i in item_ids]


def client_target(client: CrossrecClient) -> str:
    return client.target


def busy_user(shop_events: pl.DataFrame, rank: int = 0) -> str:
    counts = (
        shop_events.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
    )
    return counts["user_id"][rank]


def engine_config(store_path, artifact="", /, **sections: dict) -> EngineConfig:
    """What the tests serve with: the event store at ``store_path`` with a fixed pseudonym key,
    index ``artifact``, a free port, and ``sections``' changes (``limits={"max_k": 10}``)."""
    base = EngineConfig().with_changes(
        arms={"artifact": str(artifact)},
        server={"port": 0},
        store={"path": str(store_path), "pseudonym_key": "k" * 32},
    )
    return base.with_changes(**sections)


def recent_events(shop_events: pl.DataFrame, users: int, last: int = 30) -> dict[str, list]:
    """The ``last`` events of the ``users`` busiest shoppers, as a request's recent events."""
    from engine.state.profile import ProfileEvent

    busy = shop_events.group_by("user_id").len().sort("len", "user_id", descending=True)[:users]
    return {
        u: [
            ProfileEvent(r["item_id"], r["action"], int(r["ts"].timestamp() * 1e6))
            for r in shop_events.filter(pl.col("user_id") == u).tail(last).iter_rows(named=True)
        ]
        for u in busy["user_id"]
    }


def lists_at_once(engine, recent: dict[str, list], query) -> list[list[str]]:
    """Each shopper's list from ``engine.recommend`` with their recent events, all asked at once
    (a thread each, as under gRPC), in ``recent``'s order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(recent)) as pool:
        answers = pool.map(lambda user: engine.recommend(user, recent[user], query), recent)
        return [list(a.item_ids) for a in answers]
