"""Every operator setting of :class:`engine.config.EngineConfig` checked when it is built, with a
message naming each bad one by its table (``limits.max_k``): a zero maintenance interval would spin
a core while idle, a NaN retention would keep or drop everything, a negative limit would refuse
every call."""

from __future__ import annotations

import dataclasses
import math

#: At least 1 (counts of things that must exist).
AT_LEAST_ONE = (
    "server.workers",
    "server.faiss_threads",
    "server.processes",
    "feedback.impression_queue",
    "feedback.attribution_lists",
    "limits.max_k",
    "limits.max_recent_events",
    "limits.max_ingest_events",
    "limits.max_batch_requests",
    "limits.max_batch_items",
    "limits.max_batch_explained_items",
    "limits.max_list_items",
    "limits.max_message_bytes",
    "limits.max_request_bytes",
    "profile.max_interests",
    "profile.history_events",
    "ranker.threads",
    "ray.group_replicas",
    "retrieval.target_categories",
    "retrieval.search_categories",
    "retrieval.candidates_per_shard",
    "retrieval.popular_per_category",
    "retrieval.neighbour_seeds",
    "retrieval.source_limit",
    "exploration.slot_pool",
    "gpu.batch_max_calls",
)
#: Greater than 0 (durations and rates that cannot be zero; Ray's CPUs per replica may be 0).
POSITIVE = (
    "server.maintenance_interval_s",
    "limits.default_deadline_s",
    "limits.max_deadline_s",
    "profile.half_life_days",
    "feedback.attribution_window_hours",
    "feedback.impression_retention_days",
    "ray.group_timeout_s",
)
#: Within [0, 1].
SHARES = (
    "feedback.impression_sample_rate",
    "arms.b_share",
    "retrieval.max_category_share",
    "retrieval.max_brand_share",
    "retrieval.default_cross_category_share",
    "exploration.swap_share",
    "exploration.slot_share",
)
ON_LATE = ("partial", "fail")


class ConfigError(ValueError):
    """A bad setting; the message names every one (its table and field)."""


def values(obj, prefix: str = "") -> list[tuple[str, object]]:
    """(``section.field``, value) for every setting under the dataclass instance ``obj``."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += values(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def problems(config) -> list[str]:
    """One line per bad setting of ``config`` (an EngineConfig); empty when all are fine."""
    out = []
    for name, value in values(config):
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{name} must be a finite number, got {value}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if name in AT_LEAST_ONE and value < 1:
                out.append(f"{name} must be at least 1, got {value}")
            elif name in POSITIVE and value <= 0:
                out.append(f"{name} must be greater than 0, got {value}")
            elif name in SHARES and not 0.0 <= value <= 1.0:
                out.append(f"{name} must be within [0, 1], got {value}")
            elif value < 0:  # every other number: counts, sizes, weights, ports
                out.append(f"{name} must not be negative, got {value}")
    server, limits = config.server, config.limits
    if not server.port <= 65_535 or not server.metrics_port <= 65_535:
        out.append("server.port and server.metrics_port must be at most 65535")
    if limits.default_deadline_s > limits.max_deadline_s:
        out.append(
            f"limits.default_deadline_s ({limits.default_deadline_s}) must not exceed "
            f"limits.max_deadline_s ({limits.max_deadline_s})"
        )
    shared = config.store.shared
    if shared and config.store.max_mb:
        out.append(
            "store.max_mb is not applied to a PostgreSQL store: use the database's own limits"
        )
    log_target = config.feedback.impression_log or (config.store.path if shared else "")
    if (
        log_target.startswith(("postgresql://", "postgres://"))
        and config.feedback.impression_log_max_mb
    ):
        out.append(
            "feedback.impression_log_max_mb is not supported for a PostgreSQL impression log "
            "(deleted rows do not shrink its tables): use feedback.impression_retention_days"
        )
    if shared and server.processes > 1 and not config.arms.pins_file:
        out.append(
            "server.processes > 1 with a PostgreSQL store needs arms.pins_file: the processes "
            "follow swaps through that file"
        )
    if server.processes > 1 and server.port == 0:
        out.append("server.processes > 1 needs a fixed server.port (the processes share it)")
    if bool(config.tls.cert_file) != bool(config.tls.key_file):
        out.append("tls.cert_file and tls.key_file go together: give both or neither")
    explore = config.exploration
    if explore.swap_share + explore.slot_share > 1.0:
        out.append(
            f"exploration.swap_share + exploration.slot_share must not exceed 1, got "
            f"{explore.swap_share} + {explore.slot_share}"
        )
    if explore.swap_depth < 2:
        out.append(f"exploration.swap_depth must be at least 2 (a pair), got {explore.swap_depth}")
    unknown_arms = sorted(set(explore.arm_names) - {"a", "b"})
    if unknown_arms:
        out.append(f"exploration.arms names unknown arms {unknown_arms} (arms are a and b)")
    if config.ray.on_late not in ON_LATE:
        out.append(f"ray.on_late must be one of {ON_LATE}, got {config.ray.on_late!r}")
    return out


def check(config) -> None:
    """Raise :class:`ConfigError` naming every bad setting of ``config``."""
    found = problems(config)
    if found:
        raise ConfigError("invalid settings: " + "; ".join(found))
