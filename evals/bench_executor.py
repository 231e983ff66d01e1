"""vLLM-CPU executors: the model run in-process (Stratos' default) vs vLLM's default worker process.

    .venv/bin/python evals/bench_executor.py --model runs/<run>/train/model        # ~4 minutes (micro student)
    .venv/bin/python evals/bench_executor.py --model smollm2-135m --requests 64 --rounds 2 \\
        --out evals/results/bench_executor_smollm2.json                            # ~5 minutes

Both servers serve the same model (`deploy_local`, differing only in `cpu_executor`, see
tools/engine_launch.CpuExecutor) and are load-tested the way a run tests its deployed endpoint
(tools/load_test.load_test: the task's prompts in the model's prompt variant, the model's own answers up to
the recipe's answer tokens, warm-up, then 3 rounds read as the median of their p95s), in `--rounds` rounds
whose order rotates, so background drift hits both alike. Reported per executor: each test's p50/p95 and
round spread, the server's CPU seconds per request, and requests per second. Baseline: vLLM's default
(`multiprocess`). Goal: a lower p95 whose rounds spread less, so a plan's probe predicts the deployed p95.
Saves evals/results/bench_executor.json (or --out).
"""

from __future__ import annotations

import json
import statistics
import time
from typing import get_args

from _common import (
    add_out,
    add_served_model,
    machine_info,
    make_parser,
    now,
    p95_spread,
    run_rounds,
    save_json,
    served_model,
)
from stratos_agent.tools import deploy
from stratos_agent.tools.engine_launch import CpuExecutor, cpu_compute_threads
from stratos_agent.tools.load_test import WARMUP_REQUESTS, load_test
from stratos_agent.tools.server_process import group_members

from stratos_agent.records.deployment import Deployment, LoadTest


def server_cpu_s(dep: Deployment) -> float:
    """CPU seconds used so far by the server's process group (API server, engine core, any worker)."""
    return sum(sum(p.cpu_times()[:2]) for p in group_members(dep.pid, dep.process_started))


def summarise(results: dict[str, list[dict]], cpu_s: dict[str, list[float]]) -> dict:
    out = {}
    for role, tests in results.items():
        rounds = [p for r in tests for p in r["round_p95_ms"]]
        timed = sum(r["requests"] for r in tests)
        out[role] = {
            "median_p50_ms": round(statistics.median(r["p50_ms"] for r in tests), 1),
            **p95_spread(tests),
            "round_p95_range_ms": [min(rounds), max(rounds)],
            "requests_per_s": round(timed / sum(r["wall_s"] for r in tests), 2),
            # warm-up requests included: they run on the server too
            "server_cpu_ms_per_request": round(1000 * sum(cpu_s[role]) / (timed + len(cpu_s[role]) * WARMUP_REQUESTS), 1),
        }
    base, new = out["multiprocess"], out["inprocess"]
    out["inprocess_vs_multiprocess"] = {
        "p95": round(new["median_p95_ms"] / base["median_p95_ms"], 3),
        "p50": round(new["median_p50_ms"] / base["median_p50_ms"], 3),
        "requests_per_s": round(new["requests_per_s"] / base["requests_per_s"], 3),
        "test_spread": [new["test_p95_max_over_min"], base["test_p95_max_over_min"]],
    }
    return out


def main() -> None:
    parser = make_parser(__doc__)
    add_served_model(parser)
    parser.add_argument("--requests", type=int, default=256, help="Timed requests per round of a load test.")
    parser.add_argument("--rounds", type=int, default=4, help="Load tests of each executor, alternating.")
    add_out(parser, "bench_executor.json")
    args = parser.parse_args()
    folder, pack, recipe = served_model(args)
    started, deps = time.perf_counter(), {}
    cpu_s: dict[str, list[float]] = {executor: [] for executor in get_args(CpuExecutor)}
    try:
        for executor in get_args(CpuExecutor):
            deps[executor] = deploy.deploy_local(folder, name=f"bench-executor-{executor}", smoke=False,
                                                 task=args.task, cpu_executor=executor)

        def test(executor: str) -> LoadTest:
            dep = deps[executor]
            before = server_cpu_s(dep)
            result = load_test(dep.base_url, dep.model, pack, requests=args.requests, concurrency=args.concurrency,
                               max_tokens=recipe.student_tokens)
            cpu_s[executor].append(round(server_cpu_s(dep) - before, 1))
            return result

        results = run_rounds({executor: (lambda e=executor: test(e)) for executor in deps}, args.rounds)
    finally:
        for dep in deps.values():
            deploy.stop_deployment(dep)
    summary = summarise(results, cpu_s)
    print(json.dumps(summary, indent=1))
    save_json({"benchmark": "bench_executor", "date": now(), "model": str(args.model), "task": args.task,
               "concurrency": args.concurrency, "requests_per_round": args.requests,
               "inprocess_threads": cpu_compute_threads(), "results": results, "server_cpu_s": cpu_s, "summary": summary,
               "elapsed_s": round(time.perf_counter() - started, 1), "machine": machine_info()}, args.out)


if __name__ == "__main__":
    main()
