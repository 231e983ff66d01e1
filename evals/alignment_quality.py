"""Knowledge alignment: logit-level KD vs plain SFT for the half-depth SmolLM2 student.

    python evals/alignment_quality.py                 # ~10 minutes on 2 shared cores
    python evals/alignment_quality.py --steps 40 --train-prompts 320

Teacher: the bundled SmolLM2-135M (30 layers). Student: `smollm2-135m-half` (every other block kept,
initialised from the teacher; same tokenizer, so logit KD is possible and chosen automatically).
Both arms train on the SAME data (the teacher's greedy answers to GSM8K-style questions), the same
steps, batch, learning rate and full fine-tune; they differ only in the loss:
- SFT: cross-entropy on the teacher's tokens (sequence-level KD);
- KD:  GKD (TRL) with beta=0, i.e. forward KL(teacher || student) per position over the full
       vocabulary, teacher-forced on the same text (lmbda=0: no on-policy sampling, too slow on CPU).
Held-out metric, on teacher answers to unseen questions (teacher-forced, answer tokens only):
- top-1 agreement: share of positions where the student's argmax equals the teacher's (primary);
- KL(teacher || student) per token; NLL of the teacher's tokens under the student.
Gap closed = how far the metric moved from the untrained student toward the teacher
(agreement: (a - a0) / (1 - a0); KL: (kl0 - kl) / kl0; NLL: (nll0 - nll) / (nll0 - nll_teacher)).
Goal: KD closes >= 1.5x the gap that SFT closes. Saves evals/results/alignment_quality.json (or --out).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from _common import add_out, add_threads, copy_beside, machine_info, make_parser, save_json
from stratos_agent.tools.teachers import TransformersTeacher
from stratos_agent.tools.train import CHATML, train

from stratos_agent.models import load_model_and_tokenizer, local_model_path
from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack

TEACHER, STUDENT = "smollm2-135m", "smollm2-135m-half"


def teacher_data(n_train: int, n_eval: int, max_new_tokens: int, work: Path) -> tuple[Path, list[dict]]:
    """The teacher's greedy answers to fresh questions: a training dataset and held-out rows."""
    cache = work / "teacher_rows.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
    else:
        pack = get_task_pack("gsm8k")
        items = pack.sample(n_train + n_eval, seed=7)
        prompts = [pack.render_prompt(it) for it in items]
        teacher = TransformersTeacher(TEACHER, batch_size=16)
        teacher.tokenizer.chat_template = CHATML  # the very template both students train and are scored with
        texts = teacher.generate([[{"role": "user", "content": p}] for p in prompts], max_new_tokens=max_new_tokens)
        rows = [{"prompt": p, "completion": t.strip()} for p, t in zip(prompts, texts, strict=True) if t.strip()]
        cache.write_text(json.dumps(rows))
    from datasets import Dataset

    train_dir = work / "train_data"
    if not train_dir.exists():
        Dataset.from_list(rows[:n_train]).save_to_disk(str(train_dir))
    return train_dir, rows[n_train:]


