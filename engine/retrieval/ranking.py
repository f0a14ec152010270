"""Ordering the candidates: the ranker interface, the retrieval-only blend and the model ranker.

A ranker maps the feature matrix (:mod:`engine.retrieval.features`) of one request's candidates,
all in one batch, to one score per candidate (higher first) and, when it has them, a score per
objective.

:class:`BlendRanker` is the retrieval-only ranker (``model_version`` ``retrieval-only``): each
source's score is divided by its largest value in the request (so every source's best candidate
scores 1 and no source's units dominate) and the blend is the weighted sum::

    blend = sum_s weight_s * score_s / max(score_s)

The maximum is each source's best score among *everything it proposed* for the request, before any
filter: a filter removes items but never rescales the ones that pass, so it cannot change how they
rank against each other (excluding the best-sellers must not let the rest of the popular source
swamp the neighbours). Its default weights were chosen with ``crossrec eval`` (BENCHMARKS.md,
"Item-level quality"). The blend is also a feature of the model ranker.

:class:`ModelRanker` scores with a trained model (:class:`ranker.model.RankerModel`): calibrated
probabilities per objective (click, cart, purchase), blended by the request's objective weights or
the configured default, normalised to sum 1::

    score = sum_o weight_o * P(o)            (x price with weight_by_price: expected revenue)

A model trained on logged impressions (``crossrec train --impressions``) also learnt from each
item's ``position`` in the list it was shown in, which explains away part of the clicks the top
positions get anyway; serving sets it to the top position for every candidate
(:data:`NEUTRAL_FEATURES`), so candidates are compared as if each were shown first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from crossrec.vocabulary import OBJECTIVES
from engine.retrieval.candidates import Candidates
from engine.retrieval.features import FEATURES, SOURCES
from engine.retrieval.query import Query

RETRIEVAL_ONLY = "retrieval-only"
BLEND_COLUMN = FEATURES.index("blend")
#: Features a model may have been trained with that serving sets to one value for every candidate.
NEUTRAL_FEATURES = {"position": 0.0}


class Ranker(Protocol):
    model_version: str

    def rank(self, features: np.ndarray, prices: np.ndarray, query: Query) -> np.ndarray:
        """(n,) scores, higher first, for an (n, len(FEATURES)) feature matrix; ``prices``: (n,)
        (NaN: none)."""
        ...

    def objectives(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Objective -> (n,) score of each row, for the returned items (empty: none)."""
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

    def blend(self, candidates: Candidates, tops: dict[str, float] | None = None) -> np.ndarray:
        """(n,) the blended score of each candidate. ``tops``: each source's largest score before
        filtering (default: the largest among ``candidates``)."""
        out = np.zeros(len(candidates))
        for source, weight in self.weights.items():
            if not weight:
                continue
            values = candidates.score(source).astype(np.float64)
            top = values.max(initial=0.0) if tops is None else tops.get(source, 0.0)
            if top > 0:
                out += weight * values / top
        return out

    def rank(self, features: np.ndarray, prices: np.ndarray, query: Query) -> np.ndarray:
        return features[:, BLEND_COLUMN].astype(np.float64)

    def objectives(self, features: np.ndarray) -> dict[str, np.ndarray]:
        return {}


class ObjectiveModel(Protocol):
    """What :class:`ModelRanker` needs of a model (:class:`ranker.model.RankerModel` has it)."""

    @property
    def version(self) -> str: ...

    @property
    def features(self) -> tuple[str, ...]: ...

    def predict(
        self, features: np.ndarray, objectives: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def contributions(self, features: np.ndarray, objective: str) -> np.ndarray: ...


class ModelRanker:
    """Calibrated objective probabilities from a model, blended by objective weights."""

    def __init__(self, model: ObjectiveModel, default_weights: dict[str, float]) -> None:
        unknown = [f for f in model.features if f not in FEATURES and f not in NEUTRAL_FEATURES]
        if unknown:
            raise ValueError(
                f"model {model.version} needs features {unknown} that this engine does not "
                f"compute (it computes {list(FEATURES)})"
            )
        computed = [j for j, f in enumerate(model.features) if f in FEATURES]
        #: Where the model's computed features sit in its input, and their columns of the
        #: engine's feature matrix (a model may use a subset).
        self.inputs = np.array(computed, np.int64)
        self.columns = np.array([FEATURES.index(model.features[j]) for j in computed], np.int64)
        #: The model's input with the neutral features set and the computed ones zero.
        self.template = np.array([NEUTRAL_FEATURES.get(f, 0.0) for f in model.features], np.float32)
        self.model = model
        self.model_version = model.version
        self.default_weights = normalised_weights(default_weights)

    def rank(self, features: np.ndarray, prices: np.ndarray, query: Query) -> np.ndarray:
        weights = self._weights(query)
        # Only the heads the blend needs run over every candidate.
        probabilities = self.model.predict(self._input(features), weights)
        score = np.zeros(len(features))
        for objective, weight in weights.items():
            score += weight * probabilities[objective]
        if query.weight_by_price:
            score *= np.nan_to_num(prices, nan=0.0)
        return score

    def objectives(self, features: np.ndarray) -> dict[str, np.ndarray]:
        return self.model.predict(self._input(features))

    def _input(self, features: np.ndarray) -> np.ndarray:
        """The model's input for an engine feature matrix."""
        if len(self.columns) == len(self.template):
            return features[:, self.columns]
        x = np.repeat(self.template[None, :], len(features), axis=0)
        x[:, self.inputs] = features[:, self.columns]
        return x

    def _weights(self, query: Query) -> dict[str, float]:
        if query.objective_weights:
            return normalised_weights(dict(query.objective_weights))
        return self.default_weights

    def contributions(self, features: np.ndarray, query: Query) -> np.ndarray:
        """(n, len(FEATURES)) each feature's contribution to the blend: the objective heads'
        log-odds contributions weighted by the objective weights (LightGBM's own per-feature
        attribution; ~100x a prediction's cost, so for the returned items only)."""
        weights = self._weights(query)
        out = np.zeros(features.shape, np.float64)
        x = self._input(features)
        for objective, weight in weights.items():
            per_input = self.model.contributions(x, objective)[:, :-1]
            out[:, self.columns] += weight * per_input[:, self.inputs]
        return out


def normalised_weights(weights: dict[str, float]) -> dict[str, float]:
    """Objective weights scaled to sum 1 (zero weights dropped); raises on unknown objectives or no
    positive weight."""
    unknown = set(weights) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"unknown objectives {sorted(unknown)}; objectives are {list(OBJECTIVES)}")
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        raise ValueError(f"objective weights need a positive weight, got {weights}")
    return {o: w / total for o, w in weights.items() if w > 0}
