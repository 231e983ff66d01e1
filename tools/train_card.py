"""The model card (README.md) shipped in every trained model folder; evaluation fills in its results."""

from __future__ import annotations

from pathlib import Path

from stratos_agent.files import write_text_atomic
from stratos_agent.records.training import StudentModel

EVAL_START = "<!-- stratos:eval:start -->"
EVAL_END = "<!-- stratos:eval:end -->"
_HYPERPARAMETERS = (
    "lora", "lora_r", "lora_alpha", "learning_rate", "lr_scheduler", "warmup", "epochs", "max_steps",
    "batch_size", "grad_accum", "max_seq_len", "gradient_checkpointing", "seed",
)
_METHOD_FIELDS = {
    "distill": ("teacher_model", "distill_mode", "kd_lmbda", "kd_beta", "kd_temperature", "kd_weight", "ce_weight"),
    "grpo": ("task", "grpo_num_generations", "grpo_max_completion_len", "grpo_temperature", "grpo_beta",
             "reward_weights"),
    "sft": (),
}


def write_model_card(student: StudentModel, *, data_card: str | None) -> Path:
    """Write `model_dir/README.md`: base model, data, method, hyperparameters, training, eval slot."""
    cfg = student.config
    fields = _HYPERPARAMETERS + _METHOD_FIELDS[cfg.method]
    gib = 1024**3
    lines = [
        "---",
        f"base_model: {cfg.base_model}",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        f"tags: [stratos, {cfg.method}{', lora' if cfg.lora else ''}]",
        "---",
        "",
        f"# {cfg.run_name}",
        "",
        f"Trained by Stratos from **{cfg.base_model}** with **{student.method_detail}**.",
        "",
        f"- data: `{cfg.data}`" + (f" (data card: [{Path(data_card).name}]({data_card}))" if data_card else ""),
        f"- steps: {student.global_step}"
        + (f" (resumed from step {student.resumed_from_step})" if student.resumed_from_step else ""),
        f"- final training loss: {student.train_loss:.4f}" if student.train_loss is not None else "- loss: n/a",
        f"- training time: {student.train_seconds:.0f} s; tokens seen: {student.tokens_seen or 'n/a'}",
        (f"- peak RSS: {student.peak_rss_bytes / gib:.2f} GiB "
        f"(estimated before launch: {student.memory_estimate.total_bytes / gib:.2f} GiB)"),
    ]
    if student.fallback_reason:
        lines.append(f"- distillation note: {student.fallback_reason}")
    if student.adapter_dir:
        lines.append(f"- LoRA adapter kept in `{student.adapter_dir}` (this folder holds the merged weights)")
    lines += ["", "## Hyperparameters", "", "| name | value |", "|---|---|"]
    lines += [f"| {name} | {getattr(cfg, name)} |" for name in fields]
    lines += ["", "## Evaluation", "", EVAL_START, "Not evaluated yet (`stratos eval --model <this folder>`).",
              EVAL_END, ""]
    return write_text_atomic(student.model_dir / "README.md", "\n".join(lines))


def record_eval_in_card(model_dir: Path, markdown: str) -> bool:
    """Replace the card's evaluation section with `markdown`; False when the folder has no Stratos card."""
    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if EVAL_START not in text or EVAL_END not in text:
        return False
    head, rest = text.split(EVAL_START, 1)
    _, tail = rest.split(EVAL_END, 1)
    write_text_atomic(path, f"{head}{EVAL_START}\n{markdown.strip()}\n{EVAL_END}{tail}")
    return True
