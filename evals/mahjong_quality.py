"""Knowledge injection on Mahjong winning tiles: can SmolLM2-135M beat its own (untrained) teacher?

    python evals/mahjong_quality.py --minutes 60            # default: 60 minutes of training
    python evals/mahjong_quality.py --minutes 25 --threads 2
    python evals/mahjong_quality.py --student micro-6m --minutes 8 --teacher-limit 0   # micro student, streamed
    python evals/mahjong_quality.py --size-probe 60     # examples/s of micro sizes (registry's choice)

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
Micro students (`--student micro-2m|micro-6m`, issue 12): a few-million-parameter Llama from scratch
with the pack's task tokenizer, trained by `tools/stream_train.py` on a fresh stream of solver-labelled
hands (batch 64, AdamW, warm-up + cosine over the time budget, bf16 autocast where measured faster), never on a hold-out hand.
Every student is scored on two fresh hold-outs, each with its trivial baselines from the same run: the
even 0-9 mix (`--holdout`, 500) and a natural mix (`--natural-holdout`, 400: a complete hand of random
melds minus one tile, ~15% broken into noten; mostly 1-3 waits and mixed suits, as in play).
Prints the results and saves JSON to evals/results/mahjong_quality.json (micro: mahjong_quality_<student>.json).
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
from stratos_agent.tools.stream_train import stream_train
from stratos_agent.tools.synth import synthesize
from stratos_agent.tools.train import CHATML, checkpoint_model, train
from transformers import TrainerCallback

from stratos_agent.models.micro import build_micro_student
from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack

HOLDOUT_SEED = 9_999  # fresh items: a different stream from the training data, then de-duplicated
NATURAL_SEED = 8_888  # the natural hold-out: the pack's own generator (complete hand minus one, 15% noten)
MICRO = {"micro-2m": "mahjong-micro-2m", "micro-6m": "mahjong-micro-6m"}
PROBE_SIZES = {"2m": (4, 192, 3), "6m": (6, 256, 4), "13m": (8, 320, 5)}  # layers, width, heads


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


def natural_holdout(pack, n: int, path: Path) -> list:
    """`n` items from the pack's natural generator (not balanced by waits): how hands come in play."""
    items = pack.sample(n, seed=NATURAL_SEED)
    pack.write_jsonl(items, path)
    return items


def fresh_training_rows(data_dir: Path, held_keys: set[str], out: Path) -> tuple[int, int]:
    """Train split minus every hand that is in the hold-out: (rows kept, rows dropped)."""
    from datasets import load_from_disk

    rows = load_from_disk(str(data_dir / "dataset"))["train"]
    kept = rows.filter(lambda r: r["key"] not in held_keys)
    if not out.exists():
        kept.save_to_disk(str(out))
    return len(kept), len(rows) - len(kept)


def train_smollm2(args, work: Path, short, items: list) -> dict:
    """Reverse synthesis, then SFT (-> GRPO) of SmolLM2-135M within the time budget; checkpoints for the curve."""
    t0 = time.monotonic()
    data = synthesize(short, args.train_n, work / "data", mode="solver", style=args.style,
                      distribution="even", seed=0)
    synth_s = time.monotonic() - t0
    n_train, n_dropped = fresh_training_rows(work / "data", {short.canonical_key(it) for it in items},
                                             work / "train_rows")
    print(f"synth: {data.card.n_accepted} rows in {synth_s:.1f}s; {n_train} train rows after dropping "
          f"{n_dropped} hold-out hands; hold-out {len(items)} items", flush=True)
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
    final, grpo = sft, None
    if args.grpo_share > 0:
        grpo_cfg = TrainConfig(
            run_name="grpo", base_model=str(sft.model_dir), method="grpo", task="mahjong", data=work / "train_rows",
            lora=True, lora_r=16, lora_alpha=32, learning_rate=2e-5, lr_scheduler="constant_with_warmup",
            warmup=0, max_steps=100_000, batch_size=8, grpo_num_generations=4, grpo_max_completion_len=24,
            save_steps=20, logging_steps=1, chat_template=CHATML, time_limit_s=budget - sft_s,
            threads=args.threads,
        )
        grpo = final = train(grpo_cfg, run_dir=work / "grpo")

    def curve(student) -> list:
        points = []
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
            points.append({"step": step, "examples": step * args.batch_size, "exact_match": em, "n": n})
            print(f"curve: step {step}: {em:.1%} on {n}", flush=True)
        return points

    config = {"minutes": args.minutes, "style": args.style, "full_ft": args.full, "lr": lr,
              "batch_size": args.batch_size, "synth_n": data.card.n_accepted, "train_rows": n_train,
              "train_rows_dropped_as_holdout_hands": n_dropped, "grpo_share": args.grpo_share}
    return {"sft": sft, "grpo": grpo, "final": final, "curve": curve, "config": config, "synth_s": synth_s,
            "examples_seen": sft.global_step * args.batch_size}


