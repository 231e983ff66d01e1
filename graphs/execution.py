"""The tools node: guarded, idempotent execution of the planner's tool calls.

Guards live here, not in the prompt: every call is validated, checked against the lifecycle order, the
approvals and the budget, and refused with an explanatory ToolMessage instead of running. Every result
is validated into its ToolSpec's record class before it reaches the state. A finished stage is stored
under `run_dir/stages/` keyed by its arguments and inputs, so a node re-run after a crash (or a re-plan
that did not change a stage) reuses the result.

Money: every attempt is booked and settled in the ledger (failed ones too), and its paid endpoint calls run
under a `SpendMeter` capped at what is left of the budget. Ended attempts are also appended to
`run_dir/ledger.jsonl` before anything else can fail, so the spend of an attempt whose error the retry
policy re-raises (and whose state update is therefore dropped) is never forgotten.

Limits bind every planner here, not in its goodwill: a tool that failed (or was refused)
`MAX_TOOL_RETRIES` times in a row is not run again, and a turn that made `max_calls` tool calls without a
human in between ends; either ends the run (status failed, with the reason in its events and report).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.errors import NodeError
from langgraph.types import Command
from pydantic import BaseModel, ValidationError
from stratos_agent.graphs.nodes import AgentRuntime, event, log_failure, now, pending_calls, tool_error
from stratos_agent.graphs.status import MAX_TOOL_RETRIES
from stratos_agent.graphs.toolset import ToolContext, ToolSpec
from stratos_agent.tools.teachers import EndpointError

from stratos_agent.errors import StratosError
from stratos_agent.files import write_text_atomic
from stratos_agent.ledger import Ledger, LedgerEntry, metering
from stratos_agent.state import AgentState

LEDGER_JOURNAL = "ledger.jsonl"
STOP_KINDS = ("retry_budget", "call_limit")  # refusals that end the run instead of going back to the planner


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as they are (RetryPolicy): a timeout, a dropped connection, 429 or a 5xx.
    A refused request (4xx), a failed health check or any other error fails the same way again."""
    if isinstance(exc, EndpointError):
        return exc.transient
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return type(exc).__name__ in {
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "RateLimitError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
    }


def error_kind(exc: BaseException) -> str:
    """The tool-error kind the planner reads: 'budget', 'permanent', 'low_yield' or plain 'failed'."""
    return getattr(exc, "tool_error_kind", "failed")


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


