"""Starting and stopping the engine's gRPC server (with health, reflection and metrics)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from crossrec.v1 import service_pb2
from engine.api import transport
from engine.api.auth import TokenAuth, parse_tokens, server_credentials
from engine.api.service import RecommendService, add_service
from engine.config import EngineConfig, ServerConfig
from engine.core import Engine
from engine.feedback.metrics import Metrics
from engine.state.store import open_store

log = logging.getLogger(__name__)
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["RecommendService"].full_name


def limit_threads(threads: int) -> None:
    """Process-wide: ``threads`` OpenMP threads for faiss and BLAS threads for numpy. A server's
    parallelism comes from concurrent requests on its workers; fanning one small search out over
    more threads only adds overhead (BENCHMARKS.md). Set by the server, not by the library."""
    import faiss
    from threadpoolctl import threadpool_limits

    faiss.omp_set_num_threads(threads)
    threadpool_limits(threads, user_api="blas")


#: Calls gRPC's core admits beyond what the servicer runs or queues (``workers + max_queued``):
#: room for health checks, status calls and the servicer's own quick "overloaded" refusals.
ADMISSION_HEADROOM = 16


def admission_limit(server: ServerConfig) -> int:
    """Concurrent calls the server admits at all; past it gRPC refuses with RESOURCE_EXHAUSTED
    ("Concurrent RPC limit exceeded") before the call reaches Python."""
    return server.workers + server.max_queued + ADMISSION_HEADROOM


#: Seconds between a process's checks of the pins file when several processes serve (another
#: process may have answered a SwapVersion).
FOLLOW_PINS_S = 1.0


async def start(
    config: EngineConfig, process: int = 0
) -> tuple[grpc.aio.Server, int, Engine, Metrics]:
    """Load the artifact, open the store, bind, start. ``process``: which of ``[server]
    processes`` this is (engine/api/processes.py). Returns (server, bound port, engine,
    metrics)."""
    srv, tls, auth = config.server, config.tls, config.auth
    several = srv.processes > 1
    limit_threads(srv.faiss_threads)
    store = open_store(config.store.path, config.store.max_mb, shared=several)
    metrics = Metrics()
    engine = Engine(config, store, metrics)
    engine.versions.load_configured()
    if srv.metrics_port:
        metrics.serve(srv.metrics_port + process, srv.host)
    tokens = parse_tokens(auth.tokens, auth.tokens_file)
    interceptors = [TokenAuth(tokens, auth.protect_health, metrics)] if tokens else []
    before = transport.server_ids()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.limits.max_message_bytes),
            ("grpc.max_send_message_length", config.limits.max_message_bytes),
            transport.CHANNELZ_OPTION,
            # Several processes share the port on purpose; one process alone must not share it
            # with a stray engine by accident (gRPC would allow it by default).
            ("grpc.so_reuseport", 1 if several else 0),
        ],
        interceptors=interceptors,
        # Admission in gRPC's core, before any Python runs: under a flood the event loop would
        # otherwise spend its time refusing calls one by one (or let them expire unrefused).
        maximum_concurrent_rpcs=admission_limit(srv),
    )
    server_id = transport.created_server(before)
    if server_id is not None:
        metrics.watch_transport(lambda: transport.call_counts(server_id))
    service = RecommendService(engine, metrics)
    add_service(service, server)
    cast(Any, server).service = service  # for the tests that watch its admission
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{srv.host}:{srv.port}"
    if tls.cert_file:  # with its key: engine/config/check.py refuses one without the other
        credentials = server_credentials(tls.cert_file, tls.key_file, tls.client_ca_file)
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    log.info(
        "access control: %s; transport: %s",
        f"{len(tokens)} token(s)" if tokens else "off",
        "TLS" + (" with client certificates" if tls.client_ca_file else "")
        if tls.cert_file
        else "plaintext",
    )
    await server.start()
    tasks = []
    if process == 0:  # one retention pass per store, not one per process
        tasks.append(asyncio.create_task(_every(engine.maintain, srv.maintenance_interval_s, True)))
    if several:
        tasks.append(asyncio.create_task(_every(engine.versions.follow_pins, FOLLOW_PINS_S, False)))
    if config.arms.watch_latest_s > 0:
        tasks.append(
            asyncio.create_task(_every(engine.versions.refresh, config.arms.watch_latest_s, False))
        )
    cast(Any, server).background = tasks  # stopped with the server (_stop_background)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "crossrec engine listening on %s:%d, index %s",
        srv.host,
        port,
        engine.served.version.version,
    )
    return server, port, engine, metrics


async def _every(job, interval_s: float, at_start: bool) -> None:
    """Run ``job`` (blocking; off the event loop) every ``interval_s`` (first at once with
    ``at_start``): retention passes (:meth:`Engine.maintain`) and ``LATEST`` checks
    (:meth:`Engine.refresh`). A failed run is logged and the next one runs on time."""
    loop = asyncio.get_running_loop()
    if not at_start:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await loop.run_in_executor(None, job)
        except Exception:
            log.exception("%s failed", getattr(job, "__name__", "background job"))
        await asyncio.sleep(interval_s)


def _stop_background(server) -> None:
    for task in getattr(server, "background", ()):
        task.cancel()


async def serve_forever(config: EngineConfig, grace_s: float = 5.0, process: int = 0) -> None:
    """Run until SIGINT/SIGTERM, then finish in-flight RPCs (up to ``grace_s``) and stop."""
    server, port, engine, _ = await start(config, process)
    n = config.server.processes
    which = f", process {process + 1} of {n}" if n > 1 else ""
    print(
        f"crossrec engine listening on {config.server.host}:{port} "
        f"(index {engine.served.version.version}{which})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls")
    _stop_background(server)
    await server.stop(grace_s)
    engine.close()


class BackgroundServer:
    """An engine on its own event loop in a thread (for tests, the demo and benchmarks)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        # A guard against a hang, not a speed target: deploying Ray Serve shard groups on a busy
        # machine took over two minutes.
        started = asyncio.run_coroutine_threadsafe(start(self.config), self.loop).result(
            timeout=600
        )
        self.server, self.port, self.engine, self.metrics = started
        return self

    @property
    def target(self) -> str:
        return f"{self.config.server.host}:{self.port}"

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(_stop_background, self.server)
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(timeout=30)
        self.engine.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
