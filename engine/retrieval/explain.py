"""Why an item was recommended, in words and in the statistics that chose it (built in the engine,
from the request's own profile and the version's category model, for the final items only): the
user's items behind it, the category transition, and, with a ranker model, the features that
moved its score most (LightGBM's per-feature contributions, largest magnitude first)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from crossrec.vocabulary import leaf
from engine.retrieval.features import FEATURES
from engine.retrieval.items import ItemTable
from engine.retrieval.query import Query
from engine.retrieval.ranking import ModelRanker, Ranker
from engine.retrieval.targets import CategoryModel
from engine.state.profile import Profile

if TYPE_CHECKING:  # the recommender calls this module: no import back at run time
    from engine.retrieval.recommend import Result

#: Feature contributions reported per item.
TOP_CONTRIBUTIONS = 3


@dataclass(frozen=True)
class Explanation:
    summary: str
    source_item_ids: tuple[str, ...] = ()
    source_category: str = ""
    transition_probability: float = 0.0
    #: (feature, its value, its contribution to the score's log-odds), largest magnitude first.
    contributions: tuple[tuple[str, float, float], ...] = ()


def explain(
    result: Result,
    profile: Profile,
    items: ItemTable,
    categories: CategoryModel,
    ranker: Ranker | None = None,
    query: Query | None = None,
) -> list[Explanation]:
    """One explanation per recommended item, in the result's order; with a model ranker (and the
    request's ``query``), each carries its top feature contributions."""
    words = _words(result, profile, items, categories)
    if not isinstance(ranker, ModelRanker) or result.features is None or query is None:
        return words
    contributions = ranker.contributions(result.features, query)
    out = []
    for why, values, contribution in zip(words, result.features, contributions):
        top = np.argsort(-np.abs(contribution), kind="stable")[:TOP_CONTRIBUTIONS]
        why = Explanation(
            why.summary,
            why.source_item_ids,
            why.source_category,
            why.transition_probability,
            tuple((FEATURES[j], float(values[j]), float(contribution[j])) for j in top),
        )
        out.append(why)
    return out


def _words(
    result: Result, profile: Profile, items: ItemTable, categories: CategoryModel
) -> list[Explanation]:
    out = []
    for row, interest in zip(result.rows.tolist(), result.interests.tolist()):
        category = items.row_category[row]
        if interest < 0:
            out.append(Explanation(f"popular in {leaf(category)}"))
            continue
        label = profile.interest_categories[interest]
        sources = tuple(str(items.item_ids[r]) for r in profile.interest_items[interest][:3])
        if category == label:
            out.append(
                Explanation(f"more {leaf(category)}, which you engaged with", sources, label)
            )
            continue
        p = categories.transition(label, category)
        out.append(
            Explanation(
                f"goes with your interest in {leaf(label)}: "
                f"shoppers move on to {leaf(category)} in {p:.0%} of such sessions",
                sources,
                label,
                p,
            )
        )
    return out
