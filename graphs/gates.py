"""The approval gates: interrupts before money is spent (plan) and before anything goes live (deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.types import Command, interrupt
from stratos_agent.graphs.intake import replan_update
from stratos_agent.graphs.nodes import AgentRuntime, event, now, pending_calls, tool_error
from stratos_agent.graphs.toolset import ToolContext

from stratos_agent.errors import StratosError
from stratos_agent.ledger import Ledger
from stratos_agent.records.evaluation import Adaptation
from stratos_agent.records.plans import PlanPoint
from stratos_agent.request_parser import apply_edits, parse_key_values
from stratos_agent.state import AgentState

ESTIMATE_FIELDS = ("cost_usd", "cost_training_usd", "cost_serving_usd", "cost_synthesis_usd", "train_hours",
                   "p95_ms", "accuracy")
FRONT_FIELDS = ("cost_usd", "p95_ms", "accuracy", "train_hours")


def _front_row(point: PlanPoint) -> dict[str, Any]:
    return {"plan": point.label(), **point.model_dump(include=set(FRONT_FIELDS))}


class GateNodes:
    def __init__(self, rt: AgentRuntime):
        self.rt = rt

    def approve_plan(self, state: AgentState) -> Command:
        plan = state["plan"]
        assert plan is not None  # the route only comes here with a plan
        point = plan.chosen
        payload = {
            "gate": "plan",
            "thread_id": state.get("thread_id"),
            "feasible": plan.feasible,
            "nearest_feasible": plan.nearest_feasible,
            "question": "Approve this plan before anything spends money?"
            if plan.feasible
            else "No plan meets the constraints. Edit them (e.g. edit budget_usd=50) or reject.",
            "plan": point.label() if point else "",
            "why": plan.why,
            "estimate": point.model_dump(include=set(ESTIMATE_FIELDS)) if point else {},
            "budget_usd": state["spec"].constraints.budget_usd if state.get("spec") else None,
            "pareto": [_front_row(p) for p in plan.front[:12]],
        }
        return self._gate(state, "plan", payload)

    def approve_deploy(self, state: AgentState) -> Command:
        """The result gate, then the deployment approval: a student that misses the goal trains on while
        that can help and is allowed, else stops undeployed unless a human (or --deploy-anyway) decides."""
        from stratos_agent.tools.goal import check_goal, next_adaptation

        result, model, spec = state["eval"], state["model"], state["spec"]
        assert result is not None and model is not None and spec is not None  # the route comes here after eval
        plan = state.get("plan")
        check = check_goal(spec, result, plan.chosen if plan else None)
        update: dict[str, Any] = {"goal": check}
        if not check.met and not state.get("deploy_anyway"):  # an explicit decision: no more rounds
            history = [Adaptation.model_validate(a) for a in state.get("adaptations") or []]
            ledger = Ledger.from_state(spec.constraints.budget_usd, state.get("ledger"))
            deadline = spec.constraints.deadline_hours
            decision = next_adaptation(
                check, history, model_dir=str(model.model_dir), train_seconds=model.train_seconds,
                deadline_s=deadline * 3600 if deadline else None, budget_left_usd=ledger.remaining_usd,
                round_cost_usd=plan.chosen.cost_training_usd if plan and plan.chosen else 0.0,
            )
            update["adaptations"] = [*(state.get("adaptations") or []), decision.model_dump(mode="json")]
            update["events"] = [*(state.get("events") or []), event("result_gate", **decision.model_dump(mode="json"))]
            not_deployed = [tool_error(c, f"not deployed: {decision.reason}", "gate") for c in pending_calls(state)]
            if decision.decision == "train on":
                return Command(goto="planner", update={**update, "model": None, "eval": None,
                                                       "messages": not_deployed})
            if state.get("auto_approve"):
                return Command(goto="report", update={**update, "messages": not_deployed, "status": "needs_input"})
        deploy = next(t for t in self.rt.toolset.specs.values() if t.needs_deploy_approval)
        ctx = ToolContext(state=state, run_dir=Path(state["run_dir"]))
        payload = {
            "gate": "deploy",
            "thread_id": state.get("thread_id"),
            "question": "Deploy the student as a live endpoint?" if check.met else
            "The student MISSES the goal. Deploy it anyway (approve), or keep it undeployed (reject / edit)?",
            "goal": check.model_dump(mode="json"),
            "eval": {
                "n": result.n,
                "student_accuracy": result.student.exact_match,
                "teacher_accuracy": result.teacher.exact_match if result.teacher else None,
                "by_difficulty": {r.difficulty: r.exact_match.value for r in result.student.by_difficulty},
                "student_p95_ms": result.student.latency_p95_ms,
                "baselines": {b.name: b.exact_match.value for b in result.baselines},
            },
            "endpoint": {"model_path": str(model.model_dir), **(deploy.suggest(ctx) if deploy.suggest else {})},
        }
        note = "" if check.met else "deployed although the result misses the goal"
        return self._gate(state, "deploy", payload, update, auto_note=note)

    def _gate(
        self, state: AgentState, gate: str, payload: dict[str, Any], update: dict[str, Any] | None = None,
        auto_note: str = "",
    ) -> Command:
        approvals = dict(state.get("approvals") or {})
        update = update or {}
        if state.get("auto_approve"):
            approvals[gate] = {"decision": "approve", "auto": True, "at": now(), "note": auto_note}
            return Command(goto="tools", update={**update, "approvals": approvals, "status": "running"})
        decision, changes, note = parse_decision(interrupt(payload))
        plan = state.get("plan")
        if decision == "approve" and gate == "plan" and plan is not None and not plan.feasible:
            decision, note = "reject", "an infeasible plan cannot be approved; edit the constraints instead"
        if decision == "approve":
            approvals[gate] = {"decision": "approve", "auto": False, "at": now(), "note": note or auto_note}
            return Command(goto="tools", update={**update, "approvals": approvals, "status": "running"})
        pending = pending_calls(state)
        if decision == "reject":
            approvals[gate] = {"decision": "reject", "auto": False, "at": now(), "note": note}
            msgs = [tool_error(c, f"the user rejected the {gate}{': ' + note if note else ''}", "rejected")
                    for c in pending]
            return Command(goto="report", update={**update, "approvals": approvals, "messages": msgs,
                                                  "status": "rejected"})
        try:
            spec = apply_edits(state["spec"], changes)  # type: ignore[arg-type]
        except StratosError as exc:  # ask again, saying what was wrong with the edit
            events = [*(state.get("events") or []), event("edit_refused", error=str(exc))]
            return Command(goto=f"approve_{gate}", update={"events": events})
        update, note_text = replan_update(state, self.rt.toolset.stages(), spec, changes, f"{gate} gate")
        msgs = [tool_error(c, f"not run: {note_text}", "edited") for c in pending]
        return Command(goto="planner", update={**update, "messages": [*msgs, HumanMessage(content=note_text)]})


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
    items = (rest if word == "edit" else text).split()
    return "edit", parse_key_values(items, "edit"), ""
