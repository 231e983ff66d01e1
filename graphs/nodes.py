"""Graph nodes: intake, planner, guarded tool execution, approval gates, report.

Guards live here, not in the prompt: every tool call is validated, checked against the lifecycle order,
the approvals and the budget, and refused with an explanatory ToolMessage instead of running. Tool
execution is idempotent: a finished stage is stored under `run_dir/stages/` keyed by its arguments and
inputs, so a node re-run after a crash (or a re-plan that did not change a stage) reuses the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import NodeError
from langgraph.types import Command, interrupt
from pydantic import ValidationError
from stratos_agent.graphs.planners import GuardedPlanner
from stratos_agent.graphs.toolset import ToolContext, Toolset, ToolSpec
from stratos_agent.prompts import load_prompt

from stratos_agent.errors import ServiceError, StratosError
from stratos_agent.ledger import Ledger, LedgerEntry
from stratos_agent.request_parser import RequestAnalysis, analyse_request, apply_edits, edits_in_text
from stratos_agent.spec import DistillationSpec
from stratos_agent.state import STAGES, AgentState

log = logging.getLogger("stratos.agent")

MAX_TOOL_RETRIES = 2  # failed attempts of one tool before the planner gives up on it


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying as they are (RetryPolicy): a remote 5xx/timeout, a dropped connection."""
    if isinstance(exc, (ServiceError, TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    return name in {
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class AgentRuntime:
    """What the nodes share: the planner, the tools, and how reports are written."""

    planner: GuardedPlanner
    toolset: Toolset
    write_report: Callable[[dict[str, Any], Path], dict[str, str]]
    spec_model: BaseChatModel | None = None  # structured-output request parsing when an LLM is configured
    default_runs_dir: Callable[[], Path] = field(default=lambda: Path("runs"))

    # ----------------------------------------------------------------- helpers
    def run_dir(self, state: AgentState, config: RunnableConfig) -> Path:
        if state.get("run_dir"):
            return Path(state["run_dir"])
        return self.default_runs_dir() / config["configurable"]["thread_id"]

    def next_tool(self, state: AgentState) -> ToolSpec | None:
        for spec in self.toolset.specs.values():
            if state.get(spec.produces) is None:  # type: ignore[misc]
                return spec
        return None

    def status(self, state: AgentState) -> dict[str, Any]:
        """The run status every planner reads each turn (the rule planner decides from it alone)."""
        nxt = self.next_tool(state)
        spec = state.get("spec") or {}
        plan = state.get("plan") or {}
        chosen = plan.get("chosen") or {}
        last = state["messages"][-1] if state.get("messages") else None
        last_error = None
        if isinstance(last, ToolMessage) and last.status == "error":
            kind = (
                (last.artifact or {}).get("kind", "failed") if isinstance(last.artifact, dict) else "failed"
            )
            last_error = {"tool": last.name, "message": last.content, "kind": kind}
        ledger = Ledger.from_state((spec.get("constraints") or {}).get("budget_usd"), state.get("ledger"))
        suggested: dict[str, Any] = {}
        if nxt is not None:
            ctx = ToolContext(state=state, run_dir=Path(state.get("run_dir") or "."))
            suggested = nxt.suggest(ctx) if nxt.suggest else {}
        return {
            "task": spec.get("task"),
            "constraints": spec.get("constraints"),
            "preference": spec.get("preference"),
            "done": [s for s in STAGES if state.get(s) is not None],  # type: ignore[misc]
            "approvals": {k: v.get("decision") for k, v in (state.get("approvals") or {}).items()},
            "next_tool": nxt.name if nxt else None,
            "suggested_args": suggested,
            "failures": dict(state.get("errors") or {}),
            "max_retries": MAX_TOOL_RETRIES,
            "last_error": last_error,
            "pending_question": last.content
            if isinstance(last, HumanMessage) and len(state["messages"]) > 1 and "?" in str(last.content)
            else None,
            "plan_label": _label(chosen),
            "plan_why": plan.get("why"),
            "plan_feasible": plan.get("feasible", True) if plan else None,
            "ledger": {"spent_usd": round(ledger.spent_usd, 4), "budget_usd": ledger.budget_usd},
            "summary": _summary(state),
        }


def _label(point: dict[str, Any]) -> str:
    if not point:
        return ""
    rank = "full" if point.get("lora_rank") == 0 else f"LoRA r{point.get('lora_rank')}"
    return (
        f"{point.get('gpu')} x{point.get('gpu_count')} ({point.get('server')}): {point.get('student')} <- "
        f"{point.get('teacher')}, {point.get('strategy')}, {rank}, n={point.get('data_size')}"
    )


def _summary(state: AgentState) -> str:
    deployment = state.get("deployment") or {}
    ev = state.get("eval") or {}
    parts = ["Run complete."]
    if ev:
        parts.append(
            f"Student exact match {ev.get('student_accuracy')}, teacher {ev.get('teacher_accuracy')}."
        )
    if deployment:
        parts.append(f"Endpoint {deployment.get('base_url')} serving {deployment.get('model')}.")
    return " ".join(parts)


def _last_ai(state: AgentState) -> AIMessage | None:
    for message in reversed(state.get("messages") or []):
        if isinstance(message, AIMessage):
            return message
    return None


def _pending_calls(state: AgentState) -> list[dict[str, Any]]:
    """Tool calls of the last AI message that have no ToolMessage answer yet."""
    ai = _last_ai(state)
    if ai is None:
        return []
    answered = {m.tool_call_id for m in state["messages"] if isinstance(m, ToolMessage)}
    return [c for c in ai.tool_calls if c["id"] not in answered]


def _tool_error(call: dict[str, Any], message: str, kind: str) -> ToolMessage:
    return ToolMessage(
        content=f"ERROR ({kind}): {message}",
        tool_call_id=call["id"],
        name=call["name"],
        status="error",
        artifact={"kind": kind},
    )


# --------------------------------------------------------------------- stage cache (idempotency)
def _stage_key(spec: ToolSpec, args: dict[str, Any], state: AgentState) -> str:
    inputs = {
        "args": args,
        "inputs": spec.key_inputs(state)
        if spec.key_inputs
        else {slot: state.get(slot) for slot in spec.requires},
    }  # type: ignore[misc]
    raw = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _stage_file(run_dir: Path, spec: ToolSpec) -> Path:
    return run_dir / "stages" / f"{spec.name}.json"


def load_finished_stage(run_dir: Path, spec: ToolSpec, key: str) -> dict[str, Any] | None:
    path = _stage_file(run_dir, spec)
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.get("key") == key else None


def save_finished_stage(run_dir: Path, spec: ToolSpec, record: dict[str, Any]) -> None:
    path = _stage_file(run_dir, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a kill leaves either the old or the new file, never half of one


# --------------------------------------------------------------------- nodes
class Nodes:
    def __init__(self, rt: AgentRuntime):
        self.rt = rt

    # intake: request -> spec; asks back (interrupt) for a missing essential; applies chat edits.
    def intake(self, state: AgentState, config: RunnableConfig) -> Command:
        update: dict[str, Any] = {}
        run_dir = self.rt.run_dir(state, config)
        if not state.get("run_dir"):
            update["run_dir"] = str(run_dir)
            update["thread_id"] = config["configurable"]["thread_id"]
        run_dir.mkdir(parents=True, exist_ok=True)
        inbox = state.get("inbox")
        if inbox:
            update["inbox"] = None
            update["errors"] = {}  # a human turn is a fresh start for the planner's retry budget
        if state.get("spec"):
            spec = DistillationSpec.model_validate(state["spec"])
            update["spec"] = spec.model_dump(mode="json")  # a spec object from the Python API -> plain JSON
            if inbox:
                update["messages"] = [HumanMessage(content=inbox)]
                changes = {**edits_in_text(inbox), **(state.get("inbox_edits") or {})}
                update["inbox_edits"] = None
                if changes:
                    replan = self._replan(state, apply_edits(spec, changes), changes, "chat")
                    note = replan.pop("messages_note")
                    update.update(replan)
                    update["messages"].append(HumanMessage(content=note))
            if not state.get("messages") and not inbox:
                update["messages"] = [
                    HumanMessage(content=spec.request or f"Distil a model for {spec.task}.")
                ]
            return Command(goto="planner", update={**update, "status": "planning"})

        request = "\n".join(part for part in (state.get("request") or "", inbox or "") if part)
        analysis = self._analyse(request)
        if not analysis.complete:
            answer = interrupt(
                {
                    "gate": "clarify",
                    "thread_id": config["configurable"]["thread_id"],
                    "missing": analysis.missing,
                    "ambiguous": analysis.ambiguous,
                    "questions": analysis.questions(),
                    "request": request,
                }
            )
            return Command(
                goto="intake", update={**update, "request": f"{request}\n{answer}", "status": "needs_input"}
            )
        spec = analysis.to_spec()
        return Command(
            goto="planner",
            update={
                **update,
                "request": request,
                "spec": spec.model_dump(mode="json"),
                "missing": [],
                "status": "planning",
                "messages": [HumanMessage(content=request)],
            },
        )

    def _analyse(self, request: str) -> RequestAnalysis:
        analysis = analyse_request(request)
        if self.rt.spec_model is None or analysis.complete:
            return analysis
        try:  # an LLM may read what the rules could not; a bad answer falls back to the rules
            spec = self.rt.spec_model.with_structured_output(DistillationSpec).invoke(
                [SystemMessage(content=load_prompt("request_to_spec")), HumanMessage(content=request)]
            )
            if spec.constraints.budget_usd is None:
                return analysis
            return RequestAnalysis(
                fields={
                    "request": request,
                    "task": spec.task,
                    **spec.constraints.model_dump(),
                    **spec.traffic.model_dump(),
                    "preference": spec.preference,
                }
            )
        except Exception as exc:  # noqa: BLE001 - logged; the deterministic answer stands
            log.warning("structured request parsing failed (%s); using the rule parser", exc)
            return analysis

    def _replan(
        self, state: AgentState, spec: DistillationSpec, changes: dict[str, Any], source: str
    ) -> dict[str, Any]:
        """The update that makes the planner plan again under an edited spec (finished stages reused)."""
        note = ", ".join(f"{k}={v}" for k, v in changes.items())
        events = [
            *(state.get("events") or []),
            {"kind": "edit", "source": source, "changes": changes, "at": now()},
        ]
        return {
            "spec": spec.model_dump(mode="json"),
            "plan": None,
            "pairs": None,
            "dataset": None,
            "model": None,
            "eval": None,
            "deployment": None,
            "approvals": {},
            "errors": {},
            "events": events,
            "status": "planning",
            "report": None,
            "messages_note": f"The user changed the spec ({note}); make a new plan.",
        }

    # planner: one decision per turn.
    def planner(self, state: AgentState) -> dict[str, Any]:
        status = self.rt.status(state)
        history = [SystemMessage(content=load_prompt("planner_system")), *state.get("messages", [])]
        turn = self.rt.planner.decide(history, status)
        update: dict[str, Any] = {"messages": [turn.message]}
        if turn.events:
            for event in turn.events:
                log.warning("planner: %s", event)
            update["events"] = [*(state.get("events") or []), *({**e, "at": now()} for e in turn.events)]
        return update

    def route_after_planner(self, state: AgentState) -> str:
        calls = _pending_calls(state)
        approvals = state.get("approvals") or {}
        plan = state.get("plan") or {}
        if not calls:
            stuck = plan and not plan.get("feasible", True) and "plan" not in approvals
            return "approve_plan" if stuck and not state.get("auto_approve") else "report"
        names = {c["name"] for c in calls if c["name"] in self.rt.toolset}
        specs = [self.rt.toolset[n] for n in names]
        if any(s.spends for s in specs) and state.get("plan") and "plan" not in approvals:
            return "approve_plan"
        if any(s.needs_deploy_approval for s in specs) and state.get("eval") and "deploy" not in approvals:
            return "approve_deploy"
        return "tools"

    # tools: guarded, idempotent execution of the pending calls.
    def tools(self, state: AgentState) -> dict[str, Any]:
        run_dir = Path(state["run_dir"])
        work: dict[str, Any] = dict(state)
        budget = ((state.get("spec") or {}).get("constraints") or {}).get("budget_usd")
        ledger = Ledger.from_state(budget, state.get("ledger"))
        errors = dict(state.get("errors") or {})
        events = list(state.get("events") or [])
        messages: list[ToolMessage] = []
        for call in _pending_calls(state):
            message, slots = self._run_call(call, work, run_dir, ledger)
            messages.append(message)
            if message.status == "error":
                errors[call["name"]] = errors.get(call["name"], 0) + 1
                events.append(
                    {
                        "kind": "refused" if message.artifact.get("kind") != "failed" else "tool_error",
                        "tool": call["name"],
                        "message": message.content,
                        "at": now(),
                    }
                )
            else:
                errors[call["name"]] = 0
                work.update(slots)
        slots_out = {k: work[k] for k in (*STAGES, "approvals") if work.get(k) is not state.get(k)}
        return {
            **slots_out,
            "messages": messages,
            "ledger": ledger.to_state(),
            "errors": errors,
            "events": events,
            "status": "running",
        }

    def _run_call(
        self, call: dict[str, Any], state: dict[str, Any], run_dir: Path, ledger: Ledger
    ) -> tuple[ToolMessage, dict[str, Any]]:
        toolset = self.rt.toolset
        if call["name"] not in toolset:
            return _tool_error(
                call, f"unknown tool {call['name']!r}; tools: {', '.join(toolset.names())}", "invalid"
            ), {}
        spec = toolset[call["name"]]
        try:
            args = spec.args.model_validate(call.get("args") or {})
        except ValidationError as exc:
            return _tool_error(call, f"invalid arguments: {exc}", "invalid"), {}
        refusal = self._guard(spec, state)
        if refusal:
            return _tool_error(call, refusal, "order"), {}
        ctx = ToolContext(state=state, run_dir=run_dir)  # type: ignore[arg-type]
        estimate = spec.estimate(ctx, args)
        refusal = ledger.refusal(spec.produces, estimate.usd)
        if refusal:
            return _tool_error(call, refusal, "budget"), {}

        args_json = args.model_dump(mode="json")
        key = _stage_key(spec, args_json, state)  # type: ignore[arg-type]
        finished = load_finished_stage(run_dir, spec, key)
        if finished is None:
            ledger.book(spec.produces, estimate.usd, estimate.server, estimate.usd_per_hour)
            start = time.perf_counter()
            try:
                outcome = spec.run(ctx, args)
            except Exception as exc:
                if is_transient(exc):
                    raise
                _log_failure(run_dir, spec.name, exc)
                detail = str(exc) if isinstance(exc, StratosError) else f"{type(exc).__name__}: {exc}"
                return _tool_error(call, f"{spec.name} failed: {detail}", "failed"), {}
            wall = time.perf_counter() - start
            entry = ledger.settle(spec.produces, wall, outcome.note)
            finished = {
                "key": key,
                "tool": spec.name,
                "args": args_json,
                "value": outcome.value,
                "summary": outcome.summary,
                "ledger": entry.model_dump(mode="json"),
                "at": now(),
            }
            save_finished_stage(run_dir, spec, finished)
            reused = False
        else:
            reused = True
            if not any(e.stage == spec.produces for e in ledger.entries):
                ledger.entries.append(LedgerEntry.model_validate(finished["ledger"]))
        slots = {spec.produces: finished["value"], **{slot: None for slot in spec.clears}}
        if spec.produces == "plan":
            slots["approvals"] = {}
        content = json.dumps(
            {"ok": True, "tool": spec.name, "reused_finished_stage": reused, **finished["summary"]},
            default=str,
        )
        return ToolMessage(content=content, tool_call_id=call["id"], name=spec.name, status="success"), slots

    def _guard(self, spec: ToolSpec, state: dict[str, Any]) -> str | None:
        """The order and approval rules; None when the call may run."""
        missing = [slot for slot in spec.requires if state.get(slot) is None]
        if missing:
            producers = [t.name for t in self.rt.toolset.specs.values() if t.produces in missing]
            return (
                f"cannot run {spec.name} yet: it needs {', '.join(missing)} first "
                f"(call {', '.join(producers) or 'the earlier stages'})."
            )
        approvals = state.get("approvals") or {}
        if spec.spends and (approvals.get("plan") or {}).get("decision") != "approve":
            return f"cannot run {spec.name}: the plan has not been approved."
        if spec.spends and not (state.get("plan") or {}).get("feasible", True):
            return f"cannot run {spec.name}: the plan is infeasible ({(state.get('plan') or {}).get('why')})."
        if spec.needs_deploy_approval and (approvals.get("deploy") or {}).get("decision") != "approve":
            return f"cannot run {spec.name}: deployment has not been approved."
        return None

    # error handler: a transient error that outlived its retries surfaces to the planner.
    def tools_failed(self, state: AgentState, error: NodeError) -> Command:
        run_dir = Path(state["run_dir"])
        errors = dict(state.get("errors") or {})
        messages = []
        for call in _pending_calls(state):
            _log_failure(run_dir, call["name"], error.error)
            errors[call["name"]] = errors.get(call["name"], 0) + 1
            messages.append(
                _tool_error(
                    call,
                    f"{call['name']} failed after retries: {type(error.error).__name__}: {error.error}",
                    "failed",
                )
            )
        events = [
            *(state.get("events") or []),
            {"kind": "retries_exhausted", "error": str(error.error), "at": now()},
        ]
        return Command(goto="planner", update={"messages": messages, "errors": errors, "events": events})

    # approval gates
    def approve_plan(self, state: AgentState) -> Command:
        plan = state.get("plan") or {}
        chosen = plan.get("chosen") or {}
        payload = {
            "gate": "plan",
            "thread_id": state.get("thread_id"),
            "feasible": plan.get("feasible", True),
            "nearest_feasible": plan.get("nearest_feasible"),
            "question": "Approve this plan before anything spends money?"
            if plan.get("feasible", True)
            else "No plan meets the constraints. Edit them (e.g. edit budget_usd=50) or reject.",
            "plan": _label(chosen),
            "why": plan.get("why"),
            "estimate": {
                k: chosen.get(k)
                for k in (
                    "cost_usd",
                    "cost_training_usd",
                    "cost_serving_usd",
                    "cost_synthesis_usd",
                    "train_hours",
                    "p95_ms",
                    "accuracy",
                )
            },
            "budget_usd": ((state.get("spec") or {}).get("constraints") or {}).get("budget_usd"),
            "pareto": [
                {
                    "plan": _label(p),
                    "cost_usd": p.get("cost_usd"),
                    "p95_ms": p.get("p95_ms"),
                    "accuracy": p.get("accuracy"),
                    "train_hours": p.get("train_hours"),
                }
                for p in plan.get("front", [])[:12]
            ],
        }
        return self._gate(state, "plan", payload)

    def approve_deploy(self, state: AgentState) -> Command:
        ev = state.get("eval") or {}
        deploy = next(t for t in self.rt.toolset.specs.values() if t.needs_deploy_approval)
        ctx = ToolContext(state=state, run_dir=Path(state["run_dir"]))
        payload = {
            "gate": "deploy",
            "thread_id": state.get("thread_id"),
            "question": "Deploy the student as a live endpoint?",
            "eval": {
                k: ev.get(k)
                for k in (
                    "student_accuracy",
                    "teacher_accuracy",
                    "n",
                    "by_difficulty",
                    "student_p95_ms",
                    "baselines",
                )
            },
            "endpoint": {
                "model_path": (state.get("model") or {}).get("model_dir"),
                **(deploy.suggest(ctx) if deploy.suggest else {}),
            },
        }
        return self._gate(state, "deploy", payload)

    def _gate(self, state: AgentState, gate: str, payload: dict[str, Any]) -> Command:
        approvals = dict(state.get("approvals") or {})
        if state.get("auto_approve"):
            approvals[gate] = {"decision": "approve", "auto": True, "at": now()}
            return Command(goto="tools", update={"approvals": approvals, "status": "running"})
        answer = interrupt(payload)
        decision, changes, note = parse_decision(answer)
        if decision == "approve" and gate == "plan" and not (state.get("plan") or {}).get("feasible", True):
            decision, note = "reject", "an infeasible plan cannot be approved; edit the constraints instead"
        if decision == "approve":
            approvals[gate] = {"decision": "approve", "auto": False, "at": now(), "note": note}
            return Command(goto="tools", update={"approvals": approvals, "status": "running"})
        pending = _pending_calls(state)
        if decision == "reject":
            approvals[gate] = {"decision": "reject", "auto": False, "at": now(), "note": note}
            msgs = [
                _tool_error(c, f"the user rejected the {gate}{': ' + note if note else ''}", "rejected")
                for c in pending
            ]
            return Command(
                goto="report", update={"approvals": approvals, "messages": msgs, "status": "rejected"}
            )
        try:
            spec = apply_edits(DistillationSpec.model_validate(state["spec"]), changes)
        except StratosError as exc:  # ask again, saying what was wrong with the edit
            events = [*(state.get("events") or []), {"kind": "edit_refused", "error": str(exc), "at": now()}]
            return Command(goto=f"approve_{gate}", update={"events": events})
        update = self._replan(state, spec, changes, f"{gate} gate")
        note_text = update.pop("messages_note")
        msgs = [_tool_error(c, f"not run: {note_text}", "edited") for c in pending]
        return Command(
            goto="planner", update={**update, "messages": [*msgs, HumanMessage(content=note_text)]}
        )

    # report: always the last node.
    def report(self, state: AgentState) -> dict[str, Any]:
        status = state.get("status")
        if status != "rejected":
            if state.get("deployment"):
                status = "done"
            elif self.rt.status(state)["pending_question"] is not None or _answered_question(state):
                status = "paused"  # the planner answered a chat question; `stratos chat` continues the run
            else:
                status = "failed"
        final = {**state, "status": status}
        paths = self.rt.write_report(final, Path(state["run_dir"]))
        return {"report": paths, "status": status}


def _answered_question(state: AgentState) -> bool:
    messages = state.get("messages") or []
    return (
        len(messages) >= 2
        and isinstance(messages[-1], AIMessage)
        and not messages[-1].tool_calls
        and isinstance(messages[-2], HumanMessage)
        and "?" in str(messages[-2].content)
    )


def parse_decision(answer: Any) -> tuple[str, dict[str, Any], str]:
    """A resume value -> (approve|reject|edit, changes, note). Accepts words, bools and dicts."""
    if isinstance(answer, bool):
        return ("approve" if answer else "reject"), {}, ""
    if isinstance(answer, dict):
        decision = str(answer.get("decision", "edit" if answer.get("changes") else "approve")).lower()
        changes = dict(answer.get("changes") or {})
        if decision not in {"approve", "reject", "edit"}:
            decision = "approve"
        return decision, changes, str(answer.get("note") or "")
    text = str(answer or "").strip()
    word, _, rest = text.partition(" ")
    word = word.lower()
    if word in {"approve", "approved", "yes", "y", "ok", "go", "continue"}:
        return "approve", {}, rest
    if word in {"reject", "rejected", "no", "n", "stop", "abort"}:
        return "reject", {}, rest
    from stratos_agent.request_parser import parse_edits

    items = (rest if word == "edit" else text).split()
    return "edit", parse_edits(items), ""


def _log_failure(run_dir: Path, tool: str, exc: BaseException) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "agent.log", "a", encoding="utf-8") as fh:
        fh.write(f"{now()} {tool} failed: {type(exc).__name__}: {exc}\n")
        fh.write("".join(traceback.format_exception(exc)))
