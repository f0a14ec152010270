"""Request validation: protobuf messages in, engine values out, or every violation named by field.

Field paths follow the request structure (``k``, ``category_quotas[1].category``,
``requests[3].filters.max_price``, ``events[7].action``) so a client can point at the exact input.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import cast

from crossrec import vocabulary
from crossrec.v1 import events_pb2, recommend_pb2
from engine.config import LimitsConfig
from engine.errors import FieldViolation, InvalidRequest
from engine.retrieval.query import Query
from engine.retrieval.targets import CategoryModel
from engine.state.profile import ProfileEvent
from engine.state.store import StoredEvent

ACTIONS = {events_pb2.Action.Value(f"ACTION_{name.upper()}"): name for name in vocabulary.ACTIONS}
OBJECTIVE_NAMES = {
    recommend_pb2.Objective.Value(f"OBJECTIVE_{name.upper()}"): name
    for name in vocabulary.OBJECTIVES
}
#: Longest artifact or model path SwapVersion accepts.
MAX_PATH_LENGTH = 4096
MAX_ID_LENGTH = 256
# Event times must fall in [2000-01-01, now + 1 day]: anything else is a unit or clock error.
EARLIEST_US = 946_684_800 * 1_000_000
FUTURE_SLACK_US = 86_400 * 1_000_000


def recommend_request(
    request: recommend_pb2.RecommendRequest,
    limits: LimitsConfig,
    categories: CategoryModel,
    now_us: int,
    prefix: str = "",
    default_share: float | None = None,
) -> tuple[str, list[ProfileEvent], Query]:
    """Validate a RecommendRequest; raise :class:`InvalidRequest` naming every bad field.
    ``default_share``: the cross-category share of a request that names none."""
    v: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        v.append(FieldViolation(prefix + field, description))

    if not request.user_id and not request.recent_events:
        bad("user_id", "give a user_id, recent_events, or both")
    if len(request.user_id) > MAX_ID_LENGTH:
        bad("user_id", f"longer than {MAX_ID_LENGTH} characters")
    if len(request.recent_events) > limits.max_recent_events:
        bad(
            "recent_events",
            f"at most {limits.max_recent_events} events, got {len(request.recent_events)}",
        )
    f = request.filters
    for field, values in (
        ("filters.exclude_item_ids", f.exclude_item_ids),
        ("filters.brands", f.brands),
        ("include_categories", request.include_categories),
        ("exclude_categories", request.exclude_categories),
        ("category_quotas", request.category_quotas),
    ):
        if len(values) > limits.max_list_items:
            # Refused before any entry is looked at: the cost of a request stays bounded.
            limit = f"at most {limits.max_list_items} entries, got {len(values)}"
            raise InvalidRequest([FieldViolation(prefix + field, limit)])
        names = (
            [q.category for q in request.category_quotas]
            if field == "category_quotas"
            else cast("Iterable[str]", values)
        )
        for i, name in enumerate(names):
            if len(name) > MAX_ID_LENGTH:  # ids, brands and category names alike
                sub = ".category" if field == "category_quotas" else ""
                bad(f"{field}[{i}]{sub}", f"longer than {MAX_ID_LENGTH} characters")
    recent = []
    for i, e in enumerate(request.recent_events[: limits.max_recent_events]):
        if not e.item_id:
            bad(f"recent_events[{i}].item_id", "must not be empty")
        ts = _timestamp_us(e)
        ts = now_us if ts is None else ts  # an unset time means now; epoch + 5 ns does not
        problem = _time_problem(ts, now_us)
        if e.HasField("time") and not 0 <= e.time.nanos <= 999_999_999:
            bad(f"recent_events[{i}].time.nanos", "must be within 0..999,999,999")
        elif problem:
            bad(f"recent_events[{i}].time", problem)
        if e.action not in ACTIONS:
            bad(f"recent_events[{i}].action", "must be VIEW, CLICK, CART or PURCHASE")
        elif not problem:
            recent.append(ProfileEvent(e.item_id, ACTIONS[e.action], ts))
    if not 1 <= request.k <= limits.max_k:
        bad("k", f"must be between 1 and {limits.max_k}, got {request.k}")

    def resolve_all(field: str, names) -> frozenset[str]:
        out: set[str] = set()
        for i, name in enumerate(names):
            if len(name) > MAX_ID_LENGTH:  # refused above, never echoed
                continue
            resolved = categories.resolve(name)
            if not resolved:
                bad(f"{field}[{i}]", f"unknown category {name!r}")
            out |= resolved
        return frozenset(out)

    quotas = []
    for i, q in enumerate(request.category_quotas):
        too_long = len(q.category) > MAX_ID_LENGTH  # refused above, never echoed
        cats = frozenset() if too_long else categories.resolve(q.category)
        if not cats and not too_long:
            bad(f"category_quotas[{i}].category", f"unknown category {q.category!r}")
        if q.count < 1:
            bad(f"category_quotas[{i}].count", "must be at least 1")
        quotas.append((cats, int(q.count)))
    if request.k >= 1 and sum(n for _, n in quotas) > request.k:
        bad(
            "category_quotas",
            f"counts add up to {sum(n for _, n in quotas)}, more than k={request.k}",
        )
    share = default_share
    if request.HasField("cross_category_share"):
        share = request.cross_category_share
        if not (math.isfinite(share) and 0.0 <= share <= 1.0):
            bad("cross_category_share", f"must be within [0, 1], got {share}")
        if request.category_quotas:
            bad("cross_category_share", "give category_quotas or cross_category_share, not both")
    include = (
        resolve_all("include_categories", request.include_categories)
        if request.include_categories
        else None
    )
    exclude = resolve_all("exclude_categories", request.exclude_categories)
    for i, (cats, _) in enumerate(quotas):
        allowed = (cats if include is None else cats & include) - exclude
        if cats and not allowed:
            bad(
                f"category_quotas[{i}].category",
                "excluded by include_categories / exclude_categories",
            )
    weights: dict[str, float] = {}
    for i, w in enumerate(request.objective_weights):
        if w.objective not in OBJECTIVE_NAMES:
            bad(f"objective_weights[{i}].objective", "must be CLICK, CART or PURCHASE")
        elif w.objective and OBJECTIVE_NAMES[w.objective] in weights:
            bad(f"objective_weights[{i}].objective", "given twice")
        if not (math.isfinite(w.weight) and w.weight >= 0):
            bad(f"objective_weights[{i}].weight", f"must be finite and >= 0, got {w.weight}")
        elif w.objective in OBJECTIVE_NAMES:
            weights[OBJECTIVE_NAMES[w.objective]] = float(w.weight)
    if weights and sum(weights.values()) <= 0:
        bad("objective_weights", "all weights are 0: give at least one positive weight")
    min_price = f.min_price if f.HasField("min_price") else None
    max_price = f.max_price if f.HasField("max_price") else None
    for name, value in (("min_price", min_price), ("max_price", max_price)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            bad(f"filters.{name}", f"must be finite and >= 0, got {value}")
    if min_price is not None and max_price is not None and min_price > max_price:
        bad("filters.max_price", f"{max_price} is below min_price {min_price}")
    if v:
        raise InvalidRequest(v)
    query = Query(
        k=int(request.k),
        quotas=tuple(quotas),
        cross_share=None if share is None else float(share),
        include=include,
        exclude=exclude,
        in_stock_only=f.in_stock_only,
        min_price=min_price,
        max_price=max_price,
        brands=frozenset(f.brands),
        exclude_items=frozenset(f.exclude_item_ids),
        objective_weights=tuple(weights.items()),
        weight_by_price=request.weight_by_price,
    )
    return request.user_id, recent, query


def ingest_events(events, limits: LimitsConfig, user_key, now_us: int) -> list[StoredEvent]:
    """Validate IngestEvents' events (all or nothing) and pseudonymise their user ids."""
    v: list[FieldViolation] = []
    if not events:
        v.append(FieldViolation("events", "no events"))
    if len(events) > limits.max_ingest_events:
        raise InvalidRequest(
            [
                FieldViolation(
                    "events",
                    f"at most {limits.max_ingest_events} events per call, got {len(events)}",
                )
            ]
        )
    out = []
    for i, e in enumerate(events):
        before = len(v)
        for field, value in (("user_id", e.user_id), ("item_id", e.item_id)):
            if not value:
                v.append(FieldViolation(f"events[{i}].{field}", "must not be empty"))
        for field, value in (
            ("user_id", e.user_id),
            ("item_id", e.item_id),
            ("event_id", e.event_id),
            ("session_id", e.session_id),
            ("recommendation_id", e.recommendation_id),
        ):
            if len(value) > MAX_ID_LENGTH:
                v.append(
                    FieldViolation(
                        f"events[{i}].{field}", f"longer than {MAX_ID_LENGTH} characters"
                    )
                )
            elif "\x00" in value:  # PostgreSQL text cannot hold it; no id needs it
                v.append(FieldViolation(f"events[{i}].{field}", "must not contain a NUL character"))
        if e.action not in ACTIONS:
            v.append(FieldViolation(f"events[{i}].action", "must be VIEW, CLICK, CART or PURCHASE"))
        ts = _timestamp_us(e)
        if ts is None:
            v.append(FieldViolation(f"events[{i}].time", "required"))
        elif not 0 <= e.time.nanos <= 999_999_999:
            v.append(FieldViolation(f"events[{i}].time.nanos", "must be within 0..999,999,999"))
        elif problem := _time_problem(ts, now_us):
            v.append(FieldViolation(f"events[{i}].time", problem))
        if len(v) > before or ts is None:  # a missing time is a violation above
            continue
        key = user_key(e.user_id)
        out.append(
            StoredEvent(
                stored_event_id(key, e, ts),
                key,
                e.item_id,
                ACTIONS[e.action],
                ts,
                e.session_id,
                e.recommendation_id,
            )
        )
    if v:
        raise InvalidRequest(v)
    return out