def train_micro(args, work: Path, short, items: list, natural: list) -> dict:
    """A registry micro student, stream-trained for `--minutes`; both hold-outs' hands never trained on."""
    from stratos_agent.models import local_model_path

    base = MICRO[args.student]
    local_model_path(base)  # build the folder (random init) before the clock starts
    lr = args.lr or 1e-3  # 2-min probe, micro-6m: 5e-4 28%, 1e-3 29.5%, 3e-3 13% even
    cfg = TrainConfig(
        run_name=args.student, base_model=base, task="mahjong", data=work / "holdout.jsonl", stream=True,
        lora=False, learning_rate=lr, warmup=0.05, batch_size=args.batch_size, time_limit_s=args.minutes * 60,
        save_steps=500, save_total_limit=1, logging_steps=20, eval_every=args.eval_every,
        eval_n=args.curve_limit, stream_mix=args.stream_mix, threads=args.threads,
    )
    keys = {short.canonical_key(it) for it in natural}
    student = stream_train(cfg, run_dir=work / args.student, exclude_keys=keys, val_items=items[:args.curve_limit],
                           val_mix="even")

    def curve(_report) -> list:
        return [{"step": p.examples // args.batch_size, "examples": p.examples, "exact_match": p.exact,
                 "n": p.n, "seconds": p.seconds} for p in student.learning_curve.points]

    config = {"minutes": args.minutes, "student": base, "full_ft": True, "lr": lr, "batch_size": args.batch_size,
              "stream": True, "stream_natural_share": args.stream_mix,
              "bf16_autocast": json.loads((work / args.student / "stream_card.json").read_text())["bf16_autocast"],
              "held_out_keys_excluded": len({short.canonical_key(it) for it in items} | keys)}
    return {"sft": student, "grpo": None, "final": student, "curve": curve, "config": config, "synth_s": 0.0,
            "examples_seen": student.streamed_examples}


def size_probe(args) -> None:
    """Examples/s of each micro size streamed for `--size-probe` seconds (the registry's size choice)."""
    short = get_task_pack("mahjong", prompt="short")
    work = (args.work_dir or Path("runs") / "bench" / "micro-sizes")
    rows = {}
    for name, (layers, width, heads) in PROBE_SIZES.items():
        folder = build_micro_student(short, work / f"model-{name}", layers=layers, width=width, heads=heads,
                                     task_options={"prompt": "short"})
        cfg = TrainConfig(run_name=name, base_model=str(folder), task="mahjong", data=work / "none", stream=True,
                          lora=False, learning_rate=args.lr or 1e-3, batch_size=args.batch_size,
                          time_limit_s=args.size_probe, save_steps=10**9, eval_every=10**9, eval_n=50,
                          threads=args.threads)
        st = stream_train(cfg, run_dir=work / f"run-{name}-{int(time.time())}", record=False)
        rows[name] = {"layers": layers, "width": width, "heads": heads, "parameters": st.memory_estimate.parameters,
                      "examples": st.streamed_examples, "train_seconds": st.train_seconds,
                      "examples_per_s": round(st.streamed_examples / st.train_seconds, 1), "loss": st.train_loss,
                      "loadavg_1m": os.getloadavg()[0]}
        print(name, rows[name], flush=True)
    save_json({"benchmark": "mahjong_quality --size-probe", "command": f"python evals/mahjong_quality.py "
               f"--size-probe {args.size_probe:g} --threads {args.threads}", "machine": machine_info(),
               "sizes": rows}, args.out.with_name("mahjong_quality_micro_sizes.json"), indent=2)


