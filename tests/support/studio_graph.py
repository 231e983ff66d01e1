"""The graph tests/test_agent_studio.py serves with `langgraph dev`: the real graph over stand-in tools.

It goes through `studio_factory`, the same path as langgraph.json's `graphs/studio.py:make_graph`
(settings, planner choice, build at import, a factory that never blocks), so the test proves the real
entry point runs without `--allow-blocking`; only the tool bodies are `support.doubles` stand-ins.
The server must find `support` on sys.path: the test's langgraph.json lists tests/ as a dependency.
"""

from __future__ import annotations

from stratos_agent.graphs.studio import studio_factory

from support.doubles import stand_in_toolset

make_graph = studio_factory(stand_in_toolset())
