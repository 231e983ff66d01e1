"""The one typed state the agent graph runs over.

Each stage slot holds that stage's pydantic record (the box of the design card). The checkpointers
(graphs/checkpoint.py) revive exactly these record classes, listed in `RECORD_TYPES`, and nothing else.
Which tool fills which slot, and in what order, is declared once: the ToolSpec table in graphs/adapters.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage

from stratos_agent.records.data import DatasetRef
from stratos_agent.records.deployment import Deployment
from stratos_agent.records.evaluation import Comparison, GoalCheck
from stratos_agent.records.plans import PairTable, Plan
from stratos_agent.records.servers import ServerSurvey
from stratos_agent.records.training import StudentModel
from stratos_agent.spec import DistillationSpec

Status = Literal["new", "needs_input", "planning", "running", "paused", "done", "rejected", "failed"]

# Every class a state slot may hold: the checkpointer's allow-list for reviving records.
RECORD_TYPES: tuple[type, ...] = (
    DistillationSpec,
    ServerSurvey,
    PairTable,
    Plan,
    DatasetRef,
    StudentModel,
    Comparison,
    GoalCheck,
    Deployment,
)


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
    spec: DistillationSpec | None
    missing: list[str]  # essentials the request parser could not find
    servers: ServerSurvey | None
    pairs: PairTable | None
    plan: Plan | None
    dataset: DatasetRef | None
    model: StudentModel | None
    eval: Comparison | None
    deployment: Deployment | None
    goal: GoalCheck | None  # the result gate's check of the current evaluation
    adaptations: list[dict[str, Any]]  # the result gate's decisions (records.evaluation.Adaptation dumps)
    deploy_anyway: bool  # an explicit decision to deploy even when the result misses the goal
    approvals: dict[str, Approval]  # "plan" / "deploy"
    ledger: list[dict[str, Any]]  # stratos_agent.ledger.LedgerEntry dumps
    auto_approve: bool
    status: Status
    events: list[dict[str, Any]]  # planner fallbacks, guard refusals, retries: shown in the report
    errors: dict[str, int]  # failed attempts per tool, for the planner's bounded retries
    report: dict[str, str] | None  # {"html": path, "markdown": path}
    inbox: str | None  # a chat message not yet read by the intake node
    inbox_edits: dict[str, Any] | None  # spec edits (`stratos approve --edit` on a stopped run), not yet applied
    messages: Annotated[list[AnyMessage], add_messages]


def initial_state(
    thread_id: str,
    run_dir: str,
    request: str = "",
    spec: DistillationSpec | None = None,
    auto_approve: bool = False,
    deploy_anyway: bool = False,
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
        goal=None,
        adaptations=[],
        deploy_anyway=deploy_anyway,
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
