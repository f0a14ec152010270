"""How a request is counted (engine/feedback/metrics.py): one place for every caller."""

from __future__ import annotations

import pytest

from engine.feedback.metrics import Metrics


def _sample(metrics: Metrics, name: str, labels: dict) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_call_is_counted_by_method_and_code_and_timed_only_when_it_ran():
    m = Metrics()
    m.call("Recommend", "OK", 0.003)
    m.call("Recommend", "OK", 0.007)
    m.call("Recommend", "UNAUTHENTICATED")  # refused before the servicer: no time
    assert _sample(m, "crossrec_requests_total", {"method": "Recommend", "code": "OK"}) == 2
    assert _sample(
        m, "crossrec_requests_total", {"method": "Recommend", "code": "UNAUTHENTICATED"}
    ) == 1  # fmt: skip
    labels = {"method": "Recommend"}
    assert _sample(m, "crossrec_request_seconds_count", labels) == 2
    assert _sample(m, "crossrec_request_seconds_sum", labels) == pytest.approx(0.010)


def test_an_answer_records_each_stage_and_its_candidates():
    m = Metrics()
    m.answered({"rank": 0.002, "respond": 0.001}, {"merged": 40, "filtered": 25})
    m.answered({"rank": 0.004}, {"merged": 60})
    assert _sample(m, "crossrec_stage_seconds_count", {"stage": "rank"}) == 2
    assert _sample(m, "crossrec_stage_seconds_sum", {"stage": "rank"}) == pytest.approx(0.006)
    assert _sample(m, "crossrec_stage_seconds_count", {"stage": "respond"}) == 1
    assert _sample(m, "crossrec_candidates_sum", {"stage": "merged"}) == 100
    assert _sample(m, "crossrec_candidates_count", {"stage": "filtered"}) == 1
