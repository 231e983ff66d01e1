"""The approval gates: interrupts before money is spent (plan) and before anything goes live (deploy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from langchain_core.messages import HumanMessage
from langgraph.types import Command, interrupt
from stratos_agent.graphs.intake import changes_in, replan_update
from stratos_agent.graphs.nodes import AgentRuntime, event, log_failure, now, pending_calls, tool_error
from stratos_agent.graphs.status import answer_question
from stratos_agent.graphs.toolset import ToolContext
from stratos_agent.tools.outcome import not_understood

from stratos_agent.errors import StratosError
from stratos_agent.ledger import Ledger
from stratos_agent.records.evaluation import Adaptation
from stratos_agent.records.plans import PlanPoint
from stratos_agent.request_parser import apply_edits
from stratos_agent.spec import DistillationSpec, validated_spec
from stratos_agent.state import AgentState

APPROVE_WORDS = ("approve", "yes")
REJECT_WORDS = ("reject", "no")
ANSWER_HELP = (
    "Answer with one of: approve (or yes); reject (or no), optionally followed by a reason; "
    "edit KEY=VALUE ... (e.g. edit budget_usd=30) or a change in words (\"make the budget $30\"); "
    "or a question ending in '?' (why, cost, accuracy, latency)."
)
Decision = Literal["approve", "reject", "edit", "question", "unclear"]

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
            "not_understood": not_understood(state),
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
        payload = {**payload, "answers": ANSWER_HELP}
        view: AgentState = {**state, **update}  # type: ignore[typeddict-item]  # e.g. the goal just checked
        answer, spec, asked = self._ask(view, gate, payload)
        decision, note = answer.decision, answer.note
        if asked:  # the questions and refusals before the decision, for the report
            update = {**update, "events": [*(view.get("events") or []), *asked]}
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
        assert spec is not None  # `_ask` returns an edit only with its validated spec
        replan, note_text = replan_update(
            {**view, **update}, self.rt.toolset.stages(), spec, answer.changes, f"{gate} gate"  # type: ignore[typeddict-item]
        )
        msgs = [tool_error(c, f"not run: {note_text}", "edited") for c in pending]
        return Command(goto="planner", update={**replan, "messages": [*msgs, HumanMessage(content=note_text)]})

    def _ask(
        self, state: AgentState, gate: str, payload: dict[str, Any]
    ) -> tuple[GateAnswer, DistillationSpec | None, list[dict[str, Any]]]:
        """Interrupt until the human decides: a question is answered and an unclear answer or a refused
        edit explained, each in the re-asked payload's `reply`. Every answer is one interrupt of this node
        (LangGraph replays the earlier answers in order when the node re-runs), so nothing reaches the
        checkpointed state before a decision stands, and no bad answer can make the node raise."""
        asked: list[dict[str, Any]] = []
        answer = parse_decision(interrupt(payload))
        while True:
            if answer.decision in ("approve", "reject"):
                return answer, None, asked
            if answer.decision == "edit":
                try:
                    spec = validated_spec(apply_edits(state["spec"], answer.changes), "edit")  # type: ignore[arg-type]
                    return answer, spec, asked
                except StratosError as exc:
                    reply = f"Edit refused, nothing changed: {exc}"
                except Exception as exc:  # noqa: BLE001 - a bug must not wedge the gate; its traceback is logged
                    log_failure(Path(state["run_dir"]), "edit", exc)
                    reply = f"Edit refused, nothing changed: internal error {type(exc).__name__} (see agent.log)"
            elif answer.decision == "question":
                reply = answer_question(state, answer.note)
            else:
                reply = f"Not understood ({answer.note}); nothing was decided. {ANSWER_HELP}"
            asked.append(event(f"{gate}_gate_{answer.decision}", answer=answer.note, reply=reply))
            answer = parse_decision(interrupt({**payload, "reply": reply}))


class GateAnswer(NamedTuple):
    """A resume value understood: the decision, the edit's changes, and the note (a rejection's reason,
    the question asked, or why the answer was not understood)."""

    decision: Decision
    changes: dict[str, Any]
    note: str


def parse_decision(answer: Any) -> GateAnswer:
    """A resume value -> GateAnswer. Only explicit answers decide: True/False, the words in ANSWER_HELP
    (case and surrounding punctuation aside), KEY=VALUE edits, or {"decision": "approve"|"reject"|"edit",
    "changes": {...}, "note": "..."}. Text with a '?' is a question; anything else is "unclear"."""
    if isinstance(answer, bool):
        return GateAnswer("approve" if answer else "reject", {}, "")
    if isinstance(answer, dict):
        return _structured_answer(answer)
    if isinstance(answer, str):
        return _typed_answer(answer)
    return GateAnswer("unclear", {}, f"an answer of type {type(answer).__name__}")


def _structured_answer(answer: dict[str, Any]) -> GateAnswer:
    decision, changes = answer.get("decision"), answer.get("changes") or {}
    if not isinstance(decision, str) or decision.strip().lower() not in ("approve", "reject", "edit"):
        return GateAnswer("unclear", {}, f"decision {decision!r} is not approve, reject or edit")
    decision = decision.strip().lower()
    if not isinstance(changes, dict) or not all(isinstance(k, str) for k in changes):
        return GateAnswer("unclear", {}, "changes must map field names to values, e.g. {'budget_usd': 30}")
    if (decision == "edit") != bool(changes):
        return GateAnswer("unclear", {}, "changes go with the decision 'edit', and an edit needs changes")
    return GateAnswer(decision, dict(changes), str(answer.get("note") or ""))  # type: ignore[arg-type]


def _typed_answer(text: str) -> GateAnswer:
    words = text.split()
    if not words:
        return GateAnswer("unclear", {}, "an empty answer")
    if "?" in text:
        return GateAnswer("question", {}, " ".join(words))
    first = words[0].lower().strip(",.:;!")
    if first in APPROVE_WORDS and len(words) == 1:
        return GateAnswer("approve", {}, "")
    if first in REJECT_WORDS:
        return GateAnswer("reject", {}, " ".join(words[1:]))
    try:
        changes = changes_in(text)
    except StratosError as exc:
        return GateAnswer("unclear", {}, str(exc))
    return GateAnswer("edit", changes, "") if changes else GateAnswer("unclear", {}, repr(" ".join(words)))