def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--student", default="smollm2-135m", choices=["smollm2-135m", *MICRO],
                    help="smollm2-135m: SFT on a synthesised set; micro-*: a micro student streamed (issue 12)")
    ap.add_argument("--minutes", type=float, default=60, help="training wall time (SFT + GRPO)")
    ap.add_argument("--train-n", type=int, default=20_000, help="solver-mode examples to synthesise")
    ap.add_argument("--holdout", type=int, default=500)
    ap.add_argument("--natural-holdout", type=int, default=400, help="natural-mix hold-out size (0: skip)")
    ap.add_argument("--style", default="answer", help="rationale style: answer, steps, search")
    ap.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="full FT (else LoRA)")
    ap.add_argument("--lr", type=float, default=None, help="default: 2e-4 full FT, 1e-3 LoRA, 1e-3 micro")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 8 (SmolLM2), 64 (micro)")
    ap.add_argument("--max-seq-len", type=int, default=64)
    ap.add_argument("--grpo-share", type=float, default=0.0, help="share of --minutes for GRPO after SFT")
    ap.add_argument("--stream-mix", type=float, default=0.5, help="micro: share of natural items in the stream")
    ap.add_argument("--eval-every", type=int, default=8192, help="micro: examples between curve points")
    ap.add_argument("--size-probe", type=float, default=0, help="seconds per micro size: measure examples/s only")
    ap.add_argument("--teacher-limit", type=int, default=100, help="hold-out items the slow teacher answers (0: skip)")
    ap.add_argument("--curve-limit", type=int, default=100, help="hold-out items per learning-curve point")
    add_threads(ap)
    ap.add_argument("--work-dir", type=Path, default=None)
    add_out(ap, "mahjong_quality.json")
    args = ap.parse_args()
    micro = args.student in MICRO
    args.batch_size = args.batch_size or (64 if micro or args.size_probe else 8)
    if micro and args.out.name == "mahjong_quality.json":
        args.out = args.out.with_name(f"mahjong_quality_{args.student}.json")
    torch.set_num_threads(args.threads)
    if args.size_probe:
        return size_probe(args)
    t_start = time.monotonic()
    load_start = os.getloadavg()
    name = args.student if micro else args.style
    work = args.work_dir or Path("runs") / "bench" / f"mahjong-quality-{args.minutes:g}m-{name}"
    work.mkdir(parents=True, exist_ok=True)
    short = get_task_pack("mahjong", prompt="short")  # what the student sees
    full = get_task_pack("mahjong")  # the untrained teacher needs the rules in the prompt

    # 1. fresh hold-outs first (even 0-9, natural), then training that never sees their hands
    items = holdout(short, args.holdout, work / "holdout.jsonl")
    natural = natural_holdout(short, args.natural_holdout, work / "holdout_natural.jsonl") \
        if args.natural_holdout else []
    # 2. the untrained teacher on a slice (it writes long answers: slow), with the full instructions
    teacher = evaluate(full, work / "holdout.jsonl", model="smollm2-135m", limit=args.teacher_limit,
                       max_new_tokens=64, threads=args.threads) if args.teacher_limit > 0 else None
    if teacher is not None:
        print(teacher.headline(), flush=True)
    # 3. training within the time budget
    run = train_micro(args, work, short, items, natural) if micro else train_smollm2(args, work, short, items)
    sft, grpo, final = run["sft"], run["grpo"], run["final"]

    # 4. the student on both hold-outs; the curve on a slice of the even one
    student = evaluate(short, work / "holdout.jsonl", model=str(final.model_dir), max_new_tokens=24,
                       threads=args.threads, batch_size=64 if micro else 16)
    print(student.headline(), flush=True)
    nat = evaluate(short, work / "holdout_natural.jsonl", model=str(final.model_dir), max_new_tokens=24,
                   threads=args.threads, batch_size=64 if micro else 16) if natural else None
    curve = run["curve"](student)

    # 5. compare on the same items: the teacher's slice is the hold-out's first rows
    base = baselines(short, items)
    on_teacher_items = sum(student.item_exact[:teacher.n]) / teacher.n if teacher else None
    empty = next(b for b in base if b.name == "empty answer").exact_match.value
    t_em = teacher.exact_match if teacher else None
    nat_block = natural_block(short, natural, nat)
    result = {
        "benchmark": "mahjong_quality",
        "command": f"python evals/mahjong_quality.py --minutes {args.minutes:g} --style {args.style}"
        + ("" if args.full else " --no-full") + (f" --grpo-share {args.grpo_share}" if args.grpo_share else "")
        + (f" --student {args.student} --threads {args.threads} --teacher-limit {args.teacher_limit}"
           if micro else ""),
        "machine": machine_info(threads=args.threads, cpu_count=os.cpu_count(), loadavg_start=load_start,
                                loadavg_end=os.getloadavg(),
                                note="2 CPU cores shared with other jobs: throughput varies with contention"),
        "config": run["config"],
        "synth_seconds": round(run["synth_s"], 2),
        "sft": sft.model_dump(mode="json", exclude={"config", "memory_estimate", "learning_curve"})
        | {"memory_estimate_gib": round(sft.memory_estimate.total_bytes / 1024**3, 2)},
        "grpo": grpo.model_dump(mode="json", exclude={"config", "memory_estimate"}) if grpo else None,
        "examples_seen": run["examples_seen"],
        "teacher": teacher.model_dump(mode="json", exclude={"samples"}) | {"samples": [
            s.model_dump() for s in teacher.samples[:2]]} if teacher else None,
        "student": student.model_dump(mode="json"),
        "student_on_teacher_items": on_teacher_items,
        "baselines": [b.model_dump(mode="json") for b in base],
        "learning_curve": curve,
        "exact_match": student.exact_match,
        "exact_match_ci": [student.exact_match_ci.low, student.exact_match_ci.high],
        "student_over_teacher_same_items": (on_teacher_items / t_em) if t_em else None,
        "student_over_empty_baseline": student.exact_match / empty if empty else None,
        "natural": nat_block,
        "goals": goals(student, nat, empty, nat_block, on_teacher_items, t_em),
        "teacher_exact_match_ci": [teacher.exact_match_ci.low, teacher.exact_match_ci.high] if teacher else None,
        "total_seconds": round(time.monotonic() - t_start, 1),
    }
    if sft.loss_png and not micro:  # the training curve next to the numbers (the run folder is not versioned)
        result["loss_png"] = copy_beside(sft.loss_png, args.out, "_loss.png")
    print(json.dumps({k: result[k] for k in ("exact_match", "exact_match_ci", "student_on_teacher_items",
                                              "student_over_teacher_same_items", "student_over_empty_baseline",
                                              "learning_curve", "goals", "examples_seen")}, indent=2))
    print(f"teacher (untrained, n={teacher.n if teacher else 0}): {t_em if t_em is not None else 'skipped'}; "
          + "; ".join(f"{b.name}: {b.exact_match.value:.1%}" for b in base))
    if nat is not None:
        print(f"natural: {nat.exact_match:.1%} (n={nat.n}); "
              + "; ".join(f"{b['name']}: {b['exact_match']['value']:.1%}" for b in result["natural"]["baselines"]))
    print("per difficulty:", {r.difficulty: round(r.exact_match.value, 3) for r in student.by_difficulty})
    save_json(result, args.out, indent=2, ensure_ascii=False)


