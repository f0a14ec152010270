"""Several engine processes on one port: ``[server] processes = N``.

One process answers at most what one Python interpreter can (the GIL: past ~one core of Python
work, stage times grow at flat QPS). With ``processes = N`` the command's process becomes a small
supervisor that starts N engine processes (``spawn``: nothing inherited but the configuration),
each binding the same port with ``SO_REUSEPORT`` so that the kernel spreads connections over them,
as gRPC's Python documentation recommends for CPU-bound servers.

What they share and how:

* the index and model files, each process opening them itself (the vector file is mapped, so its
  pages are shared through the page cache; faiss shards are read into each process);
* the store: a SQLite file in WAL mode (counts then read from the file, at most every 5 s) or a
  PostgreSQL database (engine/state/postgres.py);
* swaps: a SwapVersion reaches the one process that answers it, which pins the pair in the pins
  file (engine/pins.py); every process checks that file each second and serves what it says, so a
  swap reaches all within about a second (tested);
* metrics: process i serves ``/metrics`` on ``metrics_port + i`` (scrape them all);
* retention passes run in the first process only.

SIGTERM or SIGINT to the supervisor is passed to every process, each finishing its in-flight calls
first. A process that dies is started again (at most 5 times within a minute; then the supervisor
stops the others and exits 1, leaving the restart to the service manager).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections import deque

from engine.config import EngineConfig

log = logging.getLogger(__name__)

#: Restarts of dead processes allowed within :data:`RESTART_WINDOW_S` before giving up.
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0


def _run(config: EngineConfig, process: int) -> None:
    """One engine process (the target of ``multiprocessing``)."""
    import asyncio

    from engine.api.server import serve_forever

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s p{process} %(name)s %(message)s")
    asyncio.run(serve_forever(config, process=process))


def serve_processes(config: EngineConfig) -> int:
    """Supervise ``config.server.processes`` engine processes until SIGTERM/SIGINT; returns the
    exit status."""
    context = multiprocessing.get_context("spawn")
    n = config.server.processes
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def launch(i: int):
        p = context.Process(target=_run, args=(config, i), name=f"crossrec-engine-{i}")
        p.start()
        return p

    children = [launch(i) for i in range(n)]
    restarts: deque[float] = deque()
    status = 0
    while not stopping:
        time.sleep(0.2)
        for i, child in enumerate(children):
            if child.is_alive() or stopping:
                continue
            now = time.monotonic()
            while restarts and now - restarts[0] > RESTART_WINDOW_S:
                restarts.popleft()
            if len(restarts) >= MAX_RESTARTS:
                log.error(
                    "engine processes keep dying (%d restarts in a minute): stopping", MAX_RESTARTS
                )
                stopping, status = True, 1
                break
            log.error("engine process %d exited (code %s): starting it again", i, child.exitcode)
            restarts.append(now)
            children[i] = launch(i)
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: the process finishes its in-flight calls, then stops
    for child in children:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    return status
