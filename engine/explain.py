"""Why an item was recommended, in words and in the statistics that chose it (built in the engine,
from the request's own profile and the version's category model, for the final items only)."""

from __future__ import annotations

from dataclasses import dataclass

from crossrec.vocabulary import leaf
from engine.items import ItemTable
from engine.profile import Profile
from engine.recommend import Result
from engine.targets import CategoryModel


@dataclass(frozen=True)
class Explanation:
    summary: str
    source_item_ids: tuple[str, ...] = ()
    source_category: str = ""
    transition_probability: float = 0.0


def explain(
    result: Result, profile: Profile, items: ItemTable, categories: CategoryModel
) -> list[Explanation]:
    """One explanation per recommended item, in the result's order."""
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
