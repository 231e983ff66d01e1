"""Pilot runs: a minute of the planned training starts the learning curve of a candidate the calibration
store has never seen, and the plan then predicts from it (fitted) instead of a prior (slow: real training)."""

from __future__ import annotations

import pytest
from stratos_agent.tools import calibration, pilot, planning
from stratos_agent.tools.survey import plan_measured

from stratos_agent.records.plans import PairTable
from stratos_agent.spec import Constraints, DistillationSpec, Traffic

pytestmark = pytest.mark.slow


def _spec(student: str) -> DistillationSpec:
    return DistillationSpec(task="mahjong", student=student, teacher="smollm2-135m",
                            constraints=Constraints(budget_usd=5, clouds=["local"]),
                            traffic=Traffic(qps=0.1, concurrency=1, prompt_tokens=25, output_tokens=8))


@pytest.fixture
def empty_store(tmp_path, monkeypatch):
    """An empty calibration store and no finished pilots (the user's cache keeps its own)."""
    monkeypatch.setenv("STRATOS_CALIBRATION_DIR", str(tmp_path / "store"))
    monkeypatch.setattr(pilot, "pilots_dir", lambda: tmp_path / "pilots")
    return tmp_path / "store"


def test_a_pilot_turns_the_prior_into_a_fitted_prediction(empty_store, monkeypatch):
    spec = _spec("mahjong-micro-2m")
    pairs = PairTable(pairs=planning.prepare(spec, gpus=["CPU"]).pairs)
    before = plan_measured(spec, ["CPU"], pairs)
    assert before.chosen is not None and before.chosen.accuracy_source == "prior"

    monkeypatch.setattr(pilot, "PILOT_SECONDS", 12.0)
    monkeypatch.setattr(pilot, "PILOT_EVAL_STEPS", 2)  # >= 2 curve points in 12 s even on a slow, busy machine
    monkeypatch.setenv(pilot.ENV_SWITCH, "1")
    after = plan_measured(spec, ["CPU"], pairs)
    stored = calibration.curves("mahjong", "mahjong-micro-2m", "stream-full")
    assert [c.kind for c in stored] == ["pilot"] and len(stored[0].points) >= 2
    # the time box, not the plan's budget, ended it: fewer examples than the planned run would see
    assert stored[0].examples_per_s > 0 and 0 < stored[0].points[-1].examples < before.chosen.train_examples
    assert after.chosen is not None and after.chosen.accuracy_source in ("fitted", "measured")
    assert after.chosen.train_hours_source == "measured"  # the pilot measured its throughput too
    again = pilot.run_pilot(after, after.chosen)  # cached: the recorded pilot, no second run
    assert again.created == stored[0].created


def test_a_trl_pilot_records_under_the_plans_method(empty_store):
    spec = _spec("smollm2-135m-half")
    plan = planning.plan_for(spec, gpus=["CPU"])
    point = next(p for p in plan.front if p.student == "smollm2-135m-half" and p.lora_rank > 0)
    curve = pilot.run_pilot(plan, point, seconds=8)
    assert curve.kind == "pilot" and curve.method == pilot.pilot_method(point)
    assert curve.method.endswith(f"lora{point.lora_rank}")
    assert curve.points[0].examples == 0 and curve.points[-1].examples > 0
    assert calibration.curves("mahjong", "smollm2-135m-half", curve.method)[0].created == curve.created
