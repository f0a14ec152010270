"""Live attribution: events that quote a ``recommendation_id`` joined, as they arrive, to the list
that was shown, for the engine's online metrics (``crossrec_attributed_total`` and
``crossrec_attributed_revenue_total`` per arm and model version, next to
``crossrec_impressions_total``; click-through rate = attributed clicks / impressions).

The join rule is the one ``crossrec report`` applies to the impression log (:mod:`apps.online`):
an event counts when its list was shown to the same user (any user, for a list shown to an
anonymous request), names an item of that list, is a click,
cart or purchase, and happens within ``window_us`` after the list; each (list, item, action)
counts once, so a retried or repeated event does not inflate the rates. A purchase adds the item's
price as shown to the revenue.

The engine keeps the lists of the last window in memory (at most ``capacity``, oldest dropped
first), whether or not the impression log sampled them, so these metrics cover all traffic; the
report covers the logged sample over any period.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

#: Actions that count as outcomes of a recommendation.
OUTCOMES = ("click", "cart", "purchase")


@dataclass
class _Shown:
    user_key: str
    arm: str
    model_version: str
    ts_us: int
    items: dict[str, tuple[float, bool]]  # item -> (price, cross-category)
    counted: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class Outcome:
    """One attributed event."""

    arm: str
    model_version: str
    action: str
    cross_category: bool
    revenue: float  # the price for a purchase, else 0
    #: The list and item it counts for: (list, item, action) counts once.
    recommendation_id: str = ""
    item_id: str = ""


class RecentLists:
    """The lists shown in the last ``window_us`` (at most ``capacity``), thread-safe."""

    def __init__(self, window_us: int, capacity: int = 50_000) -> None:
        self.window_us = window_us
        self.capacity = capacity
        self._lists: OrderedDict[str, _Shown] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, recommendation_id: str) -> bool:
        return recommendation_id in self._lists

    def add(
        self,
        recommendation_id: str,
        user_key: str,
        arm: str,
        model_version: str,
        ts_us: int,
        item_ids: list[str],
        prices: np.ndarray,
        cross_category: np.ndarray,
    ) -> None:
        shown = _Shown(
            user_key,
            arm,
            model_version,
            ts_us,
            {
                item: (float(p), bool(c))
                for item, p, c in zip(item_ids, prices.tolist(), cross_category.tolist())
            },
        )
        with self._lock:
            self._lists[recommendation_id] = shown
            while len(self._lists) > self.capacity:
                self._lists.popitem(last=False)
            # Lists arrive in time order (up to clock skew between workers): drop from the front
            # those whose window has closed.
            while self._lists:
                first = next(iter(self._lists.values()))
                if first.ts_us >= ts_us - self.window_us:
                    break
                self._lists.popitem(last=False)

    def forget(self, user_key: str) -> int:
        """Drop the lists shown to a user (DeleteUser); returns how many."""
        with self._lock:
            gone = [r for r, shown in self._lists.items() if shown.user_key == user_key]
            for r in gone:
                del self._lists[r]
        return len(gone)

    def attribute(self, events) -> list[Outcome]:
        """The outcomes among ``events`` (objects with ``recommendation_id``, ``user_key``,
        ``item_id``, ``action``, ``ts_us``), each counted once."""
        out = []
        with self._lock:
            for e in events:
                if not e.recommendation_id or e.action not in OUTCOMES:
                    continue
                shown = self._lists.get(e.recommendation_id)
                if shown is None or (shown.user_key and shown.user_key != e.user_key):
                    continue
                if not shown.ts_us <= e.ts_us <= shown.ts_us + self.window_us:
                    continue
                item = shown.items.get(e.item_id)
                key = (e.item_id, e.action)
                if item is None or key in shown.counted:
                    continue
                shown.counted.add(key)
                price, cross = item
                revenue = price if e.action == "purchase" and price == price else 0.0
                out.append(
                    Outcome(
                        shown.arm,
                        shown.model_version,
                        e.action,
                        cross,
                        revenue,
                        e.recommendation_id,
                        e.item_id,
                    )
                )
        return out
