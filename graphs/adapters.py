"""Tool adapters: state + validated arguments -> a call of the real tool function -> a state slot.

One adapter per tool. An adapter reads what it needs from the state (spec, plan, earlier records),
calls the tool (which knows nothing of LangGraph), and returns the tool's record as JSON plus a short
summary for the planner. Sizes on this machine are capped (`LOCAL`) so the embedded default finishes in
minutes on 2 CPU cores; on a GPU plan the plan's own sizes are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.graphs.toolset import (
    BenchmarkServersArgs,
    CostEstimate,
    DeployStudentArgs,
    EvaluateStudentArgs,
    MakePlanArgs,
    ScorePairsArgs,
    SynthesizeDataArgs,
    ToolContext,
    ToolOutcome,
    ToolSpec,
    Toolset,
    TrainStudentArgs,
)
from stratos_agent.state import dump

# Sizes for a run on this (CPU) machine: a few thousand solver examples, a few minutes of training,
# ~100 hold-out items. Why: `make demo` must reach a live endpoint within ~10 minutes on 2 cores.
LOCAL = {"synth_n": 3000, "train_minutes": 4.0, "eval_n": 100, "probe_n": 8}


# ----------------------------------------------------------------------------- plan helpers
def chosen(ctx_state: dict[str, Any]) -> dict[str, Any]:
    return ((ctx_state.get("plan") or {}).get("chosen")) or {}


def _offer(state: dict[str, Any], server_id: str) -> dict[str, Any]:
    for profile in (state.get("servers") or {}).get("profiles", []):
        offer = profile.get("offer") or {}
        if f"{offer.get('provider')}:{offer.get('instance_type')}:{offer.get('region')}" == server_id:
            return offer
    return {}


def runs_locally(state: dict[str, Any]) -> bool:
    point = chosen(state)
    return not point or str(point.get("server", "")).startswith("local:")


def _price(state: dict[str, Any]) -> tuple[str, float]:
    point = chosen(state)
    server = point.get("server") or "local"
    offer = _offer(state, server)
    return server, float(offer.get("on_demand_usd_h") or 0.0) * int(point.get("gpu_count") or 1)


def _scaled(ctx: ToolContext, cost_key: str, amount: float, planned: float) -> CostEstimate:
    """The plan's cost for a stage, scaled by how much of it this call asks for."""
    point = chosen(ctx.state)
    server, usd_h = _price(ctx.state)
    base = float(point.get(cost_key) or 0.0)
    factor = amount / planned if planned else 1.0
    return CostEstimate(round(base * factor, 6), server, usd_h)


