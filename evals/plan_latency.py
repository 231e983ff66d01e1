"""The plan's local p95 against the deployed endpoint's, under the same load.

A plan times its chosen local student before training (tools/latency_probe.py): the UNTRAINED student,
served by vLLM, answers the task's prompts with each answer forced to the length of a real answer (the
student's answer-length distribution, tools/request_shape.answer_lengths). After training, the run
load-tests the deployed endpoint (the TRAINED student answering as it likes, up to the recipe's answer
tokens). Both go through tools/load_test.load_test with its defaults (warm-up, request count, 3 rounds
read as the median of their p95s). This benchmark serves both side by side and load-tests them in
`--rounds` rounds (the order rotates every round, so drift in the background load hits all alike), and
reports each round's ratio of p95s, their median, and the share of rounds within 25% (the goal), with
the 1-minute load next to each figure.
Baseline, in the same rounds on the same server: the probe as it was before, every answer forced to the
answer p95 (`plan_probe_fixed_p95`).

    .venv/bin/python evals/plan_latency.py --model runs/<run>/train/model          # ~15 minutes (micro)
    .venv/bin/python evals/plan_latency.py --probe-cost smollm2-135m mahjong-micro-2m  # what one probe costs
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from _common import RESULTS, add_out, loadavg_1m, machine_info, make_parser, now, run_rounds, save_json
from stratos_agent.tools import deploy
from stratos_agent.tools.latency_probe import PROBE_REQUESTS, forced_lengths, forced_load_test, probe_pack
from stratos_agent.tools.load_test import DEPLOYED_BUDGET_S, LOAD_TEST_ROUNDS, WARMUP_REQUESTS, load_test
from stratos_agent.tools.request_shape import answer_p95
from stratos_agent.tools.train import trained_lineage

from stratos_agent.models import local_model_path
from stratos_agent.tasks.recipes import recipe_for

GOAL = 0.25  # issue 11: the plan's p95 within 25% of the deployed endpoint's


def within_goal(ratio: float) -> bool:
    return 1 - GOAL <= ratio <= 1 + GOAL


def ratio_summary(probe: list[dict], deployed: list[dict]) -> dict:
    """A probe's p95 over the deployed endpoint's, round by round."""
    ratios = [a["p95_ms"] / b["p95_ms"] for a, b in zip(probe, deployed, strict=True)]
    median = statistics.median(ratios)
    return {"per_round_ratio": [round(r, 3) for r in ratios], "median_ratio": round(median, 3),
            "rounds_within_25pct": round(sum(map(within_goal, ratios)) / len(ratios), 3), "met": within_goal(median)}


def summarise(results: dict[str, list[dict]]) -> dict:
    deployed = results["deployed"]
    return {
        "plan_probe": ratio_summary(results["plan_probe"], deployed),
        "baseline_fixed_p95": ratio_summary(results["plan_probe_fixed_p95"], deployed),
        "median_p95_ms": {role: statistics.median(r["p95_ms"] for r in rs) for role, rs in results.items()},
        "mean_output_tokens": {role: round(statistics.mean(r["output_tokens"] for r in rs), 2)
                               for role, rs in results.items()},
        "loadavg_1m_range": [min(r["loadavg_1m"] for rs in results.values() for r in rs),
                             max(r["loadavg_1m"] for rs in results.values() for r in rs)],
        "goal": f"median per-round ratio within {GOAL:.0%} ({1 - GOAL:.2f}-{1 + GOAL:.2f})",
    }


def probe_cost(models: list[str], task: str, concurrency: int) -> dict[str, dict]:
    """Wall time of the probe's load test (warm-up + timed requests) per registry model, untrained, served
    alone: what the request-count policy costs a plan (tools/load_test.LOAD_TEST_REQUESTS)."""
    costs = {}
    for model in models:
        folder = local_model_path(model)
        dep = deploy.deploy_local(folder, name="plan-latency-cost", smoke=False, task=task)
        try:
            start, load = time.perf_counter(), round(loadavg_1m(), 2)
            test = forced_load_test(dep, probe_pack(task, folder), concurrency=concurrency,
                                    lengths=forced_lengths(task, model))
            costs[model] = {**test.model_dump(), "load_test_s": round(time.perf_counter() - start, 1),
                            "loadavg_1m": load}
        finally:
            deploy.stop_deployment(dep)
        print(f"{model}: {costs[model]['load_test_s']} s for {WARMUP_REQUESTS} + {test.requests} requests, "
              f"p95 {test.p95_ms} ms, load {load}", flush=True)
    return costs


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", type=Path, help="A trained model folder (runs/<run>/train/model).")
    parser.add_argument("--probe-cost", nargs="+", metavar="STUDENT", help="Only time the probe of these registry "
                        "students (no --model needed).")
    parser.add_argument("--task", default="mahjong")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    add_out(parser, "plan_latency.json")
    args = parser.parse_args()
    if args.probe_cost:
        out = args.out.with_name("plan_latency_probe_cost.json") if args.out == RESULTS / "plan_latency.json" \
            else args.out
        save_json({"benchmark": "plan_latency_probe_cost", "date": now(), "concurrency": args.concurrency,
                   "costs": probe_cost(args.probe_cost, args.task, args.concurrency),
                   "machine": machine_info()}, out)
        return
    if args.model is None:
        parser.error("--model (or --probe-cost) is required")
    student, _seen = trained_lineage(args.model)
    if student is None:
        parser.error(f"{args.model} is not a folder Stratos trained (no student.json beside it)")
    recipe = recipe_for(args.task)
    pack = probe_pack(args.task, args.model)
    lengths = forced_lengths(args.task, student)
    started, deps = time.perf_counter(), {}
    try:
        deps["plan_probe"] = deploy.deploy_local(local_model_path(student), name="plan-latency-probe", smoke=False,
                                                 task=args.task)
        deps["deployed"] = deploy.deploy_local(args.model, name="plan-latency-deployed", smoke=False, task=args.task)
        tests = {  # exactly how the probe and the run's post-deploy load test call it
            "plan_probe": lambda: forced_load_test(deps["plan_probe"], pack, concurrency=args.concurrency,
                                                   lengths=lengths),
            "plan_probe_fixed_p95": lambda: forced_load_test(deps["plan_probe"], pack, concurrency=args.concurrency,
                                                             lengths=[answer_p95(lengths)]),
            "deployed": lambda: load_test(deps["deployed"].base_url, deps["deployed"].model, pack,
                                          concurrency=args.concurrency, max_tokens=recipe.student_tokens,
                                          time_budget_s=DEPLOYED_BUDGET_S),
        }
        results = run_rounds(tests, args.rounds)
    finally:
        for dep in deps.values():
            deploy.stop_deployment(dep)
    summary = summarise(results)
    print(json.dumps(summary, indent=1))
    save_json({"benchmark": "plan_latency", "date": now(), "student": student, "model": str(args.model),
               "concurrency": args.concurrency, "forced_lengths": lengths,
               "forced_mean_tokens": round(statistics.mean(lengths), 2), "requests": PROBE_REQUESTS,
               "rounds_per_test": LOAD_TEST_ROUNDS, "warmup_requests": WARMUP_REQUESTS, "rounds": results, "summary": summary,
               "elapsed_s": round(time.perf_counter() - started, 1), "machine": machine_info()}, args.out)


if __name__ == "__main__":
    main()
