"""``crossrec bench hostile``: what a hostile client can do to a running engine, measured.

Four attacks against an engine (``crossrec serve``, plaintext, ideally with tokens configured and
``--metrics-port`` on), each with the figure its defence promises:

* ``brands``: 4 concurrent RecommendBatch calls of 100 requests, each asking k=10 with 1,000
  brand names that match nothing (inside every limit); an ordinary Recommend sent meanwhile
  should wait < 100 ms.
* ``metrics``: 30,000 calls to made-up method names without a token; ``/metrics`` should stay
  < 100 KB.
* ``bodies``: 400 concurrent 3.9 MB bodies without a token; the engine's resident memory
  (``process_resident_memory_bytes``) before, at the end and 5 s later.
* ``shedding``: 1,024 concurrent Recommend calls from one asyncio client (light enough that
  the load generator does not starve the engine of the CPUs it shares); refusals should take a
  few ms, and every call the client saw fail should be counted on the server
  (``crossrec_transport_calls_total{outcome="failed"}``).

Prints the figures and writes them as JSON (``--json``), stamped with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from pathlib import Path

import numpy as np

ATTACKS = ("brands", "metrics", "bodies", "shedding")
SERVICE = "/crossrec.v1.RecommendService/"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hostile", help="measure a running engine under hostile clients")
    p.add_argument("--target", default="127.0.0.1:50051", help="engine address (plaintext)")
    p.add_argument("--token", default="", help="a query-role token (for brands and shedding)")
    p.add_argument("--metrics", default="", help="the engine's Prometheus URL (/metrics)")
    p.add_argument(
        "--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}"
    )
    p.add_argument("--concurrency", type=int, default=1024, help="shedding: concurrent calls")
    p.add_argument("--unknown-calls", type=int, default=30_000, help="metrics: calls made")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossrec.stamp import stamp

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        print(f"crossrec bench hostile: unknown attacks {unknown}; attacks are {ATTACKS}")
        return 2
    if {"metrics", "bodies"} & set(attacks) and not args.metrics:
        print("crossrec bench hostile: the metrics and bodies attacks need --metrics URL")
        return 2
    results: dict = {"target": args.target, "stamp": stamp()}
    for attack in attacks:
        results[attack] = asyncio.run(_ATTACKS[attack](args))
        print(f"{attack}: {json.dumps(results[attack])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


# -- helpers ---------------------------------------------------------------------------------------
def _channel(target: str):
    import grpc

    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.insecure_channel(target, options=options)


def _auth(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _call(channel, method: str, body: bytes, metadata: tuple, timeout: float):
    """(status code name, seconds) of one unary call with a raw body."""
    import grpc

    started = time.perf_counter()
    try:
        await channel.unary_unary(SERVICE + method if "/" not in method else method)(
            body, metadata=metadata, timeout=timeout
        )
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return code, time.perf_counter() - started


def _ms(seconds: list[float], q: float) -> float | None:
    return round(float(np.percentile(seconds, q)) * 1e3, 1) if seconds else None


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _sample(text: str, name: str, labels: str = "") -> float:
    """The sum of ``name``'s samples whose labels contain ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (not labels or labels in line):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total


def _recommend(user: str, k: int = 10, brands: int = 0) -> bytes:
    from crossrec.v1 import recommend_pb2

    request = recommend_pb2.RecommendRequest(user_id=user, k=k)
    request.filters.brands.extend(f"no-such-brand-{i:04d}" for i in range(brands))
    return request.SerializeToString()


# -- the attacks -----------------------------------------------------------------------------------
async def brands(args) -> dict:
    from crossrec.v1 import recommend_pb2

    metadata = _auth(args.token)
    batch = recommend_pb2.RecommendBatchRequest()
    for i in range(100):
        batch.requests.add().ParseFromString(_recommend(f"hostile-{i}", 10, 1_000))
    body, ordinary = batch.SerializeToString(), _recommend("ordinary-user")
    async with _channel(args.target) as attacker, _channel(args.target) as user:
        alone = [(await _call(user, "Recommend", ordinary, metadata, 10))[1] for _ in range(20)]
        attacks = [
            asyncio.create_task(_call(attacker, "RecommendBatch", body, metadata, 60))
            for _ in range(4)
        ]
        during, codes = [], []
        while not all(t.done() for t in attacks):
            code, seconds = await _call(user, "Recommend", ordinary, metadata, 10)
            during.append(seconds)
            codes.append(code)
        done = [t.result() for t in attacks]
    return {
        "batch_bytes": len(body),
        "batch_codes": [c for c, _ in done],
        "batch_seconds": [round(s, 3) for _, s in done],
        "ordinary_alone_p50_ms": _ms(alone, 50),
        "ordinary_during_p50_ms": _ms(during, 50),
        "ordinary_during_max_ms": _ms(during, 100),
        "ordinary_during_calls": len(during),
        "ordinary_during_codes": sorted(set(codes)),
    }


