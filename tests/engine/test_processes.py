"""`crossrec serve --processes 2`: two engine processes on one port under a supervisor. Calls on
separate connections reach both; both use the one store; a swap answered by one reaches the other;
a process that dies is started again; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from test_operations import build_v2

from crossrec.v1 import events_pb2, recommend_pb2, service_pb2, service_pb2_grpc

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stub(port: int):
    """A stub on a connection of its own (the kernel picks a process per connection)."""
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    return channel, service_pb2_grpc.RecommendServiceStub(channel)


def served(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("crossrec_requests_total{") and 'method="Recommend"' in line
    )


def recommend(port: int, user: str = "u1") -> recommend_pb2.RecommendResponse:
    channel, s = stub(port)
    try:
        return s.Recommend(recommend_pb2.RecommendRequest(user_id=user, k=2), timeout=10)
    finally:
        channel.close()


def engine_processes(supervisor: int) -> set[int]:
    """The supervisor's engine processes (multiprocessing's spawned children)."""
    found = subprocess.run(
        ["pgrep", "-P", str(supervisor), "-f", "spawn_main"], capture_output=True, text=True
    )
    return {int(pid) for pid in found.stdout.split()}


def wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except (grpc.RpcError, OSError):
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_processes_share_the_port_the_store_and_swaps(root, tiny_built, tmp_path):
    port, metrics = free_port(), free_port()
    while metrics + 1 == port:
        metrics = free_port()
    env = {**os.environ, "CROSSREC_STORE__PSEUDONYM_KEY": "k" * 32}
    command = [sys.executable, "-m", "clients.cli", "serve", "--artifact", str(root)]
    command += ["--store", str(tmp_path / "e.sqlite"), "--port", str(port)]
    command += ["--metrics-port", str(metrics), "--processes", "2"]
    output = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed in the finally
    supervisor = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: served(metrics) >= 0 and served(metrics + 1) >= 0)
        channel, s = stub(port)
        event = events_pb2.Event(user_id="u1", item_id="i00", action=events_pb2.ACTION_PURCHASE)
        event.time.GetCurrentTime()
        s.IngestEvents(service_pb2.IngestEventsRequest(events=[event]), timeout=10)
        channel.close()
        answers = [recommend(port) for _ in range(40)]  # 40 connections
        assert served(metrics) > 0
        assert served(metrics + 1) > 0  # both processes answered
        assert not any(a.fallback for a in answers)  # both read the one store
        build_v2(root, tiny_built)
        channel, s = stub(port)
        swap = s.SwapVersion(service_pb2.SwapVersionRequest(artifact=str(root / "v2")), timeout=30)
        channel.close()
        assert swap.index_version == "v2"
        # The other process follows through the pins file within about a second.
        wait_until(lambda: {recommend(port).index_version for _ in range(20)} == {"v2"}, 30)
        # A swap naming nothing returns every process to the configured root, whose LATEST
        # moved meanwhile: the processes that did not answer it follow too.
        from indexer.build import BuildConfig, build_index

        channel, s = stub(port)
        s.SwapVersion(service_pb2.SwapVersionRequest(), timeout=30)  # unpinned, LATEST is v2
        channel.close()
        catalog = tiny_built.parent / "catalog.parquet"
        build_index(catalog, root, None, BuildConfig(text=False, progress=False, version="v3"))
        channel, s = stub(port)
        assert s.SwapVersion(service_pb2.SwapVersionRequest(), timeout=30).index_version == "v3"
        channel.close()
        wait_until(lambda: {recommend(port).index_version for _ in range(20)} == {"v3"}, 30)
        # An engine process that dies is started again (the supervisor's other child, Python's
        # resource tracker, is left alone).
        engines = engine_processes(supervisor.pid)
        assert len(engines) == 2
        killed = min(engines)
        os.kill(killed, signal.SIGKILL)
        wait_until(
            lambda: (
                len(engine_processes(supervisor.pid) - {killed}) == 2
                and served(metrics) >= 0
                and served(metrics + 1) >= 0
            ),
            60,
        )
        assert {recommend(port).index_version for _ in range(10)} == {"v3"}
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        assert subprocess.run(["pgrep", "-P", str(supervisor.pid)]).returncode == 1  # none left
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        output.close()
        print((tmp_path / "serve.log").read_text()[-3000:])
