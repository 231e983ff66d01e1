"""The tool table: each Stratos tool as a ToolSpec, and the few lines that call it from the state.

An adapter takes the typed state (through `ToolContext`) and the call's resolved arguments, calls one
tool function (which knows nothing of LangGraph) and returns its record with a short summary for the
planner. The domain lives in the tools; the order of `default_toolset` is the lifecycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
    Toolset,
    ToolSpec,
    TrainStudentArgs,
)

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.data import DatasetRef
from stratos_agent.records.deployment import Deployment
from stratos_agent.records.evaluation import Comparison
from stratos_agent.records.plans import PairTable, Plan
from stratos_agent.records.servers import ServerSurvey
from stratos_agent.records.training import StudentModel, TrainConfig
from stratos_agent.settings import get_settings
from stratos_agent.tasks.recipes import local_sizes, recipe_for

CONSOLE = Console(stderr=True)  # progress goes to stderr: `--json` keeps stdout to one JSON object
# All start attempts of one deployment together: each waits for its server's health check at most what is
# left, so a server that never comes up costs this much in total, not retries x the per-start wait.
DEPLOY_DEADLINE_S = 900.0
DEPLOY_WAIT_S = 600.0  # one start attempt (deploy_local's own default)


class DeployDeadline(ResourceError):
    """Every start attempt of the deployment together outlasted `DEPLOY_DEADLINE_S`."""

    tool_error_kind = "permanent"  # a further attempt would not have the time to come up


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Any]:
    """A progress bar on stderr; yields `update(done, rejected)`."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("rejected {task.fields[r]}"))
    with Progress(*columns, TimeElapsedColumn(), console=CONSOLE) as bar:
        job = bar.add_task(label, total=total, r=0)
        yield lambda done, rejected: bar.update(job, completed=done, r=rejected)


def stage_cost(ctx: ToolContext, cost_field: str, share: float = 1.0) -> CostEstimate:
    """The plan's cost of a stage (`share` of it when a call asks for less or more than planned), on the
    chosen server at its on-demand $/h."""
    point = ctx.chosen
    survey: ServerSurvey | None = ctx.state.get("servers")
    server = point.server if point else "local"
    usd_h = next((p.offer.on_demand_usd_h for p in survey.profiles if p.server == server), 0.0) if survey else 0.0
    return CostEstimate(round(float(getattr(point, cost_field, 0.0) or 0.0) * share, 6), server, usd_h)


# ----------------------------------------------------------------------------- servers, pairs, plan
def run_benchmark_servers(ctx: ToolContext, args: BenchmarkServersArgs) -> ToolOutcome:
    from stratos_agent.tools.survey import survey_servers

    survey = survey_servers(ctx.spec, refresh=args.refresh)
    here = [p for p in survey.profiles if p.offer.is_local]
    return ToolOutcome(survey, {
        "servers": len({p.server for p in survey.profiles}),
        "request_shape": survey.shape.model_dump() if survey.shape else "as in the spec",
        "executable": survey.clouds_note,
        "measured_here": [{"model": m.model, "p95_ms": round(m.p95_ms, 1)} for m in survey.measured],
        "this_machine": [{"student": p.model, "p95_ms": p.p95_ms and round(p.p95_ms.value, 1)} for p in here],
    })


def run_score_pairs(ctx: ToolContext, args: ScorePairsArgs) -> ToolOutcome:
    from stratos_agent.tools.survey import score_pairs_here

    table = score_pairs_here(ctx.spec, ctx.state.get("servers"), args.probe_n or local_sizes().probe_n)
    best = [{"teacher": p.teacher, "student": p.student, "strategy": p.decision.strategy, "score": round(p.score, 3)}
            for p in table.pairs[:3]]
    return ToolOutcome(table, {"probes": table.probes, "best": best})


def run_make_plan(ctx: ToolContext, args: MakePlanArgs) -> ToolOutcome:
    from stratos_agent.tools.survey import plan_here

    spec = ctx.spec.model_copy(update={"preference": args.preference}) if args.preference else ctx.spec
    plan = plan_here(spec, ctx.state.get("servers"), ctx.need("pairs"))
    point = plan.chosen
    return ToolOutcome(plan, {"feasible": plan.feasible, "chosen": point.label() if point else None,
                              "cost_usd": point.cost_usd if point else None, "why": plan.why,
                              "front_size": len(plan.front)})


