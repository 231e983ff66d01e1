"""The agent graph driven end to end with scripted planners and stand-in tool runners.

The graph, checkpointer (real SQLite), guards, interrupts, retry policy, planner fallback and report are
the real ones; only the tools' bodies are replaced by `StageDouble`s (instant, counting their calls),
because this file tests orchestration. Real tools run in tests/test_agent_e2e.py (slow).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.types import RetryPolicy
from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.execution import is_transient
from stratos_agent.graphs.gates import parse_decision
from stratos_agent.graphs.session import AgentSession, list_runs
from stratos_agent.tools.teachers import EndpointError
from support.doubles import StageDouble, doubles

from stratos_agent.errors import InputError

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"


class ScriptedPlanner(BaseChatModel):
    """A fake chat model: replies with the scripted messages in order, recording what it was sent."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        self.seen.append(list(messages))
        reply = self.script.pop(0) if self.script else AIMessage(content="done")
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedPlanner:
        return self


_ids = itertools.count()


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"c{next(_ids)}"}])


def session(runs_dir: Path, runners: dict[str, StageDouble], thread: str = "t", **graph: Any) -> AgentSession:
    fast_retry = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False, retry_on=is_transient)
    return AgentSession(
        thread,
        runs_dir=runs_dir,
        graph_kwargs={"toolset": default_toolset(runners), "tool_retry": fast_retry, **graph},
    )


def tool_messages(outcome: Any) -> list[ToolMessage]:
    return [m for m in outcome.values["messages"] if isinstance(m, ToolMessage)]


