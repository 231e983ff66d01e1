"""What the nodes share (the runtime, message helpers) and the two small nodes: planner and report.

The other nodes live by job: graphs/intake.py (request -> spec, chat edits, re-planning),
graphs/execution.py (guarded, idempotent tool calls), graphs/gates.py (the approval interrupts).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from stratos_agent.graphs.planners import GuardedPlanner
from stratos_agent.graphs.status import answered_question, asked_question, run_status
from stratos_agent.graphs.toolset import Toolset
from stratos_agent.prompts import load_prompt

from stratos_agent.redact import redact_text, redact_value
from stratos_agent.state import AgentState

log = logging.getLogger("stratos.agent")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class AgentRuntime:
    """What the nodes share: the planner, the tools, and how reports are written."""

    planner: GuardedPlanner
    toolset: Toolset
    write_report: Callable[[AgentState, Path], dict[str, str]]
    spec_model: BaseChatModel | None = None  # structured-output request parsing when an LLM is configured
    default_runs_dir: Callable[[], Path] = field(default=lambda: Path("runs"))

    def run_dir(self, state: AgentState, config: RunnableConfig) -> Path:
        if state.get("run_dir"):
            return Path(state["run_dir"])
        return self.default_runs_dir() / config["configurable"]["thread_id"]


def last_ai(state: AgentState) -> AIMessage | None:
    return next((m for m in reversed(state.get("messages") or []) if isinstance(m, AIMessage)), None)


def pending_calls(state: AgentState) -> list[dict[str, Any]]:
    """Tool calls of the last AI message that have no ToolMessage answer yet."""
    ai = last_ai(state)
    if ai is None:
        return []
    answered = {m.tool_call_id for m in state["messages"] if isinstance(m, ToolMessage)}
    return [c for c in ai.tool_calls if c["id"] not in answered]


# The three error sinks below feed the checkpoint, agent.log and the report: each redacts what it stores
# (credentials in endpoint URLs, configured keys), so a message built anywhere is safe once stored.
def tool_error(call: dict[str, Any], message: str, kind: str) -> ToolMessage:
    return ToolMessage(
        content=f"ERROR ({kind}): {redact_text(message)}",
        tool_call_id=call["id"],
        name=call["name"],
        status="error",
        artifact={"kind": kind},
    )


def event(kind: str, **detail: Any) -> dict[str, Any]:
    return {"kind": kind, **redact_value(detail), "at": now()}


def log_failure(run_dir: Path, tool: str, exc: BaseException | str) -> None:
    """Append a failure to agent.log; a checkpoint hands a stored error back as a string (no traceback)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(exc, str):
        lines = [f"{now()} {tool} failed: {exc}\n"]
    else:
        lines = [f"{now()} {tool} failed: {type(exc).__name__}: {exc}\n", *traceback.format_exception(exc)]
    with open(run_dir / "agent.log", "a", encoding="utf-8") as fh:
        fh.write(redact_text("".join(lines)))


class PlannerNodes:
    """The planner turn, the route after it, and the closing report."""

    def __init__(self, rt: AgentRuntime):
        self.rt = rt

    def planner(self, state: AgentState) -> dict[str, Any]:
        status = run_status(state, self.rt.toolset)
        system = load_prompt("planner_system").replace("{tools}", self.rt.toolset.lifecycle_text())
        turn = self.rt.planner.decide([SystemMessage(content=system), *state.get("messages", [])], status)
        update: dict[str, Any] = {"messages": [turn.message]}
        if turn.events:
            events = redact_value(turn.events)  # a failing LLM planner's error names its endpoint
            for item in events:  # metered usage is bookkeeping; anything else is the planner going wrong
                (log.info if item.get("kind") == "planner_usage" else log.warning)("planner: %s", item)
            update["events"] = [*(state.get("events") or []), *({**e, "at": now()} for e in events)]
        return update

    def route_after_planner(self, state: AgentState) -> str:
        calls = pending_calls(state)
        approvals = state.get("approvals") or {}
        plan = state.get("plan")
        if not calls:
            stuck = plan is not None and not plan.feasible and "plan" not in approvals
            return "approve_plan" if stuck and not state.get("auto_approve") else "report"
        specs = [self.rt.toolset[c["name"]] for c in calls if c["name"] in self.rt.toolset]
        if any(s.spends for s in specs) and plan is not None and "plan" not in approvals:
            return "approve_plan"
        if any(s.needs_deploy_approval for s in specs) and state.get("eval") is not None and "deploy" not in approvals:
            return "approve_deploy"
        return "tools"

    def report(self, state: AgentState) -> dict[str, Any]:
        status = state.get("status")
        plan, goal = state.get("plan"), state.get("goal")
        if status != "rejected":
            if state.get("deployment") is not None:
                status = "done"
            elif asked_question(state) is not None or answered_question(state):
                status = "paused"  # the planner answered a chat question; `stratos chat` continues the run
            elif ((plan is not None and not plan.feasible) or (goal is not None and not goal.met)
                  or _stopped_on_budget(state)):
                status = "needs_input"  # an infeasible spec, a missed goal, a spent budget: a question for the user
            else:
                status = "failed"
        paths = self.rt.write_report({**state, "status": status}, Path(state["run_dir"]))  # type: ignore[typeddict-item]
        return {"report": paths, "status": status}


def _stopped_on_budget(state: AgentState) -> bool:
    """The last tool call was refused (or stopped) by the budget: more budget is the user's call."""
    last = next((m for m in reversed(state.get("messages") or []) if isinstance(m, ToolMessage)), None)
    return (last is not None and last.status == "error" and isinstance(last.artifact, dict)
            and last.artifact.get("kind") == "budget")