# ----------------------------------------------------------------------------- data
def synth_suggest(ctx: ToolContext) -> dict[str, Any]:
    from stratos_agent.tools.synth import choose_mode

    point = ctx.chosen
    n = ctx.spec.data_size or (point.data_size if point else local_sizes().synth_n)
    pairs: PairTable | None = ctx.state.get("pairs")
    mode = "solver" if point is None else choose_mode(
        point.strategy, point.teacher, pairs.probes.get(point.teacher) if pairs else None)
    return {"n": n, "mode": mode, "seed": 0}


def synth_estimate(ctx: ToolContext, args: SynthesizeDataArgs) -> CostEstimate:
    planned = ctx.chosen.data_size if ctx.chosen else None
    return stage_cost(ctx, "cost_synthesis_usd", (args.n or 0) / planned if planned else 1.0)


def run_synth(ctx: ToolContext, args: SynthesizeDataArgs) -> ToolOutcome:
    from stratos_agent.tools import synth

    task, recipe = ctx.spec.task, recipe_for(ctx.spec.task)
    out = ctx.run_dir / "data" / f"{args.mode}-n{args.n}-s{args.seed}"
    teacher = None if args.mode == "solver" or ctx.chosen is None else plan_teacher(ctx.chosen.teacher)
    with progress_bar(f"synth {args.mode}", args.n or 0) as update:
        ref = synth.synthesize(recipe.pack(task, "student"), args.n, out, mode=args.mode, seed=args.seed,
                               teacher=teacher, distribution="even",
                               style=recipe.style if args.mode == "solver" else None,
                               progress=lambda p: update(p.accepted, p.rejected))
    card = ref.card
    return ToolOutcome(ref, {"path": str(ref.path), "rows": card.n_accepted, "splits": card.split_counts,
                             "rejections": card.rejections, "mode": card.mode})


def plan_teacher(teacher: str) -> Any:
    """The plan's teacher as a synthesis client: an `endpoint:NAME` at OPENAI_BASE_URL, else in-process."""
    from stratos_agent.tools.teachers import make_teacher

    if teacher.startswith("endpoint:"):
        return make_teacher(endpoint=get_settings().openai_base_url, model_name=teacher.removeprefix("endpoint:"))
    return make_teacher(teacher)


# ----------------------------------------------------------------------------- training
def train_suggest(ctx: ToolContext) -> dict[str, Any]:
    from stratos_agent.tools.train import planned_steps

    return {"max_steps": planned_steps(ctx.chosen)} if ctx.chosen else {}


def train_estimate(ctx: ToolContext, args: TrainStudentArgs) -> CostEstimate:
    planned = train_suggest(ctx).get("max_steps") or args.max_steps or 1
    return stage_cost(ctx, "cost_training_usd", (args.max_steps or planned) / planned)


def train_on_from(state: Any) -> tuple[int, str | None]:
    """(round, weights to start from): round 0 is the planned training; each 'train on' decision of the
    result gate starts a further round from the last round's weights."""
    rounds = [a for a in state.get("adaptations") or [] if a.get("decision") == "train on"]
    return len(rounds), rounds[-1]["model_dir"] if rounds else None


def train_key(state: Any) -> Any:
    point = state["plan"].chosen
    return [state["dataset"].card.fingerprint, point.model_dump(include={"student", "teacher", "strategy", "lora_rank"}),
            train_on_from(state)]


def train_config(ctx: ToolContext, args: TrainStudentArgs) -> TrainConfig:
    from stratos_agent.tools.train import config_from_plan, trained_lineage

    deadline = ctx.spec.constraints.deadline_hours  # the only time box: the user's, visible in the spec
    config = config_from_plan(ctx.need("plan"), ctx.need("dataset"), recipe_for(ctx.spec.task),
                              run_name=f"{ctx.state.get('thread_id', 'run')}-student", max_steps=args.max_steps,
                              learning_rate=args.learning_rate, save_steps=local_sizes().save_steps,
                              time_limit_s=deadline * 3600 if deadline else None)
    round_, start = train_on_from(ctx.state)
    if start is None:
        return config
    lineage, seen = trained_lineage(start)  # the round it continues: its learning curve goes on from there
    return config.model_copy(update={"base_model": start, "run_name": f"{config.run_name}-r{round_}",
                                     "lineage": lineage, "examples_before": seen})


