"""The result gate: a measured result is checked against the goal before anything goes live.

Real graph, checkpointer and gate logic (tools/goal.py); tool bodies are stand-ins whose evaluation
results are set per test, so each path of the gate is forced deterministically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.types import RetryPolicy
from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.execution import is_transient
from stratos_agent.graphs.session import AgentSession
from stratos_agent.tools.evaluate import wilson
from stratos_agent.tools.goal import check_goal, gate_floor
from support.doubles import comparison, doubles, eval_report, point, student

from stratos_agent.records.evaluation import BaselineScore, Comparison, Proportion
from stratos_agent.spec import DistillationSpec

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"


def scored(student: float, teacher: float = 0.05, empty: float = 0.11, n: int = 500) -> Comparison:
    """A comparison on `n` items with an 'empty answer' baseline, like Mahjong's."""
    base = [BaselineScore(name="empty answer", answer_text="Winning tiles: none", by_difficulty={}, mean_f1=empty,
                          exact_match=Proportion(value=empty, low=empty, high=empty, successes=round(empty * n), n=n))]
    report = eval_report("student", student, {"1": student})
    low, high = max(0.0, student - 0.04), min(1.0, student + 0.04)
    report = report.model_copy(update={"n": n, "exact_match_ci": Proportion(
        value=student, low=low, high=high, successes=round(student * n), n=n)})
    return comparison().model_copy(update={"n": n, "student": report, "baselines": base,
                                          "teacher": eval_report("teacher", teacher, {"1": teacher})})


def session(runs_dir: Path, runners: dict[str, Any], **start: Any) -> tuple[AgentSession, Any]:
    fast = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=is_transient)
    s = AgentSession("gate", runs_dir=runs_dir, graph_kwargs={"toolset": default_toolset(runners), "tool_retry": fast})
    return s, s.start(REQUEST, **start)


def test_default_goal_is_beating_every_baseline_and_the_teacher() -> None:
    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20, "p95_latency_ms": 300})
    below = check_goal(spec, scored(0.09), point())
    assert not below.met and below.best_baseline == "empty answer" and "not above" in below.reasons[0]
    close = check_goal(spec, scored(0.13), point())  # beats the baseline, but its lower bound does not
    assert not close.met
    assert check_goal(spec, scored(0.34), point()).met
    slow = check_goal(spec, scored(0.34), point(p95_ms=900.0))
    assert not slow.met and "over the target of 300 ms" in slow.reasons[-1]
    floor = DistillationSpec(task="mahjong", constraints={"budget_usd": 20, "min_accuracy": 0.4})
    assert not check_goal(floor, scored(0.34), point()).met and check_goal(floor, scored(0.41), point()).met


def test_the_plans_floor_is_the_lowest_score_whose_lower_bound_clears_the_best_baseline() -> None:
    floor = gate_floor("mahjong", 100)
    assert floor is not None and floor.baseline == "empty answer" and 0.05 < floor.baseline_accuracy < 0.2
    k = round(floor.accuracy * 100)
    assert wilson(k, 100).low > floor.baseline_accuracy >= wilson(k - 1, 100).low
    assert gate_floor("mahjong", 400).accuracy < floor.accuracy  # a bigger hold-out asks less above the baseline


def test_yes_never_deploys_a_student_below_the_baseline(runs_dir: Path) -> None:
    runners = doubles()
    runners["evaluate_student"].value = scored(0.09)
    _s, out = session(runs_dir, runners, auto_approve=True)
    assert out.status == "needs_input" and runners["deploy_student"].calls == 0
    assert out.values["deployment"] is None and not out.values["goal"].met
    # it trained on once (round 1), saw no gain, and stopped with the reasons
    decisions = [a["decision"] for a in out.values["adaptations"]]
    assert decisions == ["train on", "stop"] and runners["train_student"].calls == 2
    assert "moved exact match by 0.0%" in out.values["adaptations"][-1]["reason"]
    report = Path(out.values["report"]["markdown"]).read_text()
    assert report.index("## Outcome") < report.index("## Plan") and "MISSED" in report and "Not deployed" in report


