"""The vocabulary every crossrec package shares: actions and their weights, the category path rule,
and the timestamp rule. Dependency-free (standard library only), so ``clients`` may import it too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

#: Behaviour actions, weakest to strongest (the order of the API's ``Action`` enum after
#: UNSPECIFIED).
ACTIONS = ("view", "click", "cart", "purchase")
#: How much one event of each action says about interest (profiles, popularity, neighbours).
ACTION_WEIGHT = {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0}
#: The ranker's objectives, along the funnel: one model head each, one label column each in its
#: training rows (an item counts for an objective when the user took it at least that far).
OBJECTIVES = ("click", "cart", "purchase")

#: Category paths: ``"Outdoors > Camping > Tents"``; a prefix of the path names a department.
#: Input may use any spacing around ``>`` (CATEGORY_DELIMITER); the canonical form uses
#: CATEGORY_SEPARATOR.
CATEGORY_DELIMITER = ">"
CATEGORY_SEPARATOR = " > "


def category_segments(category: str) -> list[str]:
    """``"Outdoors>Camping > Tents"`` -> ``["Outdoors", "Camping", "Tents"]`` (segments
    stripped)."""
    return [part.strip() for part in category.split(CATEGORY_DELIMITER)]


def normalise_category(category: str) -> str:
    """The canonical spelling of a category path (``" > "`` between stripped segments)."""
    return CATEGORY_SEPARATOR.join(category_segments(category))


def leaf(category: str) -> str:
    """The last segment of a category path: ``"Tents"``."""
    return category_segments(category)[-1]


#: Accepted timestamps: ISO 8601 date, ``T`` or a space, hours:minutes, optional seconds with an
#: optional fraction, optional ``Z`` or ``+hh:mm`` / ``+hhmm`` offset (none means UTC).
#: Event times are integer microseconds since the epoch (UTC) everywhere past the readers.
US_PER_DAY = 86_400_000_000

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([zZ]|[+-]\d{2}:?\d{2})?$"
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


def parse_timestamp(text: str) -> datetime | None:
    """An accepted timestamp string -> an aware UTC datetime; ``None`` for anything else."""
    text = text.strip()
    if not _TIMESTAMP.match(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:  # e.g. month 13
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