def run_train(ctx: ToolContext, args: TrainStudentArgs) -> ToolOutcome:
    from stratos_agent.tools import launch_specs
    from stratos_agent.tools import train as trainer

    config = train_config(ctx, args)
    if not ctx.runs_locally:
        cloud = ctx.run_dir / "cloud"
        request = launch_specs.training_from_plan(ctx.need("plan"), config, cloud)
        launch_specs.cloud_stop("train", request, ctx.chosen.server, cloud)  # type: ignore[union-attr]
    round_, _ = train_on_from(ctx.state)
    student = trainer.train(config, run_dir=ctx.run_dir / ("train" if round_ == 0 else f"train-r{round_}"))
    return ToolOutcome(student, {"model_dir": str(student.model_dir), "method": student.method_detail,
                                 "steps": student.global_step, "train_loss": student.train_loss,
                                 "resumed_from_step": student.resumed_from_step,
                                 "train_seconds": student.train_seconds,
                                 "peak_rss_gib": round(student.peak_rss_bytes / 2**30, 2)})


# ----------------------------------------------------------------------------- evaluation, deployment
def run_evaluate(ctx: ToolContext, args: EvaluateStudentArgs) -> ToolOutcome:
    from stratos_agent.tools.evaluate import evaluate_pair

    dataset: DatasetRef = ctx.need("dataset")
    test = dataset.public_jsonl.get("test")
    if test is None:
        raise InputError(f"the dataset in {dataset.path} has no test split to evaluate on")
    model: StudentModel = ctx.need("model")
    teacher = ctx.chosen.teacher if ctx.chosen else "smollm2-135m"
    result = evaluate_pair(ctx.spec.task, test, model.model_dir, teacher, recipe_for(ctx.spec.task),
                           limit=args.n, threads=get_settings().threads, teacher_cache=ctx.run_dir / "eval",
                           natural=dataset.public_jsonl.get("test_natural"))
    if model.learning_curve is not None:  # the test split measured the final model too: the next plan reads both
        from stratos_agent.tools.calibration import pool_evaluation

        ci = result.student.exact_match_ci
        pool_evaluation(model.learning_curve, ci.successes, ci.n, yardstick=f"test split, n={ci.n}")
    summary = {
        "n": result.n, "student_exact_match": round(result.student.exact_match, 4),
        "teacher_exact_match": round(result.teacher.exact_match, 4) if result.teacher else None,
        "baselines": {b.name: b.exact_match.value for b in result.baselines},
        "student_p95_ms": round(result.student.latency_p95_ms, 1),
    }
    if result.natural is not None:  # the task's own mix, next to the even one the gate decides on
        summary |= {"natural_student_exact_match": round(result.natural.student.exact_match, 4),
                    "natural_baselines": {b.name: b.exact_match.value for b in result.natural.baselines}}
    return ToolOutcome(result, summary)


def deploy_time_left(state: Any) -> float:
    """Seconds of the deployment deadline left by the attempts that failed in a row since the last human
    turn (the `errors` count, which a human turn resets; their wall times are in the ledger)."""
    in_a_row = (state.get("errors") or {}).get("deploy_student", 0)
    failed = [e for e in state.get("ledger") or [] if e.get("stage") == "deployment" and e.get("failed")]
    return DEPLOY_DEADLINE_S - sum(e.get("wall_s") or 0.0 for e in failed[len(failed) - in_a_row:])


