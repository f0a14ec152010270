"""Defects found by probing a live engine as a hostile client would (issue: hardening): each test
failed before its fix."""

from __future__ import annotations

import grpc
import pytest

from clients.sdk import CrossrecError, Event
from crossrec.v1 import recommend_pb2, service_pb2, service_pb2_grpc
from engine.errors import MAX_VIOLATIONS

pytestmark = pytest.mark.integration


def stub_of(server):
    return service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))


def test_a_hundred_bad_events_give_invalid_argument_with_the_first_violations(client):
    # 100 events without an action: 100 violations used to exceed gRPC's metadata limit, and the
    # client saw RESOURCE_EXHAUSTED without any field.
    events = [Event(f"u{i}", "i", "view", event_id=f"e{i}") for i in range(100)]
    request = service_pb2.IngestEventsRequest()
    for e in events:
        m = request.events.add(user_id=e.user_id, item_id="i", action=0, event_id=e.event_id)
        m.time.GetCurrentTime()
    with pytest.raises(CrossrecError) as caught:
        client._call(client._stub.IngestEvents, request, 5)
    violations = caught.value.field_violations
    assert caught.value.code == "INVALID_ARGUMENT"
    assert len(violations) == MAX_VIOLATIONS + 1
    assert violations["events[0].action"] == "must be VIEW, CLICK, CART or PURCHASE"
    assert violations["..."] == f"{100 - MAX_VIOLATIONS} more violation(s) not listed"


def test_many_unknown_categories_give_invalid_argument(client):
    with pytest.raises(CrossrecError) as caught:
        client.recommend(
            "u", k=5, exclude_categories=[f"Nowhere {i} " + "x" * 300 for i in range(100)]
        )
    assert caught.value.code == "INVALID_ARGUMENT"
    violations = caught.value.field_violations
    assert len(violations) == MAX_VIOLATIONS + 1
    # Descriptions quoting the caller's input are clipped.
    assert all(len(d) <= 120 for d in violations.values())


def test_undecodable_requests_get_invalid_argument_and_are_counted(server, client):
    channel = grpc.insecure_channel(server.target)
    raw = channel.unary_unary(
        "/crossrec.v1.RecommendService/Recommend",
        request_serializer=None,
        response_deserializer=recommend_pb2.RecommendResponse.FromString,
    )
    before = server.metrics.requests.labels("Recommend", "INVALID_ARGUMENT")._value.get()
    for payload in (bytes.fromhex("0a02fffe180a"), bytes.fromhex("0a05ab")):  # bad UTF-8; cut
        with pytest.raises(grpc.RpcError) as caught:
            raw(payload, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "could not be decoded" in caught.value.details()
    after = server.metrics.requests.labels("Recommend", "INVALID_ARGUMENT")._value.get()
    assert after - before == 2
    assert len(client.recommend("u", k=2).items) == 2  # still serving


def test_list_fields_have_documented_limits(client, server):
    limit = server.config.max_list_items
    with pytest.raises(CrossrecError) as caught:
        client.recommend("u", k=5, exclude_item_ids=[f"i{i}" for i in range(limit + 1)])
    assert caught.value.field_violations == {
        "filters.exclude_item_ids": f"at most {limit} entries, got {limit + 1}"
    }
    with pytest.raises(CrossrecError) as caught:
        client.recommend("u", k=5, brands=[f"b{i}" for i in range(limit + 1)])
    assert set(caught.value.field_violations) == {"filters.brands"}
    ok = client.recommend("nobody", k=5, exclude_item_ids=[f"i{i}" for i in range(limit)])
    assert len(ok.items) == 5