def test_an_adaptation_round_that_reaches_the_goal_deploys(runs_dir: Path) -> None:
    runners = doubles()
    results = iter([scored(0.09), scored(0.36)])
    runners["evaluate_student"].value = lambda ctx: next(results)
    trained = iter(["round0", "round1"])
    runners["train_student"].value = lambda ctx: student().model_copy(update={"model_dir": Path(next(trained))})
    _s, out = session(runs_dir, runners, auto_approve=True)
    assert out.status == "done" and runners["train_student"].calls == 2 and runners["deploy_student"].calls == 1
    assert [a["decision"] for a in out.values["adaptations"]] == ["train on"] and out.values["goal"].met
    assert out.values["adaptations"][0]["model_dir"] == "round0"  # round 1 starts from round 0's weights


def test_deploy_anyway_is_an_explicit_flag(runs_dir: Path) -> None:
    runners = doubles()
    runners["evaluate_student"].value = scored(0.09)
    _s, out = session(runs_dir, runners, auto_approve=True, deploy_anyway=True)
    assert out.status == "done" and runners["deploy_student"].calls == 1
    assert "misses the goal" in out.values["approvals"]["deploy"]["note"]


def test_interactive_gate_shows_the_miss_and_a_human_decides(runs_dir: Path) -> None:
    runners = doubles()
    runners["evaluate_student"].value = scored(0.09)
    s, out = session(runs_dir, runners)
    out = s.resume("approve")  # the plan
    assert out.interrupt["gate"] == "deploy" and "MISSES the goal" in out.interrupt["question"]
    assert out.interrupt["goal"]["met"] is False
    out = s.resume("reject")
    assert out.status == "rejected" and runners["deploy_student"].calls == 0


def test_train_on_rounds_start_from_the_last_weights(tmp_path: Path) -> None:
    from stratos_agent.graphs.adapters import train_config
    from stratos_agent.graphs.toolset import ToolContext, TrainStudentArgs
    from support.doubles import dataset, plan_for_budget

    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
    state: dict[str, Any] = {"thread_id": "t", "spec": spec, "dataset": dataset(),
                             "plan": plan_for_budget(type("Ctx", (), {"spec": spec}))}
    first = train_config(ToolContext(state=state, run_dir=tmp_path), TrainStudentArgs(max_steps=10))
    assert first.base_model == "smollm2-135m" and first.run_name == "t-student"
    state["adaptations"] = [{"round": 1, "decision": "train on", "model_dir": "/w/round0", "accuracy": 0.1,
                             "reason": "r"}]
    again = train_config(ToolContext(state=state, run_dir=tmp_path), TrainStudentArgs(max_steps=10))
    assert again.base_model == "/w/round0" and again.run_name == "t-student-r1"
    assert again.max_steps == first.max_steps and again.lora_r == first.lora_r
    assert again.lineage is None and again.examples_before == 0  # not a folder Stratos trained


def test_train_on_rounds_continue_the_learning_curve_of_their_lineage(tmp_path: Path) -> None:
    from stratos_agent.graphs.adapters import train_config
    from stratos_agent.graphs.toolset import ToolContext, TrainStudentArgs
    from support.doubles import dataset, plan_for_budget, student

    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
    state: dict[str, Any] = {"thread_id": "t", "spec": spec, "dataset": dataset(),
                             "plan": plan_for_budget(type("Ctx", (), {"spec": spec}))}
    round0 = student()
    round0 = round0.model_copy(update={
        "global_step": 40, "streamed_examples": 2560, "model_dir": tmp_path / "train" / "model",
        "config": round0.config.model_copy(update={"base_model": "mahjong-micro-2m"})})
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "student.json").write_text(round0.model_dump_json())
    state["adaptations"] = [{"round": 1, "decision": "train on", "model_dir": str(round0.model_dir),
                             "accuracy": 0.1, "reason": "r"}]
    again = train_config(ToolContext(state=state, run_dir=tmp_path), TrainStudentArgs(max_steps=10))
    assert again.lineage == "mahjong-micro-2m" and again.examples_before == 2560
    assert again.curve_student == "mahjong-micro-2m"
    assert again.fingerprint() == again.model_copy(update={"lineage": None, "examples_before": 0}).fingerprint()


def test_what_the_request_says_but_the_parser_cannot_read_is_reported_back(runs_dir: Path) -> None:
    from stratos_agent.tools.outcome import outcome_lines

    s = AgentSession("unread", runs_dir=runs_dir, graph_kwargs={"toolset": default_toolset(doubles())})
    out = s.start(f"{REQUEST}, on marscloud")
    assert out.interrupt["gate"] == "plan"
    assert any("marscloud" in phrase for phrase in out.interrupt["not_understood"])
    assert any(line.startswith("Not understood in the request") and "marscloud" in line
               for line in outcome_lines(out.values))
