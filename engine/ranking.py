"""Ordering the candidates: the ranker interface and the default blend used until a model is loaded.

A ranker maps the feature matrix (:mod:`engine.features`) to one score per candidate, higher first,
and names its ``model_version``. :class:`BlendRanker` is the retrieval-only ranker: each source's
score is divided by its largest value in the request (so every source's best candidate scores 1 and
no source's units dominate) and the blend is the weighted sum::

    score = sum_s weight_s * score_s / max(score_s)

The default weights were chosen with ``crossrec eval`` on the synthetic shop (BENCHMARKS.md,
"Item-level quality"); ``EngineConfig.blend_*`` overrides them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.features import FEATURES, SOURCES

RETRIEVAL_ONLY = "retrieval-only"


class Ranker(Protocol):
    model_version: str

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n,) scores for an (n, len(FEATURES)) feature matrix; higher first."""
        ...


class BlendRanker:
    """Weighted sum of per-request max-normalised source scores."""

    model_version = RETRIEVAL_ONLY

    def __init__(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(SOURCES)
        if unknown:
            raise ValueError(
                f"blend weights for unknown sources {sorted(unknown)}; sources are {list(SOURCES)}"
            )
        self.weights = dict(weights)
        self._columns = [(FEATURES.index(f"{s}_score"), w) for s, w in self.weights.items() if w]

    def score(self, features: np.ndarray) -> np.ndarray:
        out = np.zeros(len(features))
        for column, weight in self._columns:
            values = features[:, column].astype(np.float64)
            top = values.max(initial=0.0)
            if top > 0:
                out += weight * values / top
        return out