# --------------------------------------------------------------------- ledger journal (durable spend)
def journal_entry(run_dir: Path, entry: LedgerEntry) -> None:
    """Append an ended attempt to the run's ledger journal (fsynced: money spent is never forgotten)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LEDGER_JOURNAL, "a", encoding="utf-8") as fh:
        fh.write(entry.model_dump_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_ledger(state: AgentState | dict[str, Any], run_dir: Path) -> Ledger:
    """The state's ledger, plus attempts only the journal holds, plus the planner's paid turns."""
    spec = state.get("spec")
    ledger = Ledger.from_state(spec.constraints.budget_usd if spec else None, state.get("ledger"))
    path = run_dir / LEDGER_JOURNAL
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        # a torn last line (a kill mid-append) is skipped; every complete line is an ended attempt
        ledger.merge([LedgerEntry.model_validate_json(line) for line in lines if line.endswith("}")])
    usage = [e for e in state.get("events") or [] if e.get("kind") == "planner_usage"]
    if usage:
        ledger.set_running_total("planner", sum(e["usd"] for e in usage), sum(e["tokens"] for e in usage))
    return ledger


def calls_since_human(state: AgentState | dict[str, Any]) -> int:
    """Tool calls answered since the last human message (a chat turn, an edit or the request)."""
    count = 0
    for message in reversed(state.get("messages") or []):
        if isinstance(message, HumanMessage):
            break
        count += isinstance(message, ToolMessage)
    return count


class ExecutionNodes:
    def __init__(self, rt: AgentRuntime, max_calls: int):
        self.rt = rt
        self.max_calls = max_calls  # tool calls per human turn: under the graph's recursion limit

    def tools(self, state: AgentState) -> Command:
        run_dir = Path(state["run_dir"])
        work: dict[str, Any] = dict(state)
        ledger = load_ledger(state, run_dir)
        work["ledger"] = ledger.to_state()  # adapters read earlier attempts (the deploy deadline)
        errors = dict(state.get("errors") or {})
        events = list(state.get("events") or [])
        messages: list[ToolMessage] = []
        calls = calls_since_human(state)
        for call in pending_calls(state):
            calls += 1
            stop = self._limit(call, errors.get(call["name"], 0), calls)
            message, slots = stop or self._run_call(call, work, run_dir, ledger)
            messages.append(message)
            kind = message.artifact.get("kind") if message.status == "error" else None
            if kind is None:
                errors[call["name"]] = 0
                work.update(slots)
            else:
                errors[call["name"]] = errors.get(call["name"], 0) + 1
                label = kind if kind in STOP_KINDS else "tool_error" if kind == "failed" else "refused"
                events.append(event(label, tool=call["name"], message=message.content))
        stopped = any(m.status == "error" and m.artifact.get("kind") in STOP_KINDS for m in messages)
        changed = {k: work[k] for k in (*self.rt.toolset.stages(), "approvals") if work.get(k) is not state.get(k)}
        update = {**changed, "messages": messages, "ledger": ledger.to_state(), "errors": errors, "events": events,
                  "status": "failed" if stopped else "running"}
        return Command(goto="report" if stopped else "planner", update=update)

    def _limit(self, call: dict[str, Any], failures: int, calls: int) -> tuple[ToolMessage, dict[str, Any]] | None:
        """A refusal that ends the run when a limit binds, whichever planner made the call."""
        if failures >= MAX_TOOL_RETRIES:
            return tool_error(call, f"{call['name']} failed or was refused {failures} times in a row; the run "
                              "stops here instead of calling it again. Fix the cause, then `stratos resume`.",
                              "retry_budget"), {}
        if calls > self.max_calls:
            return tool_error(call, f"{self.max_calls} tool calls since the last human turn without finishing; "
                              "the run stops here. Read the report, then `stratos resume` or edit the spec.",
                              "call_limit"), {}
        return None

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
            booked = ledger.book(spec.produces, estimate.usd, estimate.server, estimate.usd_per_hour)
            start = time.perf_counter()
            with metering(ledger.spend_cap(booked)) as meter:
                try:
                    outcome = spec.run(ctx, args)
                    record = spec.record.model_validate(outcome.record)
                except Exception as exc:
                    entry = ledger.settle(spec.produces, time.perf_counter() - start, f"failed: {type(exc).__name__}",
                                          metered_usd=meter.spent_usd, tokens=meter.tokens, failed=True)
                    journal_entry(run_dir, entry)
                    if is_transient(exc):
                        raise
                    log_failure(run_dir, spec.name, exc)
                    detail = str(exc) if isinstance(exc, StratosError) else f"{type(exc).__name__}: {exc}"
                    return tool_error(call, f"{spec.name} failed: {detail}", error_kind(exc)), {}
            entry = ledger.settle(spec.produces, time.perf_counter() - start, outcome.note,
                                  metered_usd=meter.spent_usd, tokens=meter.tokens)
            journal_entry(run_dir, entry)
            finished = {"key": key, "tool": spec.name, "args": args_json, "value": record.model_dump(mode="json"),
                        "summary": outcome.summary, "ledger": entry.model_dump(mode="json"), "at": now()}
            save_finished_stage(run_dir, spec, finished)
        else:
            record = spec.record.model_validate(finished["value"])
            ledger.merge([LedgerEntry.model_validate(finished["ledger"])])
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
        """A transient error that outlived its retries surfaces to the planner (with what its attempts
        spent, from the journal: their own state updates were dropped with the error)."""
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
        ledger = load_ledger(state, run_dir).to_state()
        return Command(goto="planner", update={"messages": messages, "errors": errors, "events": events,
                                               "ledger": ledger})