async def metrics(args) -> dict:
    before = len(_scrape(args.metrics).encode())
    # A few at a time: this attack is about what unknown names do to the metrics, not about load
    # (64 at once were shed with RESOURCE_EXHAUSTED by a small queue on a busy machine).
    sem = asyncio.Semaphore(4)
    async with _channel(args.target) as channel:

        async def one(i: int) -> str:
            async with sem:
                name = f"Made{i:06d}" if i % 2 else f"/made.up.Service{i % 97}/Call{i:06d}"
                return (await _call(channel, name, b"", (), 10))[0]

        started = time.perf_counter()
        codes = await asyncio.gather(*(one(i) for i in range(args.unknown_calls)))
        seconds = time.perf_counter() - started
    text = _scrape(args.metrics)
    return {
        "calls": args.unknown_calls,
        "seconds": round(seconds, 1),
        "codes": {c: codes.count(c) for c in sorted(set(codes))},
        "metrics_bytes_before": before,
        "metrics_bytes_after": len(text.encode()),
    }


async def bodies(args) -> dict:
    from crossrec.v1 import recommend_pb2

    request = recommend_pb2.RecommendRequest(user_id="hostile", k=5)
    request.filters.exclude_item_ids.extend(["x" * 3_900] * 1_000)  # 3.9 MB, under 4 MiB
    raw = request.SerializeToString()

    def rss() -> float:
        return _sample(_scrape(args.metrics), "process_resident_memory_bytes") / 2**20

    before = rss()
    channels = [_channel(args.target) for _ in range(400)]
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(_call(c, "Recommend", raw, (), 60) for c in channels))
    seconds = time.perf_counter() - started
    at_end = rss()
    for c in channels:
        await c.close()
    await asyncio.sleep(5)
    codes = [c for c, _ in outcomes]
    return {
        "calls": len(channels),
        "body_bytes": len(raw),
        "seconds": round(seconds, 2),
        "codes": {c: codes.count(c) for c in sorted(set(codes))},
        "rss_before_mb": round(before),
        "rss_at_end_mb": round(at_end),
        "rss_5s_later_mb": round(rss()),
    }


async def shedding(args) -> dict:
    metadata = _auth(args.token)
    before = _scrape(args.metrics) if args.metrics else ""
    async with _channel(args.target) as channel:
        calls = [
            _call(channel, "Recommend", _recommend(f"u{i % 500}"), metadata, 10)
            for i in range(args.concurrency)
        ]
        started = time.perf_counter()
        outcomes = await asyncio.gather(*calls)
        seconds = time.perf_counter() - started
    by_code: dict[str, list[float]] = {}
    for code, s in outcomes:
        by_code.setdefault(code, []).append(s)
    out: dict = {
        "concurrency": args.concurrency,
        "seconds": round(seconds, 2),
        "codes": {
            code: {"calls": len(s), "p50_ms": _ms(s, 50), "p99_ms": _ms(s, 99)}
            for code, s in sorted(by_code.items())
        },
    }
    if args.metrics:
        await asyncio.sleep(1)  # the core counts a call as it ends
        after = _scrape(args.metrics)
        name = "crossrec_transport_calls_total"
        failed = _sample(after, name, 'outcome="failed"') - _sample(
            before, name, 'outcome="failed"'
        )
        out["client_saw_failed"] = sum(len(s) for c, s in by_code.items() if c != "OK")
        out["server_counted_failed"] = int(failed)
    return out


_ATTACKS = {"brands": brands, "metrics": metrics, "bodies": bodies, "shedding": shedding}
