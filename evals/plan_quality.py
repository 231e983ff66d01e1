"""Plan quality on 50 generated specs: the Pareto choice vs naive and single-objective choices.

For each spec (seeded: task, budget, p95 SLO, deadline, traffic, duration) the planner's candidate set
is screened once; among the FEASIBLE plans we compare
  - chosen:          the planner's choice (knee of the exact Pareto front, tools/planning.choose);
  - accuracy-first:  the most accurate feasible plan. Accuracy does not depend on the server, so many
                     plans tie; a single-objective optimiser has no reason to prefer one, so its score is
                     the mean over the tied set (also reported: the generous variant where cost breaks ties);
  - cost-first:      the cheapest feasible plan (same tie rule; accuracy breaks ties in the generous variant);
  - naive big GPU:   the chosen plan's pair/strategy/rank/data size on the biggest instance of the
                     catalog (most bf16 FLOP/s in one instance) - what "just take the biggest GPU"
                     costs at the same SLO (goal: chosen <= 0.5x its cost).

Deployment score (one number per plan, higher is better, defined over the spec's feasible set):
    S = 0.35 g_acc + 0.35 g_cost + 0.15 g_p95 + 0.15 g_time
where g_x in [0, 1] places the plan between the worst (0) and best (1) feasible value of objective x;
cost, p95 and training time on a log scale (they span orders of magnitude), accuracy linear. Accuracy
and cost carry most weight because they are what the user states (quality floor, budget); latency
and training time are SLO-bounded already. The knee choice does NOT maximise S directly: it
minimises the equal-weight sum of linearly normalised objectives over the front (with materiality
floors), so S is a fair but related yardstick. The paper reports >= +22% over single-objective choice.

    .venv/bin/python evals/plan_quality.py      # saves evals/results/plan_quality.json
    .venv/bin/python evals/plan_quality.py --specs 3 --out /tmp/plan_quality.json   # a smoke run
"""

from __future__ import annotations

import json
import random

import numpy as np
from _common import add_out, machine_info, make_parser, save_json
from stratos_agent.tools.planning import choose, evaluate_candidates, front_indices, prepare, screen

from stratos_agent.spec import Constraints, DistillationSpec, Traffic

WEIGHTS = {"acc": 0.35, "cost": 0.35, "p95": 0.15, "time": 0.15}
N_SPECS = 50


def generate_specs(n: int, seed: int = 0) -> list[DistillationSpec]:
    rng = random.Random(seed)
    specs = []
    for _ in range(n):
        traffic = Traffic(
            qps=round(10 ** rng.uniform(-1, 1.5), 2),
            duration_days=rng.choice([7, 30, 90]),
            concurrency=rng.choice([1, 4, 8, 16]),
            output_tokens=rng.choice([32, 48, 128]),
        )
        constraints = Constraints(
            budget_usd=rng.choice([None, round(10 ** rng.uniform(2.3, 4.5))]),
            p95_latency_ms=rng.choice([None, 200, 300, 500, 1000, 2000]),
            deadline_hours=rng.choice([None, 1, 4, 24]),
        )
        specs.append(
            DistillationSpec(task=rng.choice(["mahjong", "gsm8k"]), constraints=constraints, traffic=traffic)
        )
    return specs


def goodness(values: np.ndarray, lower_is_better: bool, log: bool) -> np.ndarray:
    v = np.log(np.maximum(values, 1e-9)) if log else values
    lo, hi = v.min(), v.max()
    if hi - lo <= 1e-12:
        return np.ones_like(v)
    g = (v - lo) / (hi - lo)
    return 1 - g if lower_is_better else g


def scores(F: np.ndarray) -> np.ndarray:
    """Deployment score of every row of F (cost, p95, -accuracy, hours) relative to F itself."""
    return (
        WEIGHTS["acc"] * goodness(-F[:, 2], False, False)
        + WEIGHTS["cost"] * goodness(F[:, 0], True, True)
        + WEIGHTS["p95"] * goodness(F[:, 1], True, True)
        + WEIGHTS["time"] * goodness(F[:, 3], True, True)
    )


