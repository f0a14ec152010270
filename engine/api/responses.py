"""An answered Recommend as its gRPC message (the service's one outbound conversion of any
size)."""

from __future__ import annotations

from crossrec.v1 import recommend_pb2
from engine.api import validation
from engine.recommendation import Recommendation

OBJECTIVE_CODES = {name: code for code, name in validation.OBJECTIVE_NAMES.items()}


def to_response(rec: Recommendation) -> recommend_pb2.RecommendResponse:
    items = []
    for i in rec.items:
        item = recommend_pb2.RecommendedItem(
            item_id=i.item_id,
            category=i.category,
            score=i.score,
            interest_index=i.interest_index,
            interest_label=i.interest_label,
            shard=i.shard,
            retrieval_score=i.retrieval_score,
            objective_scores=[
                recommend_pb2.ObjectiveScore(objective=OBJECTIVE_CODES[o], score=v)
                for o, v in i.objective_scores.items()
            ],
        )
        if i.explanation is not None:
            e = i.explanation
            item.explanation.CopyFrom(
                recommend_pb2.Explanation(
                    summary=e.summary,
                    source_item_ids=e.source_item_ids,
                    source_category=e.source_category,
                    transition_probability=e.transition_probability,
                    contributions=[
                        recommend_pb2.FeatureContribution(
                            feature=name, value=value, contribution=contribution
                        )
                        for name, value, contribution in e.contributions
                    ],
                )
            )
        items.append(item)
    result = rec.result
    return recommend_pb2.RecommendResponse(
        items=items,
        recommendation_id=rec.recommendation_id,
        index_version=rec.index_version,
        model_version=rec.model_version,
        target_categories=result.targets,
        coverage=recommend_pb2.Coverage(
            shards_searched=result.shards_searched,
            shards_targeted=result.shards_targeted,
            late_shards=result.late_shards,
        ),
        fallback=result.fallback,
        arm=rec.arm,
    )
