"""evals/plan_quality.py's deployment score: absolute, zero for what the gate would not deploy or a broken limit."""

from __future__ import annotations

import pytest
from support.evals import eval_module

from stratos_agent.request_parser import parse_request


@pytest.fixture(scope="module")
def pq():
    with eval_module("plan_quality") as module:
        yield module


SPEC = parse_request("a model that lists Mahjong winning tiles, under $20, p95 under 2 s, 0.1 qps, done in 10 minutes")


def measured(**kw):
    return {"exact_match": 0.3, "cost_usd": 0.0, "p95_ms": 200.0, "machine_s": 120.0} | kw


def test_score_is_accuracy_plus_the_share_of_each_limit_left(pq):
    # 0.35 * 0.3 + 0.35 * (1 - 0) + 0.15 * (1 - 0.1) + 0.15 * (1 - 0.2)
    assert pq.deployment_score(SPEC, measured(), True) == pytest.approx(0.105 + 0.35 + 0.135 + 0.12)
    # absolute: a point's score does not depend on the others; more accuracy, same limits: higher
    assert pq.deployment_score(SPEC, measured(exact_match=0.4), True) > pq.deployment_score(SPEC, measured(), True)


def test_what_the_gate_refuses_or_a_broken_limit_scores_zero(pq):
    assert pq.deployment_score(SPEC, measured(exact_match=0.0, machine_s=6.0), False) == 0.0
    assert pq.deployment_score(SPEC, measured(machine_s=601.0), True) == 0.0  # past the 10-minute deadline
    assert pq.deployment_score(SPEC, measured(p95_ms=2100.0), True) == 0.0
    assert pq.deployment_score(SPEC, measured(cost_usd=25.0), True) == 0.0
