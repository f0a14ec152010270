"""Request limits found by probing a live engine (hardening): times, id lengths, batch size,
objective numbers, DeleteUser's user id; the helpers are test_validation's."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from helpers_tiny import NOW, PANS, TENTS
from test_validation import (
    event,
    ingest,
    ingest_event,
    ingest_violations,
    validate,
    violations,
)

from crossrec.v1 import recommend_pb2
from engine.config import EngineConfig, LimitsConfig
from engine.errors import InvalidRequest


def test_an_inline_event_a_few_nanoseconds_after_the_epoch_is_not_now():
    e = event()
    e.time.CopyFrom(Timestamp(seconds=0, nanos=5))
    assert violations(recent_events=[e]) == {
        "recent_events[0].time": "before 2000-01-01: a clock or unit error"
    }


def test_timestamp_nanos_must_be_within_a_second():
    assert ingest_violations([ingest_event(nanos=1_000_000_000)]) == {
        "events[0].time.nanos": "must be within 0..999,999,999"
    }
    for nanos in (-1, 1_000_000_000):
        e = event(seconds=NOW // 1_000_000)
        e.time.nanos = nanos
        assert violations(recent_events=[e]) == {
            "recent_events[0].time.nanos": "must be within 0..999,999,999"
        }


def test_every_id_of_an_event_has_the_length_limit():
    long = "x" * 257
    assert ingest_violations(
        [ingest_event(event_id=long, session_id=long, recommendation_id=long)]
    ) == {
        f"events[0].{field}": "longer than 256 characters"
        for field in ("event_id", "session_id", "recommendation_id")
    }
    assert len(ingest([ingest_event(event_id="x" * 256)])) == 1


def test_delete_user_checks_the_user_id_like_every_other():
    from crossrec.v1 import service_pb2
    from engine.api.validation import delete_user

    assert delete_user(service_pb2.DeleteUserRequest(user_id="u1")) == "u1"
    for user_id, description in (
        ("", "must not be empty"),
        ("x" * 257, "longer than 256 characters"),
    ):
        with pytest.raises(InvalidRequest) as info:
            delete_user(service_pb2.DeleteUserRequest(user_id=user_id))
        assert [(v.field, v.description) for v in info.value.violations] == [
            ("user_id", description)
        ]


def test_a_batch_is_limited_in_requests_and_in_k_summed():
    from engine.api.validation import batch_size

    config = LimitsConfig(max_batch_requests=3, max_batch_items=25)
    requests = [recommend_pb2.RecommendRequest(k=k) for k in (10, 10, 5)]
    assert batch_size(requests, config) is None  # 25 items: the limit exactly
    requests[2].k = 6
    with pytest.raises(InvalidRequest) as info:
        batch_size(requests, config)
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("requests", "k adds up to 26 over the batch; at most 25")
    ]
    with pytest.raises(InvalidRequest) as info:
        batch_size([*requests, recommend_pb2.RecommendRequest(k=1)], config)
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("requests", "at most 3 requests, got 4")
    ]


def test_a_batch_is_limited_in_explained_items_and_the_default_is_1000():
    from engine.api.validation import batch_size

    assert LimitsConfig().max_batch_explained_items == 1_000
    config = LimitsConfig(max_batch_explained_items=12)
    requests = [
        recommend_pb2.RecommendRequest(k=10, explain=True),
        recommend_pb2.RecommendRequest(k=40),  # not explained: not counted
        recommend_pb2.RecommendRequest(k=2, explain=True),
    ]
    assert batch_size(requests, config) is None  # 12 explained items: the limit exactly
    requests[2].k = 3
    with pytest.raises(InvalidRequest) as info:
        batch_size(requests, config)
    assert [(v.field, v.description) for v in info.value.violations] == [
        (
            "requests",
            "k adds up to 13 over the requests with explain; at most 12 "
            "(explanations cost far more than items)",
        )
    ]


def test_an_unknown_objective_number_is_refused():
    w = recommend_pb2.ObjectiveWeight(objective=99, weight=1.0)
    assert violations(objective_weights=[w]) == {
        "objective_weights[0].objective": "must be CLICK, CART or PURCHASE"
    }


def test_every_entry_of_a_list_field_has_the_length_limit():
    long = "b" * 257
    filters = recommend_pb2.Filters(brands=["acme", long], exclude_item_ids=[long, "t0"])
    assert violations(
        filters=filters,
        include_categories=[long],
        exclude_categories=[long],
        category_quotas=[recommend_pb2.CategoryQuota(category=long, count=1)],
    ) == {
        "filters.brands[1]": "longer than 256 characters",
        "filters.exclude_item_ids[0]": "longer than 256 characters",
        "include_categories[0]": "longer than 256 characters",
        "exclude_categories[0]": "longer than 256 characters",
        "category_quotas[0].category": "longer than 256 characters",
    }
    # 256 characters pass this check (an unknown brand simply matches nothing)
    validate(filters=recommend_pb2.Filters(brands=["b" * 256]))


def test_the_longest_deadline_a_call_may_have_is_pinned():
    config = EngineConfig()
    assert (config.limits.default_deadline_s, config.limits.max_deadline_s) == (2.0, 10.0)
    assert config.feedback.impression_log_max_mb == 0.0  # no cap unless an operator sets one


def test_a_clients_deadline_is_cut_to_the_servers_longest():
    import asyncio
    import time
    from types import SimpleNamespace

    from engine.api.service import RecommendService
    from engine.feedback.metrics import Metrics

    engine = SimpleNamespace(
        config=EngineConfig(limits=LimitsConfig(max_deadline_s=3.0, default_deadline_s=1.0))
    )
    service = RecommendService(engine, Metrics())
    seen = []

    def work(request, deadline):
        seen.append(deadline - time.monotonic())
        return "done"

    for remaining, expected in ((3_600.0, 3.0), (None, 1.0), (0.5, 0.5)):
        context = SimpleNamespace(time_remaining=lambda r=remaining: r)
        assert asyncio.run(service._run("Recommend", context, work, None)) == "done"
        assert expected - 0.5 < seen[-1] <= expected
    service.executor.shutdown()


def test_the_boundaries_themselves_are_accepted():
    """Exactly at each limit is fine: the last nanosecond of a second, a 256-character name of
    every kind, a weight blend that sums to less than one, max_list_items entries."""
    from crossrec.v1 import service_pb2
    from engine.api.validation import batch_size, delete_user
    from engine.config import LimitsConfig

    last_ns = event(seconds=NOW // 1_000_000)
    last_ns.time.nanos = 999_999_999
    assert len(validate(recent_events=[last_ns])[1]) == 1
    assert len(ingest([ingest_event(nanos=999_999_999)])) == 1
    name = "c" * 256  # unknown, but not too long: refused as unknown, by name
    assert violations(include_categories=[name]) == {
        "include_categories[0]": f"unknown category {name!r}"
    }
    quota = recommend_pb2.CategoryQuota(category=name, count=1)
    assert violations(category_quotas=[quota]) == {
        "category_quotas[0].category": f"unknown category {name!r}"
    }
    assert delete_user(service_pb2.DeleteUserRequest(user_id="u" * 256)) == "u" * 256
    w = recommend_pb2.ObjectiveWeight
    half = [w(objective=recommend_pb2.OBJECTIVE_CLICK, weight=0.5)]
    assert validate(objective_weights=half)[2].objective_weights == (("click", 0.5),)
    limits = LimitsConfig(max_list_items=2, max_batch_requests=3, max_batch_items=2)
    two = validate(limits=limits, exclude_categories=[PANS, TENTS])[2]
    assert two.exclude == frozenset({PANS, TENTS})
    # a k of 0 or less counts as no items in the batch total (its own check refuses it later)
    assert batch_size([recommend_pb2.RecommendRequest(k=k) for k in (0, -3, 2)], limits) is None


def test_a_list_field_over_its_limit_is_refused_before_its_entries_are_read():
    from engine.config import LimitsConfig

    limits = LimitsConfig(max_list_items=2)
    long = "x" * 300  # would be its own violation if the entries were read
    with pytest.raises(InvalidRequest) as info:
        validate(limits=limits, prefix="requests[1].", exclude_categories=[long, long, long])
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("requests[1].exclude_categories", "at most 2 entries, got 3")
    ]


def test_an_over_long_name_does_not_stop_the_names_after_it_being_checked():
    long = "c" * 257
    assert violations(include_categories=[long, "nope", TENTS]) == {
        "include_categories[0]": "longer than 256 characters",
        "include_categories[1]": "unknown category 'nope'",
    }
