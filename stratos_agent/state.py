"""The one typed state the agent graph runs over.

Stage results are stored as plain JSON dicts (each the `model_dump(mode="json")` of the stage's pydantic
record), so the checkpointer never has to unpickle project classes and an old checkpoint stays readable
after a record gains a field. `record()` turns a slot back into its record when that record class exists.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage

Status = Literal["new", "needs_input", "planning", "running", "paused", "done", "rejected", "failed"]

# Lifecycle stages in order; each is produced by one tool and stored under the same state key.
STAGES: tuple[str, ...] = ("servers", "pairs", "plan", "dataset", "model", "eval", "deployment")

# Where each single-record stage's class lives: (module, class name). `servers` and `pairs` hold
# lists ({"profiles": [ServerProfile...]}, {"pairs": [PairScore...]}) and stay plain dicts.
RECORD_CLASSES: dict[str, tuple[str, str]] = {
    "plan": ("stratos_agent.records.plans", "Plan"),
    "dataset": ("stratos_agent.records.data", "DatasetRef"),
    "model": ("stratos_agent.records.training", "StudentModel"),
    "eval": ("stratos_agent.records.evaluation", "EvalReport"),
    "deployment": ("stratos_agent.records.deployment", "Deployment"),
}


def add_messages(left: list[AnyMessage], right: Any) -> list[AnyMessage]:
    """LangGraph's message reducer, imported on use so that the core does not load LangGraph."""
    from langgraph.graph.message import add_messages as reducer

    return reducer(left, right)


class Approval(TypedDict, total=False):
    """A human (or `--yes`) decision at a gate."""

    decision: Literal["approve", "reject", "edit"]
    auto: bool  # True when `auto_approve` skipped the question
    at: str  # ISO time
    note: str
    changes: dict[str, Any]


class AgentState(TypedDict, total=False):
    """Everything one run knows. Small values and paths only; artifacts live in `run_dir`."""

    thread_id: str
    run_dir: str
    request: str  # the user's words, as given (possibly grown by answers to questions)
    spec: dict[str, Any] | None  # DistillationSpec
    missing: list[str]  # essentials the request parser could not find
    servers: dict[str, Any] | None  # {"profiles": [ServerProfile], ...}
    pairs: dict[str, Any] | None  # {"pairs": [PairScore], ...}
    plan: dict[str, Any] | None  # Plan: Pareto front + chosen point + why
    dataset: dict[str, Any] | None  # DatasetRef
    model: dict[str, Any] | None  # StudentModel (student HF folder, adapter, curves)
    eval: dict[str, Any] | None  # EvalReport (student vs teacher on held-out items)
    deployment: dict[str, Any] | None  # Deployment (base_url, model, smoke result)
    approvals: dict[str, Approval]  # "plan" / "deploy"
    ledger: list[dict[str, Any]]  # stratos_agent.ledger.LedgerEntry dumps
    auto_approve: bool
    status: Status
    events: list[dict[str, Any]]  # planner fallbacks, guard refusals, retries: shown in the report
    errors: dict[str, int]  # failed attempts per tool, for the planner's bounded retries
    report: dict[str, str] | None  # {"html": path, "markdown": path}
    inbox: str | None  # a chat message not yet read by the intake node
    inbox_edits: (
        dict[str, Any] | None
    )  # spec edits (`stratos approve --edit` on a stopped run), not yet applied
    messages: Annotated[list[AnyMessage], add_messages]


def record(state: AgentState, key: str) -> Any:
    """The slot `key` as its pydantic record when the record class is available, else the raw dict."""
    value = state.get(key)  # type: ignore[misc]
    if value is None or key not in RECORD_CLASSES:
        return value
    module_name, class_name = RECORD_CLASSES[key]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return value
    return cls.model_validate(value)


def dump(value: Any) -> Any:
    """A record (or a list/dict of them) as JSON-ready data for a state slot."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value


def initial_state(
    thread_id: str,
    run_dir: str,
    request: str = "",
    spec: dict[str, Any] | None = None,
    auto_approve: bool = False,
) -> AgentState:
    return AgentState(
        thread_id=thread_id,
        run_dir=run_dir,
        request=request,
        spec=spec,
        missing=[],
        servers=None,
        pairs=None,
        plan=None,
        dataset=None,
        model=None,
        eval=None,
        deployment=None,
        approvals={},
        ledger=[],
        auto_approve=auto_approve,
        status="new",
        events=[],
        errors={},
        report=None,
        inbox=None,
        messages=[],
    )
