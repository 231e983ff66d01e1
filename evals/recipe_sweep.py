"""Which stream recipe teaches a micro student most per example: one learning curve per recipe arm.

    python evals/recipe_sweep.py                                     # every arm, 8192 examples each (~30 min)
    python evals/recipe_sweep.py --arms baseline,adaptive --examples 32768
    python evals/recipe_sweep.py --smoke --out /tmp/sweep.json       # 2 arms, 256 examples: the test

Every arm trains a fresh micro student (tools/stream_train.py, `--threads 1`) on the SAME examples budget,
not the same wall time: the machine is shared, so a time budget would measure contention. Each arm's
throughput is reported beside it (examples/s while training, validation excluded), so learning per second
is the exact match at the budget over the seconds it took. Every arm changes one choice of the baseline,
the recipe a plan trains a micro student with (tools/train.py `config_from_plan`: mahjong-micro-6m,
lr 1e-3, batch 64, 5% warm-up + cosine, natural share 0.5, even difficulty weighting):

    baseline-seed1 the baseline with another seed: the control (how far chance alone moves an arm)
    lr-2e-3        peak learning rate 2e-3
    batch-128      128 examples per step (half the steps)
    natural-0.8    80% of the stream from the pack's natural generator, 20% over difficulty buckets
    adaptive       difficulty buckets weighted by the validation error (stream_weighting="adaptive")
    micro-2m       the smaller registry student
    wsd            warm-up, stable, linear decay over the last 20% (lr_scheduler="warmup_stable_decay")
    sft-then-grpo  the baseline on 80% of the budget, then GRPO (tools/train.py method="grpo", the
                   verifier's exact/partial/format rewards, full fine-tune) on the other 20%, counted in
                   scored completions (GRPO_BATCH per step: GRPO_BATCH / GRPO_GENERATIONS prompts)

Scored on the fresh even 0-9 hold-out and the natural hold-out of evals/mahjong_quality.py (imported: the
same builders and seeds), whose hands no training stream ever draws (passed as held-out keys), and
compared with the baseline arm of the same run on the same items: the difference and an exact McNemar
test on the items one got right and the other wrong. That test covers the hold-out's sampling, not the
training's: an arm "beats the baseline" when it is better on BOTH hold-outs with p < 0.05 on each AND by
more than the seed control differs from the baseline there. The curves (validation: VALIDATION_SEED's fresh even set, also
held out) go to the calibration store as kind "sweep". A rerun reuses finished arms (same config, same
hold-outs) and resumes an interrupted one from its checkpoint. Saves evals/results/recipe_sweep.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from _common import add_out, add_threads, machine_info, make_parser, save_json
from mahjong_quality import MICRO, fresh_training_rows, holdout, natural_holdout
from scipy.stats import binomtest
from stratos_agent.tools.evaluate import baselines, evaluate
from stratos_agent.tools.stream_train import CURVE_FILE, stream_train
from stratos_agent.tools.synth import synthesize
from stratos_agent.tools.train import MICRO_LR, STREAM_BATCH, train
from stratos_agent.tools.train_callbacks import CurveCallback, validation_items

from stratos_agent.files import write_text_atomic
from stratos_agent.records.calibration import LearningCurve
from stratos_agent.records.evaluation import EvalReport
from stratos_agent.records.training import StudentModel, TrainConfig
from stratos_agent.tasks import get_task_pack

BASELINE = "baseline"
SEED_ARM = "baseline-seed1"  # the control: how far another seed of the same recipe lands
GRPO_ARM = "sft-then-grpo"
ARMS: dict[str, dict[str, Any]] = {  # the TrainConfig fields an arm changes from the baseline
    BASELINE: {},
    SEED_ARM: {"seed": 1},
    "lr-2e-3": {"learning_rate": 2e-3},
    "batch-128": {"batch_size": 128},
    "natural-0.8": {"stream_mix": 0.8},
    "adaptive": {"stream_weighting": "adaptive"},
    "micro-2m": {"base_model": MICRO["micro-2m"]},
    "wsd": {"lr_scheduler": "warmup_stable_decay"},
    GRPO_ARM: {},
}
SMOKE_ARMS = f"{BASELINE},{GRPO_ARM}"
GRPO_SHARE = 0.2  # of the examples budget, after SFT on the rest
GRPO_BATCH = 64  # completions per GRPO step, as many as the SFT batch has examples
GRPO_GENERATIONS = 8  # completions per prompt: the group whose rewards are compared
# Measured at 8192 examples (micro-6m SFT at 19.5% validation): GRPO at 1e-4 (where the SFT cosine ends)
# fell to 5.5% in 26 steps (evals/results/recipe_sweep_grpo_lr_1e-4.json, the first full run); at 1e-5 it
# held 19% (evals/results/recipe_sweep.json). Neither gained: at this budget the SFT examples are worth more.
GRPO_LR = 1e-5
ANSWER_TOKENS = 24  # new tokens when scoring (evals/mahjong_quality.py scores micro students with 24 too)
PAIRED_P = 0.05
STEP_MULTIPLE = 128  # curve points on a multiple of every arm's batch size


# ----------------------------------------------------------------------------------- training
def stream_config(arm: str, examples: int, args) -> TrainConfig:
    """The baseline recipe with the arm's change, for `examples` streamed examples."""
    fields = {
        "run_name": arm, "base_model": MICRO["micro-6m"], "task": "mahjong", "data": Path("no-dataset"),
        "stream": True, "lora": False, "learning_rate": MICRO_LR, "warmup": 0.05, "batch_size": STREAM_BATCH,
        "examples_budget": examples, "save_steps": 100, "save_total_limit": 1, "logging_steps": 20,
        "eval_every": max(STEP_MULTIPLE, examples // args.points // STEP_MULTIPLE * STEP_MULTIPLE),
        "eval_n": args.val_n, "threads": args.threads,
    }
    return TrainConfig(**(fields | ARMS[arm]))


def run_folder(work: Path, name: str, config: TrainConfig, held: set[str]) -> Path:
    """One folder per (config, held-out keys): a rerun resumes or reuses it, another set-up gets its own."""
    digest = hashlib.sha256("\n".join([config.fingerprint(), *sorted(held)]).encode()).hexdigest()[:10]
    return work / f"{name}-{digest}"


def stream_arm(name: str, config: TrainConfig, work: Path, held: set[str], val: list, args) -> StudentModel:
    folder = run_folder(work, name, config, held)
    if (folder / "student.json").is_file():
        print(f"{name}: reusing the finished run in {folder}", flush=True)
        return StudentModel.model_validate_json((folder / "student.json").read_text())
    return stream_train(config, run_dir=folder, exclude_keys=held, val_items=val, val_mix="even",
                        record=args.record, curve_kind="sweep")


def grpo_arm(work: Path, held: set[str], val: list, args) -> tuple[StudentModel, dict]:
    """SFT (the baseline recipe) on 1 - GRPO_SHARE of the budget, then GRPO on the rest; its extra figures."""
    short = get_task_pack("mahjong", prompt="short")
    sft_examples = round(args.examples * (1 - GRPO_SHARE) / STREAM_BATCH) * STREAM_BATCH
    sft = stream_arm(f"{GRPO_ARM}-sft", stream_config(GRPO_ARM, sft_examples, args), work, held, val, args)
    steps = max(1, math.ceil((args.examples - sft.streamed_examples) / GRPO_BATCH))
    prompts = steps * GRPO_BATCH // GRPO_GENERATIONS
    # natural hands (as in play, mostly 1-3 waits: where the student is partly right, the rewards differ);
    # synth's own val/test splits take ~20%, and the hold-out hands are dropped from the train split
    n_synth = math.ceil(prompts * 1.3) + 16
    synthesize(short, n_synth, work / f"grpo-data-{n_synth}", mode="solver", style="answer", seed=1)
    rows, dropped = fresh_training_rows(work / f"grpo-data-{n_synth}", held | {short.canonical_key(it) for it in val},
                                        work / f"grpo-rows-{prompts}")
    config = TrainConfig(
        run_name="grpo", base_model=str(sft.model_dir), method="grpo", task="mahjong",
        data=work / f"grpo-rows-{prompts}", lora=False, learning_rate=args.grpo_lr, lr_scheduler="constant_with_warmup",
        warmup=0, max_steps=steps, batch_size=GRPO_BATCH, grpo_num_generations=GRPO_GENERATIONS,
        grpo_max_completion_len=ANSWER_TOKENS, save_steps=50, save_total_limit=1, logging_steps=5,
        threads=args.threads, lineage=sft.config.base_model, examples_before=sft.streamed_examples,
    )
    curve = CurveCallback(short, val, every_steps=max(1, steps // 2), max_new_tokens=ANSWER_TOKENS, task="mahjong",
                          student=config.curve_student, method="grpo-full", batch_size=GRPO_BATCH,
                          lr=args.grpo_lr, run=f"recipe_sweep:{GRPO_ARM}", kind="sweep", record=args.record,
                          examples_before=sft.streamed_examples)
    grpo = train(config, run_dir=run_folder(work, f"{GRPO_ARM}-grpo", config, held), callbacks=[curve])
    if curve.points:  # trained now (a reused run's callback never ran): keep its curve beside the model
        write_text_atomic(grpo.run_dir / CURVE_FILE, curve.curve().model_dump_json(indent=1))
    grpo_curve = LearningCurve.model_validate_json((grpo.run_dir / CURVE_FILE).read_text())  # seconds: no validation
    extra = {"sft_examples": sft.streamed_examples, "sft_seconds": sft.train_seconds,
             "grpo_completions": grpo.global_step * GRPO_BATCH, "grpo_prompts_per_step": GRPO_BATCH // GRPO_GENERATIONS,
             "grpo_seconds": grpo_curve.final.seconds, "grpo_rows": rows, "grpo_rows_dropped_as_held_out": dropped,
             "grpo_lr": args.grpo_lr, "grpo_curve": [p.model_dump() for p in grpo_curve.points],
             "load_avg": grpo_curve.load_avg,
             "sft_curve": [p.model_dump() for p in sft.learning_curve.points]}
    return grpo, extra | {"examples": sft.streamed_examples + extra["grpo_completions"],
                          "train_seconds": round(sft.train_seconds + grpo_curve.final.seconds, 2)}


# ----------------------------------------------------------------------------------- scoring
def paired(arm: list[bool], base: list[bool]) -> dict:
    """The arm minus the baseline on the same items, and the exact McNemar p-value of that difference."""
    gained = sum(a and not b for a, b in zip(arm, base, strict=True))
    lost = sum(b and not a for a, b in zip(arm, base, strict=True))
    p = binomtest(gained, gained + lost, 0.5).pvalue if gained + lost else 1.0
    return {"diff": (gained - lost) / len(arm), "gained": gained, "lost": lost, "p": round(float(p), 4)}


def score_block(report: EvalReport) -> dict:
    return {"n": report.n, "exact": report.exact_match, "ci": [report.exact_match_ci.low, report.exact_match_ci.high],
            "by_difficulty": {r.difficulty: round(r.exact_match.value, 3) for r in report.by_difficulty}}


def arm_result(name: str, student: StudentModel, extra: dict, reports: dict[str, EvalReport]) -> dict:
    examples = extra.get("examples", student.streamed_examples)
    seconds = extra.get("train_seconds", student.train_seconds)
    curve = student.learning_curve
    return {
        "arm": name, "change": ARMS[name] | ({"grpo_share": GRPO_SHARE, "grpo_lr": extra["grpo_lr"]} if name == GRPO_ARM else {}),
        "examples": examples, "train_seconds": seconds, "examples_per_s": round(examples / seconds, 1),
        "load_avg": curve.load_avg if curve else extra["load_avg"],
        "curve": [p.model_dump() for p in curve.points] if curve else extra["sft_curve"] + extra["grpo_curve"][1:],
        **{split: score_block(report) for split, report in reports.items()},
        "weights_history": _card(student).get("weights_history"),
        **{k: v for k, v in extra.items() if k not in ("examples", "train_seconds", "load_avg")},
    }


def _card(student: StudentModel) -> dict:
    path = Path(student.run_dir) / "stream_card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def compare(results: list[dict], items: dict[str, list[list[bool]]]) -> None:
    """Each arm against the baseline arm, per hold-out (in place). The McNemar test covers the hold-out's
    sampling only; when the seed control ran, an arm must also beat the baseline by more than it does."""
    base = next(i for i, r in enumerate(results) if r["arm"] == BASELINE)
    for i, r in enumerate(results):
        if i != base:
            r["vs_baseline"] = {split: paired(items[split][i], items[split][base]) for split in items}
    noise = next((r["vs_baseline"] for r in results if r["arm"] == SEED_ARM), None)
    for r in results:
        if r["arm"] not in (BASELINE, SEED_ARM):
            r["beats_baseline"] = all(c["diff"] > 0 and c["p"] < PAIRED_P and (
                noise is None or c["diff"] > abs(noise[split]["diff"])) for split, c in r["vs_baseline"].items())


def table(results: list[dict]) -> str:
    """One row per arm; `load` is the 1-minute load average while it trained (ex/s falls as it rises),
    `validation curve` its exact match (%) at each curve point."""
    head = (f"{'arm':<14} {'examples':>8} {'train s':>8} {'ex/s':>6} {'load':>5} {'even':>6} {'vs base (p)':>15} "
            f"{'natural':>7} {'vs base (p)':>15}  validation curve")
    lines = [head, "-" * len(head)]
    for r in results:
        vs = r.get("vs_baseline", {})
        cells = [f"{r[s]['exact']:>6.1%} " + (f"{vs[s]['diff']:+6.1%} ({vs[s]['p']:.3f})" if s in vs else " " * 15)
                 for s in ("even", "natural")]
        load = f"{r['load_avg']:>5.1f}" if r["load_avg"] is not None else f"{'-':>5}"
        curve = "/".join(f"{p['exact']:.0%}".rstrip("%") for p in r["curve"])
        lines.append(f"{r['arm']:<14} {r['examples']:>8} {r['train_seconds']:>8.0f} {r['examples_per_s']:>6.1f} "
                     f"{load} {cells[0]} {cells[1]:>23}  {curve}"
                     + ("  <- beats the baseline" if r.get("beats_baseline") else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main
def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of: {', '.join(ARMS)}")
    ap.add_argument("--examples", type=int, default=8192, help="examples budget of every arm")
    ap.add_argument("--points", type=int, default=4, help="learning-curve points per arm (adaptive: re-weighings)")
    ap.add_argument("--val-n", type=int, default=200, help="validation items per curve point (even 0-9)")
    ap.add_argument("--holdout", type=int, default=500, help="even 0-9 hold-out items")
    ap.add_argument("--natural-holdout", type=int, default=400, help="natural-mix hold-out items")
    ap.add_argument("--grpo-lr", type=float, default=GRPO_LR, help="GRPO learning rate (sft-then-grpo)")
    ap.add_argument("--no-record", dest="record", action="store_false",
                    help="keep the curves out of the calibration store (default: recorded as kind sweep)")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_ARMS}, 256 examples, small sets (tests)")
    ap.add_argument("--work-dir", type=Path, default=None)
    add_threads(ap)
    add_out(ap, "recipe_sweep.json")
    args = ap.parse_args()
    if args.smoke:
        args.arms = args.arms if args.arms != ",".join(ARMS) else SMOKE_ARMS
        args.examples, args.points, args.val_n, args.holdout, args.natural_holdout = 256, 2, 20, 40, 40
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    arms = [BASELINE] + [a for a in arms if a != BASELINE]  # every comparison is against this run's baseline
    torch.set_num_threads(args.threads)
    t_start, started, load_start = time.monotonic(), time.time(), os.getloadavg()
    work = args.work_dir or Path("runs") / "bench" / ("recipe-sweep-smoke" if args.smoke else "recipe-sweep")
    work.mkdir(parents=True, exist_ok=True)

    short = get_task_pack("mahjong", prompt="short")
    sets = {"even": holdout(short, args.holdout, work / "holdout.jsonl"),
            "natural": natural_holdout(short, args.natural_holdout, work / "holdout_natural.jsonl")}
    held = {short.canonical_key(it) for items in sets.values() for it in items}
    val = validation_items(short, work / "no-dataset", args.val_n)  # fresh, even 0-9; the stream drops them too
    results, item_exact = [], {split: [] for split in sets}
    for arm in arms:
        t0 = time.monotonic()
        if arm == GRPO_ARM:
            student, extra = grpo_arm(work, held, val, args)
        else:
            student, extra = stream_arm(arm, stream_config(arm, args.examples, args), work, held, val, args), {}
        reports = {split: evaluate(short, work / f"holdout{'' if split == 'even' else '_natural'}.jsonl",
                                   model=str(student.model_dir), max_new_tokens=ANSWER_TOKENS, threads=args.threads,
                                   batch_size=64) for split in sets}
        for split, report in reports.items():
            item_exact[split].append(report.item_exact)
        trained_now = (Path(student.run_dir) / "student.json").stat().st_mtime >= started
        results.append(arm_result(arm, student, extra, reports) | {
            "trained_in_this_run": trained_now, "wall_seconds": round(time.monotonic() - t0, 1)})
        print(f"{arm}: even {reports['even'].exact_match:.1%}, natural {reports['natural'].exact_match:.1%}, "
              f"{results[-1]['examples']} examples in {results[-1]['train_seconds']:.0f} s", flush=True)
    compare(results, item_exact)
    print(table(results))
    winners = [r["arm"] for r in results if r.get("beats_baseline")]
    save_json({
        "benchmark": "recipe_sweep",
        "command": f"python evals/recipe_sweep.py --arms {','.join(arms)} --examples {args.examples} "
                   f"--points {args.points} --val-n {args.val_n} --threads {args.threads}"
                   + (f" --grpo-lr {args.grpo_lr:g}" if GRPO_ARM in arms else "")
                   + (" --smoke" if args.smoke else ""),
        "machine": machine_info(threads=args.threads, loadavg_start=load_start, loadavg_end=os.getloadavg(),
                                note="2 CPU cores shared with other jobs: examples/s varies with contention"),
        "budget": {"examples": args.examples, "unit": "examples (GRPO: scored completions)"},
        "holdouts": {split: len(items) for split, items in sets.items()}, "validation_items": len(val),
        "trivial_baselines": {split: {b.name: b.exact_match.value for b in baselines(short, items)}
                              for split, items in sets.items()},
        "baseline_arm": BASELINE, "arms": results, "beats_baseline_on_both": winners,
        "rule": f"beats = higher on both hold-outs, exact McNemar p < {PAIRED_P} on each, and by more than "
                f"the seed control ({SEED_ARM}) differs from the baseline",
        "table": table(results), "total_seconds": round(time.monotonic() - t_start, 1),
    }, args.out, indent=1)


if __name__ == "__main__":
    main()
