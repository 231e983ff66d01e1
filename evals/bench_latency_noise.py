"""How far one unchanged server's p95 moves between load tests minutes apart: the floor under "the plan's p95
within 25% of the deployed p95" on this machine.

    .venv/bin/python evals/bench_latency_noise.py --model runs/<run>/train/model        # ~9 minutes (micro student)

The plan's probe and the deployed endpoint are two load tests (tools/load_test.load_test) taken minutes apart.
This benchmark takes such tests of one model again and again, in `--rounds` rounds whose order rotates:
  - `standard`: the product's test (LOAD_TEST_ROUNDS x 256 requests, read as the median of the rounds' p95s)
    on one long-lived server: the baseline;
  - `long`: the same server, `--long-factor` times as many rounds: does a longer test agree better?
  - `fresh`: the standard test on a server started for that test alone, as a probe or a deploy starts one:
    does a new server add spread of its own?
Before each round it also times a fixed single-thread matmul for 2 s (`compute_ops_per_s`): whether the
machine's raw compute drifts as much as the served latency does.

Reported per kind: the tests' p95 range and max/min, and the share of ordered pairs of tests (a, b) with
|a - b| / b <= 25%: the chance that two readings of the same thing agree as well as the plan must.
Saves evals/results/bench_latency_noise.json (or --out).
"""

from __future__ import annotations

import itertools
import json
import statistics
import time

import _common
import numpy as np
from stratos_agent.tools import deploy
from stratos_agent.tools.load_test import LOAD_TEST_ROUNDS, load_test

from stratos_agent.records.deployment import Deployment, LoadTest

AGREEMENT = 0.25  # the goal for plan vs deployed p95


def compute_ops_per_s(seconds: float = 2.0) -> float:
    """256 x 256 float32 matmuls per second on one thread for `seconds`: the machine's raw speed right now."""
    a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            a @ a
        done += 20
    return round(done / (time.perf_counter() - start), 1)


def agreement(p95s: list[float]) -> float:
    """Share of ordered pairs of distinct tests whose relative difference is within AGREEMENT."""
    pairs = list(itertools.permutations(p95s, 2))
    return round(sum(abs(a - b) / b <= AGREEMENT for a, b in pairs) / len(pairs), 3)


def summarise(results: dict[str, list[dict]], compute: list[float]) -> dict:
    out: dict = {}
    for kind, tests in results.items():
        out[kind] = {
            **_common.p95_spread(tests),
            "pairs_within_25pct": agreement([r["p95_ms"] for r in tests]),
            "seconds_per_test": round(statistics.median(r["wall_s"] for r in tests), 1),
        }
    out["compute_ops_per_s"] = {"median": statistics.median(compute), "range": [min(compute), max(compute)],
                                "max_over_min": round(max(compute) / min(compute), 2)}
    return out


def main() -> None:
    parser = _common.make_parser(__doc__)
    _common.add_served_model(parser)
    parser.add_argument("--rounds", type=int, default=6, help="Tests of each kind, the order rotating.")
    parser.add_argument("--long-factor", type=int, default=4, help="The long test's rounds / the standard test's.")
    _common.add_out(parser, "bench_latency_noise.json")
    args = parser.parse_args()
    folder, pack, recipe = _common.served_model(args)
    started, compute = time.perf_counter(), []

    def test(dep: Deployment, rounds: int = LOAD_TEST_ROUNDS) -> LoadTest:
        return load_test(dep.base_url, dep.model, pack, concurrency=args.concurrency,
                         max_tokens=recipe.student_tokens, rounds=rounds)

    def fresh() -> LoadTest:
        dep = deploy.deploy_local(folder, name="bench-noise-fresh", smoke=False, task=args.task)
        try:
            return test(dep)
        finally:
            deploy.stop_deployment(dep)

    def standard() -> LoadTest:
        compute.append(compute_ops_per_s())  # once a round, next to the baseline's test
        return test(server)

    server = deploy.deploy_local(folder, name="bench-noise", smoke=False, task=args.task)
    try:
        long = LOAD_TEST_ROUNDS * args.long_factor
        results = _common.run_rounds({"standard": standard, "long": lambda: test(server, long), "fresh": fresh},
                                     args.rounds)
    finally:
        deploy.stop_deployment(server)
    summary = summarise(results, compute)
    print(json.dumps(summary, indent=1))
    _common.save_json({
        "benchmark": "bench_latency_noise", "date": _common.now(), "model": str(args.model), "task": args.task,
        "concurrency": args.concurrency, "standard_rounds": LOAD_TEST_ROUNDS, "long_rounds": long,
        "results": results, "compute_ops_per_s": compute, "summary": summary,
        "elapsed_s": round(time.perf_counter() - started, 1), "machine": _common.machine_info(),
    }, args.out)


if __name__ == "__main__":
    main()
