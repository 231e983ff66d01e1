"""The Python API (`build_graph` + `graph.invoke` with a thread id) and the `langgraph dev` entry point."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from stratos_agent.graphs.adapters import default_toolset
from support.doubles import doubles

from stratos_agent import DistillationSpec, build_graph

ROOT = Path(__file__).resolve().parents[1]


def test_python_api_with_a_spec_object_and_interrupts(runs_dir: Path) -> None:
    graph = build_graph(InMemorySaver(), toolset=default_toolset(doubles()))
    config = {"configurable": {"thread_id": "api-1"}}
    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20, "p95_latency_ms": 300})
    result = graph.invoke({"spec": spec}, config)
    gate = result["__interrupt__"][0].value
    assert gate["gate"] == "plan" and gate["budget_usd"] == 20
    assert isinstance(result["spec"], DistillationSpec)  # the state holds typed records
    result = graph.invoke(Command(resume="approve"), config)
    assert result["__interrupt__"][0].value["gate"] == "deploy"
    result = graph.invoke(Command(resume="approve"), config)
    assert result["status"] == "done" and result["deployment"].base_url.startswith("http://")
    assert result["run_dir"] == str(runs_dir / "api-1")  # default run folder: runs dir / thread id


def test_stream_reports_every_node(runs_dir: Path) -> None:
    graph = build_graph(InMemorySaver(), toolset=default_toolset(doubles()))
    config = {"configurable": {"thread_id": "api-2"}}
    nodes = [
        next(iter(chunk))
        for chunk in graph.stream(
            {"request": "mahjong tiles under $20", "auto_approve": True}, config, stream_mode="updates"
        )
    ]
    assert nodes[:3] == ["intake", "planner", "tools"] and nodes[-1] == "report"
    assert nodes.count("tools") == 7


def test_langgraph_json_points_at_an_importable_graph_factory() -> None:
    from langgraph_cli.config import validate_config_file

    config = validate_config_file(ROOT / "langgraph.json")
    path, _, attr = config["graphs"]["stratos"].partition(":")
    spec = importlib.util.spec_from_file_location("stratos_studio_entry", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, attr)()
    assert {"intake", "planner", "tools", "approve_plan", "approve_deploy", "report"} <= set(
        graph.get_graph().nodes
    )
    assert json.loads((ROOT / "langgraph.json").read_text())["dependencies"] == ["."]


def test_checkpoints_revive_the_state_records_and_nothing_else() -> None:
    """The savers' serializer turns stored records back into their classes, and only the state's own
    record classes: anything else stays plain data (a checkpoint cannot make the agent build objects)."""
    from pydantic import BaseModel
    from stratos_agent.graphs.checkpoint import record_serde
    from support.doubles import dataset, plan_for_budget

    class Stranger(BaseModel):
        x: int = 1

    serde = record_serde()
    plan = plan_for_budget(type("Ctx", (), {"spec": DistillationSpec(task="mahjong", constraints={"budget_usd": 20})}))
    back = serde.loads_typed(serde.dumps_typed({"plan": plan, "dataset": dataset(), "other": Stranger()}))
    assert back["plan"] == plan and type(back["plan"].chosen).__name__ == "PlanPoint"
    assert back["dataset"] == dataset()
    assert back["other"] == {"x": 1}