def natural_block(short, natural: list, nat) -> dict | None:
    """The natural hold-out's numbers, with its own baselines (same run, same items)."""
    if nat is None:
        return None
    base = baselines(short, natural)
    empty = next(b for b in base if b.name == "empty answer").exact_match.value
    return {"n": nat.n, "exact_match": nat.exact_match, "exact_match_ci": [nat.exact_match_ci.low,
            nat.exact_match_ci.high], "student_over_empty_baseline": nat.exact_match / empty if empty else None,
            "baselines": [b.model_dump(mode="json") for b in base],
            "by_difficulty": {r.difficulty: round(r.exact_match.value, 3) for r in nat.by_difficulty},
            "student": nat.model_dump(mode="json", exclude={"item_exact"})}


def goals(student, nat, empty: float, natural: dict | None, on_teacher: float | None, t_em: float | None) -> dict:
    out = {"student >= 4x teacher": (on_teacher >= 4 * t_em and on_teacher > 0) if t_em is not None else None,
           "student >= 44%": student.exact_match >= 0.44,
           "even >= 30% and >= 2.7x empty": student.exact_match >= 0.30 and student.exact_match >= 2.7 * empty}
    if natural is not None:
        nat_empty = next(b for b in natural["baselines"] if b["name"] == "empty answer")["exact_match"]["value"]
        out["natural beats empty answer"] = nat.exact_match > nat_empty
        out["60 min: even >= 60% and natural >= 50%"] = student.exact_match >= 0.60 and nat.exact_match >= 0.50
    return out


if __name__ == "__main__":
    main()
