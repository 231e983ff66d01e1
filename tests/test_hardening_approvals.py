"""Hardening of the human turns: gate answers, questions at a gate, edits, and bad input at intake.

Real graph, checkpointer (SQLite) and gate/intake logic; tool bodies are the stand-ins of
tests/support/doubles.py, so every path is forced in a fraction of a second. Each case ends by proving the
checkpoint still accepts a later decision (a refused answer must never wedge a run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.gates import parse_decision
from stratos_agent.graphs.session import AgentSession
from support.doubles import StageDouble, doubles
from typer.testing import CliRunner

from stratos_agent.errors import InputError
from stratos_agent.spec import DistillationSpec, validated_spec

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"


def session(runs_dir: Path, runners: dict[str, StageDouble] | None = None, thread: str = "h") -> AgentSession:
    return AgentSession(thread, runs_dir=runs_dir, graph_kwargs={"toolset": default_toolset(runners or doubles())})


def cli(*args: str, input: str | None = None) -> Any:
    from stratos_agent.cli import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def stand_in_cli(monkeypatch: pytest.MonkeyPatch, runs_dir: Path) -> dict[str, StageDouble]:
    """The CLI's sessions run over stand-in tools (and share their call counters with the test)."""
    import stratos_agent.cli.agent as agent_cli

    runners = doubles()
    monkeypatch.setattr(agent_cli, "_session", lambda thread, *a, **k: session(runs_dir, runners, thread))
    return runners


# -- what a gate accepts as a decision ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "answer,decision",
    [
        ({"decision": "maybe"}, "unclear"),
        ({"decision": None}, "unclear"),
        ({}, "unclear"),
        ({"changes": {"budget_usd": 30}}, "unclear"),  # an edit says so
        ({"decision": "approve", "changes": {"budget_usd": 30}}, "unclear"),  # approve what?
        ({"decision": "edit", "changes": ["budget_usd=30"]}, "unclear"),
        ({"decision": " APPROVE "}, "approve"),
        ("go ahead?", "question"),
        ("yes?", "question"),
        ("go ahead", "unclear"),
        ("ok", "unclear"),
        ("y", "unclear"),
        ("approve please", "unclear"),
        ("", "unclear"),
        (3, "unclear"),
        ("  Yes! ", "approve"),
        ("APPROVE", "approve"),
        ("No, too slow", "reject"),
        ("make the budget $40", "edit"),
        ("edit budget", "unclear"),
    ],
)
def test_only_explicit_answers_decide(answer: Any, decision: str) -> None:
    assert parse_decision(answer).decision == decision


def test_a_rejection_keeps_its_reason() -> None:
    assert parse_decision("no, too slow") == ("reject", {}, "too slow")


# -- a gate that is not given a decision asks again, and still takes a later one ----------------------------

BAD_GATE_ANSWERS = [
    {"decision": "maybe"},
    {"decision": None},
    "go ahead",
    {"decision": "edit", "changes": {"budget_usd": "inf"}},
    {"decision": "edit", "changes": {"task": "jsonl:../../../../etc/passwd"}},
    {"decision": "edit", "changes": {"clouds": "moon"}},
    {"decision": "edit", "changes": {"teacher": "gpt-7-ultra"}},
    {"decision": "edit", "changes": {"student": "made-up-student"}},
    {"decision": "edit", "changes": {"data_size": "999999999999"}},
    {"decision": "edit", "changes": {"qps": "1e300"}},
    "edit p95_latency_ms",
]


@pytest.mark.parametrize(  # each refusal is followed by a decision, approve and reject in turn
    "bad,final", [(bad, ("approve", "reject")[i % 2]) for i, bad in enumerate(BAD_GATE_ANSWERS)],
    ids=[json.dumps(a)[:40] for a in BAD_GATE_ANSWERS],
)
def test_a_gate_refuses_what_is_not_a_decision_and_then_takes_one(runs_dir: Path, bad: Any, final: str) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST)
    out = s.resume(bad)
    assert out.interrupt["gate"] == "plan" and out.status == "awaiting_approval"
    assert out.interrupt["reply"].startswith(("Not understood", "Edit refused"))
    assert runners["synthesize_data"].calls == 0 and out.values["approvals"] == {}
    assert out.values["spec"].constraints.budget_usd == 20 and runners["make_plan"].calls == 1
    again = session(runs_dir, runners).resume(bad)  # a fresh process, the same bad answer again
    assert again.interrupt["gate"] == "plan"
    out = session(runs_dir, runners).resume(final)
    if final == "approve":
        assert out.interrupt["gate"] == "deploy" and out.values["approvals"]["plan"]["decision"] == "approve"
    else:
        assert out.status == "rejected" and runners["synthesize_data"].calls == 0
    refused = [e for e in out.values["events"] if e["kind"].startswith("plan_gate_")]
    assert len(refused) == 2  # both refusals are on record for the report