def test_lifecycle_with_both_approval_gates(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(REQUEST)
    assert out.status == "awaiting_approval" and out.interrupt["gate"] == "plan"
    assert (
        out.interrupt["budget_usd"] == 20
        and out.interrupt["pareto"]
        and out.interrupt["estimate"]["cost_usd"]
    )
    assert runners["synthesize_data"].calls == 0  # nothing spent before approval
    out = s.resume("approve")
    assert out.interrupt["gate"] == "deploy" and out.interrupt["eval"]["student_accuracy"] == 0.5
    assert runners["deploy_student"].calls == 0
    out = s.resume("yes")
    assert out.status == "done"
    assert all(r.calls == 1 for r in runners.values())
    summary = out.summary()
    assert summary["endpoint"] == {"base_url": "http://127.0.0.1:9/v1", "model": "student"}
    assert summary["student_accuracy"] == 0.5 and summary["teacher_accuracy"] == 0.1
    html = Path(summary["report"]).read_text()
    assert "data:image/png;base64," in html and "Pareto front" in html
    md = (s.run_dir / "report.md").read_text()
    assert "AUTO-SKIPPED" not in md and "| plan | approve | False" in md
    assert [e["stage"] for e in out.values["ledger"]] == [
        "servers",
        "pairs",
        "plan",
        "dataset",
        "model",
        "eval",
        "deployment",
    ]
    assert list_runs(runs_dir)[0]["status"] == "done"


def test_auto_approve_skips_gates_and_report_says_so(runs_dir: Path) -> None:
    s = session(runs_dir, doubles())
    out = s.start(REQUEST, auto_approve=True)
    assert out.status == "done" and out.interrupt is None
    assert all(a["auto"] for a in out.values["approvals"].values())
    assert "AUTO-SKIPPED" in (s.run_dir / "report.md").read_text()


def test_edit_at_plan_gate_replans_and_reuses_unchanged_stages(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST)
    out = s.resume({"decision": "edit", "changes": {"budget_usd": "50"}})
    assert out.interrupt["gate"] == "plan" and out.interrupt["budget_usd"] == 50  # asked again, new plan
    assert runners["make_plan"].calls == 2 and runners["benchmark_servers"].calls == 1
    assert "cheapest point under $50" in out.interrupt["why"]
    edited = [m for m in tool_messages(out) if "changed the spec" in m.content]
    assert edited and edited[0].status == "error"  # the pending call was answered, not silently dropped
    out = s.resume("approve")
    out = s.resume("approve")
    assert out.status == "done" and out.values["spec"].constraints.budget_usd == 50


def test_infeasible_plan_asks_for_an_edit(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(REQUEST.replace("$20", "$2"))
    assert out.interrupt["gate"] == "plan" and out.interrupt["feasible"] is False
    assert out.interrupt["nearest_feasible"] == ["budget $6: local CPU"]
    out = s.resume("approve")  # approving "nothing fits" is not possible: it counts as a rejection
    assert out.status == "rejected" and runners["synthesize_data"].calls == 0
    s2 = session(runs_dir, runners, thread="t2")
    s2.start(REQUEST.replace("$20", "$2"))
    out = s2.resume("edit budget_usd=10")
    assert out.interrupt["feasible"] is True and out.interrupt["budget_usd"] == 10


def test_infeasible_plan_with_auto_approve_stops_with_the_reason(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(REQUEST.replace("$20", "$2"), auto_approve=True)
    assert out.status == "needs_input" and runners["synthesize_data"].calls == 0  # a question, not a failure
    assert "the cheapest plan costs $6" in out.values["messages"][-1].content
    out = s.edit({"budget_usd": "10"})  # `stratos approve THREAD --edit budget_usd=10` on the stopped run
    assert out.status == "done" and out.values["spec"].constraints.budget_usd == 10


def test_rejected_plan_spends_nothing(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST)
    out = s.resume("reject too expensive")
    assert out.status == "rejected"
    assert runners["synthesize_data"].calls == runners["train_student"].calls == 0
    assert out.values["approvals"]["plan"]["decision"] == "reject"
    assert (s.run_dir / "report.html").is_file()


def test_budget_overrun_attempt_is_refused_to_the_planner(runs_dir: Path) -> None:
    runners = doubles()
    script = [
        call("benchmark_servers"),
        call("score_pairs"),
        call("make_plan"),
        call("synthesize_data"),
        call("train_student", max_steps=900_000),  # a valid call, but far over the $20 budget
        AIMessage(content="I cannot stay within the budget."),
    ]
    planner = ScriptedPlanner(script=script, seen=[])
    s = session(runs_dir, runners, planner=planner)
    s.start(REQUEST, auto_approve=True)
    out = s.outcome()
    refused = [m for m in tool_messages(out) if m.name == "train_student"]
    assert refused[0].status == "error" and "budget exceeded" in refused[0].content
    assert runners["train_student"].calls == 0
    # the refusal reached the planner as a ToolMessage in its next prompt
    assert any(isinstance(m, ToolMessage) and "budget exceeded" in m.content for m in planner.seen[-1])
    assert out.status == "needs_input"  # more budget is the user's call


def test_order_guards_refuse_out_of_order_calls(runs_dir: Path) -> None:
    runners = doubles()
    script = [call("train_student"), call("deploy_student"), AIMessage(content="stop")]
    s = session(runs_dir, runners, planner=ScriptedPlanner(script=script, seen=[]))
    out = s.start(REQUEST, auto_approve=True)
    first, second = tool_messages(out)[:2]
    assert first.status == "error" and "needs plan, dataset first" in first.content
    assert second.status == "error" and "needs model, eval first" in second.content
    kinds = [e["kind"] for e in out.values["events"]]
    assert kinds.count("refused") == 2
    # "stop" while unfinished is not a valid planner reply: the rule planner completed the run instead
    assert out.status == "done" and runners["train_student"].calls == 1


def test_invalid_llm_calls_retry_then_rule_planner_takes_the_step(runs_dir: Path) -> None:
    bad = [call("launch_rockets"), call("score_pairs", probe_n=-3), AIMessage(content="hello!")]
    planner = ScriptedPlanner(script=list(bad), seen=[])
    runners = doubles()
    s = session(runs_dir, runners, planner=planner, planner_retries=2)
    out = s.start(REQUEST, auto_approve=True)
    fallback = [e for e in out.values["events"] if e["kind"] == "planner_fallback"]
    assert fallback[0]["attempts"] == 3 and fallback[0]["decision"] == ["benchmark_servers"]
    assert "unknown tool 'launch_rockets'" in fallback[0]["errors"][0]
    assert "probe_n" in fallback[0]["errors"][1] and "without a tool call" in fallback[0]["errors"][2]
    # the second attempt saw the validation error of the first
    assert any("unknown tool" in str(m.content) for m in planner.seen[1])
    assert out.status == "done"  # later turns: the script is empty, "done" text is invalid -> rule planner


def test_transient_errors_are_retried_by_the_retry_policy(runs_dir: Path) -> None:
    runners = doubles(synthesize_data=[EndpointError("teacher 503", 503), TimeoutError("slow")])
    out = session(runs_dir, runners).start(REQUEST, auto_approve=True)
    assert out.status == "done" and runners["synthesize_data"].calls == 3


def test_exhausted_retries_and_permanent_errors_surface_to_the_planner(runs_dir: Path) -> None:
    runners = doubles(
        synthesize_data=[EndpointError("down", 503)] * 3,
        train_student=[InputError("bad rank"), InputError("bad rank")],
    )
    out = session(runs_dir, runners).start(REQUEST, auto_approve=True)
    msgs = {m.content for m in tool_messages(out) if m.status == "error"}
    assert any("failed after retries: EndpointError: down" in m for m in msgs)
    assert any("train_student failed: bad rank" in m for m in msgs)
    assert out.status == "failed" and "Giving up on train_student" in out.values["messages"][-1].content
    assert (
        "bad rank" in (s_log := (Path(out.values["run_dir"]) / "agent.log").read_text())
        and "Traceback" in s_log
    )


def test_missing_essential_asks_back_instead_of_guessing(runs_dir: Path) -> None:
    s = session(runs_dir, doubles())
    out = s.start("a model that lists Mahjong winning tiles, p95 under 300 ms")
    assert out.status == "needs_input" and out.interrupt["missing"] == ["budget_usd"]
    out = s.resume("the budget is $25")
    assert out.values["spec"].constraints.budget_usd == 25 and out.interrupt["gate"] == "plan"


def test_finished_stages_are_reused_after_a_lost_process(runs_dir: Path) -> None:
    runners = doubles(train_student=[KeyboardInterrupt()])  # the process "dies" inside training
    s = session(runs_dir, runners)
    s.start(REQUEST)
    with pytest.raises(KeyboardInterrupt):
        s.resume("approve")
    fresh = AgentSession("t", runs_dir=runs_dir, graph_kwargs=s.graph_kwargs)  # a new process would do this
    assert fresh.outcome().status == "interrupted"
    out = fresh.resume()
    assert out.interrupt["gate"] == "deploy"
    assert runners["synthesize_data"].calls == 1 and runners["train_student"].calls == 2


def test_chat_question_and_constraint_change(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    s.start(REQUEST, auto_approve=True)
    out = s.send("why did you pick this plan?")
    assert "cheapest point under $20" in out.values["messages"][-1].content
    out = s.send("make the budget $40")
    assert out.values["spec"].constraints.budget_usd == 40 and out.status == "done"
    assert runners["make_plan"].calls == 2
    assert runners["synthesize_data"].calls == 1  # same data args and task: the finished stage is reused


def test_cli_status_and_runs_read_the_checkpoint(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from stratos_agent.cli import _register_commands, app

    session(runs_dir, doubles(), thread="cli1").start(REQUEST)
    _register_commands()
    res = CliRunner().invoke(app, ["status", "cli1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["waiting_for"] == "plan"
    res = CliRunner().invoke(app, ["runs", "--json"])
    assert json.loads(res.output)[0]["thread_id"] == "cli1"
    res = CliRunner().invoke(app, ["approve", "cli1", "--edit", "budget_usd=-5"])
    assert res.exit_code != 0 and "greater than 0" in str(res.exception)


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("approve", ("approve", {}, "")),
        (True, ("approve", {}, "")),
        ("no", ("reject", {}, "")),
        ("edit budget_usd=30 clouds=aws", ("edit", {"budget_usd": "30", "clouds": "aws"}, "")),
        ({"decision": "reject", "note": "x"}, ("reject", {}, "x")),
    ],
)
def test_parse_decision(answer: Any, expected: tuple) -> None:
    assert parse_decision(answer) == expected


def test_resume_after_a_failed_run_retries_the_failed_step(runs_dir: Path) -> None:
    runners = doubles(train_student=[InputError("disk full"), InputError("disk full")])
    s = session(runs_dir, runners)
    assert s.start(REQUEST, auto_approve=True).status == "failed"
    out = s.resume()  # the user fixed the cause: a resume tries again with a fresh retry budget
    assert out.status == "done" and runners["train_student"].calls == 3
    assert runners["synthesize_data"].calls == 1


def test_cli_chat_answers_a_question_and_approve_rejects(runs_dir: Path) -> None:
    from typer.testing import CliRunner

    from stratos_agent.cli import _register_commands, app

    _register_commands()
    session(runs_dir, doubles(), thread="chat1").start(REQUEST, auto_approve=True)
    res = CliRunner().invoke(app, ["chat", "chat1"], input="why this plan?\n/status\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "cheapest point under $20" in res.output and "bye" in res.output
    session(runs_dir, doubles(), thread="gate1").start(REQUEST)
    res = CliRunner().invoke(app, ["approve", "gate1", "--reject", "--note", "too slow", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["status"] == "rejected"