def _timestamp_us(e: events_pb2.Event) -> int | None:
    if not e.HasField("time") or (e.time.seconds == 0 and e.time.nanos == 0):
        return None
    return e.time.seconds * 1_000_000 + e.time.nanos // 1000


def _time_problem(ts_us: int, now_us: int) -> str:
    if ts_us < EARLIEST_US:
        return "before 2000-01-01: a clock or unit error"
    if ts_us > now_us + FUTURE_SLACK_US:
        return "more than a day in the future"
    return ""


def delete_user(request) -> str:
    """DeleteUser's user id, checked like every other user id."""
    if not request.user_id:
        raise InvalidRequest([FieldViolation("user_id", "must not be empty")])
    if len(request.user_id) > MAX_ID_LENGTH:
        raise InvalidRequest([FieldViolation("user_id", f"longer than {MAX_ID_LENGTH} characters")])
    return request.user_id


def batch_size(requests, limits: LimitsConfig) -> None:
    """RecommendBatch's size limits, checked before any request is parsed: the number of requests,
    their k summed (a response must fit the message limit), and their k summed over the requests
    that ask for explanations (each explained item costs ~100 predictions with a ranker)."""
    if len(requests) > limits.max_batch_requests:
        raise InvalidRequest(
            [
                FieldViolation(
                    "requests",
                    f"at most {limits.max_batch_requests} requests, got {len(requests)}",
                )
            ]
        )
    total = sum(max(r.k, 0) for r in requests)
    if total > limits.max_batch_items:
        raise InvalidRequest(
            [
                FieldViolation(
                    "requests",
                    f"k adds up to {total} over the batch; at most {limits.max_batch_items}",
                )
            ]
        )
    explained = sum(max(r.k, 0) for r in requests if r.explain)
    if explained > limits.max_batch_explained_items:
        raise InvalidRequest(
            [
                FieldViolation(
                    "requests",
                    f"k adds up to {explained} over the requests with explain; at most "
                    f"{limits.max_batch_explained_items} (explanations cost far more than items)",
                )
            ]
        )


