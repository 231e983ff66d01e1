"""The run status every planner reads each turn: the rule planner as this object, an LLM as its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field
from stratos_agent.graphs.toolset import ToolContext, Toolset, ToolSpec
from stratos_agent.tools.outcome import fmt_ms, fmt_pct, fmt_usd

from stratos_agent.ledger import Ledger
from stratos_agent.state import AgentState

MAX_TOOL_RETRIES = 2  # failed attempts of one tool before the planner gives up on it


class LastError(BaseModel):
    tool: str | None
    message: str
    kind: str = Field(description="invalid, order, budget, failed, rejected, edited")


class RunStatus(BaseModel):
    task: str | None = None
    constraints: dict[str, Any] | None = None
    preference: str | None = None
    done: list[str] = Field(default_factory=list, description="Finished stages, in lifecycle order.")
    approvals: dict[str, str | None] = Field(default_factory=dict)
    next_tool: str | None = Field(default=None, description="The first unfinished stage's tool; None = finished.")
    suggested_args: dict[str, Any] = Field(default_factory=dict)
    failures: dict[str, int] = Field(default_factory=dict)
    max_retries: int = MAX_TOOL_RETRIES
    last_error: LastError | None = None
    pending_question: str | None = Field(default=None, description="A question the user asked in chat.")
    plan_label: str = ""
    plan_why: str | None = None
    plan_feasible: bool | None = None
    spent_usd: float = 0.0
    budget_usd: float | None = None
    summary: str = ""


def next_tool(state: AgentState, toolset: Toolset) -> ToolSpec | None:
    return next((spec for spec in toolset.specs.values() if state.get(spec.produces) is None), None)  # type: ignore[misc]


def asked_question(state: AgentState) -> str | None:
    """The user's chat question when it is the last message (and not the run's opening request)."""
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    if isinstance(last, HumanMessage) and len(messages) > 1 and "?" in str(last.content):
        return str(last.content)
    return None


def answered_question(state: AgentState) -> bool:
    messages = state.get("messages") or []
    return (
        len(messages) >= 2
        and isinstance(messages[-1], AIMessage)
        and not messages[-1].tool_calls
        and isinstance(messages[-2], HumanMessage)
        and "?" in str(messages[-2].content)
    )


def run_summary(state: AgentState) -> str:
    parts = ["Run complete."]
    result = state.get("eval")
    if result is not None:
        teacher = result.teacher.exact_match if result.teacher else None
        parts.append(f"Student exact match {result.student.exact_match}, teacher {teacher}.")
    deployment = state.get("deployment")
    if deployment is not None:
        parts.append(f"Endpoint {deployment.base_url} serving {deployment.model}.")
    return " ".join(parts)


def run_status(state: AgentState, toolset: Toolset) -> RunStatus:
    nxt = next_tool(state, toolset)
    spec = state.get("spec")
    plan = state.get("plan")
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    last_error = None
    if isinstance(last, ToolMessage) and last.status == "error":
        kind = last.artifact.get("kind", "failed") if isinstance(last.artifact, dict) else "failed"
        last_error = LastError(tool=last.name, message=str(last.content), kind=kind)
    budget = spec.constraints.budget_usd if spec else None
    ledger = Ledger.from_state(budget, state.get("ledger"))
    suggested: dict[str, Any] = {}
    if nxt is not None and nxt.suggest is not None:
        suggested = nxt.suggest(ToolContext(state=state, run_dir=Path(state.get("run_dir") or ".")))
    return RunStatus(
        task=spec.task if spec else None,
        constraints=spec.constraints.model_dump(mode="json") if spec else None,
        preference=spec.preference if spec else None,
        done=[slot for slot in toolset.stages() if state.get(slot) is not None],  # type: ignore[misc]
        approvals={gate: a.get("decision") for gate, a in (state.get("approvals") or {}).items()},
        next_tool=nxt.name if nxt else None,
        suggested_args=suggested,
        failures=dict(state.get("errors") or {}),
        last_error=last_error,
        pending_question=asked_question(state),
        plan_label=plan.chosen.label() if plan and plan.chosen else "",
        plan_why=plan.why if plan else None,
        plan_feasible=plan.feasible if plan else None,
        spent_usd=round(ledger.spent_usd, 4),
        budget_usd=ledger.budget_usd,
        summary=run_summary(state),
    )


# Question topics a gate answers from the state, and the words that name them (lower case, substrings).
QUESTION_TOPICS: dict[str, tuple[str, ...]] = {
    "why": ("why", "reason", "pick", "chose", "choose", "explain"),
    "cost": ("cost", "price", "expensive", "cheap", "spend", "money", "budget", "$", "pay", "dollar"),
    "accuracy": ("accura", "exact match", "quality", "correct", "score", "goal", "good"),
    "latency": ("latency", "p95", "fast", "slow", "speed", " ms", "quick", "respond"),
}


def answer_question(state: AgentState, question: str) -> str:
    """A plain, deterministic answer from the plan and evaluation in `state` (why, cost, accuracy,
    latency); a question naming none of them gets all four."""
    text = question.lower()
    topics = [name for name, words in QUESTION_TOPICS.items() if any(w in text for w in words)] or list(QUESTION_TOPICS)
    plan = state.get("plan")
    point = plan.chosen if plan else None
    result, goal, spec = state.get("eval"), state.get("goal"), state.get("spec")
    constraints = spec.constraints if spec else None
    parts = []
    if "why" in topics:
        parts.append(f"Plan {point.label()}: {plan.why}" if plan and point else
                     f"No feasible plan: {plan.why}" if plan else "No plan has been made yet.")
        if goal is not None:
            parts.append("Result gate: " + "; ".join(goal.reasons))
    if "cost" in topics:
        budget = constraints.budget_usd if constraints else None
        spent = Ledger.from_state(budget, state.get("ledger")).spent_usd
        if point:
            parts.append(f"Estimated cost {fmt_usd(point.cost_usd)} (training {fmt_usd(point.cost_training_usd)}, "
                         f"serving {fmt_usd(point.cost_serving_usd)}, synthesis {fmt_usd(point.cost_synthesis_usd)}).")
        parts.append(f"Budget {fmt_usd(budget)}, spent so far {fmt_usd(spent)}.")
    if "accuracy" in topics:
        if result is not None:
            teacher = fmt_pct(result.teacher.exact_match) if result.teacher else "-"
            parts.append(f"Measured exact match on {result.n} held-out items: student "
                         f"{fmt_pct(result.student.exact_match)}, teacher {teacher}.")
        elif point:
            parts.append(f"Estimated exact match {fmt_pct(point.accuracy)} ({point.accuracy_source}).")
        if goal is not None:
            parts.append(f"Goal {goal.goal}: {'met' if goal.met else 'MISSED'}.")
        elif constraints and constraints.min_accuracy is not None:
            parts.append(f"Your floor: {fmt_pct(constraints.min_accuracy)}.")
    if "latency" in topics:
        if result is not None:
            parts.append(f"Measured student p95 latency {fmt_ms(result.student.latency_p95_ms)}.")
        if point:
            parts.append(f"Plan p95 {fmt_ms(point.p95_ms)} ({point.latency_source}).")
        parts.append(f"Target {fmt_ms(constraints.p95_latency_ms if constraints else None)}.")
    return " ".join(parts)
