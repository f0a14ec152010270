"""A model's held-out figures as text: one line per objective with NDCG@k and Recall@k of the model
and of the retrieval-only blend, AUC, and the largest calibration error over the deciles that hold
enough positives (see :mod:`ranker.metrics`). For logs and the command line."""

from __future__ import annotations

from crossrec.vocabulary import OBJECTIVES


def summary_lines(metrics: dict, indent: str = "  ") -> list[str]:
    """A header and one line per objective of ``metrics`` (as :func:`ranker.metrics.evaluate`
    returns, or a manifest's ``metrics``); ``-`` where a figure is undefined."""
    k = metrics["k"]
    header = (
        f"{'objective':<10} {'NDCG@' + str(k):>8} {'(blend)':>8} {'Recall@' + str(k):>10} "
        f"{'(blend)':>8} {'AUC':>6} {'max cal. err':>12} {'decisions':>10}"
    )
    lines = [indent + header]
    for objective in OBJECTIVES:
        m = metrics[objective]
        ndcg, recall = m[f"ndcg@{k}"], m[f"recall@{k}"]
        lines.append(
            indent + f"{objective:<10} {_fmt(ndcg['model']):>8} {_fmt(ndcg['blend']):>8} "
            f"{_fmt(recall['model']):>10} {_fmt(recall['blend']):>8} "
            f"{_fmt(m['auc']['model']):>6} {_fmt(m['calibration']['max_relative_error']):>12} "
            f"{m['decisions_with_positive']:>10,}"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
