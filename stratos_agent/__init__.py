"""Stratos: request in, distilled + evaluated + deployed small LLM out.

Heavy names (the graph) are handed out lazily so that importing a tool never drags in LangGraph.
"""

from __future__ import annotations

from typing import Any

from stratos_agent.spec import Constraints, DistillationSpec, Traffic

__version__ = "0.1.0"
__all__ = ["Constraints", "DistillationSpec", "Traffic", "__version__", "build_graph"]

_LAZY = {"build_graph": ("stratos_agent.graphs", "build_graph")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'stratos_agent' has no attribute {name!r}")
