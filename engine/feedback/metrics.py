"""Prometheus metrics of one engine: requests, latency per method and stage, candidates per
stage, impressions and their attributed outcomes per arm and model version, the impression log's
fate."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        # A registry per engine, so several engines (tests) in one process do not collide.
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, CPU seconds, open files: the engine's own footprint.
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "crossrec_requests_total",
            "RPCs by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crossrec_request_seconds",
            "RPC latency",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "crossrec_stage_seconds",
            "Recommend stage latency",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.candidates = Histogram(
            "crossrec_candidates",
            "Items per Recommend stage",
            ["stage"],
            buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
            registry=self.registry,
        )
        self.ingested = Counter(
            "crossrec_ingested_events_total", "Events stored", registry=self.registry
        )
        self.unknown_items = Counter(
            "crossrec_ingested_unknown_items_total",
            "Events ingested naming items the serving index version does not know",
            registry=self.registry,
        )
        self.expired_queued = Counter(
            "crossrec_expired_queued_total",
            "Calls whose deadline passed while they waited for a worker (admitted, never run)",
            ["method"],
            registry=self.registry,
        )
        self.store_unavailable = Counter(
            "crossrec_store_unavailable_total",
            "Recommend calls answered without the user's stored history: the store was down",
            registry=self.registry,
        )
        self.attribution_failed = Counter(
            "crossrec_attribution_failed_total",
            "IngestEvents calls whose live attribution failed (the shared log unreachable); the "
            "events were stored",
            registry=self.registry,
        )
        self.late_shards = Counter(
            "crossrec_late_shards_total",
            "Shards a Recommend asked remote shard groups for that did not answer in time",
            registry=self.registry,
        )
        self.recommendations = Counter(
            "crossrec_recommendations_total",
            "Recommend responses (lists shown) by arm and model version",
            ["arm", "model_version"],
            registry=self.registry,
        )
        self.impressions = Counter(
            "crossrec_impressions_total",
            "Items shown by arm, model version and whether their category is new to the user",
            ["arm", "model_version", "cross_category"],
            registry=self.registry,
        )
        self.attributed = Counter(
            "crossrec_attributed_total",
            "Clicks, carts and purchases on shown items within the attribution window",
            ["arm", "model_version", "action", "cross_category"],
            registry=self.registry,
        )
        self.revenue = Counter(
            "crossrec_attributed_revenue_total",
            "Price of purchased shown items within the attribution window",
            ["arm", "model_version"],
            registry=self.registry,
        )

        self.impression_log_unavailable = Gauge(
            "crossrec_impression_log_unavailable",
            "1 when the impression log could not be opened at start (the engine serves without it)",
            registry=self.registry,
        )

    # -- how a request is counted: every caller records through these two ----------------------
    def call(self, method: str, code: str, seconds: float | None = None) -> None:
        """One RPC ended with ``code`` (refusals before the servicer too: access control, bodies
        that do not parse); ``seconds``: how long it ran, for calls the servicer ran."""
        self.requests.labels(method, code).inc()
        if seconds is not None:
            self.latency.labels(method).observe(seconds)

    def expired_in_queue(self, method: str) -> None:
        """A call admitted whose deadline passed (or whose client left) before a worker took it."""
        self.expired_queued.labels(method).inc()

    def answered(self, stage_seconds: Mapping[str, float], stage_counts: Mapping[str, int]) -> None:
        """One list answered: seconds per stage, candidates left after each stage."""
        for stage, seconds in stage_seconds.items():
            self.stage.labels(stage).observe(seconds)
        for stage, n in stage_counts.items():
            self.candidates.labels(stage).observe(n)

    def watch_impression_log(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export the impression log's counts (written, sampled_out, queue_full, write_error,
        dropped_for_size, forgotten) as ``crossrec_impression_log_total{outcome}``."""
        self.registry.register(
            _Counts(
                "crossrec_impression_log",
                "Recommend responses by what the impression log did with them",
                counts,
            )
        )

    def watch_transport(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export the gRPC core's call counts (started, succeeded, failed; engine/api/transport.py)
        as ``crossrec_transport_calls_total{outcome}``."""
        self.registry.register(
            _Counts(
                "crossrec_transport_calls",
                "Calls the gRPC transport saw, refused before the servicer included",
                counts,
            )
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)


class _Counts:
    """Counts read at scrape time, as one counter family labelled by outcome."""

    def __init__(self, name: str, help_text: str, counts: Callable[[], Mapping[str, int]]) -> None:
        self.name, self.help_text, self.counts = name, help_text, counts

    def collect(self):
        family = CounterMetricFamily(self.name, self.help_text, labels=["outcome"])
        for outcome, n in sorted(self.counts().items()):
            family.add_metric([outcome], n)
        yield family
