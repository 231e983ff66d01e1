"""The intake node: request -> spec (asking back for a missing essential), chat edits, re-planning.

Whatever reaches it is user input, checked as strictly as a new request (`validated_spec`), and every run
needs a finite budget: a spec without `budget_usd` (a YAML file, the Python API) is asked for one. A
problem is never raised out of the node (that would leave the run stuck, re-raising on every resume): the
intake asks again ("clarify"), each answer being one interrupt of the node, until the input is valid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, interrupt
from stratos_agent.graphs.nodes import AgentRuntime, event, log
from stratos_agent.prompts import load_prompt

from stratos_agent.errors import StratosError
from stratos_agent.request_parser import (
    ESSENTIALS,
    QUESTIONS,
    RequestAnalysis,
    analyse_request,
    apply_edits,
    edits_in_text,
    parse_key_values,
)
from stratos_agent.spec import DistillationSpec, validated_spec
from stratos_agent.state import AgentState

CANCEL_WORDS = ("cancel", "keep")
NO_BUDGET = ("The spec has no budget_usd; every run needs a finite budget (a large one if money is no object). "
             + QUESTIONS["budget_usd"])
CHANGE_HINT = "Answer with the change: KEY=VALUE ... (e.g. budget_usd=20) or in words (e.g. 'under $20')."


def changes_in(text: str) -> dict[str, Any]:
    """Spec changes a human typed: `[edit] KEY=VALUE ...`, or words ("make the budget $30")."""
    words = text.split()
    if words and words[0].lower() == "edit":
        words = words[1:]
    if words and all("=" in w for w in words):
        return parse_key_values(words, "edit")
    return edits_in_text(" ".join(words))


def checked_spec(spec: DistillationSpec) -> DistillationSpec | str:
    """`spec` validated as user input with a budget, or the problem in words."""
    try:
        valid = validated_spec(spec, "spec")
    except StratosError as exc:
        return str(exc)
    return valid if valid.constraints.budget_usd is not None else NO_BUDGET


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
        thread_id = config["configurable"]["thread_id"]
        if not state.get("run_dir"):
            update["run_dir"] = str(run_dir)
            update["thread_id"] = thread_id
        run_dir.mkdir(parents=True, exist_ok=True)
        inbox = state.get("inbox")
        if inbox:
            update["inbox"] = None
            update["errors"] = {}  # a human turn is a fresh start for the planner's retry budget
        spec = state.get("spec")
        if spec is None:
            spec, request, unread = self._spec_from_request(state.get("request") or "", inbox, thread_id)
            if unread:  # reported back (plan gate, outcome, report), never silently dropped
                update["events"] = [*(state.get("events") or []), event("not_understood", phrases=unread)]
            return Command(goto="planner", update={**update, "request": request, "spec": spec, "missing": [],
                                                    "status": "planning", "messages": [HumanMessage(content=request)]})
        spec = DistillationSpec.model_validate(spec)  # the Python API may hand in a plain dict
        first_turn, changes = not state.get("messages"), {}
        if first_turn or inbox:
            spec, changes = self._settled(spec, self._inbox_changes(inbox, state), thread_id, first_turn)
        update["spec"] = spec
        if inbox:
            update["messages"] = [HumanMessage(content=inbox)]
            update["inbox_edits"] = None
            if changes:
                replan, note = replan_update(state, self.rt.toolset.stages(), spec, changes, "chat")
                update.update(replan)
                update["messages"].append(HumanMessage(content=note))
        if first_turn and not inbox:
            update["messages"] = [HumanMessage(content=spec.request or f"Distil a model for {spec.task}.")]
        return Command(goto="planner", update={**update, "status": "planning"})

    @staticmethod
    def _inbox_changes(inbox: str | None, state: AgentState) -> dict[str, Any] | str:
        """The changes a chat message (and `stratos approve --edit` on a stopped run) asks for, or why they
        cannot be read."""
        if not inbox:
            return {}
        try:
            return {**edits_in_text(inbox), **(state.get("inbox_edits") or {})}
        except StratosError as exc:
            return str(exc)

    def _settled(
        self, spec: DistillationSpec, changes: dict[str, Any] | str, thread_id: str, first_turn: bool
    ) -> tuple[DistillationSpec, dict[str, Any]]:
        """`spec` with `changes`, valid as user input; else ask. Each answer's changes apply on top of the
        spec so far; on a chat change 'cancel' keeps the spec as it was."""
        current, applied = spec, {}
        pending, problem = (changes, None) if isinstance(changes, dict) else ({}, changes)
        while True:
            if pending:
                try:
                    current, applied = apply_edits(current, pending), {**applied, **pending}
                except StratosError as exc:
                    problem = f"Change refused, nothing changed: {exc}"
            if problem is None:
                checked = checked_spec(current)
                if isinstance(checked, DistillationSpec):
                    return checked, applied
                problem = checked
            cancel = "" if first_turn else " Or answer 'cancel' to keep the spec as it was."
            answer = str(interrupt({"gate": "clarify", "thread_id": thread_id, "missing": [], "ambiguous": {},
                                    "questions": [problem, CHANGE_HINT + cancel],
                                    "spec": current.model_dump(mode="json")})).strip()
            if not first_turn and answer.lower() in CANCEL_WORDS:
                return spec, {}
            try:
                pending, problem = changes_in(answer), None
            except StratosError as exc:
                pending, problem = {}, str(exc)
            if not pending and problem is None:
                problem = f"No change found in {answer!r}."

    def _spec_from_request(self, request: str, inbox: str | None,
                           thread_id: str) -> tuple[DistillationSpec, str, list[str]]:
        """The spec a request asks for, the request with the answers, and what in them was not understood;
        what is missing, ambiguous or invalid is asked for, and each answer overrides what the request said
        on the same fields (so "p95 under 300 ms" corrects "under 0 ms")."""
        text = "\n".join(part for part in (request, inbox or "") if part)
        analysis, problems = self._read(text, use_model=True)
        answers: list[str] = []
        while True:
            if not problems and analysis.complete:
                try:
                    spec = validated_spec(analysis.to_spec(), "request")
                    return spec, "\n".join([text, *answers]), list(analysis.unparsed)
                except StratosError as exc:
                    problems = [f"{exc}. Restate the value(s) named (e.g. 'p95 under 300 ms')."]
            answer = str(interrupt({"gate": "clarify", "thread_id": thread_id, "missing": analysis.missing,
                                    "ambiguous": analysis.ambiguous,
                                    "questions": [*problems, *analysis.questions()], "request": text}))
            answers.append(answer)
            correction, problems = self._read(answer, use_model=False)
            analysis = _overlay(analysis, correction)

    def _read(self, text: str, use_model: bool) -> tuple[RequestAnalysis, list[str]]:
        """The analysis of `text`, and any problem that stopped it being read (too long, bad characters)."""
        try:
            return (self._analyse(text) if use_model else analyse_request(text)), []
        except StratosError as exc:
            return RequestAnalysis(fields={"request": ""}, missing=list(ESSENTIALS)), [str(exc)]

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


def _overlay(base: RequestAnalysis, answer: RequestAnalysis) -> RequestAnalysis:
    """`base` with what `answer` states taking precedence; the answer replaces base's invalid values
    (the question showed them), and what is still missing is worked out again."""
    fields = {**base.fields, **{k: v for k, v in answer.fields.items() if k != "request"}}
    ambiguous = {**{k: v for k, v in base.ambiguous.items() if k not in fields}, **answer.ambiguous}
    missing = [name for name in ESSENTIALS if name not in fields and name not in ambiguous]
    return dataclasses.replace(answer, fields=fields, ambiguous=ambiguous, missing=missing)
