"""`stratos train`: SFT, GRPO or distillation of a student, resumable and measured."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from stratos_agent.cli.app import app, console, err_console


@app.command(
    epilog=(
        "Examples:\n\n"
        "    stratos train --data runs/data/mahjong --run-name mj-sft --max-steps 300\n\n"
        "    stratos train --data runs/data/mahjong --run-name mj-grpo --method grpo --task mahjong "
        "--base runs/mj-sft/model\n\n"
        "    stratos train --data runs/data/fwd --run-name kd --method distill --base smollm2-135m-half "
        "--teacher smollm2-135m --ce-weight 0.5\n\n"
        "    stratos train --config runs/r1/train/train_config.json --run-name r1-again\n\n"
        "Run the same command again after a crash or Ctrl-C: it resumes from the last checkpoint; "
        "after success it returns the finished model at once."
    )
)
def train(
    data: Annotated[Path | None, typer.Option(
        help="Training data: a `stratos synth` output folder, a saved HF dataset or a JSONL with "
        "prompt/completion columns (required unless --config names it).")] = None,
    run_name: Annotated[str | None, typer.Option(
        help="Run folder name under the runs dir (STRATOS_RUNS_DIR); required unless --config names it.")]
    = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="A train_config.json (a TrainConfig, as every run folder keeps): train exactly that; "
        "--data and --run-name override its data path and run name, the other flags are ignored.")] = None,
    base: Annotated[str, typer.Option(help="Student to start from: registry id, folder or HF id.")] = "smollm2-135m",
    method: Annotated[str, typer.Option(
        help="sft (supervised, loss on the completion only), grpo (reinforcement with the task's "
        "verifier as reward: exact, set-F1 partial credit, format), distill (logit KD via GKD when the "
        "teacher shares the tokenizer, else sequence-level KD).")] = "sft",
    task: Annotated[str | None, typer.Option(help="Task pack for GRPO rewards, e.g. mahjong.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Teacher for --method distill (registry id/folder).")] = None,
    distill_mode: Annotated[str, typer.Option(
        help="auto (logit when tokenizers match, else sequence, with the reason logged), logit, sequence.")]
    = "auto",
    full: Annotated[bool, typer.Option("--full", help="Full fine-tune instead of LoRA (more memory).")] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (alpha = 2 r).", min=1)] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay, 3% warm-up).", min=0.0)] = 2e-4,
    epochs: Annotated[float, typer.Option(help="Passes over the data (ignored when --max-steps > 0).", min=0.0)] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps; -1 = by epochs.", min=-1)] = -1,
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=1)] = 8,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.", min=1)] = 1,
    max_seq_len: Annotated[int, typer.Option(help="Truncate rows to this many tokens.", min=1)] = 256,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (and at the end).", min=1)] = 50,
    gradient_checkpointing: Annotated[bool, typer.Option(
        help="Recompute activations in backward: less memory, ~30% slower.")] = False,
    kd_lmbda: Annotated[float, typer.Option(help="GKD on-policy fraction (0 = teacher-forced data).", min=0.0, max=1.0)] = 0.0,
    kd_beta: Annotated[float, typer.Option(help="Generalized JSD beta (0 forward KL .. 1 reverse KL).", min=0.0, max=1.0)] = 0.5,
    ce_weight: Annotated[float, typer.Option(help="Weight of the LM cross-entropy term next to KD.", min=0.0)] = 0.0,
    compact_chat_template: Annotated[bool, typer.Option(
        help="Train and ship ChatML without the default system prompt (fewer tokens per row).")] = True,
    time_limit: Annotated[float | None, typer.Option(help="Stop (and save) after this many seconds.", min=0.0)] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads [default: STRATOS_THREADS].", min=1)] = None,
) -> None:
    """Train a student and write a plain HF folder (LoRA merged; adapter kept) with a model card.

    Before loading anything the memory need (weights + gradients + Adam + activations) is estimated and
    a run that cannot fit is refused. Progress shows step, loss, tokens/s and ETA; metrics.csv and
    loss.png land in the run folder; peak RSS is reported.
    """
    from pydantic import ValidationError

    from stratos_agent.errors import InputError
    from stratos_agent.records.training import TrainConfig
    from stratos_agent.tools.train import CHATML
    from stratos_agent.tools.train import train as run_training

    # click's ranges let NaN and infinity through
    bad = [flag for flag, v in (("--lr", lr), ("--epochs", epochs), ("--kd-lmbda", kd_lmbda), ("--kd-beta", kd_beta),
                                ("--ce-weight", ce_weight), ("--time-limit", time_limit)) if v is not None and not math.isfinite(v)]
    if bad:
        raise InputError(f"{', '.join(bad)}: must be a finite number")
    try:
        if config_file is not None:
            if not config_file.is_file():
                raise InputError(f"--config {config_file} does not exist")
            config = TrainConfig.model_validate_json(config_file.read_text(encoding="utf-8"))
            overrides = {k: v for k, v in (("data", data), ("run_name", run_name)) if v is not None}
            config = TrainConfig.model_validate({**config.model_dump(), **overrides, "threads": threads})
        else:
            if data is None or run_name is None:
                raise InputError("--data and --run-name are required (or --config FILE)")
            config = TrainConfig(
                run_name=run_name, base_model=base, method=method, data=data, task=task, teacher_model=teacher,
                distill_mode=distill_mode, lora=not full, lora_r=lora_r, lora_alpha=2 * lora_r,
                learning_rate=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                grad_accum=grad_accum, max_seq_len=max_seq_len, save_steps=save_steps,
                gradient_checkpointing=gradient_checkpointing, kd_lmbda=kd_lmbda, kd_beta=kd_beta,
                ce_weight=ce_weight, chat_template=CHATML if compact_chat_template else None,
                time_limit_s=time_limit, threads=threads,
            )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InputError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from None
    student = run_training(config, console=err_console)
    gib = 1024**3
    console.print(
        f"model: {student.model_dir}\n"
        f"method: {student.method_detail}; steps {student.global_step}; loss {student.train_loss}; "
        f"{student.train_seconds:.0f} s; peak RSS {student.peak_rss_bytes / gib:.2f} GiB "
        f"(estimate {student.memory_estimate.total_bytes / gib:.2f} GiB)\n"
        f"metrics: {student.metrics_csv}  curve: {student.loss_png}",
        highlight=False,
    )