def run_deploy(ctx: ToolContext, args: DeployStudentArgs) -> ToolOutcome:
    from stratos_agent.tools import deploy, launch_specs
    from stratos_agent.tools.load_test import DEPLOYED_BUDGET_S, load_test
    from stratos_agent.tools.survey import planned_spec

    left = deploy_time_left(ctx.state)
    if left <= 0:
        raise DeployDeadline(f"the deployment's earlier attempts used its whole {DEPLOY_DEADLINE_S:.0f} s deadline "
                             "without a healthy server; see the server log, fix the cause, then `stratos resume`")
    model: StudentModel = ctx.need("model")
    if not ctx.runs_locally:
        cloud = ctx.run_dir / "cloud"
        spec = planned_spec(ctx.spec, ctx.state.get("servers"))
        request = launch_specs.service_from_plan(ctx.need("plan"), model.model_dir, spec=spec)
        launch_specs.cloud_stop("serve", request, ctx.chosen.server, cloud)  # type: ignore[union-attr]
    with CONSOLE.status("deploying the student") as status:
        dep = deploy.deploy_local(model.model_dir, port=args.port, task=ctx.spec.task.split(":")[0],
                                  name=str(ctx.state.get("thread_id", "student")), on_status=status.update,
                                  timeout_s=min(DEPLOY_WAIT_S, left))
        status.update("measuring the endpoint's latency with the task's prompts")
        spec, recipe = ctx.spec, recipe_for(ctx.spec.task)
        latency = load_test(dep.base_url, dep.model, recipe.pack(spec.task, "student"),
                            concurrency=spec.traffic.concurrency, max_tokens=recipe.student_tokens,
                            api_key=dep.generated_api_key, time_budget_s=DEPLOYED_BUDGET_S)
    dep = dep.model_copy(update={"load_test": latency})
    smoke = dep.smoke
    return ToolOutcome(dep, {"base_url": dep.base_url, "model": dep.model, "reused": dep.reused,
                             "smoke_ok": smoke.ok if smoke else None,
                             "smoke_latency_ms": round(smoke.latency_s * 1000, 1) if smoke and smoke.latency_s else None,
                             "measured_p95_ms": latency.p95_ms,
                             "plan_p95_ms": ctx.chosen.p95_ms if ctx.chosen else None})


def default_toolset(runners: dict[str, Any] | None = None) -> Toolset:
    """The Stratos tools in lifecycle order. `runners` replaces adapters by tool name (tests)."""
    runners = runners or {}

    def spec(name: str, run: Any, **kw: Any) -> ToolSpec:
        return ToolSpec(name=name, run=runners.get(name) or run, **kw)

    specs = [
        spec("benchmark_servers", run_benchmark_servers, args=BenchmarkServersArgs, record=ServerSurvey,
             produces="servers", requires=("spec",), key_inputs=lambda s: s["spec"].traffic.model_dump()),
        spec("score_pairs", run_score_pairs, args=ScorePairsArgs, record=PairTable, produces="pairs",
             requires=("spec", "servers"), suggest=lambda ctx: {"probe_n": local_sizes().probe_n},
             key_inputs=lambda s: s["spec"].model_dump(include={"task", "teacher", "student"})),
        spec("make_plan", run_make_plan, args=MakePlanArgs, record=Plan, produces="plan",
             requires=("spec", "servers", "pairs")),
        spec("synthesize_data", run_synth, args=SynthesizeDataArgs, record=DatasetRef, produces="dataset",
             requires=("spec", "plan"), estimate=synth_estimate, spends=True, suggest=synth_suggest,
             key_inputs=lambda s: s["spec"].task),
        spec("train_student", run_train, args=TrainStudentArgs, record=StudentModel, produces="model",
             requires=("plan", "dataset"), estimate=train_estimate, spends=True, suggest=train_suggest,
             key_inputs=train_key),
        spec("evaluate_student", run_evaluate, args=EvaluateStudentArgs, record=Comparison, produces="eval",
             requires=("model", "dataset"), suggest=lambda ctx: {"n": local_sizes().eval_n},
             key_inputs=lambda s: [str(s["model"].model_dir), s["model"].config_fingerprint, str(s["dataset"].path)]),
        spec("deploy_student", run_deploy, args=DeployStudentArgs, record=Deployment, produces="deployment",
             requires=("model", "eval"), estimate=lambda ctx, args: stage_cost(ctx, "cost_serving_usd"),
             needs_deploy_approval=True, key_inputs=lambda s: str(s["model"].model_dir)),
    ]
    return Toolset({s.name: s for s in specs})
