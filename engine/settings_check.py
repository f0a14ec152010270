"""Every operator setting of :class:`engine.config.EngineConfig` checked when it is built, with a
message naming each bad one: a zero maintenance interval would spin a core while idle, a NaN
retention would keep or drop everything, a negative limit would refuse every call."""

from __future__ import annotations

import math
from dataclasses import fields

#: At least 1 (counts of things that must exist).
AT_LEAST_ONE = (
    "workers",
    "impression_queue",
    "attribution_lists",
    "max_k",
    "max_recent_events",
    "max_ingest_events",
    "max_batch_requests",
    "max_batch_items",
    "max_list_items",
    "max_message_bytes",
    "max_interests",
    "history_events",
    "faiss_threads",
    "ranker_threads",
    "shard_group_replicas",
    "target_categories",
    "search_categories",
    "candidates_per_shard",
    "popular_per_category",
    "neighbour_seeds",
    "source_limit",
)
#: Greater than 0 (durations and rates that cannot be zero; Ray's CPUs per replica may be 0).
POSITIVE = (
    "maintenance_interval_s",
    "default_deadline_s",
    "max_deadline_s",
    "half_life_days",
    "attribution_window_hours",
    "impression_retention_days",
    "shard_group_timeout_s",
)
#: Within [0, 1].
SHARES = (
    "impression_sample_rate",
    "arm_b_share",
    "max_category_share",
    "max_brand_share",
    "default_cross_category_share",
)
ON_LATE = ("partial", "fail")


class ConfigError(ValueError):
    """Settings out of range; the message names every one."""


def problems(config) -> list[str]:
    """One line per bad setting of ``config`` (an EngineConfig); empty when all are fine."""
    out = []
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{f.name} must be a finite number, got {value}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if f.name in AT_LEAST_ONE and value < 1:
                out.append(f"{f.name} must be at least 1, got {value}")
            elif f.name in POSITIVE and value <= 0:
                out.append(f"{f.name} must be greater than 0, got {value}")
            elif f.name in SHARES and not 0.0 <= value <= 1.0:
                out.append(f"{f.name} must be within [0, 1], got {value}")
            elif value < 0:  # every other number: counts, sizes, weights, ports
                out.append(f"{f.name} must not be negative, got {value}")
    if not config.port <= 65_535 or not config.metrics_port <= 65_535:
        out.append("port and metrics_port must be at most 65535")
    if config.default_deadline_s > config.max_deadline_s:
        out.append(
            f"default_deadline_s ({config.default_deadline_s}) must not exceed max_deadline_s "
            f"({config.max_deadline_s})"
        )
    if config.shard_group_on_late not in ON_LATE:
        out.append(
            f"shard_group_on_late must be one of {ON_LATE}, got {config.shard_group_on_late!r}"
        )
    return out


def check(config) -> None:
    """Raise :class:`ConfigError` naming every bad setting of ``config``."""
    found = problems(config)
    if found:
        raise ConfigError("invalid settings: " + "; ".join(found))
