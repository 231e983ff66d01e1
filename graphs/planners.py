"""Planners: the chat models that decide the next tool call.

- `rule_decision` is the embedded default: a deterministic policy over the run status (a `RunStatus`
  object) that emits the same tool calls an LLM would. `RulePlanner` wraps it as a LangChain chat model
  (it then reads the status message an LLM reads), so the graph is the same with or without an LLM.
- `GuardedPlanner` wraps any chat model (ChatOpenAI against OpenAI/vLLM/SGLang/Ollama, or a scripted fake
  in tests): an invalid or hallucinated tool call is answered with the validation error and retried a
  bounded number of times; then the rule planner decides that one step, and the fallback is logged.
  Every paid turn is metered (its `usage_metadata` at the endpoint's $/token) as a `planner_usage` event,
  which the tools node books in the ledger; once the budget is spent (or when there is none) a priced
  LLM is no longer asked and the rule planner decides for free.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ValidationError
from stratos_agent.graphs.status import RunStatus
from stratos_agent.graphs.toolset import Toolset
from stratos_agent.tools.teachers import endpoint_usd_per_mtok

STATUS_MARKER = "RUN STATUS (JSON):"


def status_message(status: RunStatus) -> HumanMessage:
    """The per-turn status an LLM planner reads (never stored in the conversation)."""
    return HumanMessage(content=f"{STATUS_MARKER}\n{status.model_dump_json(indent=1)}")


def read_status(messages: Sequence[BaseMessage]) -> RunStatus:
    """The status back from the message (only a `RulePlanner` invoked as a plain chat model needs this)."""
    for message in reversed(messages):
        text = message.content if isinstance(message.content, str) else ""
        if text.startswith(STATUS_MARKER):
            return RunStatus.model_validate_json(text[len(STATUS_MARKER) :])
    raise ValueError("the rule planner needs the run status message; none was sent")


def _answer(status: RunStatus, question: str) -> str:
    """A factual answer to a user's question in chat: what the plan is, why, and what comes next."""
    parts = []
    if status.plan_why:
        parts.append(f"Plan: {status.plan_label}. Why: {status.plan_why}")
    else:
        parts.append("No plan has been made yet.")
    parts.append(f"Finished stages: {', '.join(status.done) or 'none'}.")
    if status.next_tool:
        parts.append(f"Next step: {status.next_tool} {json.dumps(status.suggested_args)}.")
    budget = f"${status.budget_usd:g}" if status.budget_usd else "no"
    parts.append(f"Spent ${status.spent_usd:.2f} of {budget} budget.")
    return f"(You asked: {question.strip()!r}) " + " ".join(parts)


def rule_decision(status: RunStatus) -> AIMessage:
    """The deterministic policy: the next unfinished stage, bounded retries, stop on budget refusals."""
    if status.pending_question:
        return AIMessage(content=_answer(status, status.pending_question))
    if status.plan_feasible is False:
        return AIMessage(
            content=f"No plan satisfies the constraints: {status.plan_why} "
            "Edit them to continue (`stratos approve THREAD --edit KEY=VALUE`)."
        )
    last_error = status.last_error
    if last_error is not None and last_error.kind == "budget":
        return AIMessage(
            content=f"Stopping: {last_error.message} Edit the budget to continue "
            "(`stratos approve THREAD --edit budget_usd=...`)."
        )
    if last_error is not None and last_error.kind == "permanent":
        return AIMessage(content=f"Stopping: {last_error.message} Retrying cannot help; fix the cause, then "
                         "`stratos resume THREAD`.")
    tool = status.next_tool
    if not tool:
        return AIMessage(content=status.summary or "The run is complete.")
    args = status.suggested_args
    if last_error is not None and last_error.kind == "low_yield" and tool == "synthesize_data":
        # The teacher cannot make this data: inject the task's known answers instead (solver mode).
        args = {**args, "mode": "solver"}
    failures = status.failures.get(tool, 0)
    if failures >= status.max_retries:
        return AIMessage(
            content=f"Giving up on {tool} after {failures} failed attempts: "
            f"{last_error.message if last_error else 'see the log'}"
        )
    call = {"name": tool, "args": args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
    return AIMessage(content="", tool_calls=[call])


class RulePlanner(BaseChatModel):
    """Deterministic planner speaking the chat-model protocol (tool calls in an AIMessage)."""

    @property
    def _llm_type(self) -> str:
        return "stratos-rule-planner"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=rule_decision(read_status(messages)))])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RulePlanner:
        return self  # it only ever calls the graph's own tools, named in the status


def validation_problems(message: AIMessage, toolset: Toolset, status: RunStatus) -> list[str]:
    """Why a planner reply cannot be executed as is (empty list: it can)."""
    problems = [
        f"could not parse the arguments of {bad.get('name')!r}: {bad.get('error') or bad.get('args')}"
        for bad in getattr(message, "invalid_tool_calls", []) or []
    ]
    for call in message.tool_calls:
        if call["name"] not in toolset:
            problems.append(f"unknown tool {call['name']!r}; the tools are: {', '.join(toolset.names())}")
            continue
        try:
            toolset[call["name"]].args.model_validate(call.get("args") or {})
        except ValidationError as exc:
            problems.append(f"invalid arguments for {call['name']}: {_short(exc)}")
    stops_on_budget = status.last_error is not None and status.last_error.kind in ("budget", "permanent")
    if (
        not message.tool_calls
        and not problems
        and status.next_tool
        and not status.pending_question
        and not stops_on_budget
        and status.plan_feasible is not False
    ):
        problems.append(
            f"you answered without a tool call, but the run is not finished: the next step "
            f"is {status.next_tool} (suggested arguments {status.suggested_args})"
        )
    return problems


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors())


