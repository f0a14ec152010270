"""Property-based tests over every RPC's request space (hypothesis): whatever a caller sends —
NaN or infinite numbers, huge or negative k, empty and over-long lists, unknown categories and
enum values, contradictory options, malformed timestamps, odd text — the engine answers OK or
refuses with a status that names what is wrong; it never fails with INTERNAL or UNKNOWN, never
stops serving, and an INVALID_ARGUMENT always carries field violations naming request fields.

The engine runs with small limits so that generated requests cross every one of them."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.v1 import events_pb2, recommend_pb2, service_pb2, service_pb2_grpc

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: Codes a caller may get for a request it built wrongly (or that asks too much), by RPC.
ALLOWED = {
    "Recommend": {"OK", "INVALID_ARGUMENT"},
    "RecommendBatch": {"OK", "INVALID_ARGUMENT"},
    "IngestEvents": {"OK", "INVALID_ARGUMENT"},
    "DeleteUser": {"OK", "INVALID_ARGUMENT"},
    "SwapVersion": {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION"},
}
CATEGORIES = ["Alpha > X", "Alpha > Y", "Beta", "Alpha"]  # the tiny index's, and a department

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, -1.0, 1e308, -1e308]),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "i00", "i01", "u1", "x" * 300, "\u0000", "é", "🛒"]),
)
categories = st.one_of(st.sampled_from(CATEGORIES), texts)
ints32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-3, 60))
timestamps = st.builds(
    lambda s, n: (s, n),
    st.one_of(st.integers(-(2**62), 2**62), st.integers(1_600_000_000, 1_900_000_000)),
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(0, 999_999_999)),
)


@st.composite
def events(draw, max_size=14):
    out = []
    for _ in range(draw(st.integers(0, max_size))):
        e = events_pb2.Event(
            user_id=draw(texts),
            item_id=draw(st.one_of(st.sampled_from(["i00", "i05", "nope"]), texts)),
            action=draw(st.integers(0, 6) | st.just(99)),
            session_id=draw(texts),
            recommendation_id=draw(texts),
            event_id=draw(texts),
        )
        if draw(st.booleans()):
            seconds, nanos = draw(timestamps)
            e.time.seconds, e.time.nanos = seconds, nanos
        out.append(e)
    return out


@st.composite
def recommend_requests(draw):
    """A third of the requests are valid, a third valid but for one field, a third wild in every
    field: invalid requests alone would never reach the work behind validation."""
    mode = draw(st.sampled_from(["valid", "one", "wild"]))
    fields = ["user", "k", "include", "exclude", "quotas", "share", "weights", "prices", "lists"]
    wild_field = draw(st.sampled_from(fields)) if mode == "one" else None

    def pick(field, valid, wild):
        return draw(wild if mode == "wild" or field == wild_field else valid)

    known = st.sampled_from(CATEGORIES[:3])
    r = recommend_pb2.RecommendRequest(
        user_id=pick("user", st.sampled_from(["u1", "u2", ""]), texts),
        k=pick("k", st.integers(1, 50), ints32),
        include_categories=pick(
            "include", st.lists(known, max_size=3, unique=True), st.lists(categories, max_size=13)
        ),
        exclude_categories=pick(
            "exclude", st.lists(known, max_size=1), st.lists(categories, max_size=13)
        ),
        weight_by_price=draw(st.booleans()),
        explain=draw(st.booleans()),
    )
    r.recent_events.extend(draw(events(max_size=3 if mode == "valid" else 14)))
    quotas = pick(
        "quotas",
        st.lists(st.tuples(known, st.integers(1, 3)), max_size=2, unique_by=lambda q: q[0]),
        st.lists(st.tuples(categories, st.integers(0, 2**32 - 1)), max_size=3),
    )
    for category, count in quotas:
        r.category_quotas.add(category=category, count=count)
    if not quotas and draw(st.booleans()):
        r.cross_category_share = pick("share", st.floats(0, 1), numbers)
    weights = pick(
        "weights",
        st.lists(
            st.tuples(st.integers(1, 3), st.floats(0.1, 5)), max_size=3, unique_by=lambda w: w[0]
        ),
        st.lists(st.tuples(st.integers(0, 5) | st.just(99), numbers), max_size=4),
    )
    for objective, weight in weights:
        r.objective_weights.add(objective=objective, weight=weight)
    f = r.filters
    f.in_stock_only = draw(st.booleans())
    low, high = pick(
        "prices",
        st.tuples(st.none() | st.floats(0, 5), st.none() | st.floats(5, 20)),
        st.tuples(st.none() | numbers, st.none() | numbers),
    )
    if low is not None:
        f.min_price = low
    if high is not None:
        f.max_price = high
    brands, excluded = pick(
        "lists",
        st.tuples(
            st.lists(st.sampled_from(["brand1", "brand2"]), max_size=2), st.lists(texts, max_size=3)
        ),
        st.tuples(st.lists(texts, max_size=12), st.lists(texts, max_size=12)),
    )
    f.brands.extend(brands)
    f.exclude_item_ids.extend(excluded)
    return r


@pytest.fixture(scope="module")
def stub(tiny_built, tmp_path_factory):
    from helpers_engine import engine_config

    from engine.api.server import BackgroundServer

    config = engine_config(
        tmp_path_factory.mktemp("props") / "e.sqlite",
        tiny_built,
        limits={
            "max_k": 50,
            "max_recent_events": 10,
            "max_ingest_events": 10,
            "max_batch_requests": 4,
            "max_batch_items": 60,
            "max_list_items": 10,
        },
    )
    with BackgroundServer(config) as server, grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.RecommendServiceStub(channel)


def outcome(rpc: str, call, request) -> str:
    """The status code of ``call(request)``, after checking the refusal is well formed."""
    try:
        call(request, timeout=30)
    except grpc.RpcError as exc:
        code = exc.code().name
        # Any refusal hypothesis finds is checked here, not one expected by pytest.raises.
        assert code in ALLOWED[rpc], (code, exc.details(), request)  # noqa: PT017
        if code == "INVALID_ARGUMENT":
            status = rpc_status.from_call(exc)
            assert status is not None, "no field details"
            bad = error_details_pb2.BadRequest()
            assert status.details
            assert status.details[0].Unpack(bad)
            fields = [v.field for v in bad.field_violations]
            assert fields, fields
            assert all((f and f[0].isalpha()) or f == "..." for f in fields), fields
            assert all(v.description for v in bad.field_violations)
        return code
    return "OK"


def still_serving(stub) -> None:
    assert stub.GetStatus(service_pb2.GetStatusRequest(), timeout=10).item_count == 12


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=recommend_requests())
def test_recommend_never_fails_internally(stub, request):
    outcome("Recommend", stub.Recommend, request)


@SETTINGS
@given(requests=st.lists(recommend_requests(), max_size=6))
def test_recommend_batch_never_fails_internally(stub, requests):
    request = recommend_pb2.RecommendBatchRequest(requests=requests)
    if outcome("RecommendBatch", stub.RecommendBatch, request) == "OK":
        assert len(requests) <= 4


@SETTINGS
@given(batch=events(max_size=14))
def test_ingest_never_fails_internally_and_refusals_store_nothing(stub, batch):
    before = stub.GetStatus(service_pb2.GetStatusRequest(), timeout=10).event_count
    code = outcome("IngestEvents", stub.IngestEvents, service_pb2.IngestEventsRequest(events=batch))
    after = stub.GetStatus(service_pb2.GetStatusRequest(), timeout=10).event_count
    if code != "OK":
        assert after == before  # all or nothing
    else:
        assert 0 < len(batch) <= 10


@SETTINGS
@given(user_id=texts)
def test_delete_user_never_fails_internally(stub, user_id):
    outcome("DeleteUser", stub.DeleteUser, service_pb2.DeleteUserRequest(user_id=user_id))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    arm=st.one_of(st.sampled_from(["", "a", "b"]), texts),
    model=st.sampled_from(["", "/nonexistent/model"]),
    artifact=st.sampled_from(["", "/nonexistent/index", "relative/path"]),
    retrieval_only=st.booleans(),
)
def test_swap_version_never_fails_internally(stub, arm, model, artifact, retrieval_only):
    request = service_pb2.SwapVersionRequest(
        arm=arm, model=model, artifact=artifact, retrieval_only=retrieval_only
    )
    outcome("SwapVersion", stub.SwapVersion, request)
    still_serving(stub)


def test_the_engine_still_serves_after_everything(stub):
    still_serving(stub)
    ok = stub.Recommend(recommend_pb2.RecommendRequest(user_id="u1", k=3), timeout=10)
    assert len(ok.items) == 3
