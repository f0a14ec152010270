"""A candidate policy's lists for the logged traffic: for every logged list, the list the candidate
would have answered the same shopper at the same moment, and a reward model for the doubly robust
estimate.

The candidate runs the engine's own request path (:class:`engine.retrieval.recommend.Recommender`
on the given index version, with its ranker model or none, and its cross-category share): the
shopper's profile is rebuilt from their stored events before the list's time (as the request
built it, less the request's own ``recent`` events, which are not logged), and it answers as many
items as the logged list held.

The reward model (``dm`` and ``dr``): a LightGBM classifier per outcome on the logged impressions,
its inputs the feature row the engine logged with each shown item plus the position; the
candidate's items get the feature rows its own request computed, at the candidate's positions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """``model``: a ranker model folder trained for the index ("": retrieval-only); ``share``: the
    requests' cross-category share (None: the engine's default)."""

    name: str
    model: str = ""
    share: float | None = None


def parse_candidate(spec: str) -> Candidate:
    """``retrieval-only``, ``model=PATH``, ``share=0.4`` or both, comma-separated."""
    if spec.strip() == "retrieval-only":
        return Candidate("retrieval-only")
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("model", "share"):
            raise ValueError(f"candidate {spec!r}: expected model=PATH and/or share=S")
        fields[key.strip()] = value.strip()
    share = None
    if "share" in fields:
        share = float(fields["share"])
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"candidate {spec!r}: share must be within [0, 1]")
    return Candidate(spec, fields.get("model", ""), share)


@dataclass(frozen=True)
class CandidateLists:
    """Per logged list (in the order given): the candidate's item ids and their feature rows
    (k, F) float32."""

    item_ids: list[list[str]]
    features: list[np.ndarray]
    prices: list[np.ndarray]


def candidate_lists(
    candidate: Candidate,
    index: Path,
    contexts: pl.DataFrame,
    histories: pl.DataFrame,
    config,
    progress: bool = True,
) -> CandidateLists:
    """``contexts``: ``user_key``, ``ts_us``, ``k`` per logged list; ``histories``: the users'
    events (:func:`apps.impression_log.read_user_events`); ``config``: the EngineConfig whose
    profile and retrieval settings the candidate runs with."""
    from engine.arms import load_ranker
    from engine.core import profile_of
    from engine.retrieval.query import Query
    from engine.retrieval.recommend import Recommender
    from engine.state.profile import ProfileEvent
    from indexer.artifact import open_index

    version = open_index(index)
    ranker = load_ranker(candidate.model, version, config.ranker) if candidate.model else None
    recommender = Recommender(version, config.retrieval, ranker)
    default = config.retrieval.default_cross_category_share
    share = candidate.share if candidate.share is not None else default
    by_user = {
        key: (frame["item_id"].to_list(), frame["action"].to_list(), frame["ts_us"].to_numpy())
        for (key,), frame in histories.partition_by("user_key", as_dict=True).items()
    }
    keep = config.profile.history_events
    ids, features, prices = [], [], []
    rows = contexts.select("user_key", "ts_us", "k").iter_rows()
    for user, ts, k in tqdm(rows, total=contexts.height, desc=candidate.name, disable=not progress):
        items, actions, times = by_user.get(user, ([], [], np.zeros(0, np.int64)))
        end = int(np.searchsorted(times, ts, side="left"))  # events before the list's time
        start = max(0, end - keep)
        events = [ProfileEvent(items[j], actions[j], int(times[j])) for j in range(start, end)]
        result = recommender.recommend(
            profile_of(recommender, config.profile, events, ts), Query(k=k, cross_share=share), ts
        )
        ids.append([str(i) for i in recommender.items.item_ids[result.rows]])
        features.append(np.asarray(result.features, np.float32))
        prices.append(recommender.items.price[result.rows].astype(np.float64))
    return CandidateLists(ids, features, prices)


class RewardModel:
    """P(outcome | feature row, position), fitted on the logged impressions."""

    def __init__(self, x: np.ndarray, positions: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
        import lightgbm as lgb

        params = {
            "objective": "binary",
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 50,
            "verbosity": -1,
            "seed": seed,
            "num_threads": 2,
        }
        self.constant = float(y.mean()) if len(y) else 0.0
        self.booster = None
        if 0 < y.sum() < len(y):
            data = lgb.Dataset(_inputs(x, positions), y.astype(np.float32))
            self.booster = lgb.train(params, data, num_boost_round=200)

    def predict(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if self.booster is None or len(x) == 0:
            return np.full(len(x), self.constant)
        return np.asarray(self.booster.predict(_inputs(x, positions)), dtype=np.float64)


def _inputs(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.column_stack([x, positions.astype(np.float32)]).astype(np.float32)
