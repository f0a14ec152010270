"""The client side of crossrec: the Python SDK (exported here) and the ``crossrec`` command line.

from clients import CrossrecClient, Event
"""

from clients.sdk import (
    AsyncCrossrecClient,
    Connection,
    CrossrecClient,
    CrossrecError,
    Event,
    IngestResult,
    Recommendations,
    RecommendedItem,
    RecommendOptions,
    Status,
)

__all__ = [
    "AsyncCrossrecClient",
    "Connection",
    "CrossrecClient",
    "CrossrecError",
    "Event",
    "IngestResult",
    "RecommendOptions",
    "Recommendations",
    "RecommendedItem",
    "Status",
]
