"""Position bias from swapped pairs: the curve worked out by hand on a tiny log, and recovered
from clicks drawn under a known examination model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from apps.position_bias import examination_curve, swap_clicks
from engine.retrieval.explore import Draw


def _draw(kind: str) -> str:
    """The logged draw of a list: "" (an arm that does not explore), "swap:j" or "slot:q"."""
    if not kind:
        return ""
    name, at = kind.split(":")
    return Draw(name, int(at), 0.1, 3, 0.1, 2, 5).to_json()


def _rows(lists: dict[str, tuple[str, list[int]]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"recommendation_id": r, "exploration": _draw(kind), "position": p, "click": c}
            for r, (kind, clicks) in lists.items()
            for p, c in enumerate(clicks)
        ]
    )


#: Plain lists: clicks at positions 0, 1, 2. Lists that swapped pair 0 and pair 1. A slot list
#: (left out whatever it holds) and a short plain list (counts for pair 0 only).
LOG = {
    "p1": ("", [1, 0, 0]),
    "p2": ("", [1, 1, 0]),
    "p3": ("", [0, 0, 1]),
    "p4": ("", [1, 0, 0]),
    "s1": ("swap:0", [0, 1, 0]),
    "s2": ("swap:0", [0, 1, 0]),
    "t1": ("swap:1", [1, 0, 0]),
    "t2": ("swap:1", [0, 1, 0]),
    "x1": ("slot:2", [1, 1, 1]),
    "z1": ("", [0, 1]),
}


def test_the_curve_by_hand():
    kind, clicks, shown = swap_clicks(_rows(LOG), 3)
    assert sorted(kind.tolist()) == [-2, -1, -1, -1, -1, -1, 0, 0, 1, 1]
    curve = examination_curve(kind, clicks, shown, resamples=0)
    # pair 0: plain c(0) = 3/5, c(1) = 2/5 (z1 counts); swapped c(0) = 0, c(1) = 1
    ratio0 = (1.0 + 2 / 5) / (3 / 5 + 0.0)
    # pair 1: plain lists that show position 2 (p1..p4): c(1) = 1/4, c(2) = 1/4; swapped
    # c(1) = 1/2, c(2) = 0
    ratio1 = (0.0 + 1 / 4) / (1 / 4 + 1 / 2)
    assert curve["position"].to_list() == [0, 1, 2]
    assert curve["examination"].to_list() == pytest.approx([1.0, ratio0, ratio0 * ratio1])
    assert curve["swapped_lists"].to_list() == [0, 2, 2]


def test_a_pair_nobody_swapped_leaves_the_rest_of_the_curve_unknown():
    log = {r: v for r, v in LOG.items() if not v[0].startswith("swap:0")}
    curve = examination_curve(*swap_clicks(_rows(log), 3), resamples=0)
    assert curve["examination"][0] == 1.0
    assert np.isnan(curve["examination"][1:].to_numpy()).all()


def test_a_known_examination_model_is_recovered_within_its_intervals():
    rng = np.random.default_rng(3)
    n, depth = 30_000, 5
    theta = 1 / np.log2(np.arange(depth) + 2)
    kind = np.where(rng.random(n) < 0.4, rng.integers(depth - 1, size=n), -1)
    # the engine's order: appeal falling with rank, the same items whatever is shown
    appeal = np.clip(rng.beta(2, 5, size=(n, depth)) * np.linspace(1.0, 0.5, depth), 0, 1)
    shown_appeal = appeal.copy()
    for j in range(depth - 1):
        swapped = kind == j
        shown_appeal[swapped, j], shown_appeal[swapped, j + 1] = (
            appeal[swapped, j + 1],
            appeal[swapped, j],
        )
    clicks = (rng.random((n, depth)) < theta * shown_appeal).astype(np.int8)
    curve = examination_curve(kind, clicks, np.ones((n, depth), bool), resamples=300, seed=1)
    low, high = curve["low"].to_numpy(), curve["high"].to_numpy()
    assert ((low <= theta) & (theta <= high)).all()
    assert curve["examination"].to_numpy() == pytest.approx(theta, rel=0.2)
    assert (high - low)[1:].max() < 0.25  # informative, not merely wide
    # a naive curve (click rates by position in plain lists) mixes in the engine's order
    plain = clicks[kind == -1].mean(axis=0)
    assert plain[-1] / plain[0] < 0.8 * theta[-1]
