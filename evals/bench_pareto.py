"""Benchmark the Pareto machinery on real candidate-plan sets (and uniform random worst cases).

- exact non-dominated filter over 100k and 1M candidate plans (goal: < 1 s for 100k);
- speed-up vs pymoo's own non-dominated sort and vs a naive O(n^2) filter, on subsets, with identical fronts;
- NSGA-II (pymoo) on the mixed plan space (integer server/pair/strategy/rank, continuous data size) vs the
  exact front of the 1M-plan grid: hypervolume ratio in normalised objective space.

    .venv/bin/python evals/bench_pareto.py            # prints and saves evals/results/bench_pareto.json
    .venv/bin/python evals/bench_pareto.py --quick --out /tmp/bench_pareto.json   # seconds: a smoke run
"""

from __future__ import annotations

import time

import numpy as np
from _common import add_out, machine_info, make_parser, save_json, timed
from stratos_agent.tools import pareto
from stratos_agent.tools.planning import (
    DEFAULT_LORA_RANKS,
    allowed_matrix,
    build_candidates,
    evaluate_candidates,
    prepare,
)

from stratos_agent.spec import DistillationSpec


def plan_set(ctx, spec, n: int, seed: int = 0) -> np.ndarray:
    """`n` real candidate plans: the planner's grid with as many data sizes as it takes."""
    per_size = len(build_candidates(spec, ctx.inputs, ctx.pairs, ctx.table, data_sizes=(1000,)))
    sizes = np.linspace(100, 100_000, int(np.ceil(n / per_size))).round().astype(int)
    cands = build_candidates(spec, ctx.inputs, ctx.pairs, ctx.table, data_sizes=sizes)
    pick = np.random.default_rng(seed).permutation(len(cands))[:n]
    return cands.F[pick]


def exact_timings(name: str, F: np.ndarray, repeat: int) -> dict:
    seconds, mask = timed(pareto.non_dominated_mask, F, repeat=repeat)
    row = {"set": name, "n": len(F), "front": int(mask.sum()), "exact_s": round(seconds, 4)}
    print(f"{name:>14} n={len(F):>9,}  front={row['front']:>6}  exact {seconds:.3f} s")
    return row


def baselines(name: str, F: np.ndarray) -> dict:
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    sub = F[:20_000]
    ours_s, ours = timed(pareto.non_dominated_mask, sub, repeat=3)
    pymoo_s, ref = timed(lambda x: NonDominatedSorting().do(x, only_non_dominated_front=True), sub)
    small = F[:3_000]
    ours_small_s, ours_small = timed(pareto.non_dominated_mask, small, repeat=3)
    naive_s, naive = timed(pareto.naive_non_dominated_mask, small)
    row = {
        "set": name,
        "pymoo_subset_n": len(sub),
        "ours_s": round(ours_s, 4),
        "pymoo_s": round(pymoo_s, 4),
        "speedup_vs_pymoo": round(pymoo_s / ours_s, 2),
        "same_front_as_pymoo": set(np.flatnonzero(ours)) == set(ref),
        "naive_subset_n": len(small),
        "ours_small_s": round(ours_small_s, 4),
        "naive_s": round(naive_s, 4),
        "speedup_vs_naive": round(naive_s / ours_small_s, 1),
        "same_front_as_naive": bool((ours_small == naive).all()),
    }
    print(
        f"{name:>14} vs pymoo on {len(sub):,}: {row['speedup_vs_pymoo']}x "
        f"(same front: {row['same_front_as_pymoo']}); "
        f"vs naive on {len(small):,}: {row['speedup_vs_naive']}x (same: {row['same_front_as_naive']})"
    )
    return row


