"""A served list as the engine returns it: each item with its category, scores, the interest it
answers and why it was chosen, converted once from the recommender's row-level :class:`Result`."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.arms import ARM_A
from engine.retrieval.explain import Explanation
from engine.retrieval.items import ItemTable
from engine.retrieval.recommend import Result
from engine.state.profile import Profile


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    category: str
    score: float
    interest_index: int  # -1 for the popularity fallback
    interest_label: str
    shard: str
    retrieval_score: float
    sources: tuple[str, ...]
    #: Objective -> calibrated probability (empty without a ranker model).
    objective_scores: dict[str, float] = field(default_factory=dict)
    explanation: Explanation | None = None


@dataclass
class Recommendation:
    items: list[RecommendedItem]
    recommendation_id: str
    index_version: str
    model_version: str
    result: Result
    arm: str = ARM_A

    @property
    def item_ids(self) -> list[str]:
        """The recommended item ids, in the order served."""
        return [i.item_id for i in self.items]


def recommended_items(
    result: Result,
    profile: Profile,
    items: ItemTable,
    explanations: list[Explanation] | None = None,
) -> list[RecommendedItem]:
    """One :class:`RecommendedItem` per chosen row of ``result`` (``explanations``: one per row,
    or None for none)."""
    out = []
    for i, row in enumerate(result.rows.tolist()):
        interest = int(result.interests[i])
        out.append(
            RecommendedItem(
                item_id=str(items.item_ids[row]),
                category=items.row_category[row],
                score=float(result.scores[i]),
                interest_index=interest,
                interest_label=profile.interest_categories[interest]
                if interest >= 0
                else "popular",
                shard=str(items.shard_of[row]),
                retrieval_score=float(result.retrieval_scores[i]),
                sources=result.sources[i],
                objective_scores={o: float(v[i]) for o, v in result.objective_scores.items()},
                explanation=explanations[i] if explanations is not None else None,
            )
        )
    return out
