"""Verified examples per second per core: solver-mode reverse synthesis vs LLM-only generation.

    .venv/bin/python evals/bench_synth.py [--solver-n 5000] [--llm-n 16] [--max-new-tokens 128]

One process, one torch thread, in one run: solver mode (natural and even difficulty mix), teacher
mode and forward mode with the bundled SmolLM2 teacher (fresh cache, so every answer is generated).
"Per core" = verified rows per CPU-second of this process (robust on a shared machine); wall-clock
rates are reported beside them. Each timing covers the whole `synthesize` call (sampling, writing
completions, verification, dedupe, partial log, dataset + card), with the model already loaded.
When an LLM mode verifies nothing, its rate is reported as the bound (accepted + 1) / time, so the
speed-up over it is a lower bound, and the seconds per attempted item are given as they are.
Prints a table and saves `evals/results/bench_synth.json` (or --out).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from _common import add_out, loadavg_1m, machine_info, make_parser, save_json

TARGET_PER_CORE = 2000.0
TARGET_RATIO = 20.0


def _timed(label: str, fn) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    ref = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    card = ref.card
    bound = card.n_accepted == 0
    verified = card.n_accepted + (1 if bound else 0)
    row = {
        "mode": label, "attempted": card.attempted, "verified": card.n_accepted,
        "rejections": card.rejections, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "verified_per_s_wall": verified / wall, "verified_per_cpu_s": verified / cpu,
        "rate_is_upper_bound": bound, "s_per_attempt_wall": wall / max(card.attempted, 1),
        "yield": card.yield_rate,
    }
    note = " (bound: (0+1)/time)" if bound else ""
    print(f"{label:<14} {card.n_accepted:>6}/{card.attempted:<6} {wall:8.2f} s wall {cpu:8.2f} s cpu  "
          f"{row['verified_per_cpu_s']:10.3f} verified/cpu-s{note}")
    return row


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--solver-n", type=int, default=5000)
    parser.add_argument("--llm-n", type=int, default=16, help="items attempted per LLM mode (one batch)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--teacher", default="smollm2-135m")
    add_out(parser, "bench_synth.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    import datasets  # noqa: F401 - imported before timing: a one-off cost, not synthesis
    from stratos_agent.tools.synth import synthesize
    from stratos_agent.tools.teachers import make_teacher

    load = loadavg_1m()
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        work = Path(tmp)
        rows = [
            _timed("solver", lambda: synthesize("mahjong", args.solver_n, work / "solver", seed=1)),
            _timed("solver-even", lambda: synthesize(
                "mahjong", args.solver_n, work / "solver-even", seed=1, distribution="even")),
        ]
        teacher = make_teacher(args.teacher, cache_dir=work / "cache", batch_size=args.llm_n)
        for mode in ("teacher", "forward"):
            rows.append(_timed(mode, lambda mode=mode: synthesize(
                "mahjong", args.llm_n, work / mode, mode=mode, teacher=teacher, seed=1,
                max_new_tokens=args.max_new_tokens, max_attempts=args.llm_n, chunk_size=args.llm_n)))

    by = {r["mode"]: r for r in rows}
    solver = by["solver"]["verified_per_cpu_s"]
    ratios = {
        f"solver_vs_{m}": {"ratio": solver / by[m]["verified_per_cpu_s"], "lower_bound": by[m]["rate_is_upper_bound"]}
        for m in ("teacher", "forward")
    }
    result = {
        "command": "python evals/bench_synth.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": machine_info(cpus=os.cpu_count(), load_avg_1m_at_start=load),
        "teacher": f"transformers:{args.teacher}", "max_new_tokens": args.max_new_tokens,
        "modes": rows, "ratios": ratios,
        "targets": {
            "solver_per_core": TARGET_PER_CORE, "solver_per_core_met": solver >= TARGET_PER_CORE,
            "ratio": TARGET_RATIO, "ratio_met": all(r["ratio"] >= TARGET_RATIO for r in ratios.values()),
        },
    }
    for name, r in ratios.items():
        print(f"{name}: {r['ratio']:,.0f}x{' (lower bound)' if r['lower_bound'] else ''}")
    print(f"solver {solver:,.0f} verified/s per core (target {TARGET_PER_CORE:,.0f}); "
          f"load average at start {load:.1f} on {os.cpu_count()} cores")
    save_json(result, args.out, indent=2)


if __name__ == "__main__":
    main()
