"""Stand-ins for the Stratos tools: instant, counting their calls, returning valid stage records.

Used by the graph tests (tests/test_agent_graph.py) and the `langgraph dev` test, which serves a graph
built over `stand_in_toolset()`: the graph, guards, gates and report are real; only tool bodies are not.
"""

from __future__ import annotations

from typing import Any

from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.toolset import ToolOutcome, Toolset

from stratos_agent.records.plans import Plan, PlanPoint


def _point(**over: Any) -> dict[str, Any]:
    base = {
        "server": "local:this-machine-1t:local",
        "gpu": "CPU",
        "gpu_count": 1,
        "teacher": "smollm2-135m",
        "student": "smollm2-135m",
        "strategy": "injection",
        "lora_rank": 16,
        "data_size": 2000,
        "replicas": 1,
        "cost_usd": 6.0,
        "cost_training_usd": 2.0,
        "cost_serving_usd": 4.0,
        "cost_synthesis_usd": 0.0,
        "p95_ms": 120.0,
        "accuracy": 0.5,
        "train_hours": 0.05,
        "latency_source": "measured",
    }
    return PlanPoint(**{**base, **over}).model_dump(mode="json")


def _plan(ctx: Any) -> dict[str, Any]:
    budget = ctx.spec["constraints"]["budget_usd"]
    if budget < 5:
        return Plan(
            task="mahjong",
            preference="balanced",
            chosen=None,
            front=[],
            why="the cheapest plan costs $6",
            feasible=False,
            binding_constraints=["budget_usd"],
            nearest_feasible=["budget $6: local CPU"],
            candidates=2,
            catalog_date="2026-11-01",
            catalog_age_days=27,
            created="2026-11-28T00:00:00Z",
        ).model_dump(mode="json")
    chosen = _point(cost_usd=min(6.0, budget))
    plan = Plan(
        task="mahjong",
        preference="balanced",
        chosen=chosen,
        front=[chosen, _point(cost_usd=15, accuracy=0.6)],
        why=f"cheapest point under ${budget}",
        feasible=True,
        candidates=2,
        catalog_date="2026-11-01",
        catalog_age_days=27,
        created="2026-11-28T00:00:00Z",
    )
    return plan.model_dump(mode="json")


class StageDouble:
    """Stands in for one tool: returns a fixed record (or one made from the context), counts calls."""

    def __init__(self, value: Any, fail: list[BaseException] | None = None):
        self.value, self.fail, self.calls = value, list(fail or []), 0

    def __call__(self, ctx: Any, args: Any) -> ToolOutcome:
        self.calls += 1
        if self.fail:
            raise self.fail.pop(0)
        value = self.value(ctx) if callable(self.value) else self.value
        return ToolOutcome(value, {"args": args.model_dump()})


def doubles(**fail: list[BaseException]) -> dict[str, StageDouble]:
    values = {
        "benchmark_servers": {"profiles": []},
        "score_pairs": {"pairs": []},
        "make_plan": _plan,
        "synthesize_data": {
            "path": "data",
            "card": {"task": "mahjong", "n_accepted": 100, "fingerprint": "f"},
        },
        "train_student": {"model_dir": "student", "metrics_csv": None},
        "evaluate_student": {
            "n": 10,
            "student_accuracy": 0.5,
            "teacher_accuracy": 0.1,
            "student_by_difficulty": {"1": 0.6},
            "teacher_by_difficulty": {"1": 0.2},
        },
        "deploy_student": {"base_url": "http://127.0.0.1:9/v1", "model": "student"},
    }
    return {name: StageDouble(value, fail.get(name)) for name, value in values.items()}


def stand_in_toolset(**fail: list[BaseException]) -> Toolset:
    """The real tool table with every tool body replaced by a `StageDouble`."""
    return default_toolset(doubles(**fail))
