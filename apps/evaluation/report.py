"""Showing an evaluation result (the dict of :func:`apps.evaluation.run.evaluate`): the split
summary and method table as text, the whole result as JSON, the headline figures as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

HEADLINE = 10


def split_summary(result: dict) -> str:
    """Two or three lines on what was split and who is tested."""
    s = result["split"]
    if s["method"] == "time":
        how = f"time split at {s['cut'][:19]}Z (last {s['test_days']:g} days held out)"
    else:
        how = f"holdout split ({s['holdout_share']:.0%} of each user's items, seed {s['seed']})"
    tested = (
        f"{s['test_users']:,} test users (of {s['candidate_users']:,} with training events "
        "and a positive), "
        f"{s['positives']:,} positives ({s['positives_per_user']:.1f} per user, "
        f"{s['cross_category_share']:.0%} cross-category; "
        f"{s['users_with_cross_category_positive']:,} users have one); "
        f"positives = {'/'.join(s['positive_actions'])} on untouched items"
    )
    if s.get("why"):
        how += f", chosen automatically: {s['why']}"
    lines = [
        f"{how}: {s['train_events']:,} training events from {s['train_users']:,} users, "
        f"{s['test_events']:,} test events",
        tested,
    ]
    if result.get("index"):
        ix = result["index"]
        how_made = f"built in {ix['build_seconds']:.0f} s" if ix["built"] else "reused"
        lines.append(f"index: {ix['path']} ({how_made})")
    return "\n".join(lines)


def _interval(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def method_table(result: dict) -> str:
    """One row per method: Recall@10 and cross-category Recall@10 with 95% intervals, NDCG@10,
    HitRate@10, Recall at the largest other K (100 by default), the tail view's Recall@10 (with
    its interval) and NDCG@10 when the result has one, coverage@10, diversity@10, seconds."""
    cutoffs = result["settings"]["cutoffs"]
    wide = max((k for k in cutoffs if k != HEADLINE), default=None)
    header = ["method", "Recall@10 [95% CI]", "cross-cat R@10 [95% CI]", "NDCG@10", "HitRate@10"]
    header += [f"Recall@{wide}"] if wide else []
    tail = any(r.get("tail") for r in result["methods"].values())
    header += ["tail R@10 [95% CI]", "tail NDCG@10"] if tail else []
    header += ["coverage@10", "diversity@10", "seconds"]
    rows = []
    for name, r in result["methods"].items():
        m10 = r["metrics"][f"@{HEADLINE}"]
        row = [
            name,
            _interval(m10["recall"]),
            _interval(m10["cross_recall"]),
            f"{m10['ndcg']['mean']:.3f}",
            f"{m10['hit_rate']['mean']:.3f}",
        ]
        row += [f"{r['metrics'][f'@{wide}']['recall']['mean']:.3f}"] if wide else []
        if tail:
            t10 = (r.get("tail") or {}).get(f"@{HEADLINE}")
            row += [_interval(t10["recall"]), f"{t10['ndcg']['mean']:.3f}"] if t10 else ["-", "-"]
        row += [f"{m10['coverage']:.4f}", f"{m10['diversity']['mean']:.2f}", f"{r['seconds']:.1f}"]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def paired_lines(result: dict) -> str:
    """Each crossrec row against the best baseline, on Recall@k and NDCG@k, full view and tail
    view: the paired difference on the same users with its interval, and whether the interval
    clears 0."""
    lines = []
    methods = result["methods"]
    for name, against in (result.get("paired") or {}).items():
        k = against["k"]
        for metric, by_baseline in against.items():
            if metric == "k" or not by_baseline:
                continue
            tail = metric.startswith("tail_")
            measure = metric.removeprefix("tail_")
            best = max(by_baseline, key=lambda b: _mean(methods[b], measure, k, tail))
            d = by_baseline[best]
            verdict = "ahead" if d["low"] > 0 else "behind" if d["high"] < 0 else "not apart"
            label = {"recall": "Recall", "ndcg": "NDCG", "cross_recall": "cross-category Recall"}[
                measure
            ]
            lines.append(
                f"{name} - {best} (best baseline), {label}@{k}{' tail' if tail else ''} on the "
                f"same users: {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] ({verdict})"
            )
    return "\n".join(lines)


def _mean(method: dict, measure: str, k: int, tail: bool) -> float:
    metrics = method["tail"] if tail else method["metrics"]
    return metrics[f"@{k}"][measure]["mean"]


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def write_png(result: dict, path: Path) -> None:
    """Grouped bars: Recall@10 and cross-category Recall@10 per method, 95% intervals as error
    bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(result["methods"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 2), 4.2))
    for offset, (key, label) in zip(
        (-0.2, 0.2), (("recall", "Recall@10"), ("cross_recall", "cross-category Recall@10"))
    ):
        ms = [result["methods"][n]["metrics"][f"@{HEADLINE}"][key] for n in names]
        means = np.array([m["mean"] for m in ms])
        err = np.array([[m["mean"] - m["low"] for m in ms], [m["high"] - m["mean"] for m in ms]])
        ax.bar(
            x + offset, np.nan_to_num(means), 0.4, yerr=np.nan_to_num(err), capsize=3, label=label
        )
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("recall (95% bootstrap interval)")
    s = result["split"]
    ax.set_title(f"{s['test_users']:,} test users, {s['method']} split")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
