"""``crossrec latency``: what one ``Recommend`` costs in process, stage by stage.

Loads an index version into an in-process engine (a throw-away event store), ingests the events of
``--users`` users with at least ``--min-events`` events, warms up, then asks each user once per
setting (k = 10, 10 purely cross-category, 100, 200; ``--engine-config`` changes the engine's
settings) and reports p50 / p99 of the whole
call, the median candidate count after filters and the median of each stage (profile, candidates,
rank, allocate). Over gRPC, with concurrency, use ``crossrec bench serve``.

``--irreducible`` adds, for k = 10, the work no engine design can skip on the same requests: the
vector searches (the search source alone, on the request's own targets) and the model's
prediction over the request's candidates, timed alone right after the full call, and the ratio
of the full call to their sum (the engine's overhead: profile, other sources, features,
diversity, allocation, Python).

``--impression-log`` adds a paired measurement of the impression log's cost on the request: k = 10
with the log on and off, alternating request by request on the same users (so drift on a shared
machine hits both alike), p50 / p99 of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from apps.inprocess import engine_with_events
from engine.retrieval.query import Query
from indexer.events import read_events

SETTINGS = {
    "k=10": Query(k=10, cross_share=None),
    "k=10 cross": Query(k=10, cross_share=1.0),
    "k=100": Query(k=100, cross_share=None),
    "k=200": Query(k=200, cross_share=None),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="in-process Recommend cost per stage")
    p.add_argument("--artifact", required=True, help="index version folder or root")
    p.add_argument(
        "--events", type=Path, required=True, help="event file (.parquet, .csv, .jsonl) to replay"
    )
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--min-events", type=int, default=5)
    p.add_argument("--warmup", type=int, default=20, help="requests per setting before timing")
    p.add_argument("--engine-config", type=Path, help="EngineConfig TOML (default: the defaults)")
    p.add_argument("--model", help="ranker model version trained for the artifact (default: none)")
    p.add_argument(
        "--irreducible",
        action="store_true",
        help="also time the searches and the model prediction alone on the same requests",
    )
    p.add_argument(
        "--impression-log",
        action="store_true",
        help="also measure k=10 with the impression log on and off, alternating",
    )
    p.add_argument("--json", type=Path)
    p.set_defaults(func=run)


def measure(
    artifact: str,
    events: Path,
    users: int,
    min_events: int,
    warmup: int,
    engine_config: Path | None = None,
    model: str | None = None,
    impression_log: bool = False,
    irreducible: bool = False,
) -> dict:
    """Figures per setting (milliseconds), see the module docstring."""
    frame = read_events(events)  # any supported format, checked against the event contract
    chosen = (
        frame.group_by("user_id")
        .len()
        .filter(pl.col("len") >= min_events)
        .sort("user_id")
        .head(users)["user_id"]
        .to_list()
    )
    mine = frame.filter(pl.col("user_id").is_in(chosen))
    started = time.perf_counter()
    with engine_with_events(
        artifact, mine, engine_config, model=model, impressions=impression_log
    ) as engine:
        out: dict = {
            "users": len(chosen),
            "setup_s": round(time.perf_counter() - started, 2),
            "model_version": engine.served.model_version,
        }
        for label, query in SETTINGS.items():
            for user in chosen[:warmup]:
                engine.recommend(user, [], query)
            seconds, candidates, stages = [], [], []
            for user in chosen:
                t = time.perf_counter()
                result = engine.recommend(user, [], query).result
                seconds.append(time.perf_counter() - t)
                candidates.append(result.stage_counts["candidates"])
                stages.append(result.stage_seconds)
            ms = np.array(seconds) * 1e3
            out[label] = {
                "p50_ms": round(float(np.median(ms)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2),
                "candidates_median": int(np.median(candidates)),
                "stages_p50_ms": {
                    name: round(float(np.median([s[name] for s in stages])) * 1e3, 2)
                    for name in stages[0]
                },
            }
        if impression_log:
            out["impression_log"] = _log_cost(engine, chosen, warmup)
        if irreducible:
            out["irreducible"] = _irreducible(engine, chosen)
    return out


def _irreducible(engine, users: list[str]) -> dict:
    """k = 10: per request, the full call, then its searches and model prediction alone."""
    query = SETTINGS["k=10"]
    served = engine.served
    r = served.recommender
    full, search, predict = [], [], []
    for user in users:
        now = int(time.time() * 1e6)
        t = time.perf_counter()
        engine.recommend(user, [], query, now_us=now)
        full.append(time.perf_counter() - t)
        profile = engine.profile(served, user, [], now)
        g = r.gather(profile, query, now)
        t = time.perf_counter()
        r.search.generate(g.context)
        search.append(time.perf_counter() - t)
        t = time.perf_counter()
        r.ranker.rank(g.features, r.items.price[g.candidates.rows], query)
        predict.append(time.perf_counter() - t)
    full_ms, search_ms, predict_ms = (np.array(x) * 1e3 for x in (full, search, predict))
    work = search_ms + predict_ms
    return {
        "requests": len(users),
        "full_p50_ms": round(float(np.median(full_ms)), 3),
        "search_p50_ms": round(float(np.median(search_ms)), 3),
        "predict_p50_ms": round(float(np.median(predict_ms)), 3),
        "ratio_p50": round(float(np.median(full_ms / np.maximum(work, 1e-6))), 2),
        "ratio_of_means": round(float(full_ms.mean() / max(work.mean(), 1e-9)), 2),
    }


def _log_cost(engine, users: list[str], warmup: int, repeats: int = 3) -> dict:
    """k = 10 with the impression log on and off, alternating per request."""
    log = engine.feedback.impressions
    query = SETTINGS["k=10"]
    for user in users[:warmup]:
        engine.recommend(user, [], query)
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(repeats):
        for i, user in enumerate(users):
            mode = "on" if (i + r) % 2 == 0 else "off"
            engine.feedback.impressions = log if mode == "on" else None
            t = time.perf_counter()
            engine.recommend(user, [], query)
            seconds[mode].append(time.perf_counter() - t)
    engine.feedback.impressions = log
    log.flush()
    out = {
        mode: {
            "requests": len(s),
            "p50_ms": round(float(np.median(s)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(s, 99)) * 1e3, 3),
        }
        for mode, s in seconds.items()
    }
    out["p50_ratio"] = round(out["on"]["p50_ms"] / out["off"]["p50_ms"], 3)
    out["p99_ratio"] = round(out["on"]["p99_ms"] / out["off"]["p99_ms"], 3)
    out["log_counts"] = dict(log.counts)
    written = max(log.counts["written"], 1)
    out["writer_ms_per_impression"] = round(log.write_seconds * 1e3 / written, 4)
    return out


def run(args: argparse.Namespace) -> int:
    result = measure(
        args.artifact,
        args.events,
        args.users,
        args.min_events,
        args.warmup,
        args.engine_config,
        args.model,
        args.impression_log,
        args.irreducible,
    )
    print(
        f"{result['users']} users, index loaded and their events ingested in {result['setup_s']} s;"
        f" ranker {result['model_version']}"
    )
    for label in SETTINGS:
        r = result[label]
        stages = " / ".join(f"{k} {v}" for k, v in r["stages_p50_ms"].items())
        print(
            f"{label:<11} p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"{r['candidates_median']} candidates; stages p50 (ms): {stages}"
        )
    if "irreducible" in result:
        c = result["irreducible"]
        print(
            f"irreducible work, k=10: full call p50 {c['full_p50_ms']} ms; searches alone "
            f"{c['search_p50_ms']} ms, model prediction alone {c['predict_p50_ms']} ms; full / "
            f"(searches + prediction): p50 {c['ratio_p50']}x, of means {c['ratio_of_means']}x"
        )
    if "impression_log" in result:
        c = result["impression_log"]
        print(
            f"impression log, k=10, alternating: on p50 {c['on']['p50_ms']} ms / p99 "
            f"{c['on']['p99_ms']} ms; off p50 {c['off']['p50_ms']} ms / p99 {c['off']['p99_ms']} "
            f"ms; ratio p50 {c['p50_ratio']}, p99 {c['p99_ratio']} ({c['log_counts']}; the "
            f"writer thread spent {c['writer_ms_per_impression']} ms of CPU per impression)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