def biggest_offer(ctx) -> int:
    return max(
        range(len(ctx.inputs.offers)),
        key=lambda i: (
            ctx.inputs.offers[i].bf16_tflops * ctx.inputs.offers[i].gpu_count,
            ctx.inputs.offers[i].gpu_memory_gb,
        ),
    )


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--specs", type=int, default=N_SPECS, help="generated specs to plan (seeded)")
    add_out(parser, "plan_quality.json")
    args = parser.parse_args()
    rows = []
    for i, spec in enumerate(generate_specs(args.specs)):
        ctx = prepare(spec)
        sc = screen(spec, ctx.inputs, ctx.pairs, ctx.table)
        if not sc.ok.any():
            rows.append({"spec": i, "feasible": False})
            continue
        idx = np.flatnonzero(sc.ok)
        F = sc.cands.F[idx]
        S = scores(F)
        front = front_indices(sc.cands.F, sc.ok)
        k, _ = choose(sc.cands.F[front], spec.preference)
        chosen = int(np.flatnonzero(idx == front[k])[0])
        acc_ties = np.isclose(F[:, 2], F[:, 2].min(), rtol=0, atol=1e-9)
        cost_ties = np.isclose(F[:, 0], F[:, 0].min(), rtol=1e-9, atol=1e-9)
        acc_first = int(np.lexsort((F[:, 0], F[:, 2]))[0])  # generous: cost breaks ties
        cost_first = int(np.lexsort((F[:, 2], F[:, 0]))[0])
        c = sc.cands
        j = idx[chosen]
        big = evaluate_candidates(
            spec,
            ctx.inputs,
            ctx.pairs,
            ctx.table,
            [biggest_offer(ctx)],
            [c.pair[j]],
            [c.strategy[j]],
            [c.rank[j]],
            [c.data_size[j]],
        )
        big_meets_slo = (
            spec.constraints.p95_latency_ms is None or big.F[0, 1] <= spec.constraints.p95_latency_ms
        )
        rows.append(
            {
                "spec": i,
                "feasible": True,
                "task": spec.task,
                "feasible_plans": len(idx),
                "front": len(front),
                "constraints": spec.constraints.model_dump(),
                "traffic": spec.traffic.model_dump(),
                "score": {
                    "chosen": float(S[chosen]),
                    "accuracy_first": float(S[acc_ties].mean()),
                    "cost_first": float(S[cost_ties].mean()),
                    "accuracy_first_cost_tiebreak": float(S[acc_first]),
                    "cost_first_accuracy_tiebreak": float(S[cost_first]),
                },
                "ties": {"accuracy_first": int(acc_ties.sum()), "cost_first": int(cost_ties.sum())},
                "chosen": {
                    "gpu": ctx.inputs.offers[c.offer[j]].gpu,
                    "cost": float(F[chosen, 0]),
                    "p95_ms": float(F[chosen, 1]),
                    "accuracy": float(-F[chosen, 2]),
                    "train_h": float(F[chosen, 3]),
                },
                "naive_biggest_gpu": {
                    "gpu": ctx.inputs.offers[biggest_offer(ctx)].id,
                    "cost": float(big.F[0, 0]),
                    "p95_ms": float(big.F[0, 1]),
                    "meets_slo": bool(big_meets_slo),
                },
                "cost_ratio_vs_naive": float(F[chosen, 0] / big.F[0, 0]),
            }
        )
        r = rows[-1]
        print(
            f"spec {i:2d} {spec.task:7s} feasible {len(idx):5d} front {len(front):4d}  "
            f"S chosen {r['score']['chosen']:.3f} "
            f"acc-first {r['score']['accuracy_first']:.3f} cost-first {r['score']['cost_first']:.3f}  "
            f"cost vs biggest GPU {r['cost_ratio_vs_naive']:.3f}",
            flush=True,
        )
    ok = [r for r in rows if r["feasible"]]
    mean = {k: float(np.mean([r["score"][k] for r in ok])) for k in ok[0]["score"]}
    ratios = np.array([r["cost_ratio_vs_naive"] for r in ok])
    summary = {
        "specs": len(rows),
        "feasible_specs": len(ok),
        "deployment_score_weights": WEIGHTS,
        "mean_score": mean,
        "improvement_vs_accuracy_first": mean["chosen"] / mean["accuracy_first"] - 1,
        "improvement_vs_cost_first": mean["chosen"] / mean["cost_first"] - 1,
        "improvement_vs_accuracy_first_cost_tiebreak": mean["chosen"] / mean["accuracy_first_cost_tiebreak"]
        - 1,
        "improvement_vs_cost_first_accuracy_tiebreak": mean["chosen"] / mean["cost_first_accuracy_tiebreak"]
        - 1,
        "chosen_wins_or_ties_vs_accuracy_first": sum(
            r["score"]["chosen"] >= r["score"]["accuracy_first"] - 1e-12 for r in ok
        ),
        "chosen_wins_or_ties_vs_cost_first": sum(
            r["score"]["chosen"] >= r["score"]["cost_first"] - 1e-12 for r in ok
        ),
        "cost_ratio_vs_biggest_gpu": {
            "median": float(np.median(ratios)),
            "mean": float(ratios.mean()),
            "share_at_most_0.5": float((ratios <= 0.5).mean()),
        },
        "paper_claim": ">= +22% deployment score over single-objective selection",
    }
    print(json.dumps(summary, indent=1))
    save_json({"summary": summary, "specs": rows, "machine": machine_info()}, args.out)


if __name__ == "__main__":
    main()