@torch.inference_mode()
def held_out_metrics(student_ref: str, rows: list[dict], teacher=None, tokenizer=None) -> dict:
    """Top-1 agreement, KL(T||S) and NLL on the completion tokens of `rows` (teacher-forced)."""
    import torch.nn.functional as F

    student, _ = load_model_and_tokenizer(student_ref)
    agree = kl = nll = nll_t = 0.0
    count = 0
    for row in rows:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}],
                                               tokenize=False, add_generation_prompt=True)
        full = prompt + row["completion"] + "<|im_end|>"
        ids = tokenizer(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        s_logp = F.log_softmax(student(ids).logits[0, start - 1:-1].float(), -1)
        t_logp = F.log_softmax(teacher(ids).logits[0, start - 1:-1].float(), -1)
        target = ids[0, start:]
        agree += (s_logp.argmax(-1) == t_logp.argmax(-1)).sum().item()
        kl += (t_logp.exp() * (t_logp - s_logp)).sum().item()
        nll -= s_logp.gather(1, target[:, None]).sum().item()
        nll_t -= t_logp.gather(1, target[:, None]).sum().item()
        count += len(target)
    return {"top1_agreement": agree / count, "kl_teacher_student": kl / count, "nll": nll / count,
            "teacher_nll": nll_t / count, "tokens": count}


def gap_closed(before: dict, after: dict) -> dict:
    return {
        "top1_agreement": (after["top1_agreement"] - before["top1_agreement"]) / (1 - before["top1_agreement"]),
        "kl_teacher_student": (before["kl_teacher_student"] - after["kl_teacher_student"])
        / before["kl_teacher_student"],
        "nll": (before["nll"] - after["nll"]) / (before["nll"] - before["teacher_nll"]),
    }


def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--train-prompts", type=int, default=160)
    ap.add_argument("--eval-prompts", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--ce-weight", type=float, default=0.0, help="add the LM term to KD (0 = pure KD)")
    add_threads(ap)
    ap.add_argument("--work-dir", type=Path, default=Path("runs") / "bench" / "alignment-quality")
    add_out(ap, "alignment_quality.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start, load_start = time.monotonic(), os.getloadavg()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    local_model_path(STUDENT)  # build the half-depth student once (cached by the registry)
    train_dir, held = teacher_data(args.train_prompts, args.eval_prompts, args.max_new_tokens, work)
    print(f"teacher data: {args.train_prompts} train rows, {len(held)} held-out rows", flush=True)

    common = {
        "base_model": STUDENT, "data": train_dir, "lora": False, "learning_rate": args.lr,
        "lr_scheduler": "cosine", "warmup": 0.1, "max_steps": args.steps, "batch_size": args.batch_size,
        "max_seq_len": 256, "save_steps": max(1, args.steps // 2), "logging_steps": 2,
        "chat_template": CHATML, "threads": args.threads,
    }
    arms = {
        "sft": TrainConfig(run_name="sft", method="sft", **common),
        "kd": TrainConfig(run_name="kd", method="distill", teacher_model=TEACHER, distill_mode="logit",
                          kd_beta=0.0, kd_lmbda=0.0, kd_weight=1.0, ce_weight=args.ce_weight, **common),
    }
    kd_dir = "kd" if args.ce_weight == 0 else f"kd-ce{args.ce_weight:g}"
    students = {name: train(cfg, run_dir=work / (kd_dir if name == "kd" else name)) for name, cfg in arms.items()}

    teacher, tokenizer = load_model_and_tokenizer(TEACHER)
    tokenizer.chat_template = CHATML
    before = held_out_metrics(STUDENT, held, teacher, tokenizer)
    after = {name: held_out_metrics(str(s.model_dir), held, teacher, tokenizer) for name, s in students.items()}
    closed = {name: gap_closed(before, m) for name, m in after.items()}
    primary = "top1_agreement"
    ratio = closed["kd"][primary] / closed["sft"][primary] if closed["sft"][primary] > 0 else None
    kd_log = [r for r in (students["kd"].run_dir / "metrics.csv").read_text().splitlines()[1:3]]
    result = {
        "benchmark": "alignment_quality",
        "command": f"python evals/alignment_quality.py --steps {args.steps} --train-prompts {args.train_prompts}"
        + (f" --ce-weight {args.ce_weight:g}" if args.ce_weight else ""),
        "teacher": TEACHER, "student": STUDENT,
        "machine": machine_info(threads=args.threads, loadavg_start=load_start, loadavg_end=os.getloadavg(),
                                note="2 CPU cores shared with other jobs"),
        "config": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "full_ft": True,
                   "train_rows": args.train_prompts, "held_out_rows": len(held), "kd": "GKD beta=0 (forward KL)",
                   "kd_ce_weight": args.ce_weight},
        "held_out": {"student_before": before, **{f"after_{k}": v for k, v in after.items()}},
        "gap_closed": closed,
        "primary_metric": primary,
        "kd_over_sft_gap_closed": ratio,
        "goal_kd_closes_50pct_more": ratio is not None and ratio >= 1.5,
        "train": {name: {"method": s.method_detail, "steps": s.global_step, "seconds": s.train_seconds,
                         "final_loss": s.train_loss, "fallback_reason": s.fallback_reason}
                  for name, s in students.items()},
        "kd_metrics_head": kd_log,
        "total_seconds": round(time.monotonic() - t_start, 1),
    }
    if students["kd"].loss_png:  # KD and CE terms side by side: their scales are visible
        result["kd_loss_png"] = copy_beside(students["kd"].loss_png, args.out, "_kd.png")
    print(json.dumps({k: result[k] for k in ("held_out", "gap_closed", "kd_over_sft_gap_closed",
                                              "goal_kd_closes_50pct_more")}, indent=2))
    save_json(result, args.out, indent=2)


if __name__ == "__main__":
    main()
