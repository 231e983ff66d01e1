"""Failures: one bad item never stops a synthesis, a dead endpoint trips a breaker, a paid answer is never
lost, a zero-yield teacher stops early, permanent errors are not retried, and limits bind every planner.

Teachers talk to a real local HTTP endpoint (tests/test_teachers_remote.py's FakeEndpoint, whose script
is the status of each request in arrival order); the graph tests run the real graph over stand-in stages.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.types import RetryPolicy
from stratos_agent.graphs import graph as graph_module
from stratos_agent.graphs.adapters import (
    DEPLOY_DEADLINE_S,
    DeployDeadline,
    default_toolset,
    deploy_time_left,
    run_deploy,
)
from stratos_agent.graphs.execution import is_transient
from stratos_agent.graphs.session import AgentSession
from stratos_agent.graphs.toolset import DeployStudentArgs, ToolContext
from stratos_agent.tools.synth import REJECT_TEACHER_ERROR, LowYield, synthesize
from stratos_agent.tools.teachers import CachedTeacher, CircuitOpen, EndpointError, OpenAICompatibleTeacher
from support.doubles import doubles
from test_teachers_remote import FakeEndpoint

from stratos_agent.errors import InputError, ServiceError
from stratos_agent.tasks import get_task_pack

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"
PACK = get_task_pack("mahjong")
_KNOWN = re.compile(r"already known:\n(.+)\n")


def knowing_teacher(body: dict) -> str:
    """Teacher mode: reasons toward the answer line the prompt hands it (every answer verifies)."""
    return f"The open shapes complete the hand.\n{_KNOWN.search(body['messages'][-1]['content']).group(1)}"


def _teacher(url: str, cache: Path, **kw: Any) -> CachedTeacher:
    opts = {"backoff_base_s": 0.001, "backoff_cap_s": 0.01, "timeout_s": 10.0, **kw}
    return CachedTeacher(OpenAICompatibleTeacher(url, "flaky-model", **opts), cache)


def _cached_answers(cache: Path) -> int:
    return len(list(cache.rglob("*.json")))


# ----------------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (EndpointError("rate limited", 429), True),
        (EndpointError("bad gateway", 502), True),
        (EndpointError("timed out"), True),  # no HTTP answer at all
        (EndpointError("bad request", 400), False),
        (EndpointError("unauthorised", 401), False),
        (CircuitOpen("down", transient=False), False),
        (ServiceError("the server was not ready after 600 s"), False),  # a failed health check
        (DeployDeadline("deadline spent"), False),
        (TimeoutError("slow"), True),
        (InputError("bad rank"), False),
    ],
)
def test_only_timeouts_connection_errors_429_and_5xx_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


# ----------------------------------------------------------------------------- one item, many items
def test_one_items_spent_retries_reject_that_item_and_synthesis_goes_on(tmp_path) -> None:
    with FakeEndpoint(knowing_teacher) as ep:
        ep.script.extend([500] * 3)  # the first item fails every attempt (max_retries=2)
        ref = synthesize("mahjong", 12, tmp_path / "out", mode="teacher", seed=3, chunk_size=4,
                         teacher=_teacher(ep.url, tmp_path / "cache", max_retries=2, concurrency=1))
    card = ref.card
    assert card.n_accepted == 12 and card.rejections[REJECT_TEACHER_ERROR] == 1
    assert any("gave up on 1 item" in note for note in card.notes)


def test_a_dead_endpoint_trips_the_breaker_and_keeps_what_was_paid(tmp_path) -> None:
    cache = tmp_path / "cache"
    with FakeEndpoint(knowing_teacher) as ep:
        ep.script.extend([200] * 5 + [503] * 500)  # five answers, then the endpoint goes down
        with pytest.raises(CircuitOpen, match=r"circuit breaker open, 16 of the last 20 calls failed"):
            synthesize("mahjong", 40, tmp_path / "out", mode="teacher", seed=3, chunk_size=16,
                       teacher=_teacher(ep.url, cache, max_retries=5, concurrency=1))
        sent = len(ep.requests)
    assert sent == 5 + 16  # not 11 items x 6 attempts: 80% of the last 20 calls failed, the breaker opens
    assert _cached_answers(cache) == 5  # the batch failed, its paid answers did not go with it


def test_a_refused_key_ends_the_batch_but_earlier_answers_are_cached(tmp_path) -> None:
    cache = tmp_path / "cache"
    with FakeEndpoint() as ep:
        ep.script.extend([200, 200, 200, 401])
        with pytest.raises(EndpointError, match="HTTP 401"):
            _teacher(ep.url, cache, concurrency=1).generate_each([f"q{i}" for i in range(6)], max_new_tokens=4)
        assert len(ep.requests) == 4  # the prompts after the 401 were never sent
    assert _cached_answers(cache) == 3


def test_zero_yield_forward_synthesis_stops_early_and_reports_the_yield(tmp_path) -> None:
    with FakeEndpoint(lambda body: "I am not sure.") as ep:
        with pytest.raises(LowYield, match=r"teacher yield 0/\d+ verified .*95% upper bound") as info:
            synthesize("mahjong", 100, tmp_path / "out", mode="forward", seed=0,
                       teacher=_teacher(ep.url, tmp_path / "cache", concurrency=4))
        sent = len(ep.requests)
    assert sent <= 128  # instead of the 20 n + 1000 = 3000 attempt budget
    assert "--mode teacher" in str(info.value) and "a rerun resumes" in str(info.value)


@pytest.mark.parametrize("retries", [5, 2])  # the default, and few enough that some items spend them all
def test_reliability_figure_30_percent_random_500_429_keeps_every_paid_answer(tmp_path, capsys, retries) -> None:
    """The figure the README quotes: a teacher endpoint failing 30% of calls at random (500 or 429)."""
    rng = random.Random(7)
    statuses = [rng.choice([500, 429]) if rng.random() < 0.3 else 200 for _ in range(5000)]
    cache = tmp_path / "cache"
    with FakeEndpoint(knowing_teacher) as ep:
        ep.script.extend(statuses)
        ref = synthesize("mahjong", 120, tmp_path / "out", mode="teacher", seed=5,
                         teacher=_teacher(ep.url, cache, concurrency=8, max_retries=retries))
        sent = len(ep.requests)
    outcomes = Counter(statuses[:sent])
    paid, kept = outcomes[200], _cached_answers(cache)
    assert ref.card.n_accepted == 120 and paid == kept
    with capsys.disabled():
        print(f"\nreliability, {retries} retries: {sent} calls, {outcomes[500]} x 500 + {outcomes[429]} x 429 "
              f"({(sent - paid) / sent:.0%} failed); {paid} answers paid, {kept} kept in the cache; "
              f"{ref.card.n_accepted}/120 rows; teacher errors {ref.card.rejections.get(REJECT_TEACHER_ERROR, 0)}")


# ----------------------------------------------------------------------------- limits in the graph
def _session(runs_dir: Path, runners: dict[str, Any], **graph: Any) -> AgentSession:
    fast = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False, retry_on=is_transient)
    return AgentSession("limits", runs_dir=runs_dir,
                        graph_kwargs={"toolset": default_toolset(runners), "tool_retry": fast, **graph})


_ids = itertools.count()


class StubbornPlanner(BaseChatModel):
    """An LLM that calls the same tool every turn, whatever happened."""

    tool: str

    @property
    def _llm_type(self) -> str:
        return "stubborn"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        call = {"name": self.tool, "args": {}, "id": f"s{next(_ids)}"}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[call]))])

    def bind_tools(self, tools: Any, **kwargs: Any) -> StubbornPlanner:
        return self


def test_a_permanent_4xx_runs_once_not_six_times(runs_dir) -> None:
    runners = doubles(synthesize_data=[EndpointError("teacher refused the request (HTTP 401)", 401)] * 6)
    out = _session(runs_dir, runners).start(REQUEST, auto_approve=True)
    assert runners["synthesize_data"].calls == 1  # neither the RetryPolicy nor the planner repeated it
    assert out.status == "failed" and out.values["messages"][-1].content.startswith("Stopping:")


def test_a_failed_health_check_is_not_retried_by_the_retry_policy(runs_dir) -> None:
    runners = doubles(deploy_student=[ServiceError("the server was not ready after 600 s")] * 6)
    out = _session(runs_dir, runners).start(REQUEST, auto_approve=True)
    assert runners["deploy_student"].calls == 2  # the planner's retry budget, no RetryPolicy repeats
    assert out.status == "failed"


def test_an_llm_planner_calling_a_failing_tool_forever_is_stopped_by_the_graph(runs_dir) -> None:
    runners = doubles(benchmark_servers=[InputError("no catalog")] * 99)
    out = _session(runs_dir, runners, planner=StubbornPlanner(tool="benchmark_servers")).start(REQUEST)
    assert runners["benchmark_servers"].calls == 2  # the retry budget binds an LLM planner too
    assert out.status == "failed"
    assert [e["kind"] for e in out.values["events"]][-1] == "retry_budget"
    assert "stops here" in out.values["messages"][-1].content


def test_a_planner_looping_on_a_working_tool_ends_before_the_recursion_limit(runs_dir, monkeypatch) -> None:
    monkeypatch.setattr(graph_module, "MAX_CALLS_PER_TURN", 6)
    runners = doubles()
    out = _session(runs_dir, runners, planner=StubbornPlanner(tool="benchmark_servers")).start(REQUEST)
    assert out.status == "failed" and [e["kind"] for e in out.values["events"]][-1] == "call_limit"
    assert runners["benchmark_servers"].calls == 1  # the other five calls reused the finished stage


def test_the_deploy_deadline_bounds_all_attempts_together(tmp_path) -> None:
    failed = {"stage": "deployment", "failed": True, "wall_s": 500.0}
    state = {"ledger": [failed, failed], "errors": {"deploy_student": 2}}
    assert deploy_time_left(state) == DEPLOY_DEADLINE_S - 1000.0 < 0
    with pytest.raises(DeployDeadline, match="whole 900 s deadline"):  # refused before starting a server
        run_deploy(ToolContext(state=state, run_dir=tmp_path), DeployStudentArgs())  # type: ignore[arg-type]
    assert deploy_time_left({**state, "errors": {}}) == DEPLOY_DEADLINE_S  # a human turn starts afresh
    assert deploy_time_left({**state, "errors": {"deploy_student": 1}}) == DEPLOY_DEADLINE_S - 500.0


def test_a_low_yield_teacher_makes_the_rule_planner_switch_to_the_solver(runs_dir) -> None:
    runners = doubles(synthesize_data=[LowYield("teacher yield 0/64 verified")])
    out = _session(runs_dir, runners).start(REQUEST, auto_approve=True)
    synth = [m for m in out.values["messages"] if getattr(m, "name", None) == "synthesize_data"]
    assert synth[0].status == "error" and "(low_yield)" in synth[0].content
    assert json.loads(synth[1].content)["args"]["mode"] == "solver"  # a new strategy, not the same call again
    assert out.status == "done"


def test_the_recursion_limit_ends_the_run_with_a_status_not_a_traceback(runs_dir, monkeypatch) -> None:
    monkeypatch.setattr(graph_module, "RECURSION_LIMIT", 6)  # a backstop the call limits normally keep far off
    s = _session(runs_dir, doubles())
    out = s.start(REQUEST, auto_approve=True)
    assert out.status != "done"
    assert "step limit reached" in json.loads((s.run_dir / "run.json").read_text())["error"]
