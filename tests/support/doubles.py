"""Stand-ins for the Stratos tools: instant, counting their calls, returning valid stage records.

Used by the graph tests (tests/test_agent_graph.py) and the `langgraph dev` test, which serves a graph
built over `stand_in_toolset()`: the graph, guards, gates and report are real; only tool bodies are not.
Every value is a real record (the tools node validates each into its ToolSpec's record class anyway).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.toolset import ToolOutcome, Toolset

from stratos_agent.records.data import DataCard, DatasetRef
from stratos_agent.records.deployment import Deployment, LaunchSpec
from stratos_agent.records.evaluation import Comparison, DifficultyRow, EvalReport, Proportion
from stratos_agent.records.plans import PairTable, Plan, PlanPoint
from stratos_agent.records.servers import ServerSurvey
from stratos_agent.records.training import MemoryEstimate, StudentModel, TrainConfig


def point(**over: Any) -> PlanPoint:
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
    return PlanPoint(**{**base, **over})


_PLAN_COMMON = {"task": "mahjong", "preference": "balanced", "candidates": 2, "catalog_date": "2026-11-01",
                "catalog_age_days": 27, "created": "2026-11-28T00:00:00Z"}


def plan_for_budget(ctx: Any) -> Plan:
    """A feasible plan at $6 under budgets of $5 and more; an infeasible one below."""
    budget = ctx.spec.constraints.budget_usd
    if budget < 5:
        return Plan(chosen=None, front=[], why="the cheapest plan costs $6", feasible=False,
                    binding_constraints=["budget_usd"], nearest_feasible=["budget $6: local CPU"], **_PLAN_COMMON)
    chosen = point(cost_usd=min(6.0, budget))
    return Plan(chosen=chosen, front=[chosen, point(cost_usd=15, accuracy=0.6)], why=f"cheapest point under ${budget}",
                feasible=True, **_PLAN_COMMON)


def dataset() -> DatasetRef:
    card = DataCard(task="mahjong", mode="solver", seed=0, n_requested=100, n_accepted=100, attempted=100,
                    split_counts={"train": 80, "validation": 10, "test": 10}, created_at="2026-11-28T00:00:00Z",
                    elapsed_s=1.0, fingerprint="f")
    return DatasetRef(path=Path("data"), hf_path=Path("data/hf"), card=card,
                      public_jsonl={"test": Path("data/test.jsonl")})


def student() -> StudentModel:
    memory = MemoryEstimate(parameters=1, trainable_parameters=1, weights_bytes=1, gradients_bytes=1,
                            optimizer_bytes=1, activations_bytes=1, logits_bytes=1, runtime_overhead_bytes=1,
                            total_bytes=7, available_bytes=100, fits=True)
    config = TrainConfig(run_name="t-student", base_model="smollm2-135m", data=Path("data/hf"))
    return StudentModel(run_dir=Path("train"), model_dir=Path("student"), base_model="smollm2-135m", method="sft",
                        method_detail="sft+lora", config_fingerprint=config.fingerprint(), global_step=10,
                        train_seconds=1.0, peak_rss_bytes=2**30, memory_estimate=memory,
                        metrics_csv=Path("train/metrics.csv"), config=config)


def eval_report(model: str, accuracy: float, by_difficulty: dict[str, float]) -> EvalReport:
    def share(value: float, n: int) -> Proportion:
        return Proportion(value=value, low=max(0.0, value - 0.2), high=min(1.0, value + 0.2),
                          successes=round(value * n), n=n)

    rows = [DifficultyRow(difficulty=k, n=5, exact_match=share(v, 5), mean_f1=v) for k, v in by_difficulty.items()]
    return EvalReport(task="mahjong", model=model, data="data/test.jsonl", n=10, exact_match=accuracy,
                      exact_match_ci=share(accuracy, 10), mean_f1=accuracy, parse_failure_rate=0.0,
                      by_difficulty=rows, latency_p50_ms=50.0, latency_p95_ms=80.0, tokens_per_s=20.0,
                      generated_tokens=100, wall_s=1.0, max_new_tokens=24)


def comparison() -> Comparison:
    return Comparison(task="mahjong", data="data/test.jsonl", n=10,
                      student=eval_report("student", 0.5, {"1": 0.6}),
                      teacher=eval_report("smollm2-135m", 0.1, {"1": 0.2}), baselines=[])


def deployment() -> Deployment:
    launch = LaunchSpec(engine="vllm", device="cpu", argv=["vllm", "serve", "student"], model_path="student",
                        served_model_name="student", host="127.0.0.1", port=9, max_model_len=512)
    return Deployment(name="t", base_url="http://127.0.0.1:9/v1", model="student", model_path="student",
                      model_fingerprint="m", engine="vllm", host="127.0.0.1", port=9, pid=1, process_started=0.0,
                      state_dir="state", log_path="state/server.log", api_key_required=False,
                      started_at="2026-11-28T00:00:00Z", launch=launch)


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
        "benchmark_servers": ServerSurvey(),
        "score_pairs": PairTable(pairs=[]),
        "make_plan": plan_for_budget,
        "synthesize_data": dataset(),
        "train_student": student(),
        "evaluate_student": comparison(),
        "deploy_student": deployment(),
    }
    return {name: StageDouble(value, fail.get(name)) for name, value in values.items()}


def stand_in_toolset(**fail: list[BaseException]) -> Toolset:
    """The real tool table with every tool body replaced by a `StageDouble`."""
    return default_toolset(doubles(**fail))
