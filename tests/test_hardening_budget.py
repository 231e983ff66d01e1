"""Money: every attempt stays in the ledger, paid endpoint calls are metered and capped at the budget,
and nothing paid runs without a finite budget.

Paid calls go to a real local HTTP endpoint (tests/test_teachers_remote.py's FakeEndpoint: every answer
reports 1 prompt + 1 completion token) priced through STRATOS_TEACHER_USD_PER_MTOK; the graph, its
checkpointer, guards and ledger are real, only the stage bodies are stand-ins that make those calls.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.types import RetryPolicy
from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.execution import LEDGER_JOURNAL, is_transient
from stratos_agent.graphs.session import AgentSession
from stratos_agent.graphs.toolset import ToolOutcome
from stratos_agent.tools.teachers import CachedTeacher, OpenAICompatibleTeacher
from support.doubles import dataset, doubles
from test_teachers_remote import FakeEndpoint

from stratos_agent.ledger import BudgetExhausted, Ledger, SpendMeter, metering
from stratos_agent.records.plans import PairTable

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"
DOLLAR_PER_TOKEN = "1000000"  # $/Mtok: an answer (2 tokens) costs $2, its worst case (prompt chars + max_tokens) more


def _session(runs_dir: Path, runners: dict[str, Any], **graph: Any) -> AgentSession:
    fast = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=is_transient)
    return AgentSession("money", runs_dir=runs_dir,
                        graph_kwargs={"toolset": default_toolset(runners), "tool_retry": fast, **graph})


def _paid_teacher(url: str, cache: Path) -> CachedTeacher:
    return CachedTeacher(OpenAICompatibleTeacher(url, "paid-model", concurrency=1, backoff_base_s=0.01), cache)


# ----------------------------------------------------------------------------- the ledger
def test_a_rerun_books_a_new_attempt_and_never_frees_spent_money() -> None:
    ledger = Ledger(budget_usd=10)
    first = ledger.book("model", 6.0, "aws:x", 3600.0)  # $1/s
    ledger.settle("model", wall_s=6, failed=True)
    # the $6 attempt stays spent: a second $6 run no longer fits a $10 budget (before: it replaced the first)
    assert ledger.refusal("model", 6.0) is not None and "$4.00 left" in ledger.refusal("model", 6.0)
    assert ledger.refusal("model", 4.0) is None
    second = ledger.book("model", 4.0, "aws:x", 3600.0)
    ledger.settle("model", wall_s=3, metered_usd=0.5)
    assert [(e.attempt, e.actual_usd, e.failed) for e in ledger.entries] == [(1, 6.0, True), (2, 3.5, False)]
    assert ledger.spent_usd == pytest.approx(9.5) and first.id != second.id


def test_no_or_infinite_budget_refuses_paid_spend_but_not_free_stages() -> None:
    for budget in (None, math.inf):
        ledger = Ledger(budget_usd=budget)
        assert "no finite budget" in ledger.refusal("model", 0.01)
        assert ledger.refusal("model", 0.0) is None  # local, $0/h: fine
        assert ledger.spend_cap(ledger.book("dataset", 0.0, "local", 0.0)) is None
    meter = SpendMeter(cap_usd=None)
    meter.reserve(0.0, "a free call")  # a local endpoint costs nothing: allowed
    with pytest.raises(BudgetExhausted, match="no finite budget"):
        meter.reserve(0.001, "a paid call")


def test_the_cap_is_the_budget_left_not_the_estimate() -> None:
    ledger = Ledger(budget_usd=10)
    ledger.book("pairs", 0.0, "local", 0.0)
    ledger.settle("pairs", wall_s=1, metered_usd=3.0)
    booked = ledger.book("dataset", 1.0, "local", 0.0)
    assert ledger.spend_cap(booked) == pytest.approx(7.0)  # may pass its $1 estimate, up to what is left


# ----------------------------------------------------------------------------- metering the teacher
def test_teacher_calls_are_metered_and_stop_at_the_cap_keeping_paid_answers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STRATOS_TEACHER_USD_PER_MTOK", DOLLAR_PER_TOKEN)
    prompts = [f"q{i}" for i in range(10)]
    with FakeEndpoint() as ep, metering(cap_usd=16.0) as meter:
        teacher = _paid_teacher(ep.url, tmp_path / "cache")
        with pytest.raises(BudgetExhausted, match="budget exhausted"):
            teacher.generate_each(prompts, max_new_tokens=8)
        answered = len(ep.requests)
    # each call held its worst case ($10: 2 prompt chars + 8 tokens) and was charged its usage ($2)
    assert answered == 4 and meter.spent_usd == pytest.approx(8.0) and meter.tokens == 8
    assert meter.spent_usd + 10.0 > 16.0  # the next call could have passed the cap: refused, not sent
    assert len(list((tmp_path / "cache").rglob("*.json"))) == answered  # every paid answer kept


def test_outside_a_stage_paid_calls_are_counted_not_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STRATOS_TEACHER_USD_PER_MTOK", DOLLAR_PER_TOKEN)
    with FakeEndpoint() as ep:
        inner = OpenAICompatibleTeacher(ep.url, "paid-model", concurrency=2)
        inner.generate(["a", "b", "c"], max_new_tokens=4)  # a CLI command the user typed: no run budget
    assert (inner.spend.answers, inner.spend.tokens, inner.spend.usd) == (3, 6, pytest.approx(6.0))


# ----------------------------------------------------------------------------- through the graph
def test_probes_and_synthesis_spend_is_booked_and_the_run_stops_at_the_budget(runs_dir, tmp_path, monkeypatch):
    """Probes before the plan gate are booked; synthesis (planned at $0) runs past its estimate until the
    $20 budget would be passed, fails cleanly with every paid answer cached, and the run stops asking."""
    monkeypatch.setenv("STRATOS_TEACHER_USD_PER_MTOK", DOLLAR_PER_TOKEN)
    cache = tmp_path / "cache"
    with FakeEndpoint() as ep:
        def probe(ctx: Any, args: Any) -> ToolOutcome:
            _paid_teacher(ep.url, cache).generate(["probe"], max_new_tokens=8)
            return ToolOutcome(PairTable(pairs=[]), {})

        def synth(ctx: Any, args: Any) -> ToolOutcome:
            synth.calls += 1
            _paid_teacher(ep.url, cache).generate_each([f"item {i}" for i in range(20)], max_new_tokens=4)
            return ToolOutcome(dataset(), {})

        synth.calls = 0
        runners = doubles()
        s = _session(runs_dir, {**runners, "score_pairs": probe, "synthesize_data": synth})
        out = s.start(REQUEST, auto_approve=True)
        paid = len(ep.requests)
        again = s.resume()  # "continue": the stage is refused at once, nothing more is paid
        assert len(ep.requests) == paid
    entries = {(e["stage"], e["attempt"]): e for e in again.values["ledger"]}
    assert entries["pairs", 1]["metered_usd"] == pytest.approx(2.0)  # the probe, before any approval
    first = entries["dataset", 1]
    assert first["failed"] and first["metered_usd"] == pytest.approx(2.0 * (paid - 1))
    assert first["actual_usd"] > first["estimated_usd"] == 0.0  # ran past its estimate, stopped at the budget
    assert sum(e["actual_usd"] for e in again.values["ledger"]) <= 20.0
    assert len(list(cache.rglob("*.json"))) == paid  # every paid answer kept
    assert out.status == "needs_input" and "budget exhausted" in out.values["messages"][-2].content
    assert "Edit the budget" in out.values["messages"][-1].content
    assert ("dataset", 2) not in entries and synth.calls == 1  # a run that asks is not re-run by a bare resume
    assert again.status == "needs_input" and runners["train_student"].calls == 0
    assert (s.run_dir / LEDGER_JOURNAL).is_file()


class PricedPlanner(BaseChatModel):
    """A scripted chat model that reports token usage, named like a priced endpoint model."""

    model_name: str = "gpt-4o"
    turns: int = 0

    @property
    def _llm_type(self) -> str:
        return "priced-scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.turns += 1
        reply = AIMessage(content="", tool_calls=[{"name": "benchmark_servers", "args": {}, "id": f"p{next(_ids)}"}],
                          usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15})
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Any, **kwargs: Any) -> PricedPlanner:
        return self


_ids = itertools.count()


def test_paid_planner_turns_are_booked_and_stop_once_the_budget_is_spent(runs_dir, monkeypatch) -> None:
    monkeypatch.setenv("STRATOS_TEACHER_USD_PER_MTOK", "500000")  # 15 tokens = $7.50 a turn
    planner = PricedPlanner()
    out = _session(runs_dir, doubles(), planner=planner).start(REQUEST, auto_approve=True)
    booked = next(e for e in out.values["ledger"] if e["stage"] == "planner")
    assert booked["actual_usd"] == pytest.approx(7.5 * planner.turns) and booked["tokens"] == 15 * planner.turns
    # once the ledger shows the $20 spent, the priced model is no longer asked: the free rule planner decides
    assert planner.turns == 3
    unpaid = [e for e in out.values["events"] if e["kind"] == "planner_unpaid"]
    assert unpaid and "budget is spent" in unpaid[0]["reason"]


def test_evaluation_calls_to_an_endpoint_are_metered(monkeypatch) -> None:
    from rich.console import Console
    from stratos_agent.tools.evaluate import generate_endpoint

    monkeypatch.setenv("STRATOS_TEACHER_USD_PER_MTOK", DOLLAR_PER_TOKEN)
    with FakeEndpoint() as ep, metering(cap_usd=100.0) as meter:
        generate_endpoint(ep.url, "paid-model", [[{"role": "user", "content": "q"}]] * 3, concurrency=2,
                          max_new_tokens=4, api_key=None, console=Console(quiet=True))
    assert (meter.calls, meter.tokens, meter.spent_usd) == (3, 6, pytest.approx(6.0))
