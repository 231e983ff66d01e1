"""Entry point for `langgraph dev` / LangGraph Studio / Agent Chat UI (see langgraph.json).

Run Studio from the repository root (langgraph.json's paths are relative to the current folder):

    pip install -e ".[dev]"      # the dev extra brings langgraph-cli[inmem]
    langgraph dev                # serves http://127.0.0.1:2024 and opens Studio; no --allow-blocking

The server brings its own checkpointer, so the graph is compiled without one. Start a run with the input
`{"request": "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"}` (add
`"auto_approve": true` to skip the approval interrupts); resume an interrupt with "approve", "reject"
or {"decision": "edit", "changes": {"budget_usd": 30}}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stratos_agent.graphs.graph import build_graph
from stratos_agent.graphs.toolset import Toolset


def studio_factory(toolset: Toolset | None = None) -> Callable[..., Any]:
    """Build the Studio graph now and return a graph factory that hands it out.

    The LLM planner when STRATOS_PLANNER_MODEL is set, else the rule planner; `toolset` replaces the
    real tools (tests/support/studio_graph.py serves the stand-ins through this same path).

    Why the graph is built here and not inside the factory: `langgraph dev` calls the factory on its
    event loop for every run and state read, and refuses blocking calls there (blockbuster raised
    "BlockingError: Blocking call to os.getcwd" from `get_settings()` -> `Path.cwd()`; the LLM planner
    also opens HTTP clients). The server imports this module in a worker thread, where blocking is
    fine, so everything that touches the file system or settings runs at import and the factory only
    returns the compiled graph. One graph serves every run: it keeps no per-run state (the server gives
    each run a copy carrying its checkpointer), and the nodes, which do the run-folder I/O, are sync
    functions that LangGraph runs in its thread pool, off the event loop.
    """
    from stratos_agent.graphs.planners import make_llm_planner

    from stratos_agent.settings import get_settings

    model = get_settings().planner_model
    llm = make_llm_planner(model) if model else None
    graph = build_graph(None, planner=llm, spec_model=llm, toolset=toolset)

    def make_graph(config: Any = None) -> Any:
        """Graph factory for langgraph.json: returns the graph built at import (never blocks)."""
        return graph

    return make_graph


make_graph = studio_factory()
