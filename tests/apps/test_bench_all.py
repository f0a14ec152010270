"""``crossrec bench all``: each table rendered by hand from a small result, the generated blocks of
a document replaced and nothing else, and the whole harness end to end at a tiny size."""

from __future__ import annotations

import json

from apps.bench.all import (
    build_table,
    latency_table,
    replace_blocks,
    retrieval_table,
    serve_table,
)


def test_the_build_table_lists_each_stage_with_its_rate_and_the_total():
    result = {
        "items": 1000,
        "dim": 8,
        "stages": {
            "read": {"seconds": 0.5, "peak_rss_mb": 100.0},
            "total": {"seconds": 2.0},  # wherever it comes, it is the last row
            "shards": {"seconds": 0.0, "peak_rss_mb": 120.4},
        },
    }
    assert build_table(result) == (
        "1,000 items, dim 8\n\n"
        "| stage | seconds | items/s | peak RSS |\n"
        "|---|---|---|---|\n"
        "| read | 0.50 | 2,000 | 100 MB |\n"
        "| shards | 0.00 | - | 120 MB |\n"
        "| **whole build** | **2.00** | **500** |  |\n"
    )


def test_the_retrieval_table_shows_each_methods_fastest_setting_at_recall_095():
    best = {"method": "m", "parameter": "nprobe=8", "k": 10, "qps": 1234.56, "recall": 0.9512}
    result = {
        "items": 50,
        "queries": 7,
        "best_at_recall_0.95": {"10": {"usearch": None, "crossrec": best}},
    }
    assert retrieval_table(result) == (
        "50 items, 7 queries\n\n"
        "| k | method | setting | QPS (one at a time) | recall |\n"
        "|---|---|---|---|---|\n"
        "| 10 | usearch | never reaches 0.95 | - | - |\n"
        "| 10 | crossrec | nprobe=8 | 1,235 | 0.951 |\n"
    )


def test_the_latency_table_has_a_row_per_setting_and_the_overhead_line():
    setting = {
        "p50_ms": 2.0,
        "p99_ms": 3.456,
        "candidates_median": 900,
        "stages_p50_ms": {"profile": 0.2, "rank": 0.1},
    }
    result = {
        "users": 3,
        "model_version": "retrieval-only",
        "k=10": setting,
        "irreducible": {
            "full_p50_ms": 4.0,
            "search_p50_ms": 0.5,
            "predict_p50_ms": 1.5,
            "ratio_p50": 2.0,
        },
    }
    assert latency_table(result) == (
        "3 users, ranker retrieval-only\n\n"
        "| setting | p50 ms | p99 ms | candidates | profile p50 ms | rank p50 ms |\n"
        "|---|---|---|---|---|---|\n"
        "| k=10 | 2.00 | 3.46 | 900 | 0.20 | 0.10 |\n"
        "\nk=10 full call p50 4.0 ms; searches alone 0.5 ms, model prediction alone 1.5 ms; "
        "overhead 2.0x (median of full / (searches + prediction))\n"
    )


def test_the_serve_table_has_a_row_per_concurrency_level_with_the_engines_stages():
    level = {"clients": 1, "qps": 100.04, "p50_ms": 1, "p90_ms": 2, "p99_ms": 3, "failed": {}}
    busy = {**level, "clients": 4, "failed": {"RESOURCE_EXHAUSTED": 2, "UNAVAILABLE": 1}}
    busy["engine"] = {"stages_ms": {"rank": 1.5}}
    result = {"items": 10, "k": 5, "sweep": [level, busy]}
    assert serve_table(result) == (
        "10 items, k=5\n\n"
        "| clients | QPS | p50 ms | p90 ms | p99 ms | failed | rank ms |\n"
        "|---|---|---|---|---|---|---|\n"
        "| 1 | 100.0 | 1.00 | 2.00 | 3.00 | 0 | - |\n"
        "| 4 | 100.0 | 1.00 | 2.00 | 3.00 | 3 | 1.50 |\n"
    )


def test_a_serve_result_without_a_sweep_has_its_one_concurrent_phase():
    phase = {"clients": 8, "qps": 50, "p50_ms": 1, "p90_ms": 2, "p99_ms": 3, "failed": {}}
    assert serve_table({"items": 1, "k": 1, "concurrent": phase}).endswith(
        "| 8 | 50.0 | 1.00 | 2.00 | 3.00 | 0 |\n"
    )


def test_only_the_generated_blocks_are_replaced():
    text = (
        "prose before\n"
        "<!-- bench-all: build -->\nold table\n<!-- /bench-all: build -->\n"
        "prose between\n"
        "<!-- bench-all: serve -->\nold serve\n<!-- /bench-all: serve -->\n"
        "prose after\n"
    )
    new, replaced = replace_blocks(text, {"build": "new table\n", "latency": "unused\n"})
    assert replaced == ["build"]
    assert new == text.replace("old table\n", "new table\n")


def test_bench_all_runs_every_benchmark_and_rewrites_the_tables(tmp_path, capsys):
    from clients.cli import main

    doc = tmp_path / "BENCH.md"
    doc.write_text(
        "".join(
            f"<!-- bench-all: {n} -->\nold\n<!-- /bench-all: {n} -->\n" for n in ("build", "serve")
        )
    )
    out = tmp_path / "all"
    argv = ["bench", "all", "--items", "300", "--no-text", "--users", "15", "--ranker", "60"]
    argv += ["--requests", "30", "--concurrency", "1,2", "--out", str(out), "--write", str(doc)]
    assert main(argv) == 0
    for name in ("build.json", "retrieval/retrieval.json", "latency.json", "serve.json"):
        assert json.loads((out / name).read_text())
    tables = (out / "tables.md").read_text()
    assert [line for line in tables.splitlines() if line.startswith("### ")] == [
        "### build",
        "### retrieval",
        "### latency",
        "### serve",
    ]
    written = doc.read_text()
    assert "old" not in written
    assert "| **whole build** |" in written
    latency = json.loads((out / "latency.json").read_text())
    trained = json.loads((out / "train.json").read_text())["model"]
    assert latency["model_version"] == trained.rsplit("/", 1)[1] != "retrieval-only"
    serve = json.loads((out / "serve.json").read_text())
    assert [level["clients"] for level in serve["sweep"]] == [1, 2]
    assert f"| 2 | {serve['sweep'][1]['qps']:,.1f} |" in written
    assert "replaced build, serve block(s)" in capsys.readouterr().out
    # Re-rendering from the results alone gives the same tables.
    assert main(["bench", "all", "--out", str(out), "--tables-only"]) == 0
    assert (out / "tables.md").read_text() == tables
