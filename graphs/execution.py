"""The tools node: guarded, idempotent execution of the planner's tool calls.

Guards live here, not in the prompt: every call is validated, checked against the lifecycle order, the
approvals and the budget, and refused with an explanatory ToolMessage instead of running. Every result
is validated into its ToolSpec's record class before it reaches the state. A finished stage is stored
under `run_dir/stages/` keyed by its arguments and inputs, so a node re-run after a crash (or a re-plan
that did not change a stage) reuses the result.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.errors import NodeError
from langgraph.types import Command
from pydantic import BaseModel, ValidationError
from stratos_agent.graphs.nodes import AgentRuntime, event, log_failure, now, pending_calls, tool_error
from stratos_agent.graphs.toolset import ToolContext, ToolSpec

from stratos_agent.errors import ServiceError, StratosError
from stratos_agent.files import write_text_atomic
from stratos_agent.ledger import Ledger, LedgerEntry
from stratos_agent.state import AgentState


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as they are (RetryPolicy): a remote 5xx/timeout, a dropped connection."""
    if isinstance(exc, (ServiceError, TimeoutError, ConnectionError)):
        return True
    return type(exc).__name__ in {
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------- stage cache (idempotency)
def stage_key(spec: ToolSpec, args: dict[str, Any], state: AgentState) -> str:
    inputs = spec.key_inputs(state) if spec.key_inputs else {slot: state.get(slot) for slot in spec.requires}  # type: ignore[misc]
    raw = json.dumps({"args": args, "inputs": _jsonable(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _stage_file(run_dir: Path, spec: ToolSpec) -> Path:
    return run_dir / "stages" / f"{spec.name}.json"


def load_finished_stage(run_dir: Path, spec: ToolSpec, key: str) -> dict[str, Any] | None:
    path = _stage_file(run_dir, spec)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("key") == key else None


def save_finished_stage(run_dir: Path, spec: ToolSpec, finished: dict[str, Any]) -> None:
    write_text_atomic(_stage_file(run_dir, spec), json.dumps(finished, indent=1, default=str))


class ExecutionNodes:
    def __init__(self, rt: AgentRuntime):
        self.rt = rt

    def tools(self, state: AgentState) -> dict[str, Any]:
        run_dir = Path(state["run_dir"])
        work: dict[str, Any] = dict(state)
        spec = state.get("spec")
        ledger = Ledger.from_state(spec.constraints.budget_usd if spec else None, state.get("ledger"))
        errors = dict(state.get("errors") or {})
        events = list(state.get("events") or [])
        messages: list[ToolMessage] = []
        for call in pending_calls(state):
            message, slots = self._run_call(call, work, run_dir, ledger)
            messages.append(message)
            if message.status == "error":
                errors[call["name"]] = errors.get(call["name"], 0) + 1
                kind = "refused" if message.artifact.get("kind") != "failed" else "tool_error"
                events.append(event(kind, tool=call["name"], message=message.content))
            else:
                errors[call["name"]] = 0
                work.update(slots)
        changed = {k: work[k] for k in (*self.rt.toolset.stages(), "approvals") if work.get(k) is not state.get(k)}
        return {**changed, "messages": messages, "ledger": ledger.to_state(), "errors": errors, "events": events,
                "status": "running"}

    def _run_call(
        self, call: dict[str, Any], state: dict[str, Any], run_dir: Path, ledger: Ledger
    ) -> tuple[ToolMessage, dict[str, Any]]:
        toolset = self.rt.toolset
        if call["name"] not in toolset:
            return tool_error(call, f"unknown tool {call['name']!r}; tools: {', '.join(toolset.names())}", "invalid"), {}
        spec = toolset[call["name"]]
        try:
            spec.args.model_validate(call.get("args") or {})
        except ValidationError as exc:
            return tool_error(call, f"invalid arguments: {exc}", "invalid"), {}
        refusal = self._guard(spec, state)
        if refusal:
            return tool_error(call, refusal, "order"), {}
        ctx = ToolContext(state=state, run_dir=run_dir)  # type: ignore[arg-type]
        args = spec.resolve_args(ctx, call.get("args") or {})
        estimate = spec.estimate(ctx, args)
        refusal = ledger.refusal(spec.produces, estimate.usd)
        if refusal:
            return tool_error(call, refusal, "budget"), {}

        args_json = args.model_dump(mode="json")
        key = stage_key(spec, args_json, state)  # type: ignore[arg-type]
        finished = load_finished_stage(run_dir, spec, key)
        reused = finished is not None
        if finished is None:
            ledger.book(spec.produces, estimate.usd, estimate.server, estimate.usd_per_hour)
            start = time.perf_counter()
            try:
                outcome = spec.run(ctx, args)
                record = spec.record.model_validate(outcome.record)
            except Exception as exc:
                if is_transient(exc):
                    raise
                log_failure(run_dir, spec.name, exc)
                detail = str(exc) if isinstance(exc, StratosError) else f"{type(exc).__name__}: {exc}"
                return tool_error(call, f"{spec.name} failed: {detail}", "failed"), {}
            entry = ledger.settle(spec.produces, time.perf_counter() - start, outcome.note)
            finished = {"key": key, "tool": spec.name, "args": args_json, "value": record.model_dump(mode="json"),
                        "summary": outcome.summary, "ledger": entry.model_dump(mode="json"), "at": now()}
            save_finished_stage(run_dir, spec, finished)
        else:
            record = spec.record.model_validate(finished["value"])
            if not any(e.stage == spec.produces for e in ledger.entries):
                ledger.entries.append(LedgerEntry.model_validate(finished["ledger"]))
        slots = {spec.produces: record, **{slot: None for slot in toolset.later(spec.produces)}}
        if spec.produces == "plan":
            slots["approvals"] = {}
        content = json.dumps({"ok": True, "tool": spec.name, "reused_finished_stage": reused, **finished["summary"]},
                             default=str)
        return ToolMessage(content=content, tool_call_id=call["id"], name=spec.name, status="success"), slots

    def _guard(self, spec: ToolSpec, state: dict[str, Any]) -> str | None:
        """The order and approval rules; None when the call may run."""
        missing = [slot for slot in spec.requires if state.get(slot) is None]
        if missing:
            producers = self.rt.toolset.producers(missing)
            return (
                f"cannot run {spec.name} yet: it needs {', '.join(missing)} first "
                f"(call {', '.join(producers) or 'the earlier stages'})."
            )
        approvals = state.get("approvals") or {}
        plan = state.get("plan")
        if spec.spends and (approvals.get("plan") or {}).get("decision") != "approve":
            return f"cannot run {spec.name}: the plan has not been approved."
        if spec.spends and plan is not None and not plan.feasible:
            return f"cannot run {spec.name}: the plan is infeasible ({plan.why})."
        if spec.needs_deploy_approval and (approvals.get("deploy") or {}).get("decision") != "approve":
            return f"cannot run {spec.name}: deployment has not been approved."
        return None

    def tools_failed(self, state: AgentState, error: NodeError) -> Command:
        """A transient error that outlived its retries surfaces to the planner."""
        run_dir = Path(state["run_dir"])
        errors = dict(state.get("errors") or {})
        messages = []
        for call in pending_calls(state):
            log_failure(run_dir, call["name"], error.error)
            errors[call["name"]] = errors.get(call["name"], 0) + 1
            messages.append(tool_error(
                call, f"{call['name']} failed after retries: {type(error.error).__name__}: {error.error}", "failed"
            ))
        events = [*(state.get("events") or []), event("retries_exhausted", error=str(error.error))]
        return Command(goto="planner", update={"messages": messages, "errors": errors, "events": events})
