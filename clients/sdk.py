"""Typed Python client of the crossrec engine (sync and asyncio). Callers never touch protobufs.

    with CrossrecClient("localhost:50051") as client:
        client.ingest([Event("u1", "i42", "purchase")])
        for item in client.recommend("u1", k=10).items:
            print(item.item_id, item.category, item.score)

Every call has a deadline (``timeout`` seconds, per call or per client). Retries are left to gRPC's
own retry policy, set on the channel for UNAVAILABLE only; every RPC is safe to retry because
ingestion is idempotent (events carry ids, assigned here when the caller gives none) and the rest
do not change state or are idempotent (DeleteUser).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
from grpc_status import rpc_status

from crossrec.v1 import events_pb2, recommend_pb2, service_pb2, service_pb2_grpc
from crossrec.vocabulary import ACTIONS

ACTION = {name: events_pb2.Action.Value(f"ACTION_{name.upper()}") for name in ACTIONS}
OBJECTIVE = {
    "click": recommend_pb2.OBJECTIVE_CLICK,
    "cart": recommend_pb2.OBJECTIVE_CART,
    "purchase": recommend_pb2.OBJECTIVE_PURCHASE,
}
_OBJECTIVE_NAME = {v: k for k, v in OBJECTIVE.items()}

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "crossrec.v1.RecommendService"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", _SERVICE_CONFIG)]


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
    event_id: str = ""  # default: a fresh UUID, so that retries never double-count


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
        event_id=e.event_id or uuid.uuid4().hex,
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


def _error(exc: grpc.RpcError) -> CrossrecError:
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
class Connection:
    """How to reach an engine beyond its address: a bearer ``token`` (sent as ``authorization``
    metadata on every call), and TLS: ``tls_ca`` (PEM file of the CA that signed the server's
    certificate; set it to use TLS), ``tls_cert`` / ``tls_key`` (a client certificate, when the
    engine requires one), ``server_name`` (the name to check the server's certificate against,
    when it differs from the target's host)."""

    token: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    server_name: str = ""

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    def channel(self, target: str, aio: bool = False):
        options = list(CHANNEL_OPTIONS)
        if not self.tls_ca:
            make = grpc.aio.insecure_channel if aio else grpc.insecure_channel
            return make(target, options=options)
        from pathlib import Path

        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.tls_ca).read_bytes(),
            private_key=Path(self.tls_key).read_bytes() if self.tls_key else None,
            certificate_chain=Path(self.tls_cert).read_bytes() if self.tls_cert else None,
        )
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        make = grpc.aio.secure_channel if aio else grpc.secure_channel
        return make(target, credentials, options=options)


class CrossrecClient:
    """Blocking client. ``timeout``: default deadline of every call, seconds; ``connection``:
    token and TLS settings (default: plaintext, no token)."""

    def __init__(
        self,
        target: str,
        timeout: float = 2.0,
        channel: grpc.Channel | None = None,
        connection: Connection = Connection(),
    ) -> None:
        self.target = target
        self._channel = channel or connection.channel(target)
        self._metadata = connection.metadata()
        self._stub = service_pb2_grpc.RecommendServiceStub(self._channel)
        self.timeout = timeout

    def __enter__(self) -> CrossrecClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout: float | None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def recommend(
        self, user_id: str = "", timeout: float | None = None, **options
    ) -> Recommendations:
        return recommendations(
            self._call(
                self._stub.Recommend,
                recommend_request(user_id, RecommendOptions(**options)),
                timeout,
            )
        )

    def recommend_batch(
        self, requests: Iterable[tuple[str, RecommendOptions]], timeout: float | None = None
    ) -> list[Recommendations]:
        message = recommend_pb2.RecommendBatchRequest(
            requests=[recommend_request(u, o) for u, o in requests]
        )
        return [
            recommendations(r)
            for r in self._call(self._stub.RecommendBatch, message, timeout).responses
        ]

    def ingest(self, events: Iterable[Event], timeout: float | None = None) -> IngestResult:
        message = service_pb2.IngestEventsRequest(events=[event_message(e) for e in events])
        r = self._call(self._stub.IngestEvents, message, timeout)
        return IngestResult(r.accepted_count, r.duplicate_count, r.unknown_item_count)

    def delete_user(self, user_id: str, timeout: float | None = None) -> int:
        return int(
            self._call(
                self._stub.DeleteUser, service_pb2.DeleteUserRequest(user_id=user_id), timeout
            ).deleted_event_count
        )

    def status(self, timeout: float | None = None) -> Status:
        return status(self._call(self._stub.GetStatus, service_pb2.GetStatusRequest(), timeout))

    def swap_version(
        self,
        artifact: str = "",
        model: str = "",
        retrieval_only: bool = False,
        arm: str = "a",
        timeout: float | None = None,
    ) -> tuple[str, str, bool]:
        """Serve another index version (and model) for ``arm``; empty paths: the arm's
        configured roots as their LATEST names them now. Returns (index version, model version,
        changed). Needs the admin role."""
        r = self._call(
            self._stub.SwapVersion,
            service_pb2.SwapVersionRequest(
                artifact=artifact, model=model, retrieval_only=retrieval_only, arm=arm
            ),
            timeout or max(self.timeout, 120.0),  # loading and verifying takes a while
        )
        return r.index_version, r.model_version, r.changed


class AsyncCrossrecClient:
    """The same API for asyncio (``grpc.aio``)."""

    def __init__(
        self, target: str, timeout: float = 2.0, connection: Connection = Connection()
    ) -> None:
        self._channel = connection.channel(target, aio=True)
        self._metadata = connection.metadata()
        self._stub = service_pb2_grpc.RecommendServiceStub(self._channel)
        self.timeout = timeout

    async def __aenter__(self) -> AsyncCrossrecClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method, request, timeout: float | None):
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None

    async def recommend(
        self, user_id: str = "", timeout: float | None = None, **options
    ) -> Recommendations:
        return recommendations(
            await self._call(
                self._stub.Recommend,
                recommend_request(user_id, RecommendOptions(**options)),
                timeout,
            )
        )

    async def recommend_batch(
        self, requests: Iterable[tuple[str, RecommendOptions]], timeout: float | None = None
    ) -> list[Recommendations]:
        message = recommend_pb2.RecommendBatchRequest(
            requests=[recommend_request(u, o) for u, o in requests]
        )
        return [
            recommendations(r)
            for r in (await self._call(self._stub.RecommendBatch, message, timeout)).responses
        ]

    async def ingest(self, events: Iterable[Event], timeout: float | None = None) -> IngestResult:
        message = service_pb2.IngestEventsRequest(events=[event_message(e) for e in events])
        r = await self._call(self._stub.IngestEvents, message, timeout)
        return IngestResult(r.accepted_count, r.duplicate_count, r.unknown_item_count)

    async def delete_user(self, user_id: str, timeout: float | None = None) -> int:
        r = await self._call(
            self._stub.DeleteUser, service_pb2.DeleteUserRequest(user_id=user_id), timeout
        )
        return int(r.deleted_event_count)

    async def status(self, timeout: float | None = None) -> Status:
        return status(
            await self._call(self._stub.GetStatus, service_pb2.GetStatusRequest(), timeout)
        )
