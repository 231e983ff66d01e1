"""LangGraph wiring: nodes, edges, interrupts, retry policies, the planner node.

`build_graph` is handed out lazily so `import stratos_agent.graphs.toolset` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_graph"]


def __getattr__(name: str) -> Any:
    if name == "build_graph":
        from stratos_agent.graphs.graph import build_graph

        return build_graph
    raise AttributeError(f"module 'stratos_agent.graphs' has no attribute {name!r}")