@dataclass
class PlannerTurn:
    message: AIMessage
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GuardedPlanner:
    """Ask `model`; on an invalid reply explain the error and retry, then let the rule planner decide."""

    model: BaseChatModel
    toolset: Toolset
    max_retries: int = 2

    def __post_init__(self) -> None:
        self._bound: Any = self.model.bind_tools(self.toolset.openai_tools())

    @property
    def is_rule(self) -> bool:
        """The embedded rule planner decides from the status object; a subclass (a scripted variant)
        goes through the chat protocol like any other model."""
        return type(self.model) is RulePlanner

    @property
    def usd_per_mtok(self) -> float:
        """The planner endpoint's price (a scripted or local model: $0)."""
        name = getattr(self.model, "model_name", None)
        return endpoint_usd_per_mtok(name, getattr(self.model, "openai_api_base", None)) if name else 0.0

    def unpaid_reason(self, status: RunStatus) -> str | None:
        """Why a priced LLM may not be asked this turn: no finite budget, or the budget is spent."""
        if self.usd_per_mtok <= 0:
            return None
        if status.budget_usd is None or not math.isfinite(status.budget_usd):
            return "the planner endpoint is paid and the run has no finite budget"
        if status.spent_usd >= status.budget_usd:
            return f"the budget is spent (${status.spent_usd:.4f} of ${status.budget_usd:g})"
        return None

    def decide(self, messages: list[BaseMessage], status: RunStatus) -> PlannerTurn:
        if self.is_rule:
            return PlannerTurn(rule_decision(status))
        unpaid = self.unpaid_reason(status)
        if unpaid is not None:
            return PlannerTurn(rule_decision(status), [{"kind": "planner_unpaid", "reason": unpaid}])
        prompt = [*messages, status_message(status)]
        errors: list[str] = []
        usage: list[dict[str, Any]] = []
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._bound.invoke(prompt)
            except Exception as exc:  # noqa: BLE001 - any planner failure falls back, and is logged
                errors.append(f"attempt {attempt + 1}: planner call failed: {type(exc).__name__}: {exc}")
                break
            usage += self._usage(reply)
            problems = validation_problems(reply, self.toolset, status)
            if not problems:
                return PlannerTurn(
                    _clean(reply), usage + ([{"kind": "planner_retry", "errors": errors}] if errors else [])
                )
            errors.append(f"attempt {attempt + 1}: " + " | ".join(problems))
            prompt = [*prompt, *_feedback(reply, problems)]
        fallback = rule_decision(status)
        event = {
            "kind": "planner_fallback",
            "attempts": len(errors),
            "errors": errors,
            "decision": [c["name"] for c in fallback.tool_calls] or "final answer",
        }
        return PlannerTurn(fallback, [*usage, event])

    def _usage(self, reply: AIMessage) -> list[dict[str, Any]]:
        """A `planner_usage` event for a reply that reports its tokens (booked in the ledger)."""
        meta = getattr(reply, "usage_metadata", None) or {}
        tokens = int(meta.get("input_tokens", 0)) + int(meta.get("output_tokens", 0))
        if not tokens:
            return []
        return [{"kind": "planner_usage", "tokens": tokens, "usd": round(tokens * self.usd_per_mtok / 1e6, 8)}]


def _clean(reply: AIMessage) -> AIMessage:
    """Keep only what the graph needs (content + validated tool calls), so state stays serialisable."""
    calls = [
        {
            "name": c["name"],
            "args": c.get("args") or {},
            "id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            "type": "tool_call",
        }
        for c in reply.tool_calls
    ]
    return AIMessage(
        content=reply.content if isinstance(reply.content, str) else str(reply.content), tool_calls=calls
    )


def _feedback(reply: AIMessage, problems: list[str]) -> list[BaseMessage]:
    """The error answer an invalid reply gets: a ToolMessage per call (the API requires one) + the rule."""
    text = (
        "Your last reply was invalid: "
        + " | ".join(problems)
        + ". Reply with exactly one call of one of the listed tools, "
        "with JSON arguments matching its schema."
    )
    out: list[BaseMessage] = [_clean(reply)]
    out += [
        ToolMessage(content=text, tool_call_id=c.get("id") or "invalid", status="error")
        for c in out[0].tool_calls
    ]
    out.append(HumanMessage(content=text))
    return out


def make_llm_planner(
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    max_tokens: int = 400,
) -> BaseChatModel:
    """A ChatOpenAI planner for any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, llama.cpp, Ollama).

    `base_url`/`api_key` default to OPENAI_BASE_URL / OPENAI_API_KEY; local servers accept any key.
    """
    from langchain_openai import ChatOpenAI

    from stratos_agent.settings import get_settings

    settings = get_settings()
    key = api_key or (settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
    # A tool call or a short answer needs few tokens; the cap keeps a rambling model from stalling a turn.
    return ChatOpenAI(
        model=model,
        base_url=base_url or settings.openai_base_url,
        api_key=key or "not-needed",
        temperature=0.0,
        timeout=timeout_s,
        max_retries=2,
        max_tokens=max_tokens,
    )
