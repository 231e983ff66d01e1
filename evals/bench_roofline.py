"""Roofline model vs measurement: predicted vs measured decode tokens/s on this CPU (and a GPU if present).

Measures smollm2-135m and its half-depth student with transformers at batch 1/2/4/8/16 (1 torch
thread, so the number is stable on a shared machine), then validates the calibrated roofline on
points it was NOT fitted on:
  A. batch hold-out: fit on batches {1, 16} of both models, predict {2, 4, 8};
  B. model hold-out: fit on one model (all batches), predict the other (and vice versa).
The same points are also predicted by the uncalibrated CPU defaults (tools/planning.CPU_DEFAULT),
so the gain from calibration is measured in the same run. Goal: within 20%.

    .venv/bin/python evals/bench_roofline.py [--force] [--out PATH]   # evals/results/bench_roofline.json
"""

from __future__ import annotations

import numpy as np
from _common import add_out, loadavg_1m, make_parser, now, save_json
from stratos_agent.tools import roofline, server_bench
from stratos_agent.tools.planning import CPU_DEFAULT

from stratos_agent.records.servers import BenchResult

MODELS = ("smollm2-135m", "smollm2-135m-half")
BATCHES = (1, 2, 4, 8, 16)
THREADS = 1


def only(result: BenchResult, batches) -> BenchResult:
    return result.model_copy(
        update={"decode_tok_s": {b: v for b, v in result.decode_tok_s.items() if b in batches}}
    )


def validate(
    name: str, fit_on: list[BenchResult], targets: list[tuple[BenchResult, int]], bw: float, tf: float
):
    eff = roofline.calibrate(fit_on, bw, tf, base=CPU_DEFAULT)
    rows = []
    for res, batch in targets:
        measured = res.decode_tok_s[batch]
        calibrated = roofline.predict_decode_tok_s(res, batch, bw, tf, eff)
        default = roofline.predict_decode_tok_s(res, batch, bw, tf, CPU_DEFAULT)
        rows.append(
            {
                "model": res.model,
                "batch": batch,
                "measured_tok_s": round(measured, 2),
                "predicted_tok_s": round(calibrated, 2),
                "error": round(calibrated / measured - 1, 4),
                "uncalibrated_tok_s": round(default, 2),
                "uncalibrated_error": round(default / measured - 1, 4),
            }
        )
    errs = np.abs([r["error"] for r in rows])
    base = np.abs([r["uncalibrated_error"] for r in rows])
    summary = {
        "protocol": name,
        "fitted": {
            "e_bw": eff.bw,
            "e_f": eff.flops,
            "layer_overhead_ms": eff.layer_overhead_s * 1e3,
            "batched_read": eff.batched_read,
        },
        "mean_abs_error": round(float(errs.mean()), 4),
        "max_abs_error": round(float(errs.max()), 4),
        "within_20pct": f"{int((errs <= 0.2).sum())}/{len(errs)}",
        "uncalibrated_mean_abs_error": round(float(base.mean()), 4),
        "points": rows,
    }
    print(
        f"{name}: mean |error| {errs.mean():.1%} (max {errs.max():.1%}, "
        f"{summary['within_20pct']} within 20%); "
        f"uncalibrated defaults {base.mean():.1%}"
    )
    for r in rows:
        print(
            f"    {r['model']:>18} b{r['batch']:<3} measured {r['measured_tok_s']:7.2f}  predicted "
            f"{r['predicted_tok_s']:7.2f} ({r['error']:+.1%})"
        )
    return summary


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--force", action="store_true",
                        help="measure again instead of reusing today's cached measurement")
    add_out(parser, "bench_roofline.json")
    args = parser.parse_args()
    results = []
    for model in MODELS:
        print(f"measuring {model} ({THREADS} thread, batches {BATCHES}) ...", flush=True)
        results.append(
            server_bench.bench_model(
                model, batches=BATCHES, output_tokens=24, requests=3, threads=THREADS, force=args.force
            )
        )
    bw, tf = results[0].peak_mem_bw_gbps, results[0].peak_tflops
    print(f"measured peaks: {bw:.1f} GB/s stream copy, {tf * 1e3:.1f} GFLOP/s fp32 matmul")
    a, b = results
    held = (2, 4, 8)
    protocols = [
        validate(
            "A batch hold-out (fit b1+b16, predict b2/b4/b8)",
            [only(a, {1, 16}), only(b, {1, 16})],
            [(r, x) for r in results for x in held],
            bw,
            tf,
        ),
        validate(
            f"B model hold-out (fit {a.model}, predict {b.model})", [a], [(b, x) for x in BATCHES], bw, tf
        ),
        validate(
            f"B model hold-out (fit {b.model}, predict {a.model})", [b], [(a, x) for x in BATCHES], bw, tf
        ),
    ]
    gpu = (
        "none: no CUDA device here (a GPU point is stored when `stratos bench-servers --url` "
        "runs against vLLM on one)"
    )
    report = {
        "machine": results[0].fingerprint.model_dump(),
        "loadavg_1m": loadavg_1m(),
        "date": now(),
        "peaks": {"mem_bw_gbps": bw, "tflops": tf},
        "goal": "within 20%",
        "measurements": [r.model_dump(mode="json") for r in results],
        "protocols": protocols,
        "gpu": gpu,
    }
    print(f"GPU: {gpu}")
    save_json(report, args.out)


if __name__ == "__main__":
    main()
