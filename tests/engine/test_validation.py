"""Validation of recommend requests and ingested events: limits, field paths and messages."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from helpers_tiny import KNIVES, NOW, PANS, TENTS, TOOLS

from crossrec.v1 import events_pb2, recommend_pb2
from engine.api.validation import recommend_request
from engine.config import LimitsConfig
from engine.errors import InvalidRequest
from engine.retrieval.items import ItemTable
from engine.retrieval.query import Query
from engine.retrieval.targets import CategoryModel
from engine.state.profile import ProfileEvent


class Categories:
    """A stand-in for CategoryModel: only ``resolve`` is used."""

    leaves = (TOOLS, KNIVES, PANS, TENTS)

    def resolve(self, name: str) -> frozenset[str]:
        if name in self.leaves:
            return frozenset([name])
        return frozenset(c for c in self.leaves if c.startswith(name + " > "))


CONFIG = LimitsConfig(max_k=10, max_recent_events=2)
#: The cross-category share a request that names none gets (``[retrieval]``'s default here).
SHARE = 1.0


def event(
    item: str = "t0", action=events_pb2.ACTION_VIEW, seconds: int | None = None
) -> events_pb2.Event:
    e = events_pb2.Event(item_id=item, action=action)
    if seconds is not None:
        e.time.CopyFrom(Timestamp(seconds=seconds))
    return e


CATEGORIES = Categories()


def validate(
    share: float | None = SHARE,
    categories=CATEGORIES,
    prefix: str = "",
    limits: LimitsConfig = CONFIG,
    **fields,
):
    fields.setdefault("user_id", "u1")
    fields.setdefault("k", 3)
    return recommend_request(
        recommend_pb2.RecommendRequest(**fields), limits, categories, NOW, prefix, share
    )


def violations(**fields) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as info:
        validate(**fields)
    return {v.field: v.description for v in info.value.violations}


def test_a_valid_request_becomes_a_query():
    user, recent, query = validate(
        k=4,
        recent_events=[
            event("t0", events_pb2.ACTION_PURCHASE, NOW // 1_000_000 - 60),
            event("p0", events_pb2.ACTION_CLICK),
        ],
        category_quotas=[
            recommend_pb2.CategoryQuota(category="Home", count=2),
            recommend_pb2.CategoryQuota(category=TENTS, count=2),
        ],
        exclude_categories=[TOOLS],
        filters=recommend_pb2.Filters(
            in_stock_only=True, min_price=5, max_price=5, brands=["acme"], exclude_item_ids=["t1"]
        ),
    )
    assert user == "u1"
    assert recent == [
        ProfileEvent("t0", "purchase", NOW - 60_000_000),
        ProfileEvent("p0", "click", NOW),
    ]
    assert query == Query(
        k=4,
        quotas=((frozenset({KNIVES, PANS}), 2), (frozenset({TENTS}), 2)),
        cross_share=1.0,
        include=None,
        exclude=frozenset({TOOLS}),
        in_stock_only=True,
        min_price=5.0,
        max_price=5.0,
        brands=frozenset({"acme"}),
        exclude_items=frozenset({"t1"}),
    )


def test_defaults_share_from_the_config_and_leaves_filters_open():
    _, recent, query = validate(k=10, include_categories=["Home", TENTS], cross_category_share=0.0)
    assert recent == []
    assert query == Query(k=10, cross_share=0.0, include=frozenset({KNIVES, PANS, TENTS}))
    assert validate(0.25, k=1)[2].cross_share == 0.25
    assert validate(cross_category_share=1.0)[2].cross_share == 1.0
    assert validate(user_id="", recent_events=[event()])[0] == ""


def test_no_default_share_means_no_split():
    # A config without a default share lets the ranking alone decide (this was float(None) once).
    assert validate(None)[2].cross_share is None
    assert validate(None, cross_category_share=0.5)[2].cross_share == 0.5


@pytest.mark.parametrize(("k", "ok"), [(0, False), (1, True), (10, True), (11, False), (-1, False)])
def test_k_must_lie_between_one_and_max_k(k, ok):
    if ok:
        assert validate(k=k)[2].k == k
    else:
        assert violations(k=k) == {"k": f"must be between 1 and 10, got {k}"}


def test_violations_carry_the_prefix():
    with pytest.raises(InvalidRequest) as info:
        validate(prefix="requests[3].", k=0)
    assert [v.field for v in info.value.violations] == ["requests[3].k"]


def test_recent_events_are_limited_and_each_checked():
    assert len(validate(recent_events=[event(), event()])[1]) == 2
    assert violations(recent_events=[event(), event(), event()]) == {
        "recent_events": "at most 2 events, got 3"
    }
    bad = violations(
        recent_events=[event("", events_pb2.ACTION_UNSPECIFIED), event("x", seconds=946_684_799)]
    )
    assert bad == {
        "recent_events[0].item_id": "must not be empty",
        "recent_events[0].action": "must be VIEW, CLICK, CART or PURCHASE",
        "recent_events[1].time": "before 2000-01-01: a clock or unit error",
    }
    assert validate(recent_events=[event(seconds=946_684_800)])[1][0].ts_us == 946_684_800_000_000
    future = NOW // 1_000_000 + 86_400
    assert validate(recent_events=[event(seconds=future)])[1][0].ts_us == future * 1_000_000
    assert violations(recent_events=[event(seconds=future + 1)]) == {
        "recent_events[0].time": "more than a day in the future"
    }


def test_a_request_needs_a_user_or_events_and_short_ids():
    assert violations(user_id="") == {"user_id": "give a user_id, recent_events, or both"}
    assert validate(user_id="u" * 256)[0] == "u" * 256
    assert violations(user_id="u" * 257) == {"user_id": "longer than 256 characters"}


def test_quotas_must_name_known_categories_and_fit_in_k():
    quota = recommend_pb2.CategoryQuota
    assert violations(
        k=3, category_quotas=[quota(category=TENTS, count=2), quota(category=PANS, count=2)]
    ) == {"category_quotas": "counts add up to 4, more than k=3"}
    assert (
        len(
            validate(
                k=4, category_quotas=[quota(category=TENTS, count=2), quota(category=PANS, count=2)]
            )[2].quotas
        )
        == 2
    )
    assert violations(
        category_quotas=[quota(category="Garden", count=1), quota(category="Nope", count=0)]
    ) == {
        "category_quotas[1].category": "unknown category 'Nope'",
        "category_quotas[1].count": "must be at least 1",
    }
    # k itself is bad: the sum is not compared with it.
    assert violations(k=0, category_quotas=[quota(category=TENTS, count=2)]) == {
        "k": "must be between 1 and 10, got 0"
    }


def test_quotas_and_share_are_either_or():
    assert violations(
        cross_category_share=0.5,
        category_quotas=[recommend_pb2.CategoryQuota(category=TENTS, count=1)],
    ) == {"cross_category_share": "give category_quotas or cross_category_share, not both"}


@pytest.mark.parametrize("share", [-0.1, 1.1, float("nan"), float("inf")])
def test_share_must_lie_in_zero_one(share):
    assert violations(cross_category_share=share) == {
        "cross_category_share": f"must be within [0, 1], got {share}"
    }


def test_include_exclude_must_be_known_and_leave_each_quota_something():
    quota = recommend_pb2.CategoryQuota
    assert violations(include_categories=[TENTS, "Nope"], exclude_categories=["Gone"]) == {
        "include_categories[1]": "unknown category 'Nope'",
        "exclude_categories[0]": "unknown category 'Gone'",
    }
    msg = "excluded by include_categories / exclude_categories"
    assert violations(
        category_quotas=[quota(category="Home", count=1)], exclude_categories=["Home"]
    ) == {"category_quotas[0].category": msg}
    assert violations(
        category_quotas=[quota(category=TENTS, count=1)], include_categories=["Home"]
    ) == {"category_quotas[0].category": msg}
    # Partly excluded is fine.
    assert validate(category_quotas=[quota(category="Home", count=1)], exclude_categories=[PANS])[
        2
    ].quotas == ((frozenset({KNIVES, PANS}), 1),)


def test_objective_weights_must_name_an_objective_and_be_finite_non_negative():
    w = recommend_pb2.ObjectiveWeight
    assert violations(
        objective_weights=[
            w(objective=recommend_pb2.OBJECTIVE_UNSPECIFIED, weight=1),
            w(objective=recommend_pb2.OBJECTIVE_CLICK, weight=-1),
        ]
    ) == {
        "objective_weights[0].objective": "must be CLICK, CART or PURCHASE",
        "objective_weights[1].weight": "must be finite and >= 0, got -1.0",
    }
    assert violations(
        objective_weights=[w(objective=recommend_pb2.OBJECTIVE_CLICK, weight=float("inf"))]
    ) == {"objective_weights[0].weight": "must be finite and >= 0, got inf"}
    assert violations(
        objective_weights=[w(objective=recommend_pb2.OBJECTIVE_PURCHASE, weight=0)]
    ) == {"objective_weights": "all weights are 0: give at least one positive weight"}
    assert violations(
        objective_weights=[
            w(objective=recommend_pb2.OBJECTIVE_CART, weight=1),
            w(objective=recommend_pb2.OBJECTIVE_CART, weight=2),
        ]
    ) == {"objective_weights[1].objective": "given twice"}


def test_objective_weights_and_price_weighting_reach_the_query():
    w = recommend_pb2.ObjectiveWeight
    query = validate(
        objective_weights=[
            w(objective=recommend_pb2.OBJECTIVE_PURCHASE, weight=3),
            w(objective=recommend_pb2.OBJECTIVE_CLICK, weight=0),
        ],
        weight_by_price=True,
    )[2]
    assert query.objective_weights == (("purchase", 3.0), ("click", 0.0))
    assert query.weight_by_price is True
    assert validate()[2].objective_weights == ()
    assert validate()[2].weight_by_price is False


def test_prices_must_be_finite_non_negative_and_ordered():
    f = recommend_pb2.Filters
    assert violations(filters=f(min_price=3, max_price=2)) == {
        "filters.max_price": "2.0 is below min_price 3.0"
    }
    assert violations(filters=f(min_price=-1)) == {
        "filters.min_price": "must be finite and >= 0, got -1.0"
    }
    assert violations(filters=f(max_price=float("nan"))) == {
        "filters.max_price": "must be finite and >= 0, got nan"
    }
    q = validate(filters=f(min_price=0))[2]
    assert (q.min_price, q.max_price) == (0.0, None)
    assert validate(filters=f(max_price=0))[2].max_price == 0.0


def test_validation_resolves_through_the_category_model(tiny_version):
    model = CategoryModel(tiny_version, ItemTable.from_version(tiny_version).categories)
    _, _, query = validate(
        categories=model,
        include_categories=["Outdoors>Tents"],
        exclude_categories=["Home > Kitchen"],
    )
    assert query.include == frozenset({TENTS})
    assert query.exclude == frozenset({KNIVES, PANS})


def ingest_event(
    user="u1", item="t0", action=events_pb2.ACTION_CART, seconds=NOW // 1_000_000, nanos=0, **extra
):
    e = events_pb2.Event(user_id=user, item_id=item, action=action, **extra)
    if seconds is not None:
        e.time.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    return e


def ingest(events, config: LimitsConfig | None = None):
    from engine.api.validation import ingest_events

    config = config or LimitsConfig(max_ingest_events=4)
    return ingest_events(events, config, lambda user: f"key:{user}", NOW)


def ingest_violations(events, max_ingest_events: int = 3) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as info:
        ingest(events, LimitsConfig(max_ingest_events=max_ingest_events))
    return {v.field: v.description for v in info.value.violations}


def test_ingested_events_are_pseudonymised_and_get_a_deterministic_id():
    import hashlib

    from engine.state.store import StoredEvent

    def sha(*parts) -> str:
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    out = ingest(
        [
            ingest_event(session_id="s1", recommendation_id="r1"),
            ingest_event(nanos=5_999, event_id="mine"),
            ingest_event(nanos=5_000),
            ingest_event(user="u2", event_id="mine"),
        ]
    )
    # Stored ids hash the keyed pseudonym ("key:u1" here), never the raw user id: with the caller's
    # id (scoped per user), else with the content (action 3 = CART, time in µs, session).
    assert out == [
        StoredEvent(
            sha("key:u1", "content", "t0", "3", str(NOW), "s1"),
            "key:u1",
            "t0",
            "cart",
            NOW,
            "s1",
            "r1",
        ),
        StoredEvent(sha("key:u1", "id", "mine"), "key:u1", "t0", "cart", NOW + 5),
        StoredEvent(
            sha("key:u1", "content", "t0", "3", str(NOW + 5), ""), "key:u1", "t0", "cart", NOW + 5
        ),
        StoredEvent(sha("key:u2", "id", "mine"), "key:u2", "t0", "cart", NOW),
    ]
    assert all("u1" not in e.event_id for e in out)


def test_ingestion_names_every_bad_event_and_field():
    assert ingest_violations([]) == {"events": "no events"}
    assert ingest_violations([ingest_event()] * 4) == {"events": "at most 3 events per call, got 4"}
    assert len(ingest([ingest_event()] * 3)) == 3
    bad = ingest_violations(
        [
            ingest_event(user="", item="i" * 257, action=events_pb2.ACTION_UNSPECIFIED),
            ingest_event(seconds=None),
            ingest_event(user="u" * 257, item="", seconds=946_684_799),
            ingest_event(seconds=NOW // 1_000_000 + 86_401),
            ingest_event(user="u" * 256, item="i" * 256),  # fine
        ],
        max_ingest_events=5,
    )
    assert bad == {
        "events[0].user_id": "must not be empty",
        "events[0].item_id": "longer than 256 characters",
        "events[0].action": "must be VIEW, CLICK, CART or PURCHASE",
        "events[1].time": "required",
        "events[2].user_id": "longer than 256 characters",
        "events[2].item_id": "must not be empty",
        "events[2].time": "before 2000-01-01: a clock or unit error",
        "events[3].time": "more than a day in the future",
    }


def test_prefix_defaults_to_none_and_a_quota_may_not_exceed_k_one():
    request = recommend_pb2.RecommendRequest(
        user_id="u", k=1, category_quotas=[recommend_pb2.CategoryQuota(category=TENTS, count=2)]
    )
    with pytest.raises(InvalidRequest) as info:
        recommend_request(request, CONFIG, CATEGORIES, NOW)
    assert [(v.field, v.description) for v in info.value.violations] == [
        ("category_quotas", "counts add up to 2, more than k=1")
    ]


def test_event_times_at_the_epoch_count_as_missing_but_any_nanosecond_is_a_time():
    assert ingest_violations([ingest_event(seconds=0)]) == {"events[0].time": "required"}
    assert ingest_violations([ingest_event(seconds=0, nanos=1000)]) == {
        "events[0].time": "before 2000-01-01: a clock or unit error"
    }
    assert ingest([ingest_event(seconds=946_684_800, nanos=2_500)])[0].ts_us == 946_684_800_000_002
    # Inline events without a time happen now.
    assert validate(recent_events=[event(seconds=0)])[1][0].ts_us == NOW


def test_a_nul_character_in_any_event_field_is_refused_by_name():
    fields = {"item": "t\x000", "session_id": "s\x00", "recommendation_id": "\x00r"}
    event = ingest_event(user="u\x001", event_id="e\x00", **fields)
    assert ingest_violations([ingest_event(), event]) == {
        f"events[1].{field}": "must not contain a NUL character"
        for field in ("user_id", "item_id", "event_id", "session_id", "recommendation_id")
    }
