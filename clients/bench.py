"""``crossrec bench serve``: load an engine over gRPC and measure it.

Measures, against a running engine (``crossrec serve``):

* durable ingestion throughput: the chosen users' events through ``IngestEvents`` in batches;
* ``Recommend`` latency with one client (p50 / p90 / p99);
* ``Recommend`` throughput with N concurrent clients (each its own channel and thread).

Users are drawn (seeded) from an event file among those with at least ``--min-events`` events.
Prints the figures, writes them as JSON, and a latency PNG when matplotlib is installed
(``pip install 'crossrec[bench]'``). Requests loops are bounded in count; nothing runs forever.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from clients.commands import _target, client_of, events_from_rows, read_event_rows
from clients.sdk import CrossrecError, Event
from crossrec.stamp import stamp


def register(sub: argparse._SubParsersAction) -> None:
    """``crossrec bench serve`` here; other ``crossrec bench`` commands come from the packages
    that own them (entry points ``crossrec.bench``: ``retrieval`` from ``apps``)."""
    bench = sub.add_parser("bench", help="benchmarks: serve (a running engine), retrieval, ...")
    kinds = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    register_serve(kinds)
    for ep in sorted(entry_points(group="crossrec.bench"), key=lambda e: e.name):
        ep.load()(kinds)


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="measure a running engine: ingestion, latency, throughput")
    _target(p)
    p.add_argument(
        "--events", type=Path, required=True, help="event file whose users to replay and query"
    )
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--min-events", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000, help="Recommend calls per phase")
    p.add_argument(
        "--concurrency",
        default="8",
        help="concurrent clients, or a sweep: 1,2,4,8,16 (each level its own phase)",
    )
    p.add_argument(
        "--metrics",
        help="the engine's Prometheus endpoint (http://host:port/metrics): adds the engine's own "
        "time per stage to each phase",
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=500, help="events per IngestEvents call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("bench.json"))
    p.add_argument("--png", type=Path, help="latency plot (needs matplotlib)")
    p.add_argument(
        "--swap",
        metavar="INDEX_A,INDEX_B",
        help="repeat the concurrent phase while SwapVersion flips between these two index "
        "versions (admin token), and compare",
    )
    p.add_argument("--swap-every", type=float, default=1.0, help="seconds between swaps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    events = pl.DataFrame(list(read_event_rows(args.events)))
    if events.schema.get("ts") == pl.String:
        parsed, problems = events_from_rows(events.iter_rows(named=True))
        if problems:
            raise SystemExit(f"crossrec bench serve: {args.events}: {problems[0]}")
        events = events.with_columns(pl.Series("ts", [e.time for e in parsed]))
    counts = (
        events.group_by("user_id").len().filter(pl.col("len") >= args.min_events).sort("user_id")
    )
    rng = np.random.default_rng(args.seed)
    users = counts["user_id"].to_numpy()[rng.permutation(counts.height)[: args.users]].tolist()
    mine = events.filter(pl.col("user_id").is_in(users)).sort("ts")
    result: dict = {"target": args.target, "users": len(users), "k": args.k, "stamp": stamp()}

    args.timeout = max(args.timeout, 30.0)
    with client_of(args) as client:
        status = client.status()
        result["index_version"], result["items"] = status.index_version, status.item_count
        batch: list[Event] = []
        stored, started = 0, time.perf_counter()
        for r in mine.iter_rows(named=True):
            batch.append(
                Event(r["user_id"], r["item_id"], r["action"], r["ts"], r.get("session_id") or "")
            )
            if len(batch) == args.batch:
                stored += client.ingest(batch).accepted
                batch = []
        if batch:
            stored += client.ingest(batch).accepted
        seconds = time.perf_counter() - started
        result["ingest"] = {
            "events": mine.height,
            "stored": stored,
            "seconds": round(seconds, 3),
            "events_per_s": round(mine.height / seconds, 1),
            "batch": args.batch,
        }
        print(
            f"ingest: {mine.height:,} events in {seconds:.2f}s = "
            f"{mine.height / seconds:,.0f} events/s (batches of {args.batch}, durable)"
        )

        for user in users[:20]:  # warm-up: first-touch costs (page cache, lazy imports)
            client.recommend(user, k=args.k)
        single = []
        for i in range(args.requests):
            t = time.perf_counter()
            client.recommend(users[i % len(users)], k=args.k)
            single.append(time.perf_counter() - t)
    result["one_client"] = _latency(single)
    print(_line("1 client", result["one_client"]))

    levels = [int(c) for c in str(args.concurrency).split(",")]
    result["sweep"] = []
    for level in levels:
        before = _engine_counters(args.metrics)
        flat, phase = _concurrent(args, users, clients=level)
        if args.metrics:
            phase["engine"] = _engine_stages(before, _engine_counters(args.metrics))
            _print_stages(phase["engine"], phase)
        result["sweep"].append(phase)
    result["concurrent"] = result["sweep"][-1]
    args.concurrency = levels[-1]
    if args.png is not None and len(levels) > 1:
        _plot_sweep(result["sweep"], args.png.with_name(args.png.stem + "-sweep.png"))
    if args.swap:
        versions = [v.strip() for v in args.swap.split(",")]
        if len(versions) != 2:
            raise SystemExit("crossrec bench serve: --swap takes two index versions, A,B")
        stop = threading.Event()
        swaps: list[float] = []
        swap_errors: list[str] = []

        def swapper() -> None:
            with client_of(args) as admin:
                while not stop.wait(args.swap_every):
                    t = time.perf_counter()
                    try:
                        admin.swap_version(versions[len(swaps) % 2])
                        swaps.append(time.perf_counter() - t)
                    except CrossrecError as exc:
                        swap_errors.append(exc.code)
                        return

        thread = threading.Thread(target=swapper)
        thread.start()
        _, during = _concurrent(args, users, "while swapping")
        stop.set()
        thread.join()
        before = result["concurrent"].get("p99_ms")
        ratio = during["p99_ms"] / before if before and "p99_ms" in during else None
        result["concurrent_swapping"] = {
            **during,
            "swaps": len(swaps),
            "swap_seconds": _latency(swaps) if swaps else {},
            "swap_errors": swap_errors,
            "p99_ratio": None if ratio is None else round(ratio, 3),
        }
        print(
            f"  {len(swaps)} swaps (each {np.median(swaps) if swaps else 0:.2f} s), "
            f"swap errors {swap_errors or 'none'}; p99 with swaps / without: "
            f"{result['concurrent_swapping']['p99_ratio']}"
        )
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    if args.png is not None:
        _plot(single, flat or [0.0], args.concurrency, args.png)
    return 0


def _concurrent(
    args: argparse.Namespace, users: list[str], note: str = "", clients: int | None = None
) -> tuple[list, dict]:
    """``clients`` (default ``args.concurrency``) clients, each its own channel and thread,
    ``args.requests`` calls in all: the answered calls' latencies, and the figures (QPS, failed
    calls by status code)."""
    clients = int(clients or args.concurrency)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    # Failed calls by status code, with their latencies: under overload the engine sheds calls
    # with RESOURCE_EXHAUSTED at once, and a load check needs their share and speed.
    failures: list[list[tuple[str, float]]] = [[] for _ in range(clients)]
    per_worker = args.requests // clients

    def worker(w: int) -> None:
        with client_of(args) as c:
            for i in range(per_worker):
                t = time.perf_counter()
                try:
                    c.recommend(users[(w * per_worker + i) % len(users)], k=args.k)
                except CrossrecError as exc:
                    failures[w].append((exc.code, time.perf_counter() - t))
                    continue
                latencies[w].append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    flat = [x for group in latencies for x in group]
    failed = [f for group in failures for f in group]
    codes: dict[str, list[float]] = {}
    for code, seconds in failed:
        codes.setdefault(code, []).append(seconds)
    out = {
        **(_latency(flat) if flat else {"requests": 0}),
        "clients": clients,
        "qps": round(len(flat) / wall, 1),
        "failed": {
            code: {**_latency(s), "share": len(s) / (len(flat) + len(failed))}
            for code, s in codes.items()
        },
    }
    label = f"{clients} clients" + (f" {note}" if note else "")
    answered = _line(label, out) if flat else f"{label}: no call succeeded"
    print(answered + f", {len(flat) / wall:,.0f} QPS answered")
    for code, r in out["failed"].items():
        print(
            f"  {code}: {r['requests']:,} calls ({r['share']:.1%}), p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms"
        )
    return flat, out


def _engine_counters(url: str | None) -> dict[tuple[str, str], float]:
    """(metric sample name, stage or method) -> value of the engine's latency sums and counts."""
    if not url:
        return {}
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("crossrec_stage_seconds", "crossrec_request_seconds"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                label = sample.labels.get("stage") or sample.labels.get("method", "")
                out[(sample.name, label)] = sample.value
    return out


def _engine_stages(before: dict, after: dict) -> dict:
    """Mean milliseconds per Recommend in each engine stage over a phase (and the engine's whole
    Recommend time), from two snapshots of its metrics."""

    def mean(prefix: str, label: str) -> float | None:
        n = after.get((f"{prefix}_count", label), 0) - before.get((f"{prefix}_count", label), 0)
        total = after.get((f"{prefix}_sum", label), 0) - before.get((f"{prefix}_sum", label), 0)
        return round(total / n * 1e3, 3) if n else None

    stages = sorted({label for name, label in after if name == "crossrec_stage_seconds_sum"})
    return {
        "recommend_ms": mean("crossrec_request_seconds", "Recommend"),
        "stages_ms": {s: mean("crossrec_stage_seconds", s) for s in stages},
    }


def _print_stages(engine: dict, phase: dict) -> None:
    stages = " / ".join(f"{k} {v}" for k, v in engine["stages_ms"].items() if v is not None)
    print(
        f"  engine: Recommend {engine['recommend_ms']} ms mean in the server "
        f"(client mean {phase.get('mean_ms')} ms); stages (mean ms): {stages}"
    )


def _plot_sweep(sweep: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    answered = [s for s in sweep if s.get("requests")]
    x = [s["clients"] for s in answered]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        ax.plot(x, [s[key] for s in answered], marker="o", label=key.replace("_ms", ""))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("Recommend latency (ms)")
    twin = ax.twinx()
    twin.plot(x, [s["qps"] for s in answered], color="black", linestyle="--", label="QPS")
    twin.set_ylabel("answered QPS")
    ax.legend(loc="upper left")
    twin.legend(loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def _latency(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {
        "requests": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def _line(label: str, r: dict) -> str:
    return (
        f"{label}: {r['requests']:,} Recommend calls, p50 {r['p50_ms']:.2f} ms, "
        f"p90 {r['p90_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
    )


def _plot(single: list[float], concurrent: list[float], clients: int, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not installed: no PNG (pip install 'crossrec[bench]')")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.logspace(
        np.log10(max(min(single + concurrent), 1e-4) * 1e3),
        np.log10(max(single + concurrent) * 1e3),
        60,
    )
    ax.hist(np.array(single) * 1e3, bins=bins.tolist(), alpha=0.6, label="1 client")
    ax.hist(np.array(concurrent) * 1e3, bins=bins.tolist(), alpha=0.6, label=f"{clients} clients")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("Recommend latency (ms)")
    ax.set_ylabel("requests")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
