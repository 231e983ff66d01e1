"""What `stratos run` measures before the plan gate (tools/survey.py): a pilot whenever the chosen local
point's accuracy is a prior or its training hours are modelled (no throughput recorded on this machine),
and, for an infeasible plan, the point it would choose without the constraints that modelled figures can
bind. Nothing trains here: the decision is checked, not the pilot (tests/test_pilot.py runs one)."""

from __future__ import annotations

import pytest
from stratos_agent.tools import calibration, pilot, planning, survey

from stratos_agent.records.plans import PairTable
from stratos_agent.request_parser import parse_request

TEACHER = "smollm2-135m"


@pytest.fixture
def local_plan(tmp_path, monkeypatch):
    monkeypatch.setenv(calibration.STORE_ENV, str(tmp_path / "calibration"))  # nothing measured here

    def make(request: str):
        spec = parse_request(request)
        spec = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": ["local"]})})
        ctx = planning.prepare(spec, probes={TEACHER: 0.0})
        return spec, ctx, planning.make_plan(spec, ctx.inputs, ctx.pairs, table=ctx.table)

    return make


def test_a_local_point_with_modelled_hours_gets_a_pilot(local_plan, monkeypatch):
    monkeypatch.setattr(pilot, "enabled", lambda: True)
    _, _, plan = local_plan("a model that lists Mahjong winning tiles, under $20, p95 under 2 s, 0.1 qps")
    point = plan.chosen
    assert point is not None and point.is_local
    fitted = point.model_copy(update={"accuracy_source": "fitted"})
    assert survey._next_measurement(fitted.model_copy(update={"train_hours_source": "modelled"}), set())[0] == "pilot"
    measured = fitted.model_copy(update={"train_hours_source": "measured", "latency_source": "measured"})
    assert survey._next_measurement(measured, set()) is None


def test_an_infeasible_plan_measures_the_point_it_would_choose_unconstrained(local_plan):
    spec, ctx, plan = local_plan("a model that lists Mahjong winning tiles, at least 90% exact match, under $20, "
                                 "p95 under 2 s, 0.1 qps, done in 1 minute")
    assert plan.chosen is None
    nearest = survey._nearest(spec, ctx.inputs, PairTable(pairs=ctx.pairs))
    assert nearest is not None and nearest.is_local
