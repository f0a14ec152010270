"""Prometheus metrics of one engine: requests, latency per method and stage, candidates per
stage."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        # A registry per engine, so several engines (tests) in one process do not collide.
        self.registry = CollectorRegistry()
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

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