# ----------------------------------------------------------------------------- adapters
def _require(module: str, owner: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"stratos_agent.tools.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"stratos_agent.tools.{module}":
            raise ResourceError(f"tool module tools/{module}.py ({owner}) is not installed") from exc
        raise


def synth_suggest(ctx: ToolContext) -> dict[str, Any]:
    point = chosen(ctx.state)
    n = int(point.get("data_size") or ctx.spec.get("data_size") or LOCAL["synth_n"])
    if runs_locally(ctx.state):
        n = min(n, LOCAL["synth_n"])
    mode = "solver" if point.get("strategy", "injection") == "injection" else "forward"
    return {"n": n, "mode": mode, "seed": 0}


def run_synth(ctx: ToolContext, args: SynthesizeDataArgs) -> ToolOutcome:
    synth = _require("synth", "H3")
    plan_args = {**synth_suggest(ctx), **args.model_dump(exclude_none=True)}
    out = ctx.run_dir / "data" / f"{plan_args['mode']}-n{plan_args['n']}-s{plan_args['seed']}"
    ref = synth.synthesize(ctx.spec["task"], plan_args["n"], out, mode=plan_args["mode"], seed=plan_args["seed"],
                           distribution="even")
    card = ref.card
    return ToolOutcome(dump(ref), {"path": str(ref.path), "rows": card.n_accepted, "splits": card.split_counts,
                                   "rejections": card.rejections, "mode": card.mode})


def synth_estimate(ctx: ToolContext, args: SynthesizeDataArgs) -> CostEstimate:
    n = args.n or synth_suggest(ctx)["n"]
    return _scaled(ctx, "cost_synthesis_usd", n, float(chosen(ctx.state).get("data_size") or n))


def run_benchmark_servers(ctx: ToolContext, args: BenchmarkServersArgs) -> ToolOutcome:
    raise ResourceError("benchmark_servers: waiting for tools/server_bench.py profiles API (H5)")


def pairs_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {"probe_n": LOCAL["probe_n"]}


def run_score_pairs(ctx: ToolContext, args: ScorePairsArgs) -> ToolOutcome:
    raise ResourceError("score_pairs: waiting for tools/pairing.py (H5)")


def run_make_plan(ctx: ToolContext, args: MakePlanArgs) -> ToolOutcome:
    raise ResourceError("make_plan: waiting for tools/planning.py (H5)")


def train_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {}


def train_key(state: dict[str, Any]) -> Any:
    point = chosen(state)
    return [(state.get("dataset") or {}).get("card", {}).get("fingerprint"),
            {k: point.get(k) for k in ("student", "teacher", "strategy", "lora_rank")}]


def train_estimate(ctx: ToolContext, args: TrainStudentArgs) -> CostEstimate:
    planned = float(train_suggest(ctx).get("max_steps") or 1)
    return _scaled(ctx, "cost_training_usd", float(args.max_steps or planned), planned)


def run_train(ctx: ToolContext, args: TrainStudentArgs) -> ToolOutcome:
    raise ResourceError("train_student: waiting for tools/train.py (H4)")


def eval_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {"n": LOCAL["eval_n"]}


def run_evaluate(ctx: ToolContext, args: EvaluateStudentArgs) -> ToolOutcome:
    raise ResourceError("evaluate_student: waiting for tools/evaluate.py (H4)")


def deploy_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {}


def deploy_estimate(ctx: ToolContext, args: DeployStudentArgs) -> CostEstimate:
    return _scaled(ctx, "cost_serving_usd", 1.0, 1.0)


def run_deploy(ctx: ToolContext, args: DeployStudentArgs) -> ToolOutcome:
    raise ResourceError("deploy_student: waiting for tools/deploy.py (H6)")


def default_toolset(runners: dict[str, Any] | None = None) -> Toolset:
    """The Stratos tools in lifecycle order. `runners` replaces adapters by tool name (tests)."""
    runners = runners or {}
    specs = [
        ToolSpec("benchmark_servers", BenchmarkServersArgs, "servers", ("spec",), runners.get("benchmark_servers")
                 or run_benchmark_servers, key_inputs=lambda s: (s.get("spec") or {}).get("traffic"),
                 clears=("pairs", "plan")),
        ToolSpec("score_pairs", ScorePairsArgs, "pairs", ("spec", "servers"), runners.get("score_pairs")
                 or run_score_pairs, suggest=pairs_suggest,
                 key_inputs=lambda s: [(s.get("spec") or {}).get(k) for k in ("task", "teacher", "student")],
                 clears=("plan",)),
        ToolSpec("make_plan", MakePlanArgs, "plan", ("spec", "servers", "pairs"), runners.get("make_plan")
                 or run_make_plan, clears=("dataset", "model", "eval", "deployment"),
                 key_inputs=lambda s: [s.get("spec"), s.get("servers"), s.get("pairs")]),
        ToolSpec("synthesize_data", SynthesizeDataArgs, "dataset", ("spec", "plan"), runners.get("synthesize_data")
                 or run_synth, estimate=synth_estimate, spends=True, suggest=synth_suggest,
                 key_inputs=lambda s: (s.get("spec") or {}).get("task"), clears=("model", "eval", "deployment")),
        ToolSpec("train_student", TrainStudentArgs, "model", ("plan", "dataset"), runners.get("train_student")
                 or run_train, estimate=train_estimate, spends=True, suggest=train_suggest,
                 key_inputs=train_key, clears=("eval", "deployment")),
        ToolSpec("evaluate_student", EvaluateStudentArgs, "eval", ("model", "dataset"),
                 runners.get("evaluate_student") or run_evaluate, suggest=eval_suggest,
                 key_inputs=lambda s: [(s.get("model") or {}).get("model_dir"), (s.get("dataset") or {}).get("path")],
                 clears=("deployment",)),
        ToolSpec("deploy_student", DeployStudentArgs, "deployment", ("model", "eval"),
                 runners.get("deploy_student") or run_deploy, estimate=deploy_estimate,
                 needs_deploy_approval=True, suggest=deploy_suggest,
                 key_inputs=lambda s: (s.get("model") or {}).get("model_dir")),
    ]
    return Toolset({spec.name: spec for spec in specs})


__all__ = ["LOCAL", "default_toolset", "runs_locally", "InputError", "Path"]
