"""evals/bench_latency_noise.py: how two readings of one server are judged to agree, and the summary."""

from __future__ import annotations

import pytest
from support.evals import eval_module


@pytest.fixture(scope="module")
def noise():
    with eval_module("bench_latency_noise") as module:
        yield module


def test_agreement_is_judged_like_plan_vs_deployed(noise):
    # |a - b| / b, b the reading compared against: 130 vs 100 is 30% off, 100 vs 130 only 23%
    assert noise.agreement([100.0, 130.0]) == 0.5
    assert noise.agreement([100.0, 120.0, 130.0]) == round(5 / 6, 3)
    assert noise.agreement([60.0, 61.0, 62.0]) == 1.0


def test_summary_reports_each_kind_and_the_compute_reference(noise):
    test = {"p95_ms": 0.0, "wall_s": 9.0}
    results = {"standard": [{**test, "p95_ms": 50.0}, {**test, "p95_ms": 75.0}],
               "fresh": [{**test, "p95_ms": 60.0}, {**test, "p95_ms": 66.0}]}
    summary = noise.summarise(results, [3000.0, 4500.0])
    assert summary["standard"]["test_p95_max_over_min"] == 1.5 and summary["standard"]["pairs_within_25pct"] == 0.0
    assert summary["fresh"]["test_p95_range_ms"] == [60.0, 66.0] and summary["fresh"]["pairs_within_25pct"] == 1.0
    assert summary["compute_ops_per_s"] == {"median": 3750.0, "range": [3000.0, 4500.0], "max_over_min": 1.5}