def test_a_bug_in_edit_handling_is_logged_and_the_gate_still_decides(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stratos_agent.graphs import gates

    def broken(spec: Any, changes: Any) -> Any:
        raise KeyError("boom")

    s = session(runs_dir)
    s.start(REQUEST)
    monkeypatch.setattr(gates, "apply_edits", broken)
    out = s.resume("budget_usd=30")
    assert out.interrupt["gate"] == "plan" and "internal error KeyError" in out.interrupt["reply"]
    assert "KeyError: 'boom'" in (s.run_dir / "agent.log").read_text()
    assert s.resume("reject").status == "rejected"


def test_the_gate_prompt_lists_the_answers_it_takes(runs_dir: Path) -> None:
    out = session(runs_dir).start(REQUEST)
    assert all(word in out.interrupt["answers"] for word in ("approve", "yes", "reject", "no", "edit KEY=VALUE"))


@pytest.mark.parametrize(
    "question,expected",
    [
        ("why this plan?", ["cheapest point under $20"]),
        ("what does it cost?", ["Estimated cost $6.00", "training $2.00", "Budget $20.00", "spent so far $0.00"]),
        ("how accurate will it be?", ["Estimated exact match 50.0%"]),
        ("what latency?", ["Plan p95 120 ms (measured)", "Target 300 ms"]),
        ("hmm?", ["cheapest point", "$6.00", "50.0%", "120 ms"]),  # no topic named: all of them
    ],
)
def test_questions_at_the_plan_gate_are_answered_from_the_plan(runs_dir: Path, question: str, expected: list[str]) -> None:
    s = session(runs_dir)
    s.start(REQUEST)
    out = s.send(question)  # `stratos chat` sends what is typed to the waiting gate
    assert out.interrupt["gate"] == "plan" and all(e in out.interrupt["reply"] for e in expected)
    assert s.send("approve").interrupt["gate"] == "deploy"


def test_questions_at_the_deploy_gate_are_answered_from_the_evaluation(runs_dir: Path) -> None:
    s = session(runs_dir)
    s.start(REQUEST)
    s.resume("approve")
    out = s.send("is it accurate enough, and how fast?")
    reply = out.interrupt["reply"]
    assert out.interrupt["gate"] == "deploy"
    assert "student 50.0%, teacher 10.0%" in reply and "Measured student p95 latency 80 ms" in reply
    assert "Goal" in reply
    assert s.resume({"decision": "reject", "note": "later"}).status == "rejected"


def test_a_valid_edit_at_a_gate_replans(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST)
    out = s.send("why?")
    out = s.send("make the budget $40")  # a change in words
    assert out.interrupt["gate"] == "plan" and out.values["spec"].constraints.budget_usd == 40
    assert runners["make_plan"].calls == 2


# -- the CLI: chat at a gate, approve --edit --------------------------------------------------------------

def test_cli_chat_question_at_a_gate_then_reject_works(runs_dir: Path) -> None:
    session(runs_dir, thread="chatgate").start(REQUEST)
    res = cli("chat", "chatgate", input="why this plan?\nwhat does it cost?\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "cheapest point under $20" in res.output and "Estimated cost $6.00" in res.output
    res = cli("approve", "chatgate", "--reject", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["status"] == "rejected"


@pytest.mark.parametrize(
    "edit,field",
    [
        ("budget_usd=inf", "budget_usd"),
        ("budget_usd=0", "budget_usd"),
        ("task=jsonl:../../../../etc/passwd", "task"),
        ("clouds=moon", "clouds"),
        ("teacher=gpt-7-ultra", "teacher"),
        ("student=endpoint:gpt-4o", "student"),
        ("data_size=999999999999", "data_size"),
        ("qps=1e300", "qps"),
        ("min_accuracy=150%", "min_accuracy"),
        ("deadline_hours=0", "deadline_hours"),
    ],
)
def test_cli_approve_edit_is_checked_like_a_new_request(stand_in_cli: dict, runs_dir: Path, edit: str, field: str) -> None:
    session(runs_dir, stand_in_cli, thread="ed").start(REQUEST)
    res = cli("approve", "ed", "--edit", edit)
    assert isinstance(res.exception, InputError) and field in str(res.exception), res.output
    assert "\n" not in str(res.exception)  # one clean line, not pydantic's multi-line dump
    res = cli("approve", "ed", "--json")  # nothing was sent: the gate takes a decision as before
    assert res.exit_code == 0 and json.loads(res.output.strip().splitlines()[-1])["waiting_for"] == "deploy"


# -- the spec model: one set of checks for requests, files and edits -----------------------------------------

@pytest.mark.parametrize(
    "data,field",
    [
        ({"constraints": {"budget_usd": float("inf")}}, "constraints.budget_usd"),
        ({"constraints": {"budget_usd": "nan"}}, "constraints.budget_usd"),
        ({"constraints": {"budget_usd": 1e12}}, "constraints.budget_usd"),
        ({"constraints": {"budget_usd": 20, "p95_latency_ms": 0}}, "constraints.p95_latency_ms"),
        ({"constraints": {"budget_usd": 20, "min_accuracy": 1.5}}, "constraints.min_accuracy"),
        ({"constraints": {"budget_usd": 20, "deadline_hours": 1e9}}, "constraints.deadline_hours"),
        ({"constraints": {"budget_usd": 20, "clouds": ["aws", "marscloud"]}}, "constraints.clouds"),
        ({"traffic": {"qps": 1e300}}, "traffic.qps"),
        ({"traffic": {"duration_days": 0}}, "traffic.duration_days"),
        ({"data_size": 999_999_999_999}, "data_size"),
        ({"task": "poker"}, "task"),
        ({"task": "jsonl:../../../../etc/passwd.jsonl"}, "task"),
        ({"task": "jsonl:/etc/passwd"}, "task"),
        ({"task": "jsonl:/no/such/file.jsonl"}, "task"),
        ({"teacher": "gpt-7-ultra"}, "teacher"),
        ({"teacher": "mahjong-micro-2m"}, "teacher"),  # a micro student cannot teach
        ({"teacher": "./no-such-folder"}, "teacher"),
        ({"student": "endpoint:gpt-4o"}, "student"),
        ({"task": "gsm8k", "student": "mahjong-micro-2m"}, "student"),
        ({"metric": "f1"}, "metric"),
    ],
)
def test_spec_input_checks_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        validated_spec({"task": "mahjong", "constraints": {"budget_usd": 20}, **data}, "spec.yaml")


def test_what_a_legitimate_user_passes_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.chdir(tmp_path)
    for data in (
        {"task": "jsonl:data/qa.jsonl"},
        {"task": f"jsonl:{tmp_path / 'data' / 'qa.jsonl'}"},
        {"task": "Mahjong", "teacher": "endpoint:gpt-4o-mini", "student": "smollm2-135m-half"},
        {"task": "mahjong", "teacher": "HuggingFaceTB/SmolLM2-360M-Instruct", "student": "mahjong-micro-2m"},
        {"task": "gsm8k", "constraints": {"budget_usd": 30, "clouds": ["AWS", "local"], "min_accuracy": 0.4,
                                          "deadline_hours": 0.25},
         "traffic": {"qps": 50, "duration_days": 365}, "data_size": 50_000},
    ):
        assert validated_spec({"constraints": {"budget_usd": 30}, **data}, "spec").constraints.budget_usd == 30


def test_a_checkpointed_spec_revives_after_its_file_moved(tmp_path: Path) -> None:
    """Lookups outside the spec run on user input only: a stored run stays readable (LangGraph revives a
    record with `cls(**fields)`)."""
    data = tmp_path / "qa.jsonl"
    data.write_text("{}\n")
    spec = validated_spec({"task": f"jsonl:{data}", "constraints": {"budget_usd": 5}}, "spec")
    data.unlink()
    assert DistillationSpec(**spec.model_dump()) == spec
    with pytest.raises(InputError, match="does not exist"):
        validated_spec(spec, "edit")


# -- intake: bad requests and specs are asked about, never raised out of the node ------------------------------

@pytest.mark.parametrize(
    "phrase,field,answer",
    [
        ("p95 latency under 0 ms", "p95_latency_ms", "p95 under 300 ms"),
        ("at least 150% accuracy", "min_accuracy", "at least 40% accuracy"),
        ("done in 0 hours", "deadline_hours", "done in 2 hours"),
        ("0 qps", "qps", "2 qps"),
        ("serve for 0 days", "duration_days", "serve for 3 days"),
    ],
)
def test_impossible_values_in_a_request_are_asked_again(runs_dir: Path, phrase: str, field: str, answer: str) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(f"Mahjong winning tiles under $20, {phrase}")
    assert out.status == "needs_input" and out.interrupt["gate"] == "clarify"
    assert field in out.interrupt["questions"][0]
    assert session(runs_dir, runners).resume().interrupt["gate"] == "clarify"  # a plain resume re-raises nothing
    out = session(runs_dir, runners).resume(answer)  # the answer overrides what the request said
    assert out.interrupt["gate"] == "plan" and runners["make_plan"].calls == 1


def test_a_zero_budget_request_asks_for_a_budget(runs_dir: Path) -> None:
    s = session(runs_dir)
    out = s.start("Mahjong winning tiles for $0")
    assert "budget_usd" in out.interrupt["questions"][0]
    out = s.resume("$25")
    assert out.interrupt["gate"] == "plan" and out.values["spec"].constraints.budget_usd == 25
    assert "$0" in out.values["request"] and "$25" in out.values["request"]  # the user's words are kept


def test_a_spec_without_a_budget_asks_for_one_and_refuses_an_infinite_one(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(spec={"task": "mahjong"})
    assert out.status == "needs_input" and "no budget_usd" in out.interrupt["questions"][0]
    out = s.resume("budget_usd=inf")
    assert out.status == "needs_input" and "finite" in out.interrupt["questions"][0]
    out = s.resume("cancel")  # nothing to cancel on a new run: still asked
    assert out.status == "needs_input"
    out = s.resume("budget_usd=25")
    assert out.interrupt["gate"] == "plan" and out.values["spec"].constraints.budget_usd == 25
    assert runners["make_plan"].calls == 1


def test_a_spec_with_an_unknown_cloud_is_asked_to_be_corrected(runs_dir: Path) -> None:
    s = session(runs_dir)
    out = s.start(spec={"task": "mahjong", "constraints": {"budget_usd": 20, "clouds": ["marscloud"]}})
    assert "constraints.clouds: unknown cloud(s) marscloud" in out.interrupt["questions"][0]
    out = s.resume("clouds=local")
    assert out.interrupt["gate"] == "plan" and out.values["spec"].constraints.clouds == ["local"]


def test_cli_run_config_without_budget_ends_needing_input(stand_in_cli: dict, runs_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "spec.yaml"
    config.write_text("task: mahjong\nconstraints:\n  p95_latency_ms: 300\n")
    res = cli("run", "--config", str(config), "--thread", "nobudget", "--yes")
    assert res.exit_code == 3, res.output  # needs input: nothing ran, not even with --yes
    assert "budget" in res.output and "stratos resume nobudget --answer" in res.output
    assert stand_in_cli["make_plan"].calls == 0
    res = cli("resume", "nobudget", "--answer", "$20", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["status"] == "done"  # --yes holds once budgeted


def test_cli_run_config_with_an_infinite_budget_is_refused(tmp_path: Path, runs_dir: Path) -> None:
    config = tmp_path / "spec.yaml"
    config.write_text("task: mahjong\nconstraints:\n  budget_usd: .inf\n")
    res = cli("run", "--config", str(config))
    assert isinstance(res.exception, InputError) and "constraints.budget_usd" in str(res.exception)


def test_a_refused_chat_edit_on_a_finished_run_asks_and_can_be_cancelled(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    assert s.start(REQUEST, auto_approve=True).status == "done"
    out = s.send("make the budget $0")
    assert out.status == "needs_input" and "budget_usd" in out.interrupt["questions"][0]
    out = s.resume("cancel")
    assert out.status == "done" and out.values["spec"].constraints.budget_usd == 20
    assert runners["make_plan"].calls == 1


def test_a_refused_edit_of_a_stopped_run_can_be_corrected(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST, auto_approve=True)
    out = s.edit({"teacher": "gpt-7-ultra"})  # the Python API's `approve --edit` on a stopped run
    assert out.status == "needs_input" and "unknown model 'gpt-7-ultra'" in out.interrupt["questions"][0]
    out = s.resume("budget_usd=40")
    assert out.status == "done" and out.values["spec"].constraints.budget_usd == 40
    assert out.values["spec"].teacher is None and runners["make_plan"].calls == 2


def test_a_malformed_spec_handed_to_the_python_api_is_one_input_error(runs_dir: Path) -> None:
    with pytest.raises(InputError, match=r"spec: constraints.budget_usd: "):
        session(runs_dir).start(spec={"task": "mahjong", "constraints": {"budget_usd": "lots"}})
