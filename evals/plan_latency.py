"""The plan's local p95 against the deployed endpoint's, under the same load.

A plan times its chosen local student before training (tools/latency_probe.py): the UNTRAINED student,
served by vLLM, answers the task's prompts with its answer length forced to the student's request shape.
After training, the run load-tests the deployed endpoint (the TRAINED student answering as it likes, up
to the recipe's answer tokens). This benchmark serves both side by side and load-tests them in alternating
rounds, so background load hits both alike, and reports the ratio of their p95s (goal: within 25%).

    .venv/bin/python evals/plan_latency.py --model runs/<run>/train/model          # ~2 minutes
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from _common import add_out, machine_info, make_parser, now, save_json
from stratos_agent.tools import deploy
from stratos_agent.tools.latency_probe import PROBE_REQUESTS, WARMUP_REQUESTS, forced_load_test, probe_pack
from stratos_agent.tools.load_test import load_test
from stratos_agent.tools.request_shape import task_shape
from stratos_agent.tools.train import trained_lineage

from stratos_agent.models import local_model_path
from stratos_agent.tasks.recipes import recipe_for


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="A trained model folder (runs/<run>/train/model).")
    parser.add_argument("--task", default="mahjong")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    add_out(parser, "plan_latency.json")
    args = parser.parse_args()
    student, _seen = trained_lineage(args.model)
    if student is None:
        parser.error(f"{args.model} is not a folder Stratos trained (no student.json beside it)")
    recipe = recipe_for(args.task)
    pack = probe_pack(args.task, args.model)
    forced = task_shape(args.task, tokenizer_model=student).output_tokens
    started, deps = time.perf_counter(), {}
    rounds: dict[str, list[dict]] = {"plan_probe": [], "deployed": []}
    try:
        deps["plan_probe"] = deploy.deploy_local(local_model_path(student), name="plan-latency-probe", smoke=False,
                                                 task=args.task)
        deps["deployed"] = deploy.deploy_local(args.model, name="plan-latency-deployed", smoke=False, task=args.task)
        tests = {  # exactly how the probe and the run's post-deploy load test call it
            "plan_probe": lambda n: forced_load_test(deps["plan_probe"], pack, concurrency=args.concurrency,
                                                     output_tokens=forced, requests=n),
            "deployed": lambda n: load_test(deps["deployed"].base_url, deps["deployed"].model, pack, requests=n,
                                            concurrency=args.concurrency, max_tokens=recipe.student_tokens),
        }
        for test in tests.values():
            test(WARMUP_REQUESTS)
        for _ in range(args.rounds):
            for role, test in tests.items():
                result = test(PROBE_REQUESTS)
                rounds[role].append(result.model_dump())
                print(f"{role}: p50 {result.p50_ms} ms, p95 {result.p95_ms} ms, {result.output_tokens:.1f} tokens",
                      flush=True)
    finally:
        for dep in deps.values():
            deploy.stop_deployment(dep)
    p95 = {role: statistics.median(r["p95_ms"] for r in rs) for role, rs in rounds.items()}
    ratios = [a["p95_ms"] / b["p95_ms"] for a, b in zip(rounds["plan_probe"], rounds["deployed"], strict=True)]
    summary = {"median_p95_ms": p95, "plan_over_deployed": round(p95["plan_probe"] / p95["deployed"], 3),
               "per_round_ratio": [round(r, 3) for r in ratios], "goal": "within 25% (0.75-1.25)",
               "met": 0.75 <= p95["plan_probe"] / p95["deployed"] <= 1.25}
    print(json.dumps(summary, indent=1))
    save_json({"benchmark": "plan_latency", "date": now(), "student": student, "model": str(args.model),
               "concurrency": args.concurrency, "forced_output_tokens": forced, "requests": PROBE_REQUESTS,
               "warmup_requests": WARMUP_REQUESTS, "rounds": rounds, "summary": summary,
               "elapsed_s": round(time.perf_counter() - started, 1), "machine": machine_info()}, args.out)


if __name__ == "__main__":
    main()
