"""Plan quality, measured: the planner's choice against single-objective choices, each actually run.

No score here comes from the planner's own model. For each spec (local Mahjong specs; this machine is the
only server at hand) the agent plans as `stratos run` does (its measured curves, the vLLM latency probe),
then three points of the plan's Pareto front are run as small local versions:
  - chosen:         the planner's choice (the knee of the front, tools/planning.choose);
  - accuracy-first: the most accurate feasible candidate (not only the front's: a local front often
                    holds one point);
  - cost-first:     the cheapest feasible candidate (every local one costs $0 here, so the one with the
                    least machine time: what a rented machine would charge for).
Each is synthesised (solver-verified data), trained on `--scale` of its planned examples (all three shrink
alike), evaluated on `--eval-n` items of its own held-out test split (disjoint from its training data by
canonical key), and served by vLLM for a load test at the spec's concurrency. Measured per point: exact
match, machine time (synthesis + training wall seconds: the cost of this machine's time), endpoint p95.

Deployment score (higher is better), relative to the points run for the spec:
    S = 0.35 g_acc + 0.35 g_cost + 0.15 g_p95 + 0.15 g_time
g_x in [0, 1] places a point between the worst (0) and best (1) measured value among them; cost (machine
time), p95 and time on a log scale, accuracy linear. Here cost and time are the same measurement (a local
run's only cost is its machine time), so machine time carries half of S. Goal (the paper's claim): chosen
>= +22% over each single-objective choice.

    .venv/bin/python evals/plan_quality.py                       # ~10 minutes on 2 cores (the plans as planned)
    .venv/bin/python evals/plan_quality.py --scale 0.1 --eval-n 100 --out /tmp/pq.json   # a smoke run
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from _common import add_out, machine_info, make_parser, now, save_json
from stratos_agent.tools import deploy, planning, synth
from stratos_agent.tools.evaluate import evaluate
from stratos_agent.tools.load_test import load_test
from stratos_agent.tools.planning import screen
from stratos_agent.tools.planning.choose import point_record
from stratos_agent.tools.survey import plan_measured, survey_servers
from stratos_agent.tools.train import config_from_plan, planned_steps, train

from stratos_agent.records.plans import PairTable, Plan, PlanPoint
from stratos_agent.request_parser import parse_request
from stratos_agent.spec import DistillationSpec
from stratos_agent.tasks.recipes import recipe_for

WEIGHTS = {"acc": 0.35, "cost": 0.35, "p95": 0.15, "time": 0.15}
SPECS = (
    # No accuracy floor: it would leave one feasible candidate, and nothing to trade.
    "a model that lists Mahjong winning tiles, under $20, p95 under 2 s, 0.1 qps, done in 10 minutes",
)


def goodness(values: np.ndarray, lower_is_better: bool, log: bool) -> np.ndarray:
    v = np.log(np.maximum(values, 1e-9)) if log else values
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-12:
        return np.ones_like(v)
    g = (v - lo) / (hi - lo)
    return 1 - g if lower_is_better else g


def scores(acc: np.ndarray, machine_s: np.ndarray, p95: np.ndarray) -> np.ndarray:
    return (WEIGHTS["acc"] * goodness(acc, False, False) + WEIGHTS["cost"] * goodness(machine_s, True, True)
            + WEIGHTS["p95"] * goodness(p95, True, True) + WEIGHTS["time"] * goodness(machine_s, True, True))


def contenders(spec: DistillationSpec, plan: Plan, ctx) -> dict[str, PlanPoint]:
    """The planner's choice and the two single-objective choices over every feasible candidate (a local
    front often holds one point: the single-objective optimisers look past it). Ties break generously:
    accuracy-first by cost then machine time, cost-first by machine time then accuracy."""
    sc = screen(spec, ctx.inputs, ctx.pairs, ctx.table)
    idx = np.flatnonzero(sc.ok)
    F = sc.cands.F[idx]  # cost, p95, -accuracy, train hours

    def record(i: int) -> PlanPoint:
        return point_record(int(idx[i]), sc.cands, ctx.inputs, ctx.pairs, ctx.table)

    return {
        "chosen": plan.chosen,  # type: ignore[dict-item]
        "accuracy_first": record(int(np.lexsort((F[:, 3], F[:, 0], F[:, 2]))[0])),
        "cost_first": record(int(np.lexsort((F[:, 2], F[:, 3], F[:, 0]))[0])),
    }


def run_point(spec: DistillationSpec, plan: Plan, point: PlanPoint, scale: float, eval_n: int, work: Path) -> dict:
    """Synthesise, train, evaluate and serve a small local version of `point`; the measured figures."""
    task, recipe = spec.task, recipe_for(spec.task)
    small = point.model_copy(update={"train_examples": max(64, int(point.train_examples * scale)),
                                     "data_size": max(300, int(point.data_size * scale))})
    t0 = time.perf_counter()
    # As the agent's synthesis does: the student's prompt variant, even over difficulty.
    data = synth.synthesize(recipe.pack(task, "student"), small.data_size, work / "data", mode="solver",
                            style=recipe.style, distribution="even")
    synth_s = time.perf_counter() - t0
    config = config_from_plan(plan.model_copy(update={"chosen": small}), data, recipe, run_name="pq",
                              max_steps=planned_steps(small))  # threads: STRATOS_THREADS, as in a run
    t0 = time.perf_counter()
    student = train(config, run_dir=work / "train")
    train_s = time.perf_counter() - t0
    report = evaluate(recipe.pack(task, "student"), data.public_jsonl["test"], model=str(student.model_dir),
                      limit=eval_n, max_new_tokens=recipe.student_tokens)
    dep = deploy.deploy_local(student.model_dir, name=f"pq-{work.name}", task=task, smoke=True)
    try:
        latency = load_test(dep.base_url, dep.model, recipe.pack(task, "student"),
                            concurrency=spec.traffic.concurrency, max_tokens=recipe.student_tokens)
    finally:
        deploy.stop_deployment(dep)
    return {
        "plan_point": point.label(), "student": point.student, "strategy": point.strategy,
        "lora_rank": point.lora_rank, "planned": {"accuracy": point.accuracy, "p95_ms": point.p95_ms,
                                                  "train_hours": point.train_hours, "cost_usd": point.cost_usd,
                                                  "train_examples": point.train_examples},
        "run": {"train_examples": small.train_examples, "data_size": small.data_size, "steps": student.global_step},
        "measured": {"exact_match": report.exact_match, "exact_match_ci": [report.exact_match_ci.low,
                                                                           report.exact_match_ci.high],
                     "n": report.n, "synth_s": round(synth_s, 1), "train_s": round(train_s, 1),
                     "machine_s": round(synth_s + train_s, 1), "p95_ms": latency.p95_ms, "p50_ms": latency.p50_ms},
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="Share of each point's planned examples to run (1 = the plan).")
    parser.add_argument("--eval-n", type=int, default=200, help="Held-out items per point.")
    parser.add_argument("--work", type=Path, default=Path("runs/plan-quality"), help="Scratch folder.")
    add_out(parser, "plan_quality.json")
    args = parser.parse_args()
    started, rows = time.perf_counter(), []
    for i, request in enumerate(SPECS):
        spec = parse_request(request)
        survey = survey_servers(spec)
        scoped = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": ["local"]})})
        ctx = planning.prepare(scoped, gpus=["CPU"])
        plan = plan_measured(scoped, ["CPU"], PairTable(pairs=ctx.pairs), survey.student_shapes)
        if plan.chosen is None:
            rows.append({"spec": request, "feasible": False, "why": plan.why})
            continue
        points = contenders(scoped, plan, ctx)
        runs: dict[str, dict] = {}
        for role, point in points.items():
            twin = next((r for r, p in points.items() if r in runs and p.label() == point.label()), None)
            print(f"spec {i} {role}: {point.label()}" + (f" (same as {twin})" if twin else ""), flush=True)
            runs[role] = runs[twin] if twin else run_point(spec, plan, point, args.scale, args.eval_n,
                                                            args.work / f"s{i}-{role}")
        m = {role: r["measured"] for role, r in runs.items()}
        roles = list(m)
        S = scores(np.array([m[r]["exact_match"] for r in roles]), np.array([m[r]["machine_s"] for r in roles]),
                   np.array([m[r]["p95_ms"] for r in roles]))
        score = dict(zip(roles, (round(float(x), 4) for x in S), strict=True))
        rows.append({"spec": request, "feasible": True, "front": len(plan.front), "runs": runs, "score": score})
        print(json.dumps(score), flush=True)
    ok = [r for r in rows if r["feasible"]]
    mean = {k: float(np.mean([r["score"][k] for r in ok])) for k in ok[0]["score"]} if ok else {}
    summary = {
        "specs": len(rows), "feasible_specs": len(ok), "weights": WEIGHTS, "mean_score": mean,
        "improvement_vs_accuracy_first": mean["chosen"] / mean["accuracy_first"] - 1 if mean else None,
        "improvement_vs_cost_first": mean["chosen"] / mean["cost_first"] - 1 if mean else None,
        "goal": ">= +22% deployment score over each single-objective choice (paper)",
    }
    print(json.dumps(summary, indent=1))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save_json({"benchmark": "plan_quality", "date": now(), "settings": settings,
               "summary": summary, "specs": rows, "elapsed_s": round(time.perf_counter() - started, 1),
               "machine": machine_info()}, args.out)


if __name__ == "__main__":
    main()
