"""``crossrec bench all``: the whole harness on one synthetic shop, then the BENCHMARKS.md tables
regenerated from what it wrote.

Each step is the command a user would run, writing into ``--out``:

1. ``crossrec datagen --items N`` -> ``shop/`` (not timed);
2. ``crossrec index build ... --json build.json`` -> ``index/`` (time per stage); with ``--ranker``
   also ``crossrec train`` -> ``ranker/``, and the steps below serve with that model;
3. ``crossrec bench retrieval`` -> ``retrieval/retrieval.json`` (recall vs QPS against faiss and
   usearch on the engine's own cross-category queries);
4. ``crossrec latency --irreducible`` -> ``latency.json`` (in-process cost per stage, and the
   engine's overhead over the searches and the model prediction alone);
5. an engine on a free local port and ``crossrec bench serve --concurrency ... --metrics`` ->
   ``serve.json``, ``serve.png`` (QPS and latency per concurrency level, the engine's own stage
   times);
6. the tables: ``tables.md``, and with ``--write BENCHMARKS.md`` every block between
   ``<!-- bench-all: NAME -->`` and ``<!-- /bench-all: NAME -->`` replaced by its new table (the
   prose around them is left as it is). ``--tables-only`` re-renders from an earlier ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
from pathlib import Path

#: Generated blocks, in the order tables.md lists them.
BLOCKS = ("build", "retrieval", "latency", "serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "all",
        help="every benchmark on one synthetic shop, and the BENCHMARKS.md tables from them",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--items", type=int, default=50_000, help="synthetic shop size")
    p.add_argument("--out", type=Path, default=Path("bench-all"))
    p.add_argument("--no-text", action="store_true", help="build without the text model")
    p.add_argument(
        "--ranker",
        type=int,
        default=0,
        metavar="USERS",
        help="train a ranker on this many users per decision time and serve with it "
        "(default 0: retrieval only)",
    )
    p.add_argument("--users", type=int, default=300, help="users per latency/retrieval run")
    p.add_argument("--requests", type=int, default=2000, help="Recommend calls per serve level")
    p.add_argument("--concurrency", default="1,2,4,8,16", help="bench serve levels")
    p.add_argument("--write", type=Path, help="replace the generated blocks of this file")
    p.add_argument(
        "--tables-only", action="store_true", help="render the tables from an earlier --out"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not args.tables_only:
        measure(out, args)
    tables = render(out)
    (out / "tables.md").write_text(
        "\n".join(f"### {name}\n\n{tables[name]}" for name in BLOCKS if name in tables)
    )
    print(f"wrote {out / 'tables.md'}")
    if args.write is not None:
        text, replaced = replace_blocks(args.write.read_text(), tables)
        args.write.write_text(text)
        print(f"{args.write}: replaced {', '.join(replaced) or 'no'} block(s)")
    return 0


def measure(out: Path, args: argparse.Namespace) -> None:
    """Steps 1-5 of the module docstring, each through the CLI as a user would run it."""
    from clients.cli import main
    from engine.api.server import BackgroundServer
    from engine.config import ArmsConfig, EngineConfig, FeedbackConfig, ServerConfig, StoreConfig

    shop, index = out / "shop", out / "index"
    catalog, events = str(shop / "catalog.parquet"), str(shop / "events.parquet")
    _step(main, ["datagen", "--items", str(args.items), "--out", str(shop)])
    build = ["index", "build", "--catalog", catalog, "--events", events, "--out", str(index)]
    build += ["--quiet", "--json", str(out / "build.json")]
    _step(main, build + (["--no-text"] if args.no_text else []))
    model = None
    if args.ranker:
        train = ["train", "--catalog", catalog, "--events", events, "--index", str(index)]
        train += ["--out", str(out / "ranker"), "--users", str(args.ranker), "--quiet"]
        _step(main, [*train, "--json", str(out / "train.json")])
        model = str(out / "ranker" / "models")
    retrieval = ["bench", "retrieval", str(index), "--events", events]
    _step(main, [*retrieval, "--out", str(out / "retrieval")])
    latency = ["latency", "--artifact", str(index), "--events", events, "--users", str(args.users)]
    latency += ["--model", model] if model else []
    _step(main, [*latency, "--irreducible", "--json", str(out / "latency.json")])
    metrics_port = _free_port()
    config = EngineConfig(
        arms=ArmsConfig(artifact=str(index), model=model or ""),
        server=ServerConfig(port=0, metrics_port=metrics_port),
        store=StoreConfig(path=str(out / "engine.sqlite")),
        feedback=FeedbackConfig(impression_sample_rate=0.0),
    )
    with BackgroundServer(config) as server:
        serve = ["bench", "serve", "--target", server.target, "--events", events]
        serve += ["--users", str(args.users), "--requests", str(args.requests)]
        serve += ["--concurrency", args.concurrency]
        serve += ["--metrics", f"http://127.0.0.1:{metrics_port}/metrics"]
        _step(main, [*serve, "--json", str(out / "serve.json"), "--png", str(out / "serve.png")])


def _step(main, argv: list[str]) -> None:
    print("$ crossrec " + " ".join(argv), flush=True)
    status = main(argv)
    if status:
        raise SystemExit(f"crossrec {argv[0]} failed with status {status}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- tables ------------------------------------------------------------------------------------
def render(out: Path) -> dict[str, str]:
    """Markdown tables from whatever results ``out`` holds (a missing result: no table)."""
    readers = {
        "build": (out / "build.json", build_table),
        "retrieval": (out / "retrieval" / "retrieval.json", retrieval_table),
        "latency": (out / "latency.json", latency_table),
        "serve": (out / "serve.json", serve_table),
    }
    return {
        name: table(json.loads(path.read_text()))
        for name, (path, table) in readers.items()
        if path.exists()
    }


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def build_table(result: dict) -> str:
    """``crossrec index build --json``: seconds, items/s and peak RSS per stage, and the total."""
    items = result["items"]
    rows = []
    for name, stage in result["stages"].items():
        if name == "total":
            continue
        seconds = stage["seconds"]
        rate = _n(items / seconds) if seconds else "-"
        rows.append([name, _n(seconds, 2), rate, f"{_n(stage['peak_rss_mb'])} MB"])
    total = result["stages"]["total"]["seconds"]
    rows.append(["**whole build**", f"**{_n(total, 2)}**", f"**{_n(items / total)}**", ""])
    return f"{_n(items)} items, dim {result['dim']}\n\n" + _table(
        ["stage", "seconds", "items/s", "peak RSS"], rows
    )


def retrieval_table(result: dict) -> str:
    """``crossrec bench retrieval``: each method's fastest setting at recall >= 0.95, per k."""
    rows = []
    for k, methods in result["best_at_recall_0.95"].items():
        for method, best in methods.items():
            if best is None:
                rows.append([k, method, "never reaches 0.95", "-", "-"])
                continue
            rows.append([k, method, best["parameter"], _n(best["qps"]), f"{best['recall']:.3f}"])
    return f"{_n(result['items'])} items, {_n(result['queries'])} queries\n\n" + _table(
        ["k", "method", "setting", "QPS (one at a time)", "recall"], rows
    )


