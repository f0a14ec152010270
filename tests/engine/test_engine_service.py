"""The engine's service around recommendations: request limits, deadlines, health, the async client,
reloads, metrics and the CLI against a real gRPC server."""

from __future__ import annotations

import asyncio
import json

import grpc
import polars as pl
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers_engine import busy_user

from clients.sdk import AsyncCrossrecClient, CrossrecError, Event, RecommendOptions
from crossrec.v1 import recommend_pb2, service_pb2, service_pb2_grpc
from indexer.artifact import ArtifactError

pytestmark = pytest.mark.integration


def test_bad_batch_request_names_its_position(client):
    with pytest.raises(CrossrecError) as excinfo:
        client.recommend_batch([("u", RecommendOptions(k=3)), ("u", RecommendOptions(k=-1))])
    assert set(excinfo.value.field_violations) == {"requests[1].k"}
    ok = client.recommend_batch([("a", RecommendOptions(k=2)), ("b", RecommendOptions(k=3))])
    assert [len(r.items) for r in ok] == [2, 3]


def test_bad_events_are_rejected_whole(client, catalog, server):
    before = client.status().event_count
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
    request = service_pb2.IngestEventsRequest()
    good = request.events.add(user_id="u-bad", item_id=catalog["item_id"][0], action=1)
    good.time.GetCurrentTime()
    request.events.add(user_id="u-bad", item_id="", action=0)  # no item, no action, no time
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.IngestEvents(request, timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[1].item_id" in excinfo.value.details()
    assert "events[1].action" in excinfo.value.details()
    assert "events[1].time" in excinfo.value.details()
    assert (
        client.status().event_count == before
    )  # the good event of the batch was not stored either


def test_oversized_request_is_refused_and_the_server_keeps_serving(client, server):
    stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
    huge = recommend_pb2.RecommendRequest(
        user_id="u", k=5, filters=recommend_pb2.Filters(exclude_item_ids=["x" * 1000] * 400)
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.Recommend(huge, timeout=5)
    assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    limit = server.config.limits.max_ingest_events
    too_many = [Event("u", "i", "view", event_id=str(i)) for i in range(limit + 1)]
    with pytest.raises(CrossrecError) as exc2:
        client.ingest(too_many)
    assert exc2.value.code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    assert len(client.recommend("u", k=2).items) == 2


def test_deadline_is_honoured_by_client_and_server(client, server, monkeypatch):
    import threading
    import time as _time

    real = server.engine.recommend
    started = threading.Event()

    def slow(*args, **kwargs):  # a request that takes longer than its deadline
        started.set()
        _time.sleep(1.0)
        return real(*args, **kwargs)

    def expired() -> float:
        value = server.metrics.registry.get_sample_value(
            "crossrec_requests_total", {"method": "Recommend", "code": "DEADLINE_EXCEEDED"}
        )
        return value or 0.0

    monkeypatch.setattr(server.engine, "recommend", slow)
    # A loaded box can let the 0.3 s pass before the server even starts the call (then it has
    # nothing to count); such a try is repeated, up to three times, until the handler ran.
    for _ in range(3):
        started.clear()
        before = expired()
        with pytest.raises(CrossrecError) as excinfo:
            client.recommend("u", k=5, timeout=0.3)
        assert excinfo.value.code == "DEADLINE_EXCEEDED"
        if started.wait(2.0):
            break
    else:
        pytest.fail("the server never started the call within three tries")
    deadline = _time.time() + 10
    while expired() == before and _time.time() < deadline:  # the server gives up on its side too
        _time.sleep(0.05)
    assert expired() == before + 1
    monkeypatch.setattr(server.engine, "recommend", real)
    assert len(client.recommend("u", k=5).items) == 5


def test_health_service_says_serving(server):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.target))
    for name in ("", "crossrec.v1.RecommendService"):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_async_client(server, catalog):
    async def go():
        async with AsyncCrossrecClient(server.target, timeout=10) as c:
            r = await c.ingest([Event("async-user", catalog["item_id"][3], "purchase")])
            rec = await c.recommend("async-user", k=4)
            batch = await c.recommend_batch(
                [("async-user", RecommendOptions(k=2)), ("x", RecommendOptions(k=1))]
            )
            return r, rec, batch, await c.status()

    result, rec, batch, status = asyncio.run(go())
    assert result.accepted == 1
    assert len(rec.items) == 4
    assert not rec.fallback
    assert status.item_count == 2_000
    assert [len(b.items) for b in batch] == [2, 1]
    assert batch[1].fallback


