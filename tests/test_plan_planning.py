"""Planning end to end on the shipped catalog and the real registry: front, choice, infeasibility, CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from stratos_agent.tools import pareto
from stratos_agent.tools.planning import plan_for, prepare
from stratos_agent.tools.strategy import decide_strategy

from stratos_agent.errors import InputError
from stratos_agent.spec import Constraints, DistillationSpec, Traffic


def _spec(**constraints) -> DistillationSpec:
    return DistillationSpec(task="mahjong", constraints=Constraints(**constraints), traffic=Traffic(qps=2))


@pytest.fixture(scope="module")
def plan():
    return plan_for(_spec(budget_usd=800, p95_latency_ms=400), include_local=False)


def test_front_is_feasible_non_dominated_and_contains_choice(plan):
    assert plan.feasible and plan.chosen in plan.front
    F = np.array([[p.cost_usd, p.p95_ms, -p.accuracy, p.train_hours] for p in plan.front])
    assert pareto.non_dominated_mask(F).all()
    assert all(p.cost_usd <= 800 and p.p95_ms <= 400 for p in plan.front)
    assert plan.excluded and plan.candidates > len(plan.front)
    assert plan.chosen.gpu in plan.why and "Against the cheapest plan" in plan.why
    assert all(
        p.cost_usd == pytest.approx(p.cost_training_usd + p.cost_serving_usd + p.cost_synthesis_usd)
        for p in plan.front
    )


def test_pairs_carry_strategy_numbers(plan):
    assert plan.pairs
    for pair in plan.pairs:
        assert pair.decision.numbers["probe_accuracy"] == pytest.approx(pair.probe_accuracy, abs=1e-4)
        assert pair.logit_kd == pair.tokenizer_match  # same SmolLM2 tokenizer, white-box teacher


def test_preferences_move_the_choice():
    cheap = plan_for(_spec(budget_usd=800).model_copy(update={"preference": "cheaper"}), include_local=False)
    accurate = plan_for(
        _spec(budget_usd=800).model_copy(update={"preference": "accurate"}), include_local=False
    )
    assert cheap.chosen.cost_usd <= accurate.chosen.cost_usd
    assert accurate.chosen.accuracy >= cheap.chosen.accuracy
    assert "preference 'cheaper'" in cheap.why


def test_impossible_latency_names_the_binding_constraint_and_nearest_plans():
    plan = plan_for(_spec(p95_latency_ms=1), include_local=False)
    assert not plan.feasible and plan.chosen is None
    assert plan.binding_constraints == ["p95 <= 1 ms"]
    assert any("no server/model in the catalog can meet it" in h for h in plan.nearest_feasible)


def test_conflicting_constraints_point_to_the_cheapest_way_out():
    plan = plan_for(_spec(budget_usd=50, p95_latency_ms=400), include_local=False)
    assert not plan.feasible
    assert "budget <= $50" in plan.binding_constraints
    assert any(
        "p95 <= 400 ms alone needs one of" in h and "cheapest such plan costs" in h
        for h in plan.nearest_feasible
    )


def test_unknown_gpu_and_cloud_are_input_errors():
    with pytest.raises(InputError, match="unknown GPU"):
        prepare(_spec(), gpus=["B9000"], include_local=False)
    with pytest.raises(InputError, match="unknown cloud"):
        prepare(_spec(clouds=["moon"]), include_local=False)


def test_gpu_filter_restricts_servers():
    plan = plan_for(_spec(budget_usd=2000), gpus=["L4"], include_local=False)
    assert {p.gpu for p in plan.front} == {"L4"}


@pytest.mark.parametrize(
    ("probe", "solver", "logit", "expected"),
    [
        (0.9, True, True, "alignment-logit"),
        (0.9, False, False, "alignment-seq"),
        (0.6, True, True, "injection"),  # usable but weak teacher + solver: inject
        (0.6, False, True, "alignment-logit"),
        (0.1, True, False, "injection"),
        (0.1, False, False, "alignment-seq"),
    ],
)
def test_strategy_decision(probe, solver, logit, expected):
    decision = decide_strategy(probe, solver, logit)
    assert decision.strategy == expected
    assert decision.strategy in decision.allowed
    assert decision.numbers["probe_accuracy"] == probe and f"{probe:.0%}" in decision.reason


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-c", "from stratos_agent.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_cli_plan_writes_json_and_png(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: mahjong\nconstraints:\n  budget_usd: 800\n  p95_latency_ms: 400\n")
    out = tmp_path / "out"
    proc = _cli("plan", str(spec), "--out", str(out), "--no-local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "why:" in proc.stdout and "Pareto front" in proc.stdout
    assert (out / "plan.json").stat().st_size > 0 and (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: mahjong\nconstraints:\n  budget_usd: -5\n", "constraints.budget_usd"),
        ("task: mahjong\nconstraints: [1,\n", "line"),
        ("task: mahjong\nconstraints:\n  p95_latency_ms: 0.5\n", "binding: p95 <= 0.5 ms"),
    ],
)
def test_cli_bad_inputs_are_one_clean_line(tmp_path, text, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    proc = _cli("plan", str(spec), "--out", str(tmp_path / "o"), "--no-local", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_cli_unknown_gpu(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: mahjong\n")
    proc = _cli("plan", str(spec), "--gpu", "B9000", "--no-local", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown GPU 'B9000'" in proc.stderr


def test_memory_fit_excludes_plans_with_the_reason():
    # 60k-token contexts x 64 concurrent requests: ~90 GB of bf16 KV cache for SmolLM2-135M.
    spec = DistillationSpec(  # SmolLM2 named: a 2M-parameter micro student's cache fits anywhere
        task="mahjong", student="smollm2-135m",
        traffic=Traffic(prompt_tokens=60_000, output_tokens=100, concurrency=64),
    )
    plan = plan_for(spec, include_local=False)
    reason = "serving memory (weights + KV cache + runtime) exceeds the server"
    assert plan.excluded.get(reason, 0) > 0
    assert plan.feasible and all(
        p.gpu in {"H200", "H100", "A100-80GB", "A100-40GB", "L40S", "A6000"} or p.gpu_count > 1
        for p in plan.front
    )


def test_server_profiles_label_every_figure():
    from stratos_agent.tools.planning import gather_inputs, server_profiles

    spec = _spec()
    profiles = server_profiles(spec, gather_inputs(spec, include_local=False))
    assert profiles and all(p.p95_ms.source == "modelled" and p.fits for p in profiles)
    one = profiles[0]
    assert set(one.decode_tok_s) == {1, 4, 8} and one.decode_tok_s[8].value > one.decode_tok_s[1].value
    assert "GB" in one.fit_reason and one.prefill_tok_s.unit == "tok/s"


def test_teacher_data_is_priced_only_where_the_run_calls_the_teacher(plan):
    # injection data comes from the task's solver (synth.choose_mode), so it costs nothing; alignment data is
    # written by the priced teacher
    injection = [p for p in plan.front if p.strategy == "injection"]
    aligned = [p for p in plan.front if p.strategy != "injection"]
    assert injection and all(p.cost_synthesis_usd == 0 for p in injection)
    assert all(p.cost_synthesis_usd > 0 for p in aligned if not p.teacher.startswith("endpoint:"))
