"""The SDK's side of the wire: the typed values callers use, their conversion to and from the
protobuf messages, and each RPC as one :class:`Call` (request message + how to read the answer),
shared by the blocking and the asyncio client so neither holds a copy of the other."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_status import rpc_status

from crossrec.v1 import events_pb2, recommend_pb2, service_pb2
from crossrec.vocabulary import ACTIONS

ACTION = {name: events_pb2.Action.Value(f"ACTION_{name.upper()}") for name in ACTIONS}
OBJECTIVE = {
    "click": recommend_pb2.OBJECTIVE_CLICK,
    "cart": recommend_pb2.OBJECTIVE_CART,
    "purchase": recommend_pb2.OBJECTIVE_PURCHASE,
}
_OBJECTIVE_NAME = {v: k for k, v in OBJECTIVE.items()}


class CrossrecError(Exception):
    """A call failed. ``code`` is the gRPC status name; ``field_violations`` maps field -> reason
    for INVALID_ARGUMENT."""

    def __init__(
        self, code: str, message: str, field_violations: dict[str, str] | None = None
    ) -> None:
        self.code = code
        self.field_violations = field_violations or {}
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    action: str  # view | click | cart | purchase
    time: datetime | None = None  # default: now (UTC)
    session_id: str = ""
    recommendation_id: str = ""
    #: Default: none, and the engine derives the event's id from its content (user, item,
    #: action, time, session), so a re-sent event is recognised as a duplicate.
    event_id: str = ""

    def __post_init__(self) -> None:
        # The time is fixed when the event is made, not when it is sent: re-sending the same
        # Event (a retry) sends the same event.
        if self.time is None:
            object.__setattr__(self, "time", datetime.now(UTC))


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    category: str
    score: float
    objective_scores: dict[str, float]
    interest_index: int
    interest_label: str
    shard: str
    retrieval_score: float
    explanation: dict | None = None


@dataclass(frozen=True)
class Recommendations:
    items: list[RecommendedItem]
    recommendation_id: str
    index_version: str
    model_version: str
    target_categories: list[str]
    fallback: bool
    #: The experiment arm that answered ("a" without an A/B split).
    arm: str = "a"
    #: Shards searched of those targeted, and the ones that missed the deadline (remote shard
    #: groups): their categories are under-represented in this list.
    shards_searched: int = 0
    shards_targeted: int = 0
    late_shards: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Status:
    index_version: str
    model_version: str
    item_count: int
    category_count: int
    shard_count: int
    user_count: int
    event_count: int
    engine_version: str
    #: Arm -> (index version, model version, share of users).
    arms: dict[str, tuple[str, str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    #: Events naming items the serving index does not know (stored all the same).
    unknown_items: int = 0
    #: Events reusing a stored id with other content (not stored; the first is kept).
    conflicts: int = 0
    #: Events older than the engine's retention (not stored).
    expired: int = 0


@dataclass
class RecommendOptions:
    """Everything Recommend accepts besides the user (see the proto for semantics)."""

    k: int = 10
    recent_events: Sequence[Event] = ()
    category_quotas: dict[str, int] = field(default_factory=dict)
    cross_category_share: float | None = None
    include_categories: Sequence[str] = ()
    exclude_categories: Sequence[str] = ()
    objective_weights: dict[str, float] = field(default_factory=dict)
    weight_by_price: bool = False
    in_stock_only: bool = False
    min_price: float | None = None
    max_price: float | None = None
    brands: Sequence[str] = ()
    exclude_item_ids: Sequence[str] = ()
    explain: bool = False


def event_message(e: Event) -> events_pb2.Event:
    if e.action not in ACTION:
        raise ValueError(f"action must be one of {sorted(ACTION)}, got {e.action!r}")
    msg = events_pb2.Event(
        user_id=e.user_id,
        item_id=e.item_id,
        action=ACTION[e.action],
        session_id=e.session_id,
        recommendation_id=e.recommendation_id,
        event_id=e.event_id,
    )
    msg.time.FromDatetime(e.time or datetime.now(UTC))
    return msg


def recommend_request(user_id: str, options: RecommendOptions) -> recommend_pb2.RecommendRequest:
    o = options
    request = recommend_pb2.RecommendRequest(
        user_id=user_id,
        k=o.k,
        recent_events=[event_message(e) for e in o.recent_events],
        category_quotas=[
            recommend_pb2.CategoryQuota(category=c, count=n) for c, n in o.category_quotas.items()
        ],
        include_categories=list(o.include_categories),
        exclude_categories=list(o.exclude_categories),
        objective_weights=[
            recommend_pb2.ObjectiveWeight(objective=OBJECTIVE[k], weight=w)
            for k, w in o.objective_weights.items()
        ],
        weight_by_price=o.weight_by_price,
        filters=recommend_pb2.Filters(
            in_stock_only=o.in_stock_only,
            min_price=o.min_price,
            max_price=o.max_price,
            brands=list(o.brands),
            exclude_item_ids=list(o.exclude_item_ids),
        ),
        explain=o.explain,
    )
    if o.cross_category_share is not None:
        request.cross_category_share = o.cross_category_share
    return request


def recommendations(response: recommend_pb2.RecommendResponse) -> Recommendations:
    items = []
    for it in response.items:
        explanation = None
        if it.HasField("explanation"):
            e = it.explanation
            explanation = {
                "summary": e.summary,
                "source_item_ids": list(e.source_item_ids),
                "source_category": e.source_category,
                "transition_probability": e.transition_probability,
                # (feature, value, contribution to the score's log-odds), largest first.
                "contributions": [(c.feature, c.value, c.contribution) for c in e.contributions],
            }
        items.append(
            RecommendedItem(
                it.item_id,
                it.category,
                it.score,
                {_OBJECTIVE_NAME.get(s.objective, "?"): s.score for s in it.objective_scores},
                it.interest_index,
                it.interest_label,
                it.shard,
                it.retrieval_score,
                explanation,
            )
        )
    return Recommendations(
        items,
        response.recommendation_id,
        response.index_version,
        response.model_version,
        list(response.target_categories),
        response.fallback,
        response.arm,
        response.coverage.shards_searched,
        response.coverage.shards_targeted,
        list(response.coverage.late_shards),
    )


def status(response: service_pb2.GetStatusResponse) -> Status:
    r = response
    return Status(
        r.index_version,
        r.model_version,
        r.item_count,
        r.category_count,
        r.shard_count,
        r.user_count,
        r.event_count,
        r.engine_version,
        {a.arm: (a.index_version, a.model_version, a.share) for a in r.arms},
    )


def rpc_error(exc: grpc.RpcError) -> CrossrecError:
    violations: dict[str, str] = {}
    detail = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    if detail is not None:
        from google.rpc import error_details_pb2

        for any_detail in detail.details:
            if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                violations.update({v.field: v.description for v in bad.field_violations})
    return CrossrecError(exc.code().name, exc.details() or "", violations)


@dataclass(frozen=True)
class Call:
    """One RPC: the stub method's name, the request message, how to read the response, and the
    deadline it needs at least (None: the client's)."""

    method: str
    request: Any
    parse: Callable[[Any], Any]
    min_timeout: float | None = None


def recommend_call(user_id: str, options: RecommendOptions) -> Call:
    return Call("Recommend", recommend_request(user_id, options), recommendations)


def recommend_batch_call(requests: Iterable[tuple[str, RecommendOptions]]) -> Call:
    message = recommend_pb2.RecommendBatchRequest(
        requests=[recommend_request(u, o) for u, o in requests]
    )
    return Call("RecommendBatch", message, lambda r: [recommendations(x) for x in r.responses])


def ingest_call(events: Iterable[Event]) -> Call:
    message = service_pb2.IngestEventsRequest(events=[event_message(e) for e in events])
    return Call(
        "IngestEvents",
        message,
        lambda r: IngestResult(
            r.accepted_count,
            r.duplicate_count,
            r.unknown_item_count,
            r.conflict_count,
            r.expired_count,
        ),
    )


def delete_user_call(user_id: str) -> Call:
    return Call(
        "DeleteUser",
        service_pb2.DeleteUserRequest(user_id=user_id),
        lambda r: int(r.deleted_event_count),
    )


def status_call() -> Call:
    return Call("GetStatus", service_pb2.GetStatusRequest(), status)


def swap_version_call(artifact: str, model: str, retrieval_only: bool, arm: str) -> Call:
    message = service_pb2.SwapVersionRequest(
        artifact=artifact, model=model, retrieval_only=retrieval_only, arm=arm
    )
    # Loading and verifying a version takes a while: at least two minutes.
    return Call(
        "SwapVersion", message, lambda r: (r.index_version, r.model_version, r.changed), 120.0
    )
