"""The intake node: request -> spec (asking back for a missing essential), chat edits, re-planning."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt
from stratos_agent.graphs.nodes import AgentRuntime, event, log
from stratos_agent.prompts import load_prompt

from stratos_agent.request_parser import RequestAnalysis, analyse_request, apply_edits, edits_in_text
from stratos_agent.spec import DistillationSpec
from stratos_agent.state import AgentState


def replan_update(
    state: AgentState, stages: tuple[str, ...], spec: DistillationSpec, changes: dict[str, Any], source: str
) -> tuple[dict[str, Any], str]:
    """The update that makes the planner plan again under an edited spec (the server survey is kept;
    finished stages are reused through the stage cache when their inputs did not change), and the note
    telling the planner so."""
    note = ", ".join(f"{k}={v}" for k, v in changes.items())
    update = {
        "spec": spec,
        **{slot: None for slot in stages if slot != "servers"},
        "goal": None,
        "adaptations": [],
        "approvals": {},
        "errors": {},
        "events": [*(state.get("events") or []), event("edit", source=source, changes=changes)],
        "status": "planning",
        "report": None,
    }
    return update, f"The user changed the spec ({note}); make a new plan."


class IntakeNode:
    def __init__(self, rt: AgentRuntime):
        self.rt = rt

    def __call__(self, state: AgentState, config: RunnableConfig) -> Command:
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
        spec = state.get("spec")
        if spec is not None:
            spec = DistillationSpec.model_validate(spec)  # the Python API may hand in a plain dict
            update["spec"] = spec
            if inbox:
                update["messages"] = [HumanMessage(content=inbox)]
                changes = {**edits_in_text(inbox), **(state.get("inbox_edits") or {})}
                update["inbox_edits"] = None
                if changes:
                    replan, note = replan_update(
                        state, self.rt.toolset.stages(), apply_edits(spec, changes), changes, "chat"
                    )
                    update.update(replan)
                    update["messages"].append(HumanMessage(content=note))
            if not state.get("messages") and not inbox:
                update["messages"] = [HumanMessage(content=spec.request or f"Distil a model for {spec.task}.")]
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
        return Command(
            goto="planner",
            update={
                **update,
                "request": request,
                "spec": analysis.to_spec(),
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