def stored_event_id(key: str, e: events_pb2.Event, ts_us: int) -> str:
    """The id an event is stored (and deduplicated) under: a hash of the user's pseudonym with the
    caller's ``event_id`` (ids are scoped per user, and an id that embeds personal data never
    reaches disk), or, without one, with the event's content (deterministic, so a retried call
    without ids still deduplicates). Never derived from the raw user id: the pseudonym is keyed,
    so the store alone cannot be searched for candidate names."""
    if e.event_id:
        parts = [key, "id", e.event_id]
    else:
        parts = [key, "content", e.item_id, str(e.action), str(ts_us), e.session_id]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def swap_version(request) -> tuple[str, str, str | None]:
    """SwapVersion's (arm, artifact, model): model None means the arm's configured one, "" none."""
    v: list[FieldViolation] = []
    arm = request.arm or "a"
    if arm not in ("a", "b"):
        v.append(FieldViolation("arm", f'must be "a" or "b", got {request.arm[:40]!r}'))
    for field in ("artifact", "model"):
        if len(getattr(request, field)) > MAX_PATH_LENGTH:
            v.append(FieldViolation(field, f"longer than {MAX_PATH_LENGTH} characters"))
    if request.retrieval_only and request.model:
        v.append(FieldViolation("model", "must be empty with retrieval_only"))
    if v:
        raise InvalidRequest(v)
    model = "" if request.retrieval_only else (request.model or None)
    return arm, request.artifact, model
