"""Plan calibration: predicted vs measured accuracy and training time, on real recorded learning curves.

    .venv/bin/python evals/plan_calibration.py                          # the store's curves, leave-one-out
    .venv/bin/python evals/plan_calibration.py --run 6 --threads 1      # first 6 short real local runs
    .venv/bin/python evals/plan_calibration.py --stream 4 --threads 1   # first 4 micro-student stream runs

With `--run N`, N short local trainings (Mahjong, solver-mode data as the plan's injection runs use,
the planner's learning rates: 1e-4 full / 1e-3 LoRA, constant after warm-up) rotate over students,
methods and sizes through `stratos_agent.tools.train.train`; each records its learning curve in the
calibration store (tools/train_callbacks.CurveCallback: greedy exact match on fixed validation items
every few steps). With `--stream N`, N runs of the micro student (`mahjong-micro-2m`, trained from
scratch on a stream of fresh verified items, tools/stream_train.py, which records its own curve) rotate
over `--stream-sizes` example budgets. Then, for every recorded curve with a final point:

- accuracy, leave-one-run-out: the run's final exact match predicted from the OTHER runs of the same
  (task, student, method) (tools/calibration: measured if one reached that budget, else fitted), for
  each curve model (exp, power) -> which model `CURVE_MODEL` should be; next to two naive predictors
  (the pairing prior, and the mean of the other runs' finals);
- accuracy, pilot: the same with the run's own first half added (what a one-minute pilot gives);
- accuracy, self-prefix: the run's final predicted from its own first half alone (2x extrapolation);
- training time, leave-one-run-out: (examples trained) / (median examples/s of the other runs of the
  same student and method on this hardware) vs the run's measured training seconds;
- p95 latency, per deployed agent run in `--runs-dir` (default: the runs dir): the plan's p95 for its
  chosen point (measured by the latency probe, or modelled) vs the p95 the deploy stage's load test
  measured on the live endpoint, split by where the plan's figure came from.

Goals (issue 11): median absolute accuracy error <= 5 points; training time within 25%; p95 within 25%.
Prints and saves evals/results/plan_calibration.json (or --out).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from _common import add_out, add_threads, machine_info, make_parser, now, save_json
from stratos_agent.tools import calibration, curve_fit
from stratos_agent.tools.curve_conditions import same_trajectory

from stratos_agent.records.calibration import LearningCurve
from stratos_agent.settings import get_settings

TASK = "mahjong"
# (student, LoRA rank) rotation and example budgets of the --run trainings (batch 8).
RUN_GRID = (("smollm2-135m", 0), ("smollm2-135m-half", 0), ("smollm2-135m", 16))
SIZES = (240, 400, 320, 480)
BATCH = 8
MICRO = "mahjong-micro-2m"
STREAM_SIZES = (4096, 8192, 6144, 12288)
STREAM_BATCH = 64


# --------------------------------------------------------------------------------- real runs
def run_trainings(n: int, args) -> list[str]:
    """N short local trainings, each recording its curve; the run names (paths of stored curves)."""
    import torch
    from stratos_agent.tools.train import CHATML, train
    from stratos_agent.tools.train_callbacks import curve_callback_for

    from stratos_agent.records.training import TrainConfig
    from stratos_agent.tasks.recipes import recipe_for

    torch.set_num_threads(args.threads)
    recipe = recipe_for(TASK)
    work = args.work_dir
    data = _data(args)
    stamp = now().replace(":", "").replace("-", "")
    stored = []
    for i in range(n):
        student, rank = RUN_GRID[i % len(RUN_GRID)]
        size = args.sizes[(i // len(RUN_GRID)) % len(args.sizes)]  # every (student, method) at each size
        name = f"cal-{stamp}-{i}-{student}-{'full' if rank == 0 else f'r{rank}'}-{size}"
        cfg = TrainConfig(
            run_name=name, base_model=student, method="sft", data=data.hf_path, task=TASK, lora=rank > 0,
            lora_r=rank or 16, lora_alpha=2 * (rank or 16), learning_rate=1e-3 if rank else 1e-4,
            lr_scheduler="constant_with_warmup", warmup=5, max_steps=size // BATCH, batch_size=BATCH,
            max_seq_len=recipe.max_seq_len, save_steps=10**6, logging_steps=5, chat_template=CHATML,
            threads=args.threads, seed=args.seed + i,  # same seed + data: a shorter run is a prefix of a longer one
        )
        cb = curve_callback_for(cfg, n_items=args.val_n, every_steps=args.every, run=f"plan_calibration:{name}")
        t0 = time.monotonic()
        train(cfg, run_dir=work / name, callbacks=[cb])
        final = cb.points[-1]
        print(f"run {i + 1}/{n} {name}: {final.exact:.1%} at {final.examples} examples, "
              f"{cb.curve().examples_per_s:.2f} ex/s, {time.monotonic() - t0:.0f} s wall -> {cb.path}", flush=True)
        stored.append(str(cb.path))
        for sub in ("model", "adapter", "checkpoints"):  # weights are not needed: the curve is the result
            shutil.rmtree(work / name / sub, ignore_errors=True)
    return stored


def _data(args):
    from stratos_agent.tools.synth import synthesize

    from stratos_agent.tasks.recipes import recipe_for

    recipe = recipe_for(TASK)
    return synthesize(recipe.pack(TASK, "student"), args.synth_n, args.work_dir / "data", mode="solver",
                      style=recipe.style, distribution="even", seed=0)


def stream_runs(n: int, args) -> list[str]:
    """N micro-student stream runs (each anneals to its own example budget and records its curve)."""
    from stratos_agent.tools.train import train

    from stratos_agent.records.training import TrainConfig

    data = _data(args)
    stamp = now().replace(":", "").replace("-", "")
    stored = []
    for i in range(n):
        size = args.stream_sizes[i % len(args.stream_sizes)]
        name = f"cal-{stamp}-s{i}-{MICRO}-{size}"
        cfg = TrainConfig(run_name=name, base_model=MICRO, task=TASK, data=data.path, stream=True, lora=False,
                          learning_rate=1e-3, batch_size=STREAM_BATCH, examples_budget=size, seed=args.seed + i,
                          eval_every=max(STREAM_BATCH, size // 6 // STREAM_BATCH * STREAM_BATCH),
                          eval_n=args.val_n, max_seq_len=64, save_steps=10**6, threads=args.threads)
        student = train(cfg, run_dir=args.work_dir / name)
        curve = student.learning_curve
        print(f"stream run {i + 1}/{n} {name}: {curve.final.exact:.1%} at {curve.final.examples} examples, "
              f"{curve.examples_per_s:.0f} ex/s", flush=True)
        stored.append(str(args.work_dir / name))
        shutil.rmtree(args.work_dir / name / "model", ignore_errors=True)
        shutil.rmtree(args.work_dir / name / "checkpoints", ignore_errors=True)
    return stored


# --------------------------------------------------------------------------------- analysis
def _prior(c: LearningCurve) -> float:
    """The planner's prior for the run (injection, the bundled teacher's prior probe)."""
    from stratos_agent.tools.pairing import (
        STRATEGY_CODES,
        capacity,
        expected_accuracy,
        prior_probe,
        task_profile,
    )
    from stratos_agent.tools.planning.grid import EPOCHS

    from stratos_agent.models import get_registry

    reg = get_registry()
    prof = task_profile(c.task)
    student = reg.get(c.student)
    rank = 0 if c.method.endswith("full") else int(c.method.rsplit("lora", 1)[1])
    probe = prior_probe(reg.get("smollm2-135m"), prof.difficulty)
    cap = capacity(student.parameters, prof.difficulty)
    n = c.final.examples / EPOCHS  # the planner pairs n rows with n x EPOCHS examples
    return float(expected_accuracy(STRATEGY_CODES["injection"], probe, cap, n, rank, prof.difficulty))


def others_for(c: LearningCurve, all_curves: list[LearningCurve]) -> list[LearningCurve]:
    """The independent runs of the same (task, student, method) as `c`."""
    return [o for o in all_curves if o.run != c.run and (o.task, o.student, o.method) == (c.task, c.student, c.method)
            and not same_trajectory(o, c)]


def accuracy_rows(all_curves: list[LearningCurve]) -> list[dict]:
    rows = []
    for c in all_curves:
        final = c.final
        if final is None or final.examples == 0:
            continue
        others = others_for(c, all_curves)
        half = c.model_copy(update={"points": [p for p in c.points if p.examples <= final.examples / 2]})
        row = {"run": c.run, "student": c.student, "method": c.method, "examples": final.examples,
               "measured": final.exact, "n": final.n, "other_runs": len(others), "prior": _prior(c),
               "mean_of_others": float(np.mean([o.final.exact for o in others])) if others else None,
               "others_last": max((o.final.examples for o in others), default=None)}
        for model in curve_fit.MODELS:
            for name, pool in (("loo", others), ("pilot", [*others, half])):
                cs = calibration.build_curve_set(c.task, c.student, c.method, pool, model)
                out = cs.predict([final.examples])
                row[f"{name}_{model}"] = {
                    "source": calibration.SOURCES[int(out["source"][0])], "value": float(out["value"][0]),
                    "low": float(out["low"][0]), "high": float(out["high"][0]),
                }
        own = [p for p in c.points if 0 < p.examples <= final.examples / 2]
        if len(own) >= calibration.MIN_POINTS:  # the run's own first half alone, extrapolated 2x
            prefix = c.model_copy(update={"points": own})
            for model in curve_fit.MODELS:
                out = calibration.build_curve_set(c.task, c.student, c.method, [prefix], model).predict(
                    [final.examples])
                if out["source"][0] == calibration.SOURCES.index("fitted"):
                    row[f"self_prefix_{model}"] = {"value": float(out["value"][0]), "low": float(out["low"][0]),
                                                   "high": float(out["high"][0])}
        rows.append(row)
    return rows


def time_rows(all_curves: list[LearningCurve]) -> list[dict]:
    rows = []
    for c in all_curves:
        final = c.final
        if final is None or final.seconds <= 0:
            continue
        rates = [o.examples_per_s for o in all_curves if o.run != c.run and
                 (o.task, o.student, o.method, o.hardware) == (c.task, c.student, c.method, c.hardware)]
        # (throughput is timed separately in every run, so a same-trajectory run still counts here)
        trained = final.examples - c.start_examples
        pred = trained / float(np.median(rates)) if rates else None
        rows.append({"run": c.run, "student": c.student, "method": c.method, "examples": trained,
                     "measured_s": final.seconds, "predicted_s": pred, "other_runs": len(rates),
                     "load_avg": c.load_avg,
                     "rel_error": abs(pred - final.seconds) / final.seconds if pred else None})
    return rows


def latency_rows(runs_dir: Path) -> list[dict]:
    """Planned vs measured p95 of every agent run in `runs_dir` that deployed its student; the probe's load
    next to the planned figure (the load test after deploy records none yet)."""
    from stratos_agent.graphs.session import AgentSession, list_runs

    rows = []
    for info in list_runs(runs_dir):
        if "deployment" not in info["done"]:
            continue
        values = AgentSession(info["thread_id"], runs_dir=runs_dir).outcome().values
        point, test = values["plan"].chosen, values["deployment"].load_test
        if point is None or test is None or not test.p95_ms:
            continue
        probe = next((p for p in values["plan"].latency_probes if p.model == point.student), None)
        rows.append({"run": info["thread_id"], "student": point.student, "server": point.server,
                     "latency_source": point.latency_source, "planned_ms": point.p95_ms,
                     "probe_load_avg": probe.load_avg if probe else None, "probe_requests": probe.requests if probe
                     else None, "measured_ms": test.p95_ms, "requests": test.requests,
                     "concurrency": test.concurrency, "rel_error": abs(point.p95_ms - test.p95_ms) / test.p95_ms})
    return rows


def _within(rows: list[dict], key: str, goal: float = 0.25) -> float | None:
    """Share of rows whose relative error `key` is at most `goal` (None without any)."""
    errors = [r[key] for r in rows if r[key] is not None]
    return round(sum(e <= goal for e in errors) / len(errors), 3) if errors else None


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(float(np.median(xs)), 4) if xs else None


def summarise(acc: list[dict], times: list[dict], latency: list[dict]) -> dict:
    out: dict = {"runs_with_prediction": {}, "accuracy_median_abs_error_points": {}}
    for key in [k for k in (acc[0] if acc else {}) if k.startswith(("loo_", "pilot_"))]:
        hit = [r for r in acc if r[key]["source"] != "prior"]
        out["runs_with_prediction"][key] = len(hit)
        out["accuracy_median_abs_error_points"][key] = _median(
            [100 * abs(r[key]["value"] - r["measured"]) for r in hit])
        out.setdefault("interval_coverage", {})[key] = (
            round(sum(r[key]["low"] <= r["measured"] <= r[key]["high"] for r in hit) / len(hit), 3) if hit else None)
    for key in (f"loo_{m}" for m in curve_fit.MODELS):  # the same split by where the figure came from
        for source in ("measured", "fitted"):
            hit = [r for r in acc if r[key]["source"] == source]
            out.setdefault("by_source", {})[f"{key}_{source}"] = {
                "runs": len(hit), "median_abs_error_points": _median([100 * abs(r[key]["value"] - r["measured"])
                                                                      for r in hit]),
                "max_extrapolation": max((r["examples"] / r["others_last"] for r in hit if r["others_last"]),
                                         default=None)}
    for model in curve_fit.MODELS:
        hit = [r for r in acc if f"self_prefix_{model}" in r]
        out.setdefault("self_prefix_2x", {})[model] = {
            "runs": len(hit), "median_abs_error_points": _median(
                [100 * abs(r[f"self_prefix_{model}"]["value"] - r["measured"]) for r in hit]),
            "interval_coverage": round(sum(r[f"self_prefix_{model}"]["low"] <= r["measured"] <=
                                           r[f"self_prefix_{model}"]["high"] for r in hit) / len(hit), 3)
            if hit else None}
    with_others = [r for r in acc if r["other_runs"]]
    out["accuracy_median_abs_error_points"]["naive_mean_of_other_runs"] = _median(
        [100 * abs(r["mean_of_others"] - r["measured"]) for r in with_others])
    out["accuracy_median_abs_error_points"]["pairing_prior"] = _median(
        [100 * abs(r["prior"] - r["measured"]) for r in acc])
    out["pairing_prior_rms_error"] = (round(float(np.sqrt(np.mean([(r["prior"] - r["measured"]) ** 2 for r in acc]))), 4)
                                      if acc else None)
    out["time_median_rel_error"] = _median([r["rel_error"] for r in times])
    out["time_within_25pct"] = _within(times, "rel_error")
    out["time_runs_with_prediction"] = sum(r["predicted_s"] is not None for r in times)
    # The models differ only where a figure is extrapolated: the fitted leave-one-out rows and the
    # self-prefix rows, pooled, decide `CURVE_MODEL`.
    extrap = {m: [100 * abs(r[f"loo_{m}"]["value"] - r["measured"]) for r in acc if r[f"loo_{m}"]["source"] == "fitted"]
              + [100 * abs(r[f"self_prefix_{m}"]["value"] - r["measured"]) for r in acc if f"self_prefix_{m}" in r]
              for m in curve_fit.MODELS}
    out["extrapolated_median_abs_error_points"] = {m: {"n": len(v), "median": _median(v)} for m, v in extrap.items()}
    out["best_curve_model"] = min(curve_fit.MODELS, key=lambda m: _median(extrap[m]) or 1e9)
    out["p95"] = {source: {"runs": len(hit), "median_rel_error": _median([r["rel_error"] for r in hit]),
                           "within_25pct": _within(hit, "rel_error")}
                  for source, hit in (("all", latency),
                                      *((s, [r for r in latency if r["latency_source"] == s])
                                        for s in ("measured", "modelled")))}
    acc_err = out["accuracy_median_abs_error_points"].get(f"loo_{calibration.CURVE_MODEL}")
    out["goals"] = {
        "accuracy median abs error <= 5 points (loo, CURVE_MODEL)": acc_err is not None and acc_err <= 5,
        "training time median error <= 25%": out["time_median_rel_error"] is not None
        and out["time_median_rel_error"] <= 0.25,
        "p95 median error <= 25% (all deployed runs)": out["p95"]["all"]["median_rel_error"] is not None
        and out["p95"]["all"]["median_rel_error"] <= 0.25,
    }
    return out


def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--run", type=int, default=0, help="short real local trainings to run (and record) first")
    ap.add_argument("--stream", type=int, default=0, help="micro-student stream runs to run (and record) first")
    ap.add_argument("--stream-sizes", type=lambda t: [int(x) for x in t.split(",")], default=list(STREAM_SIZES),
                    help="comma-separated example budgets the stream runs rotate over")
    ap.add_argument("--recorded-by", default="", help="free text saved with the result: the commands that "
                    "recorded the store's curves (when this run only analyses them)")
    ap.add_argument("--seed", type=int, default=1, help="training seed of the first run (then +1 per run)")
    ap.add_argument("--synth-n", type=int, default=1500, help="solver-mode rows synthesised for the runs")
    ap.add_argument("--val-n", type=int, default=48, help="validation items per curve point")
    ap.add_argument("--every", type=int, default=10, help="steps between curve points")
    ap.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=list(SIZES),
                    help="comma-separated example budgets the runs rotate over (batch 8)")
    ap.add_argument("--work-dir", type=Path, default=Path("runs") / "bench" / "plan-calibration")
    ap.add_argument("--runs-dir", type=Path, default=None, help="agent runs whose planned vs deployed p95 are "
                    "compared [default: the runs dir, STRATOS_RUNS_DIR]")
    add_threads(ap)
    add_out(ap, "plan_calibration.json")
    args = ap.parse_args()
    t0 = time.monotonic()
    new = run_trainings(args.run, args) if args.run else []
    new += stream_runs(args.stream, args) if args.stream else []
    stored = [c for c in calibration.curves(TASK) if c.final is not None]
    acc, times = accuracy_rows(stored), time_rows(stored)
    latency = latency_rows(args.runs_dir or get_settings().runs_dir)
    summary = summarise(acc, times, latency)
    result = {
        "benchmark": "plan_calibration",
        "command": f"python evals/plan_calibration.py --run {args.run} --stream {args.stream} "
        f"--threads {args.threads} --val-n {args.val_n} --every {args.every}",
        "machine": machine_info(threads=args.threads, note="2 CPU cores shared with other jobs"),
        "store": str(calibration.store_dir()),
        "curve_model": calibration.CURVE_MODEL,
        "curves": len(stored),
        "recorded_this_run": new,
        "recorded_by": args.recorded_by,
        "summary": summary,
        "accuracy": acc,
        "time": times,
        "latency": latency,
        "curve_points": [{"run": c.run, "student": c.student, "method": c.method, "examples_per_s": c.examples_per_s,
                          "load_avg": c.load_avg, "points": [[p.examples, p.exact, p.n, p.seconds] for p in c.points]}
                         for c in stored],
        "total_seconds": round(time.monotonic() - t0, 1),
    }
    for r in acc:
        loo = r[f"loo_{calibration.CURVE_MODEL}"]
        print(f"{r['student']:>18} {r['method']:>10} {r['examples']:>5} ex: measured {r['measured']:.1%}, "
              f"loo {loo['value']:.1%} [{loo['low']:.0%}-{loo['high']:.0%}] ({loo['source']}), prior {r['prior']:.1%}")
    for r in times:
        pred = f"{r['predicted_s']:.0f} s" if r["predicted_s"] else "-"
        print(f"{r['student']:>18} {r['method']:>10} {r['examples']:>5} ex: {r['measured_s']:.0f} s measured, {pred} predicted")
    for r in latency:
        print(f"{r['run']}: {r['student']} p95 planned {r['planned_ms']:.0f} ms ({r['latency_source']}), "
              f"deployed {r['measured_ms']:.0f} ms ({r['requests']} requests at concurrency {r['concurrency']})")
    print(summary)
    save_json(result, args.out, indent=1)


if __name__ == "__main__":
    main()
