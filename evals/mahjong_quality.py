"""Knowledge injection on Mahjong winning tiles: can SmolLM2-135M beat its own (untrained) teacher?

    python evals/mahjong_quality.py --minutes 60            # default: 60 minutes of training
    python evals/mahjong_quality.py --minutes 25 --threads 2

Pipeline, all real: reverse synthesis in solver mode (answers known by construction, the task pack's
own verifier checks every row) -> SFT of the bundled SmolLM2-135M (-> GRPO with the verifier as
reward when `--grpo-share` > 0) within `--minutes` of training wall time -> evaluation on a fresh
500-item hold-out in the public benchmark format (Unicode tiles), even over 0-9 winning tiles,
disjoint from the training set. Compared with the untrained teacher (same model, full instructions)
and the trivial baselines. Learning curve: exact match of time-triggered checkpoints on a slice.

Design for a 135M model on 2 shared CPU cores (every token costs ~1 GFLOP of training):
- answer-only completions (`Winning tiles: 147m 5p`, ~10 tokens; the step-by-step rationale is ~160)
  and a hand-only prompt (`Hand: 123m 456p ...`, ~20 tokens vs ~110 with the instructions): ~4x more
  examples per minute; the rules live in the weights after training;
- compact notation: digits are single SmolLM2 tokens, so a hand is ~16 tokens, not 39 (Unicode);
- even difficulty mix, same as the hold-out; constant LR after a short warm-up, because the run is
  stopped by wall time (a cosine schedule would need the step count in advance).
Prints the results and saves JSON to evals/results/mahjong_quality.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from _common import add_out, add_threads, copy_beside, machine_info, make_parser, save_json
from stratos_agent.tools.evaluate import baselines, evaluate
from stratos_agent.tools.synth import synthesize
from stratos_agent.tools.train import CHATML, checkpoint_model, train
from transformers import TrainerCallback

from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack

HOLDOUT_SEED = 9_999  # fresh items: a different stream from the training data, then de-duplicated


class TimedCheckpoints(TrainerCallback):
    """Save a checkpoint at fixed fractions of the time budget (learning-curve points)."""

    def __init__(self, budget_s: float, fractions: tuple[float, ...]) -> None:
        self.marks = [budget_s * f for f in fractions]
        self.t0 = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.marks and time.monotonic() - self.t0 >= self.marks[0]:
            self.marks.pop(0)
            control.should_save = True


def holdout(pack, n: int, path: Path) -> list:
    """`n` fresh items even over 0-9 winning tiles, bucket-interleaved so every prefix is even too.

    Repeats are allowed (9-wait hands: only 3 distinct exist, the pure nine-gates shape per suit);
    the training rows are filtered against these hands instead (`fresh_training_rows`).
    """
    items = pack.sample(n, seed=HOLDOUT_SEED, distribution="even")
    by_bucket: dict = {}
    for it in items:
        by_bucket.setdefault(pack.difficulty_bucket(it), []).append(it)
    longest = max(len(v) for v in by_bucket.values())
    chosen = [by_bucket[b][i] for i in range(longest) for b in pack.difficulty_buckets
              if i < len(by_bucket.get(b, []))]
    pack.write_jsonl(chosen, path)
    return chosen


def fresh_training_rows(data_dir: Path, held_keys: set[str], out: Path) -> tuple[int, int]:
    """Train split minus every hand that is in the hold-out: (rows kept, rows dropped)."""
    from datasets import load_from_disk

    rows = load_from_disk(str(data_dir / "dataset"))["train"]
    kept = rows.filter(lambda r: r["key"] not in held_keys)
    if not out.exists():
        kept.save_to_disk(str(out))
    return len(kept), len(rows) - len(kept)


def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--minutes", type=float, default=60, help="training wall time (SFT + GRPO)")
    ap.add_argument("--train-n", type=int, default=20_000, help="solver-mode examples to synthesise")
    ap.add_argument("--holdout", type=int, default=500)
    ap.add_argument("--style", default="answer", help="rationale style: answer, steps, search")
    ap.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="full FT (else LoRA)")
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-4 full FT, 1e-3 LoRA")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--grpo-share", type=float, default=0.0, help="share of --minutes for GRPO after SFT")
    ap.add_argument("--teacher-limit", type=int, default=100, help="hold-out items the slow teacher answers")
    ap.add_argument("--curve-limit", type=int, default=100, help="hold-out items per learning-curve point")
    add_threads(ap)
    ap.add_argument("--work-dir", type=Path, default=None)
    add_out(ap, "mahjong_quality.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    load_start = os.getloadavg()
    work = args.work_dir or Path("runs") / "bench" / f"mahjong-quality-{args.minutes:g}m-{args.style}"
    work.mkdir(parents=True, exist_ok=True)
    short = get_task_pack("mahjong", prompt="short")  # what the student sees
    full = get_task_pack("mahjong")  # the untrained teacher needs the rules in the prompt

    # 1. fresh hold-out first, then reverse synthesis (solver mode, every row verified by the pack)
    items = holdout(short, args.holdout, work / "holdout.jsonl")
    t0 = time.monotonic()
    data = synthesize(short, args.train_n, work / "data", mode="solver", style=args.style,
                      distribution="even", seed=0)
    synth_s = time.monotonic() - t0
    n_train, n_dropped = fresh_training_rows(work / "data", {short.canonical_key(it) for it in items},
                                             work / "train_rows")
    print(f"synth: {data.card.n_accepted} rows in {synth_s:.1f}s; {n_train} train rows after dropping "
          f"{n_dropped} hold-out hands; hold-out {len(items)} items", flush=True)

    # 2. the untrained teacher on a slice (it writes long answers: slow), with the full instructions
    teacher = evaluate(full, work / "holdout.jsonl", model="smollm2-135m", limit=args.teacher_limit,
                       max_new_tokens=64, threads=args.threads)
    print(teacher.headline(), flush=True)

    # 3. SFT within its share of the time budget
    budget = args.minutes * 60
    sft_s = budget * (1 - args.grpo_share)
    lr = args.lr or (2e-4 if args.full else 1e-3)
    sft_cfg = TrainConfig(
        run_name="sft", base_model="smollm2-135m", method="sft", data=work / "train_rows",
        data_card=str(work / "data" / "data_card.md"), lora=not args.full, lora_r=64, lora_alpha=128,
        learning_rate=lr, lr_scheduler="constant_with_warmup", warmup=10, max_steps=100_000,
        batch_size=args.batch_size, max_seq_len=args.max_seq_len, save_steps=100_000, save_total_limit=None,
        logging_steps=5, chat_template=CHATML, time_limit_s=sft_s, threads=args.threads,
    )
    sft = train(sft_cfg, run_dir=work / "sft", callbacks=[TimedCheckpoints(sft_s, (0.25, 0.5))])
    final = sft
    grpo = None
    if args.grpo_share > 0:
        grpo_cfg = TrainConfig(
            run_name="grpo", base_model=str(sft.model_dir), method="grpo", task="mahjong", data=work / "train_rows",
            lora=True, lora_r=16, lora_alpha=32, learning_rate=2e-5, lr_scheduler="constant_with_warmup",
            warmup=0, max_steps=100_000, batch_size=8, grpo_num_generations=4, grpo_max_completion_len=24,
            save_steps=20, logging_steps=1, chat_template=CHATML, time_limit_s=budget - sft_s,
            threads=args.threads,
        )
        grpo = final = train(grpo_cfg, run_dir=work / "grpo")

    # 4. the student on the whole hold-out; the curve on a slice
    student = evaluate(short, work / "holdout.jsonl", model=str(final.model_dir), max_new_tokens=24,
                       threads=args.threads)
    print(student.headline(), flush=True)
    curve = []
    ckpts = sorted((work / "sft" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for ckpt in ckpts:
        step = int(ckpt.name.split("-")[1])
        if step == sft.global_step and grpo is None:  # the final model: its first rows are already scored
            hits = student.item_exact[:args.curve_limit]
            em, n = sum(hits) / len(hits), len(hits)
        else:
            folder = checkpoint_model(ckpt, "smollm2-135m", work / "curve" / ckpt.name)
            point = evaluate(short, work / "holdout.jsonl", model=str(folder), limit=args.curve_limit,
                             max_new_tokens=24, threads=args.threads)
            em, n = point.exact_match, point.n
        curve.append({"step": step, "examples": step * args.batch_size, "exact_match": em, "n": n})
        print(f"curve: step {step}: {em:.1%} on {n}", flush=True)

    # 5. compare on the same items: the teacher's slice is the hold-out's first rows
    base = baselines(short, items)
    on_teacher_items = sum(student.item_exact[:teacher.n]) / teacher.n
    empty = next(b for b in base if b.name == "empty answer").exact_match.value
    result = {
        "benchmark": "mahjong_quality",
        "command": f"python evals/mahjong_quality.py --minutes {args.minutes:g} --style {args.style}"
        + ("" if args.full else " --no-full") + (f" --grpo-share {args.grpo_share}" if args.grpo_share else ""),
        "machine": machine_info(threads=args.threads, cpu_count=os.cpu_count(), loadavg_start=load_start,
                                loadavg_end=os.getloadavg(),
                                note="2 CPU cores shared with other jobs: throughput varies with contention"),
        "config": {"minutes": args.minutes, "style": args.style, "full_ft": args.full, "lr": lr,
                   "batch_size": args.batch_size, "synth_n": data.card.n_accepted, "train_rows": n_train,
                   "train_rows_dropped_as_holdout_hands": n_dropped, "grpo_share": args.grpo_share},
        "synth_seconds": round(synth_s, 2),
        "sft": sft.model_dump(mode="json", exclude={"config", "memory_estimate"})
        | {"memory_estimate_gib": round(sft.memory_estimate.total_bytes / 1024**3, 2)},
        "grpo": grpo.model_dump(mode="json", exclude={"config", "memory_estimate"}) if grpo else None,
        "examples_seen": sft.global_step * args.batch_size,
        "teacher": teacher.model_dump(mode="json", exclude={"samples"}) | {"samples": [
            s.model_dump() for s in teacher.samples[:2]]},
        "student": student.model_dump(mode="json"),
        "student_on_teacher_items": on_teacher_items,
        "baselines": [b.model_dump(mode="json") for b in base],
        "learning_curve": curve,
        "exact_match": student.exact_match,
        "exact_match_ci": [student.exact_match_ci.low, student.exact_match_ci.high],
        "student_over_teacher_same_items": (on_teacher_items / teacher.exact_match)
        if teacher.exact_match else None,
        "student_over_empty_baseline": student.exact_match / empty if empty else None,
        "goals": {"student >= 4x teacher": on_teacher_items >= 4 * teacher.exact_match
                  and on_teacher_items > 0, "student >= 44%": student.exact_match >= 0.44},
        "teacher_exact_match_ci": [teacher.exact_match_ci.low, teacher.exact_match_ci.high],
        "total_seconds": round(time.monotonic() - t_start, 1),
    }
    if sft.loss_png:  # the training curve next to the numbers (the run folder is not versioned)
        result["loss_png"] = copy_beside(sft.loss_png, args.out, "_loss.png")
    print(json.dumps({k: result[k] for k in ("exact_match", "exact_match_ci", "student_on_teacher_items",
                                              "student_over_teacher_same_items", "student_over_empty_baseline",
                                              "learning_curve", "goals", "examples_seen")}, indent=2))
    print(f"teacher (untrained, n={teacher.n}): {teacher.exact_match:.1%}; "
          + "; ".join(f"{b.name}: {b.exact_match.value:.1%}" for b in base))
    print("per difficulty:", {r.difficulty: round(r.exact_match.value, 3) for r in student.by_difficulty})
    save_json(result, args.out, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
