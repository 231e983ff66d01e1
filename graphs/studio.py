"""Entry point for `langgraph dev` / LangGraph Studio / Agent Chat UI (see langgraph.json).

The server brings its own checkpointer, so the graph is compiled without one. Start a run with the input
`{"request": "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"}` (add
`"auto_approve": true` to skip the approval interrupts); resume an interrupt with "approve", "reject"
or {"decision": "edit", "changes": {"budget_usd": 30}}.
"""

from __future__ import annotations

from typing import Any

from stratos_agent.graphs.graph import build_graph


def make_graph(config: Any = None) -> Any:
    """Graph factory: the LLM planner when STRATOS_PLANNER_MODEL is set, else the rule planner."""
    from stratos_agent.graphs.planners import make_llm_planner

    from stratos_agent.settings import get_settings

    model = get_settings().planner_model
    llm = make_llm_planner(model) if model else None
    return build_graph(None, planner=llm, spec_model=llm)
