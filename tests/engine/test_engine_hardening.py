"""Defects found by probing a live engine as a hostile client would (issue: hardening): each test
failed before its fix."""

from __future__ import annotations

import grpc
import pytest

from clients.messages import Call
from clients.sdk import CrossrecError, Event
from crossrec.v1 import service_pb2
from engine.errors import MAX_VIOLATIONS

pytestmark = pytest.mark.integration


def test_a_hundred_bad_events_give_invalid_argument_with_the_first_violations(client):
    # 100 events without an action: 100 violations used to exceed gRPC's metadata limit, and the
    # client saw RESOURCE_EXHAUSTED without any field.
    events = [Event(f"u{i}", "i", "view", event_id=f"e{i}") for i in range(100)]
    request = service_pb2.IngestEventsRequest()
    for e in events:
        m = request.events.add(user_id=e.user_id, item_id="i", action=0, event_id=e.event_id)
        m.time.GetCurrentTime()
    with pytest.raises(CrossrecError) as caught:
        client._run(Call("IngestEvents", request, lambda r: r), 5)
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

    def raw(method: str):
        return channel.unary_unary(
            f"/crossrec.v1.RecommendService/{method}",
            request_serializer=None,
            response_deserializer=None,
        )

    for payload in (bytes.fromhex("0a02fffe180a"), bytes.fromhex("0a05ab")):  # bad UTF-8; cut
        with pytest.raises(grpc.RpcError) as caught:
            raw("Recommend")(payload, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "could not be decoded" in caught.value.details()
    # Counted (on DeleteUser, which no other test here calls: a finished call's count can land
    # just after its client has its answer).
    counter = server.metrics.requests.labels("DeleteUser", "INVALID_ARGUMENT")
    before = counter._value.get()
    with pytest.raises(grpc.RpcError) as caught:
        raw("DeleteUser")(bytes.fromhex("0a02fffe"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert counter._value.get() - before == 1
    assert len(client.recommend("u", k=2).items) == 2  # still serving


def test_list_fields_have_documented_limits(client, server):
    limit = server.config.limits.max_list_items
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


def test_delete_user_leaves_no_byte_of_the_user_in_any_file_of_the_store(tmp_path):
    from engine.state.store import SQLiteEventStore, StoredEvent

    store = SQLiteEventStore(tmp_path / "events.sqlite")
    canaries = [b"canary-key-5f3a", b"canary-item-9d1", b"canary-session-77"]
    events = [
        StoredEvent(f"c{i}", "canary-key-5f3a", "canary-item-9d1", "view", i, "canary-session-77")
        for i in range(50)
    ] + [StoredEvent(f"o{i}", f"other-{i}", "item-1", "click", i, "") for i in range(200)]
    store.append(events)

    def files_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

    assert all(c in files_bytes() for c in canaries)  # the test can see them before deletion
    assert store.delete_user("canary-key-5f3a") == 50
    left = files_bytes()
    assert not [c for c in canaries if c in left]
    assert store.counts() == (200, 200)  # the other users are untouched
    store.close()
    assert not [c for c in canaries if c in files_bytes()]


def test_counts_are_kept_on_write_and_read_without_a_query(tmp_path):
    from engine.state.store import SQLiteEventStore, StoredEvent

    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    assert store.counts() == (0, 0)
    a = [StoredEvent(f"a{i}", "ua", "i", "view", i) for i in range(3)]
    b = [StoredEvent(f"b{i}", "ub", "i", "view", i) for i in range(2)]
    assert store.append(a + b) == (5, 0, 0)
    assert store.append([*a[:1], StoredEvent("a9", "ua", "i", "cart", 9)]) == (1, 1, 0)  # a dup
    assert store.counts() == (2, 6)
    assert store.delete_user("ub") == 2
    assert store.delete_user("nobody") == 0
    assert store.counts() == (1, 4)

    class NoQueries:
        def execute(self, *args):
            raise AssertionError("GetStatus ran a query")

    real, store._db = store._db, NoQueries()
    assert store.counts() == (1, 4)
    store._db = real
    store.close()
    reopened = SQLiteEventStore(path)  # counted once at open
    assert reopened.counts() == (1, 4)
    reopened.close()
