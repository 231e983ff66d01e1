"""`build_graph`: the one StateGraph every surface (CLI, Python, `langgraph dev`) runs.

    intake -> planner -> (tools | approve_plan | approve_deploy | report) ; tools -> (planner | report) ;
    report -> END

The tool node retries transient failures (429, 5xx, timeouts; never a 4xx or a failed health check) with
a bounded `RetryPolicy`; when the retries are spent its error handler hands the error to the planner
instead of killing the run. The tool node itself ends the run (-> report) when a limit binds: a tool's
retry budget, or a turn's tool calls nearing the recursion limit, so no planner can loop into a traceback.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy
from stratos_agent.graphs.execution import ExecutionNodes, is_transient
from stratos_agent.graphs.gates import GateNodes
from stratos_agent.graphs.intake import IntakeNode
from stratos_agent.graphs.nodes import AgentRuntime, PlannerNodes
from stratos_agent.graphs.planners import GuardedPlanner, RulePlanner
from stratos_agent.graphs.toolset import Toolset

from stratos_agent.state import AgentState

RECURSION_LIMIT = 200  # supersteps per invocation: the lifecycle plus retries and re-plans stays well under
# Each tool call takes two supersteps (planner, tools); the margin leaves room for intake, gates and report.
MAX_CALLS_PER_TURN = RECURSION_LIMIT // 2 - 10
TOOL_RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, backoff_factor=2.0, max_interval=20.0, retry_on=is_transient
)


def build_graph(
    checkpointer: Any = None,
    *,
    planner: BaseChatModel | None = None,
    toolset: Toolset | None = None,
    spec_model: BaseChatModel | None = None,
    planner_retries: int = 2,
    report_writer: Any = None,
    tool_retry: RetryPolicy = TOOL_RETRY,
) -> Any:
    """Compile the agent graph.

    checkpointer: a LangGraph saver (see `graphs.checkpoint.open_checkpointer`); None = no durability
        (as `langgraph dev`, which brings its own).
    planner: any LangChain chat model that can call tools; None = the deterministic `RulePlanner`.
    toolset: the tools (default: the real Stratos tools); tests pass their own to drive the graph fast.
    spec_model: a chat model used to read natural-language requests with structured output.
    """
    from stratos_agent.settings import get_settings

    if toolset is None:
        from stratos_agent.graphs.adapters import default_toolset

        toolset = default_toolset()
    if report_writer is None:
        from stratos_agent.tools.report import write_report

        report_writer = write_report
    runtime = AgentRuntime(
        planner=GuardedPlanner(planner or RulePlanner(), toolset, max_retries=planner_retries),
        toolset=toolset,
        write_report=report_writer,
        spec_model=spec_model,
        default_runs_dir=lambda: get_settings().runs_dir,
    )
    planning, gates = PlannerNodes(runtime), GateNodes(runtime)
    execution = ExecutionNodes(runtime, max_calls=MAX_CALLS_PER_TURN)
    builder = StateGraph(AgentState)
    builder.add_node("intake", IntakeNode(runtime), destinations=("planner", "intake"))
    builder.add_node("planner", planning.planner)
    builder.add_node("tools", execution.tools, retry_policy=tool_retry, error_handler=execution.tools_failed,
                     destinations=("planner", "report"))
    builder.add_node(
        "approve_plan", gates.approve_plan, destinations=("tools", "planner", "report", "approve_plan")
    )
    builder.add_node(
        "approve_deploy", gates.approve_deploy, destinations=("tools", "planner", "report", "approve_deploy")
    )
    builder.add_node("report", planning.report)
    builder.add_edge(START, "intake")
    builder.add_conditional_edges(
        "planner", planning.route_after_planner, ["tools", "approve_plan", "approve_deploy", "report"]
    )
    builder.add_edge("report", END)
    graph = builder.compile(checkpointer=checkpointer, name="stratos")
    return graph.with_config({"recursion_limit": RECURSION_LIMIT})