def nsga_vs_exact(
    ctx, spec, F_grid: np.ndarray, seed: int, pop_size: int = 200, generations: int = 150
) -> dict:
    """NSGA-II over the mixed space vs the exact front of the dense grid, same objectives."""
    ranks = np.asarray(DEFAULT_LORA_RANKS)
    allowed = allowed_matrix(ctx.pairs)
    n_off, n_pairs = len(ctx.inputs.offers), len(ctx.pairs)

    def decode(X):
        return (X[:, 0], X[:, 1], X[:, 2], ranks[X[:, 3].astype(int)], X[:, 4])

    def evaluate(X):
        cands = evaluate_candidates(spec, ctx.inputs, ctx.pairs, ctx.table, *decode(X))
        return cands.F

    def constraint(X):
        cands = evaluate_candidates(spec, ctx.inputs, ctx.pairs, ctx.table, *decode(X))
        bad = ~allowed[X[:, 1].astype(int), X[:, 2].astype(int)]
        for mask in cands.hw_reasons.values():
            bad |= mask
        return bad.astype(float)[:, None] - 0.5  # <= 0 feasible

    grid_ok = F_grid  # the grid only holds allowed, fitting plans (see plan_set)
    exact = grid_ok[pareto.non_dominated_mask(grid_ok)]
    t0 = time.perf_counter()
    _, F = pareto.nsga2_front(
        evaluate,
        [0, 0, 0, 0, 100],
        [n_off - 1, n_pairs - 1, 2, len(ranks) - 1, 100_000],
        4,
        integer=np.array([True, True, True, True, True]),
        pop_size=pop_size,
        generations=generations,
        seed=seed,
        constraint=constraint,
    )
    nsga_s = time.perf_counter() - t0
    ideal, nadir = exact.min(0), exact.max(0)
    ref = np.full(4, 1.1)
    hv_exact = pareto.hypervolume(pareto.normalise(exact, ideal, nadir), ref)
    hv_nsga = pareto.hypervolume(pareto.normalise(F, ideal, nadir), ref)
    row = {
        "grid_n": len(grid_ok),
        "exact_front": len(exact),
        "nsga_front": len(F),
        "nsga_s": round(nsga_s, 2),
        "pop_size": pop_size,
        "generations": generations,
        "hv_exact": round(hv_exact, 5),
        "hv_nsga": round(hv_nsga, 5),
        "hv_ratio": round(hv_nsga / hv_exact, 4),
        "evaluations": pop_size * generations,
    }
    print(
        f"NSGA-II: {len(F)} points in {nsga_s:.1f} s ({row['evaluations']:,} evaluations); hypervolume "
        f"{hv_nsga:.4f} vs exact {hv_exact:.4f} over {len(grid_ok):,} grid plans "
        f"-> ratio {row['hv_ratio']:.3f}"
    )
    return row


def size_name(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run in seconds: 10k/100k sets, NSGA-II 40x20 on a 100-size grid (not the stored result)",
    )
    add_out(parser, "bench_pareto.json")
    args = parser.parse_args()
    small, large = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    pop_size, generations, grid_sizes = (40, 20, 100) if args.quick else (200, 150, 1000)

    spec = DistillationSpec(task="mahjong")
    ctx = prepare(spec, include_local=False)
    rng = np.random.default_rng(0)
    sets = {
        f"plans-{size_name(small)}": plan_set(ctx, spec, small),
        f"plans-{size_name(large)}": plan_set(ctx, spec, large),
        f"uniform4d-{size_name(small)}": rng.random((small, 4)),
        f"uniform4d-{size_name(large)}": rng.random((large, 4)),
    }
    exact = [exact_timings(name, F, repeat=3 if len(F) <= 100_000 else 1) for name, F in sets.items()]
    base = [baselines(f"{kind}-{size_name(small)}", sets[f"{kind}-{size_name(small)}"])
            for kind in ("plans", "uniform4d")]
    # The NSGA-II reference: the grid restricted to allowed, fitting plans (NSGA-II gets the same rule
    # as a constraint), with data sizes on a `grid_sizes`-step grid over [100, 100000].
    cands = build_candidates(
        spec, ctx.inputs, ctx.pairs, ctx.table,
        data_sizes=np.linspace(100, 100_000, grid_sizes).round().astype(int),
    )
    ok = np.ones(len(cands), dtype=bool)
    for mask in cands.hw_reasons.values():
        ok &= ~mask
    nsga = nsga_vs_exact(ctx, spec, cands.F[ok], seed=0, pop_size=pop_size, generations=generations)
    report = {
        "machine": machine_info(),
        "goal": "exact < 1 s for 100k plans",
        "exact": exact,
        "baselines": base,
        "nsga2_vs_exact": nsga,
    }
    save_json(report, args.out)


if __name__ == "__main__":
    main()
