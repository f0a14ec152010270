"""The reliability plot of a model: mean predicted probability against the observed rate per bin of
the calibration table (:func:`ranker.metrics.calibration_table`), one line per objective, and the
diagonal a calibrated model follows.

Both axes are logarithmic, as the objectives' rates differ by orders of magnitude; values below
``FLOOR`` are drawn at it (an isotonic fit maps its lowest block to 0 when that block held no
positive). matplotlib is an optional extra (``crossrec[bench]``): without it there is no plot and a
log line says so. The figure is drawn without pyplot, so no global backend state is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crossrec.vocabulary import OBJECTIVES

log = logging.getLogger(__name__)

FLOOR = 1e-4


def write_reliability_plot(metrics: dict, path: Path) -> bool:
    """Write the PNG for ``metrics`` (as :func:`ranker.metrics.evaluate` returns) to ``path``.
    Returns whether a plot was written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: no reliability plot")
        return False
    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low, high = 1.0, FLOOR
    for objective in OBJECTIVES:
        bins = metrics[objective]["calibration"]["bins"]
        if not bins:
            continue
        pred = [max(b["mean_predicted"], FLOOR) for b in bins]
        obs = [max(b["observed"], FLOOR) for b in bins]
        ax.plot(pred, obs, marker="o", label=objective)
        low, high = min(low, *pred, *obs), max(high, *pred, *obs)
    if high > low:
        ax.plot([low, high], [low, high], color="grey", linestyle="--", label="calibrated")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"mean predicted probability (test bin, floor {FLOOR:g})")
    ax.set_ylabel("observed rate")
    ax.set_title("Reliability on the test part")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
