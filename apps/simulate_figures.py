"""The figures of ``crossrec simulate`` (:mod:`apps.simulate`): per round and arm, the online
rates of the impression log with their intervals, as a table and as bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from crossrec.vocabulary import US_PER_DAY


def round_figures(log_path: Path, store: Path, start_us: int, rounds: int) -> pl.DataFrame:
    """Per round and arm (and model version): the online figures of :func:`apps.online.summarise`
    from the impression log."""
    from apps.impression_log import read_log, read_outcome_events
    from apps.online import attribute, summarise

    lists, shown = read_log(log_path)
    attributed = attribute(lists, shown, read_outcome_events(store), int(US_PER_DAY))
    attributed = attributed.with_columns(
        round=((pl.col("ts_us") - start_us) // int(US_PER_DAY)).cast(pl.Int64)
    )
    parts = []
    for r in range(rounds):
        part = attributed.filter(pl.col("round") == r)
        if part.height:
            parts.append(
                summarise(part, ["arm", "model_version"]).with_columns(round=pl.lit(r, pl.Int64))
            )
    return (
        pl.concat(parts, how="diagonal_relaxed").select("round", pl.exclude("round"))
        if parts
        else pl.DataFrame()
    )


def format_figures(figures: pl.DataFrame) -> str:
    lines = [
        f"{'round':>5}  {'arm':<3} {'model':<34} {'lists':>6} {'CTR':>22} "
        f"{'purchase rate':>24} {'RPM':>24}"
    ]
    for row in figures.iter_rows(named=True):
        cells = []
        for name, scale, digits in (("ctr", 100, 2), ("purchase_rate", 100, 3), ("rpm", 1, 0)):
            unit = "%" if scale == 100 else ""
            cells.append(
                f"{row[name] * scale:.{digits}f}{unit} [{row[f'{name}_low'] * scale:.{digits}f}, "
                f"{row[f'{name}_high'] * scale:.{digits}f}]"
            )
        lines.append(
            f"{row['round']:>5}  {row['arm']:<3} {row['model_version'][:34]:<34} "
            f"{row['lists']:>6} {cells[0]:>22} {cells[1]:>24} {cells[2]:>24}"
        )
    return "\n".join(lines)


def plot_figures(figures: pl.DataFrame, path: Path) -> None:
    """Bars per round and arm for CTR, purchase rate and RPM, with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = [f"r{r} {a}" for r, a in zip(figures["round"], figures["arm"])]
    x = np.arange(figures.height)
    panels = (
        ("ctr", "CTR (%)", 100),
        ("purchase_rate", "purchases / impression (%)", 100),
        ("rpm", "revenue per 1000 impressions", 1),
    )
    for ax, (name, title, scale) in zip(axes, panels):
        value = figures[name].to_numpy() * scale
        low = figures[f"{name}_low"].to_numpy() * scale
        high = figures[f"{name}_high"].to_numpy() * scale
        colours = ["tab:blue" if a == "a" else "tab:orange" for a in figures["arm"]]
        ax.bar(x, value, color=colours, yerr=[value - low, high - value], capsize=3)
        ax.set_xticks(x, labels, rotation=30)
        ax.set_title(title)
    fig.suptitle("crossrec simulate: online figures per round and arm (95% intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