def latency_table(result: dict) -> str:
    """``crossrec latency``: p50/p99 and the stage medians per setting; the overhead ratio."""
    settings = [
        name for name, value in result.items() if isinstance(value, dict) and "p50_ms" in value
    ]
    stages = list(result[settings[0]]["stages_p50_ms"]) if settings else []
    rows = [
        [
            name,
            _n(result[name]["p50_ms"], 2),
            _n(result[name]["p99_ms"], 2),
            _n(result[name]["candidates_median"]),
            *(_n(result[name]["stages_p50_ms"][s], 2) for s in stages),
        ]
        for name in settings
    ]
    text = f"{result['users']} users, ranker {result['model_version']}\n\n" + _table(
        ["setting", "p50 ms", "p99 ms", "candidates", *(f"{s} p50 ms" for s in stages)], rows
    )
    if "irreducible" in result:
        i = result["irreducible"]
        text += (
            f"\nk=10 full call p50 {i['full_p50_ms']} ms; searches alone {i['search_p50_ms']} ms, "
            f"model prediction alone {i['predict_p50_ms']} ms; overhead {i['ratio_p50']}x "
            "(median of full / (searches + prediction))\n"
        )
    return text


def serve_table(result: dict) -> str:
    """``crossrec bench serve``: QPS and latency per concurrency level, engine stage means."""
    levels = result.get("sweep") or [result["concurrent"]]
    stages = sorted({s for level in levels for s in level.get("engine", {}).get("stages_ms", {})})
    rows = []
    for level in levels:
        engine = level.get("engine", {}).get("stages_ms", {})
        failed = sum(level.get("failed", {}).values())
        rows.append(
            [
                str(level["clients"]),
                _n(level["qps"], 1),
                _n(level["p50_ms"], 2),
                _n(level["p90_ms"], 2),
                _n(level["p99_ms"], 2),
                str(failed),
                *(_n(engine[s], 2) if s in engine else "-" for s in stages),
            ]
        )
    header = ["clients", "QPS", "p50 ms", "p90 ms", "p99 ms", "failed"]
    return f"{_n(result['items'])} items, k={result['k']}\n\n" + _table(
        header + [f"{s} ms" for s in stages], rows
    )


def replace_blocks(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with each ``<!-- bench-all: NAME -->`` ... ``<!-- /bench-all: NAME -->`` block's
    contents replaced by ``tables[NAME]`` (blocks without a new table are kept)."""
    replaced = []

    def swap(match: re.Match) -> str:
        name = match.group(1)
        if name not in tables:
            return match.group(0)
        replaced.append(name)
        return f"<!-- bench-all: {name} -->\n{tables[name]}<!-- /bench-all: {name} -->"

    pattern = re.compile(r"<!-- bench-all: (\w+) -->\n.*?<!-- /bench-all: \1 -->", re.S)
    return pattern.sub(swap, text), replaced