def test_a_version_that_fails_verification_keeps_the_old_one_serving(server, built_index, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(built_index.path, broken)
    (broken / "vectors.npy").write_bytes(b"garbage")
    before = server.engine.served
    with pytest.raises(ArtifactError):
        server.engine.versions.load(str(broken))
    assert server.engine.served is before


def test_metrics_count_requests_and_stages(server, client):
    from prometheus_client import generate_latest

    def count() -> float:
        value = server.metrics.registry.get_sample_value(
            "crossrec_requests_total", {"method": "GetStatus", "code": "OK"}
        )
        return value or 0.0

    before = count()
    client.status()
    client.status()
    assert count() == before + 2
    client.recommend("metrics-user", k=3)
    text = generate_latest(server.metrics.registry).decode()
    assert 'crossrec_stage_seconds_count{stage="retrieve"}' in text
    assert 'crossrec_candidates_count{stage="returned"}' in text


def test_cli_ingest_and_recommend_against_the_engine(server, small_shop_dir, tmp_path, capsys):
    from clients.cli import main

    events = pl.read_parquet(small_shop_dir / "events.parquet")
    user = busy_user(events, 2)
    events.filter(pl.col("user_id") == user).with_columns(
        pl.lit("cli-" + user).alias("user_id")
    ).write_csv(tmp_path / "e.csv")
    assert main(["ingest", str(tmp_path / "e.csv"), "--target", server.target, "--batch", "7"]) == 0
    assert "stored" in capsys.readouterr().out
    assert (
        main(
            [
                "recommend",
                "--target",
                server.target,
                "--user",
                "cli-" + user,
                "-k",
                "4",
                "--explain",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("<- ") == 4
    assert "goes with your interest in" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "user_id,item_id,action,ts\nu,i,view,2026-01-01T00:00:00Z\n,i,view,2026-01-01T00:00:00Z\n"
    )
    assert main(["ingest", str(bad), "--target", server.target]) == 2
    assert "row 2, column 'user_id': must not be empty" in capsys.readouterr().err
    # Rows the client can check itself are reported before anything is sent.
    before = server.engine.status()["event_count"]
    bad.write_text(
        "user_id,item_id,action,ts\n"
        "u,i,look,2026-01-05 10:00\n"
        "u,i,view,\n"
        "u,i,view,2026-01-05T10:00+02:00\n"
    )
    assert main(["ingest", str(bad), "--target", server.target]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'action'" in err
    assert "row 2, column 'ts'" in err
    assert "nothing sent" in err
    assert server.engine.status()["event_count"] == before


def test_bench_command_measures_the_engine(server, small_shop_dir, tmp_path, capsys):
    from clients.cli import main

    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "serve",
            "--target",
            server.target,
            "--events",
            str(small_shop_dir / "events.parquet"),
            "--users",
            "20",
            "--requests",
            "40",
            "--concurrency",
            "4",
            "--json",
            str(out),
            "--png",
            str(tmp_path / "bench.png"),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["users"] == 20
    assert result["ingest"]["events"] > 0
    assert result["ingest"]["events_per_s"] > 0
    assert result["one_client"]["requests"] == 40
    assert result["concurrent"]["requests"] == 40
    assert result["concurrent"]["qps"] > 0
    assert result["concurrent"]["failed"] == {}
    assert 0 < result["one_client"]["p50_ms"] <= result["one_client"]["p99_ms"]
    assert result["stamp"]["versions"]["grpcio"] != "not installed"
    assert result["stamp"]["cpus"]
    assert (tmp_path / "bench.png").stat().st_size > 1000
