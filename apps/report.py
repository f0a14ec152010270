"""``crossrec report``: online figures from an engine's impression log and event store.

Click-through, add-to-cart and purchase rates per item impression and revenue per thousand
impressions, with 95% intervals over users (:mod:`apps.online`), broken down by any of arm, model
version, index version, candidate source, position and same- vs cross-category; a table on
stdout, ``report.json`` and ``report.png`` (the rates over time per arm) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from crossrec.vocabulary import US_PER_DAY

#: (column, heading, scale, digits) of the table.
_RATES = (
    ("ctr", "CTR %", 100.0, 2),
    ("cart_rate", "cart %", 100.0, 3),
    ("purchase_rate", "purchase %", 100.0, 3),
    ("rpm", "RPM", 1.0, 1),
)


def format_table(summary: pl.DataFrame, by: list[str]) -> str:
    head = [f"{c:<16}" for c in by] + [f"{'impressions':>11}", f"{'users':>8}"]
    head += [f"{h:>26}" for _, h, _, _ in _RATES]
    lines = ["".join(head)]
    for row in summary.iter_rows(named=True):
        cells = [f"{str(row[c])[:15]:<16}" for c in by]
        cells += [f"{row['impressions']:>11,}", f"{row['users']:>8,}"]
        for name, _, scale, d in _RATES:
            v, lo, hi = (row[name] * scale, row[f"{name}_low"] * scale, row[f"{name}_high"] * scale)
            cells.append(f"{f'{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]':>26}")
        lines.append("".join(cells))
    return "\n".join(lines)


def plot_over_time(timeline: pl.DataFrame, path: Path) -> None:
    """CTR and RPM per time bucket, one line per arm, with interval bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    arms = sorted(timeline["arm"].unique().to_list()) if "arm" in timeline.columns else [None]
    for arm in arms:
        part = timeline if arm is None else timeline.filter(pl.col("arm") == arm)
        x = part["bucket_start_us"].to_numpy().astype("datetime64[us]")
        for ax, (name, scale) in zip(axes, (("ctr", 100.0), ("rpm", 1.0))):
            ax.plot(x, part[name].to_numpy() * scale, marker="o", label=f"arm {arm}")
            ax.fill_between(
                x,
                part[f"{name}_low"].to_numpy() * scale,
                part[f"{name}_high"].to_numpy() * scale,
                alpha=0.2,
            )
    axes[0].set_title("click-through rate (%)")
    axes[1].set_title("revenue per 1000 impressions")
    for ax in axes:
        ax.legend()
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="online figures (CTR, conversion, revenue) from the impression log",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--impressions",
        required=True,
        help="the engine's impression log (file or postgresql:// URL)",
    )
    p.add_argument(
        "--store", required=True, help="the engine's event store (file or postgresql:// URL)"
    )
    p.add_argument(
        "--by",
        default="arm,model_version",
        help="breakdown, comma-separated: arm, model_version, index_version, source, position, "
        "cross_category, explored (none / swap / slot: the cost of exploration) (default: "
        "arm,model_version)",
    )
    p.add_argument(
        "--position-bias",
        action="store_true",
        help="also estimate each position's examination relative to the top from the lists that "
        "swapped an adjacent pair ([exploration] swap_share), with 95%% intervals",
    )
    p.add_argument("--window-hours", type=float, default=24.0, help="attribution window")
    p.add_argument("--bucket-hours", type=float, default=24.0, help="time buckets of the plot")
    p.add_argument("--out", type=Path, help="write report.json and report.png here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    by = [c.strip() for c in args.by.split(",") if c.strip()]
    for name in ("window_hours", "bucket_hours"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            print(f"crossrec report: --{name.replace('_', '-')} must be a positive number")
            return 2
    try:
        summary_users, timeline_users, swaps = read_report(
            args.impressions,
            args.store,
            by,
            int(args.window_hours * US_PER_DAY / 24),
            int(args.bucket_hours * US_PER_DAY / 24),
            position_bias=args.position_bias,
        )
    except (OSError, ValueError) as exc:
        print(f"crossrec report: {exc}")
        return 2
    if timeline_users.is_empty():
        print("crossrec report: the impression log holds no lists")
        return 2
    from apps.online import summarise_users, timeline_users_summary

    summary = summarise_users(summary_users, by)
    print(
        f"{int(timeline_users['lists'].sum()):,} lists, "
        f"{int(timeline_users['impressions'].sum()):,} item impressions, "
        f"{int(timeline_users['click'].sum()):,} attributed clicks "
        f"(window {args.window_hours:g} h)"
    )
    print(format_table(summary, by))
    curve = None
    if args.position_bias:
        from apps.position_bias import examination_curve, format_curve

        if swaps is None or not (swaps[0] >= 0).any():
            print("no list swapped a pair: set [exploration] swap_share to measure position bias")
        else:
            curve = examination_curve(*swaps)
            print(format_curve(curve))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        timeline = timeline_users_summary(timeline_users, ["arm"])
        (args.out / "report.json").write_text(
            json.dumps(
                {
                    "by": by,
                    "window_hours": args.window_hours,
                    "summary": summary.to_dicts(),
                    "over_time": timeline.to_dicts(),
                    "position_bias": None if curve is None else curve.to_dicts(),
                },
                indent=2,
                default=str,
            )
        )
        plot_over_time(timeline, args.out / "report.png")
        print(f"wrote {args.out / 'report.json'} and {args.out / 'report.png'}")
    return 0


def read_report(
    impressions: str | Path,
    store: str | Path,
    by: list[str],
    window_us: int,
    bucket_us: int,
    lists_per_chunk: int = 2_000,
    position_bias: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, tuple | None]:
    """Per-user sums (:func:`apps.online.per_user`) by ``by`` and by (time bucket, arm), and with
    ``position_bias`` the lists' swap clicks (:func:`apps.position_bias.swap_clicks`), read from
    the log a chunk of lists at a time: memory holds one chunk's impressions and the sums, never
    the whole log."""
    from apps.impression_log import read_log_chunks, read_outcome_events
    from apps.online import attribute, bucketed, combine, per_user
    from apps.position_bias import swap_clicks

    events = read_outcome_events(store)
    time_by = ["bucket_start_us", "arm"]
    summary_parts, time_parts, swap_parts = [], [], []
    for lists, shown in read_log_chunks(impressions, lists_per_chunk):
        attributed = attribute(lists, shown, events, window_us)
        summary_parts.append(per_user(attributed, by))
        time_parts.append(per_user(bucketed(attributed, bucket_us), time_by))
        if position_bias:
            swap_parts.append(swap_clicks(attributed, int(shown["position"].max()) + 1))
    if not time_parts:
        return pl.DataFrame(), pl.DataFrame(), None
    swaps = None
    if swap_parts:
        depth = max(c.shape[1] for _, c, _ in swap_parts)
        swaps = (
            np.concatenate([k for k, _, _ in swap_parts]),
            np.concatenate([_widen(c, depth) for _, c, _ in swap_parts]),
            np.concatenate([_widen(s, depth) for _, _, s in swap_parts]),
        )
    return combine(summary_parts, by), combine(time_parts, time_by), swaps


def _widen(matrix: np.ndarray, depth: int) -> np.ndarray:
    """``matrix`` (n, d) padded with zeros to (n, depth)."""
    return np.pad(matrix, ((0, 0), (0, depth - matrix.shape[1])))
