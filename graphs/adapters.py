"""Tool adapters: state + validated arguments -> a call of the real tool function -> a state slot.

One adapter per tool. An adapter reads what it needs from the state (spec, plan, earlier records),
calls the tool (which knows nothing of LangGraph), and returns the tool's record as JSON plus a short
summary for the planner. Sizes on this machine are capped (`local()`) so the embedded default finishes in
minutes on 2 CPU cores; on a GPU plan the plan's own sizes are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
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
from stratos_agent.state import dump

# Sizes for a run on this (CPU) machine: a few thousand solver examples, a few minutes of training,
# ~100 hold-out items. Why: `make demo` must reach a live endpoint within ~10 minutes on 2 cores.
# Each can be overridden by an environment variable (tests use tiny ones): STRATOS_LOCAL_SYNTH_N, ...
LOCAL_DEFAULTS: dict[str, Any] = {
    "synth_n": 3000,
    "train_minutes": 4.0,
    "eval_n": 100,
    "probe_n": 8,
    "save_steps": 25,
}


def local(key: str) -> Any:
    """A local size, read when used (so a test or a user can change it by environment at any time)."""
    default = LOCAL_DEFAULTS[key]
    return type(default)(os.environ.get(f"STRATOS_LOCAL_{key.upper()}", default))


CONSOLE = Console(stderr=True)  # progress goes to stderr: `--json` keeps stdout to one JSON object
BENCH = {"batches": (1, 4), "requests": 4}  # enough decode points to calibrate the roofline, half the time


# ----------------------------------------------------------------------------- plan helpers
def chosen(ctx_state: dict[str, Any]) -> dict[str, Any]:
    return ((ctx_state.get("plan") or {}).get("chosen")) or {}


def runs_locally(state: dict[str, Any]) -> bool:
    point = chosen(state)
    return not point or str(point.get("server", "")).startswith("local:")


def _price(state: dict[str, Any]) -> tuple[str, float]:
    """The chosen server and its on-demand $/h (per instance), from the benchmark_servers profiles."""
    server = chosen(state).get("server") or "local"
    for profile in (state.get("servers") or {}).get("profiles", []):
        if profile.get("server") == server:
            return server, float(profile.get("usd_per_hour") or 0.0)
    return server, 0.0


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
    n = int(ctx.spec.get("data_size") or point.get("data_size") or local("synth_n"))
    if runs_locally(ctx.state):
        n = min(n, local("synth_n"))
    mode = "solver" if point.get("strategy", "injection") == "injection" else "forward"
    return {"n": n, "mode": mode, "seed": 0}


def run_synth(ctx: ToolContext, args: SynthesizeDataArgs) -> ToolOutcome:
    synth = _require("synth", "H3")
    plan_args = {**synth_suggest(ctx), **args.model_dump(exclude_none=True)}
    out = ctx.run_dir / "data" / f"{plan_args['mode']}-n{plan_args['n']}-s{plan_args['seed']}"
    task = ctx.spec["task"]
    style = recipe(task)["style"] if plan_args["mode"] == "solver" else None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("synth {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rejected {task.fields[rejected]}"),
        TimeElapsedColumn(),
        console=CONSOLE,
    ) as bar:
        job = bar.add_task(plan_args["mode"], total=plan_args["n"], rejected=0)
        ref = synth.synthesize(
            pack_for(task, "student"),
            plan_args["n"],
            out,
            mode=plan_args["mode"],
            seed=plan_args["seed"],
            distribution="even",
            style=style,
            progress=lambda p: bar.update(job, completed=p.accepted, rejected=p.rejected),
        )
    card = ref.card
    return ToolOutcome(
        dump(ref),
        {
            "path": str(ref.path),
            "rows": card.n_accepted,
            "splits": card.split_counts,
            "rejections": card.rejections,
            "mode": card.mode,
        },
    )


def synth_estimate(ctx: ToolContext, args: SynthesizeDataArgs) -> CostEstimate:
    n = args.n or synth_suggest(ctx)["n"]
    return _scaled(ctx, "cost_synthesis_usd", n, float(chosen(ctx.state).get("data_size") or n))


def _spec(ctx: ToolContext, **over: Any) -> Any:
    """The spec as planned: the user's, plus what benchmark_servers measured (request shape, executable
    clouds) where the user left it open."""
    from stratos_agent.spec import DistillationSpec

    data = {**ctx.spec, **over}
    servers = ctx.state.get("servers") or {}
    if servers.get("traffic"):
        data["traffic"] = {**(data.get("traffic") or {}), **servers["traffic"]}
    return DistillationSpec.model_validate(data)


def _gather(ctx: ToolContext, spec: Any, everywhere: bool = False) -> Any:
    """Planning inputs restricted to where this agent can execute (unless `everywhere` or the user named
    clouds). The catalog knows no 'local' provider, so "this machine only" is asked as gpus=['CPU']."""
    from stratos_agent.tools import planning

    executable = (ctx.state.get("servers") or {}).get("executable_clouds")
    if everywhere or spec.constraints.clouds or executable is None:
        return planning.gather_inputs(spec)
    clouds = [c for c in executable if c != "local"]
    if not clouds:
        return planning.gather_inputs(spec, gpus=["CPU"])
    return planning.gather_inputs(
        spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": clouds})})
    )


def _restricted(ctx: ToolContext) -> bool:
    servers = ctx.state.get("servers") or {}
    return servers.get("executable_clouds") is not None and not (ctx.spec.get("constraints") or {}).get(
        "clouds"
    )


def task_shape(task: str, n: int = 64) -> dict[str, int]:
    """Prompt and answer tokens of the task as the student sees it (chat-formatted, student tokenizer):
    mean prompt length, 95th-percentile answer length. The planner's latency model needs the real shape."""
    from stratos_agent.tools.train import CHATML
    from transformers import AutoTokenizer

    from stratos_agent.models import local_model_path

    pack = pack_for(task, "student")
    tok = AutoTokenizer.from_pretrained(local_model_path("smollm2-135m"))
    items = pack.sample(n, seed=7)
    prompts = [
        len(
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": pack.render_prompt(it)}],
                    chat_template=CHATML,
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )["input_ids"]
        )
        for it in items
    ]
    style = recipe(task)["style"]
    answers = sorted(
        len(tok(pack.solver_rationale(it, style))["input_ids"]) + 1 for it in items
    )  # + end token
    return {
        "prompt_tokens": -(-sum(prompts) // len(prompts)),
        "output_tokens": answers[int(0.95 * (len(answers) - 1))],
    }


def executable_clouds() -> tuple[list[str] | None, str]:
    """Where this agent can actually run a plan: clouds SkyPilot has credentials for, plus this machine.
    None = SkyPilot reports credentials for every cloud it knows (no restriction needed)."""
    from stratos_agent.tools import launch_specs

    from stratos_agent.errors import StratosError

    try:
        enabled = launch_specs.enabled_clouds()
    except StratosError as exc:
        return ["local"], f"SkyPilot unavailable ({exc}); planning for this machine only"
    if not enabled:
        return ["local"], "SkyPilot has no cloud credentials; planning for this machine only"
    return ["local", *enabled], f"SkyPilot credentials for {', '.join(enabled)}"


def run_benchmark_servers(ctx: ToolContext, args: BenchmarkServersArgs) -> ToolOutcome:
    """Measure the candidate students on this machine (cached per day), then model every catalog server."""
    from stratos_agent.tools import planning, server_bench

    from stratos_agent.spec import Traffic

    user_traffic = ctx.spec.get("traffic") or {}
    default = Traffic().model_dump()
    shape = (
        {}
        if any(user_traffic.get(k) != default[k] for k in ("prompt_tokens", "output_tokens"))
        else task_shape(ctx.spec["task"])
    )
    clouds, clouds_note = executable_clouds()
    ctx_state = {**ctx.state, "servers": {"traffic": shape}}
    spec = _spec(ToolContext(state=ctx_state, run_dir=ctx.run_dir))  # type: ignore[arg-type]
    inputs = planning.gather_inputs(spec)  # every server the user allows; the plan keeps executable ones
    local = next((o for o in inputs.offers if o.is_local), None)
    measured = []
    if local is not None:
        for student in inputs.students:
            measured.append(
                server_bench.bench_model(
                    student.id,
                    prompt_tokens=spec.traffic.prompt_tokens,
                    output_tokens=spec.traffic.output_tokens,
                    force=args.refresh,
                    **BENCH,
                )
            )
        inputs = planning.gather_inputs(spec, local=local)  # now calibrated on the fresh measurements
    table = planning.serving_table(spec, inputs)
    profiles = [
        {
            "server": offer.id,
            "gpu": offer.gpu,
            "gpu_count": offer.gpu_count,
            "usd_per_hour": offer.on_demand_usd_h,
            "student": student.id,
            "fits": bool(table.fits[i, j]),
            "p95_ms": round(float(table.p95_ms[i, j]), 2),
            "capacity_qps": round(float(table.capacity_qps[i, j]), 3),
            "instances": int(table.instances[i, j]),
            "serving_usd": round(float(table.cost_usd[i, j]), 2),
            "source": str(table.source[i, j]),
        }
        for i, offer in enumerate(inputs.offers)
        for j, student in enumerate(inputs.students)
    ]
    value = {
        "profiles": profiles,
        "measured": dump(measured),
        "catalog_date": inputs.catalog_date,
        "catalog_age_days": inputs.catalog_age_days,
        "local": dump(local),
        "traffic": shape,
        "executable_clouds": clouds,
        "clouds_note": clouds_note,
    }
    fits = [p for p in profiles if p["fits"]]
    best = min(fits, key=lambda p: p["p95_ms"], default=None)
    local_rows = [p for p in profiles if p["server"].startswith("local:")]
    return ToolOutcome(
        value,
        {
            "servers": len(inputs.offers),
            "students": [s.id for s in inputs.students],
            "request_shape": shape or "as in the spec",
            "executable": clouds_note,
            "measured_here": [{"model": m.model, "p95_ms": round(m.p95_ms, 1)} for m in measured],
            "this_machine": [{k: p[k] for k in ("student", "p95_ms", "source")} for p in local_rows],
            "fastest": best and {k: best[k] for k in ("server", "student", "p95_ms", "source")},
        },
    )


def pairs_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {"probe_n": local("probe_n")}


def run_score_pairs(ctx: ToolContext, args: ScorePairsArgs) -> ToolOutcome:
    """Probe each teacher on the task (forward synthesis, cached) and score every teacher x student pair."""
    from stratos_agent.tools import pairing, planning

    spec = _spec(ctx)
    inputs = _gather(ctx, spec)
    probe_n = args.probe_n or local("probe_n")
    probes = pairing.run_probes(spec.task, [t.id for t in inputs.teachers], n=probe_n)
    table = planning.serving_table(spec, inputs)
    pairs = pairing.score_pairs(
        inputs.task,
        inputs.teachers,
        inputs.students,
        probes,
        inputs.teacher_usd_per_1k,
        planning.student_serving_summary(table, inputs),
    )
    if not pairs:
        raise InputError("no teacher/student pair: every student is larger than every teacher")
    return ToolOutcome(
        {"pairs": dump(pairs), "probes": probes, "probe_n": probe_n},
        {
            "probes": probes,
            "best": [
                {
                    "teacher": p.teacher,
                    "student": p.student,
                    "strategy": p.decision.strategy,
                    "score": round(p.score, 3),
                }
                for p in pairs[:3]
            ],
        },
    )


def run_make_plan(ctx: ToolContext, args: MakePlanArgs) -> ToolOutcome:
    """Pareto plan over the servers and scored pairs (tools/planning.py)."""
    from stratos_agent.tools import planning

    from stratos_agent.records.plans import PairScore

    spec = _spec(ctx, **({"preference": args.preference} if args.preference else {}))
    pairs = [PairScore.model_validate(p) for p in (ctx.state.get("pairs") or {}).get("pairs", [])]
    plan = planning.make_plan(spec, _gather(ctx, spec), pairs)
    value = dump(plan)
    note = (ctx.state.get("servers") or {}).get("clouds_note")
    if _restricted(ctx):
        # Also plan over the whole catalog, so the report shows what a cloud run would trade.
        wide = planning.make_plan(spec, _gather(ctx, spec, everywhere=True), pairs)
        value["catalog_plan"] = {
            "chosen": dump(wide.chosen),
            "why": wide.why,
            "feasible": wide.feasible,
            "front": dump(wide.front[:40]),
        }
        value["why"] = f"{plan.why} [{note}.]"
    point = plan.chosen
    return ToolOutcome(
        value,
        {
            "feasible": plan.feasible,
            "chosen": point.label() if point else None,
            "cost_usd": point.cost_usd if point else None,
            "why": value["why"],
            "front_size": len(plan.front),
        },
    )


# Per-task training recipe (what the task owners found works for a small student; tools/train.py and
# evals/mahjong_quality.py): the prompt variant the student learns, the rationale style, answer lengths.
RECIPES: dict[str, dict[str, Any]] = {
    "mahjong": {
        "student_pack": {"prompt": "short"},
        "teacher_pack": {},
        "style": "answer",
        "student_tokens": 24,
        "teacher_tokens": 64,
        "max_seq_len": 256,
    },
}
DEFAULT_RECIPE: dict[str, Any] = {
    "student_pack": {},
    "teacher_pack": {},
    "style": None,
    "student_tokens": 256,
    "teacher_tokens": 256,
    "max_seq_len": 512,
}


def recipe(task: str) -> dict[str, Any]:
    return RECIPES.get(task.split(":")[0], DEFAULT_RECIPE)


def pack_for(task: str, role: str) -> Any:
    from stratos_agent.tasks import get_task_pack

    return get_task_pack(task, **recipe(task)[f"{role}_pack"])


def train_suggest(ctx: ToolContext) -> dict[str, Any]:
    point = chosen(ctx.state)
    rows = int(((ctx.state.get("dataset") or {}).get("card") or {}).get("split_counts", {}).get("train", 0))
    rows = rows or int(point.get("data_size") or local("synth_n"))
    steps = max(1, -(-rows // 8))  # one epoch at batch 8 (the TrainConfig default batch)
    return {"max_steps": steps}


def train_key(state: dict[str, Any]) -> Any:
    point = chosen(state)
    return [
        (state.get("dataset") or {}).get("card", {}).get("fingerprint"),
        {k: point.get(k) for k in ("student", "teacher", "strategy", "lora_rank")},
    ]


def train_estimate(ctx: ToolContext, args: TrainStudentArgs) -> CostEstimate:
    planned = float(train_suggest(ctx)["max_steps"])
    return _scaled(ctx, "cost_training_usd", float(args.max_steps or planned), planned)


def _cloud_stop(ctx: ToolContext, kind: str) -> None:
    """A plan on a cloud server: write the SkyPilot YAML and stop with the exact command (never fake it)."""
    from stratos_agent.tools import launch_specs

    plan = ctx.state["plan"]
    if kind == "train":
        request = launch_specs.training_from_plan(plan, ctx.run_dir)
    else:
        request = launch_specs.service_from_plan(
            plan, (ctx.state.get("model") or {}).get("model_dir", ""), spec=_spec(ctx)
        )
    spec = launch_specs.build_skypilot_yaml(request, ctx.run_dir / "cloud" / f"{kind}.yaml")
    raise ResourceError(
        f"the plan runs {kind} on {chosen(ctx.state).get('server')}; this agent executes on the "
        f"local machine only. Launch it with: {' '.join(spec.command)}  (YAML: {spec.yaml_path}), "
        "or edit the spec (clouds=local) to plan for this machine."
    )


def train_config(ctx: ToolContext, args: TrainStudentArgs) -> Any:
    """The TrainConfig for the plan's student, strategy and LoRA rank (evals/bench_overhead.py too)."""
    from stratos_agent.tools.train import CHATML

    from stratos_agent.records.training import TrainConfig
    from stratos_agent.settings import get_settings

    point = chosen(ctx.state)
    task = ctx.spec["task"]
    rank = int(point.get("lora_rank") or 0)
    logit = point.get("strategy") == "alignment-logit"
    dataset = ctx.state["dataset"]
    return TrainConfig(
        run_name=f"{ctx.state.get('thread_id', 'run')}-student",
        base_model=point.get("student") or "smollm2-135m",
        method="distill" if logit else "sft",
        data=Path(dataset["hf_path"]),
        data_card=str(Path(dataset["path"]) / "data_card.md"),
        task=task.split(":")[0],
        lora=rank > 0,
        lora_r=rank or 16,
        lora_alpha=2 * (rank or 16),
        learning_rate=args.learning_rate or (1e-3 if rank else 1e-4),
        lr_scheduler="constant_with_warmup",
        max_steps=args.max_steps or train_suggest(ctx)["max_steps"],
        max_seq_len=recipe(task)["max_seq_len"],
        save_steps=local("save_steps"),
        logging_steps=5,
        chat_template=CHATML,
        time_limit_s=local("train_minutes") * 60,
        threads=get_settings().threads,
        teacher_model=point.get("teacher") if logit else None,
        distill_mode="logit" if logit else "auto",
    )


def run_train(ctx: ToolContext, args: TrainStudentArgs) -> ToolOutcome:
    """SFT (injection / sequence KD) or logit KD of the plan's student on the dataset, resumable."""
    from stratos_agent.tools import train as trainer

    if not runs_locally(ctx.state):
        _cloud_stop(ctx, "train")
    student = trainer.train(train_config(ctx, args), run_dir=ctx.run_dir / "train")
    return ToolOutcome(
        dump(student),
        {
            "model_dir": str(student.model_dir),
            "method": student.method_detail,
            "steps": student.global_step,
            "train_loss": student.train_loss,
            "resumed_from_step": student.resumed_from_step,
            "train_seconds": student.train_seconds,
            "peak_rss_gib": round(student.peak_rss_bytes / 2**30, 2),
        },
    )


def eval_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {"n": local("eval_n")}


def run_evaluate(ctx: ToolContext, args: EvaluateStudentArgs) -> ToolOutcome:
    """Student and teacher on the same held-out test items (+ trivial baselines)."""
    from stratos_agent.tools import evaluate as ev

    from stratos_agent.settings import get_settings

    task = ctx.spec["task"]
    rec = recipe(task)
    dataset = ctx.state["dataset"]
    test = (dataset.get("public_jsonl") or {}).get("test")
    if not test:
        raise InputError(f"the dataset in {dataset.get('path')} has no test split to evaluate on")
    n = args.n or local("eval_n")
    threads = get_settings().threads
    student = ev.evaluate(
        pack_for(task, "student"),
        test,
        model=ctx.state["model"]["model_dir"],
        limit=n,
        max_new_tokens=rec["student_tokens"],
        threads=threads,
    )
    teacher_id = chosen(ctx.state).get("teacher") or "smollm2-135m"
    if teacher_id.startswith("endpoint:"):
        teacher = ev.evaluate(
            pack_for(task, "teacher"),
            test,
            endpoint=get_settings().openai_base_url,
            model_name=teacher_id.removeprefix("endpoint:"),
            limit=n,
            max_new_tokens=rec["teacher_tokens"],
        )
    else:
        teacher = ev.evaluate(
            pack_for(task, "teacher"),
            test,
            model=teacher_id,
            limit=n,
            max_new_tokens=rec["teacher_tokens"],
            threads=threads,
        )
    comparison = ev.compare(pack_for(task, "student"), test, student, teacher, limit=n)
    by = {r.difficulty: r.exact_match.value for r in student.by_difficulty}
    value = {
        **dump(comparison),
        "n": student.n,
        "student_accuracy": student.exact_match,
        "teacher_accuracy": teacher.exact_match,
        "student_ci95": [student.exact_match_ci.low, student.exact_match_ci.high],
        "student_by_difficulty": by,
        "teacher_by_difficulty": {r.difficulty: r.exact_match.value for r in teacher.by_difficulty},
        "baselines": {b.name: b.exact_match.value for b in comparison.baselines},
        "student_p50_ms": student.latency_p50_ms,
        "student_p95_ms": student.latency_p95_ms,
        "student_tokens_per_s": student.tokens_per_s,
        "teacher_p95_ms": teacher.latency_p95_ms,
        "student_parse_failure_rate": student.parse_failure_rate,
    }
    return ToolOutcome(
        value,
        {
            "n": student.n,
            "student_exact_match": round(student.exact_match, 4),
            "teacher_exact_match": round(teacher.exact_match, 4),
            "baselines": value["baselines"],
            "student_p95_ms": round(student.latency_p95_ms, 1),
        },
    )


def deploy_suggest(ctx: ToolContext) -> dict[str, Any]:
    return {}


def deploy_estimate(ctx: ToolContext, args: DeployStudentArgs) -> CostEstimate:
    return _scaled(ctx, "cost_serving_usd", 1.0, 1.0)


def run_deploy(ctx: ToolContext, args: DeployStudentArgs) -> ToolOutcome:
    """Serve the student with vLLM here (reusing an identical live server) and smoke-query it."""
    from stratos_agent.tools import deploy

    if not runs_locally(ctx.state):
        _cloud_stop(ctx, "serve")
    task = ctx.spec["task"]
    with CONSOLE.status("deploying the student") as status:
        dep = deploy.deploy_local(
            ctx.state["model"]["model_dir"],
            port=args.port,
            task=task.split(":")[0],
            name=f"{ctx.state.get('thread_id', 'student')}",
            on_status=status.update,
        )
    smoke = dep.smoke
    value = {
        **dump(dep),
        "smoke_ok": smoke.ok if smoke else None,
        "smoke_answer": smoke.response[:200] if smoke else None,
        "smoke_latency_ms": round(smoke.latency_s * 1000, 1) if smoke and smoke.latency_s else None,
    }
    return ToolOutcome(
        value,
        {
            "base_url": dep.base_url,
            "model": dep.model,
            "reused": dep.reused,
            "smoke_ok": value["smoke_ok"],
            "smoke_latency_ms": value["smoke_latency_ms"],
        },
    )


def default_toolset(runners: dict[str, Any] | None = None) -> Toolset:
    """The Stratos tools in lifecycle order. `runners` replaces adapters by tool name (tests)."""
    runners = runners or {}
    specs = [
        ToolSpec(
            "benchmark_servers",
            BenchmarkServersArgs,
            "servers",
            ("spec",),
            runners.get("benchmark_servers") or run_benchmark_servers,
            key_inputs=lambda s: (s.get("spec") or {}).get("traffic"),
            clears=("pairs", "plan"),
        ),
        ToolSpec(
            "score_pairs",
            ScorePairsArgs,
            "pairs",
            ("spec", "servers"),
            runners.get("score_pairs") or run_score_pairs,
            suggest=pairs_suggest,
            key_inputs=lambda s: [(s.get("spec") or {}).get(k) for k in ("task", "teacher", "student")],
            clears=("plan",),
        ),
        ToolSpec(
            "make_plan",
            MakePlanArgs,
            "plan",
            ("spec", "servers", "pairs"),
            runners.get("make_plan") or run_make_plan,
            clears=("dataset", "model", "eval", "deployment"),
            key_inputs=lambda s: [s.get("spec"), s.get("servers"), s.get("pairs")],
        ),
        ToolSpec(
            "synthesize_data",
            SynthesizeDataArgs,
            "dataset",
            ("spec", "plan"),
            runners.get("synthesize_data") or run_synth,
            estimate=synth_estimate,
            spends=True,
            suggest=synth_suggest,
            key_inputs=lambda s: (s.get("spec") or {}).get("task"),
            clears=("model", "eval", "deployment"),
        ),
        ToolSpec(
            "train_student",
            TrainStudentArgs,
            "model",
            ("plan", "dataset"),
            runners.get("train_student") or run_train,
            estimate=train_estimate,
            spends=True,
            suggest=train_suggest,
            key_inputs=train_key,
            clears=("eval", "deployment"),
        ),
        ToolSpec(
            "evaluate_student",
            EvaluateStudentArgs,
            "eval",
            ("model", "dataset"),
            runners.get("evaluate_student") or run_evaluate,
            suggest=eval_suggest,
            key_inputs=lambda s: [
                (s.get("model") or {}).get("model_dir"),
                (s.get("dataset") or {}).get("path"),
            ],
            clears=("deployment",),
        ),
        ToolSpec(
            "deploy_student",
            DeployStudentArgs,
            "deployment",
            ("model", "eval"),
            runners.get("deploy_student") or run_deploy,
            estimate=deploy_estimate,
            needs_deploy_approval=True,
            suggest=deploy_suggest,
            key_inputs=lambda s: (s.get("model") or {}).get("model_dir"),
        ),
    ]
    return Toolset({spec.name: spec for spec in specs})


__all__ = ["LOCAL_DEFAULTS", "RECIPES", "default_toolset", "local", "recipe", "runs_locally"]
