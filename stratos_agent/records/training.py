"""Training records: what to train (`TrainConfig`), whether it fits (`MemoryEstimate`), what came out
(`StudentModel`).

Records hold small values and paths only; weights, checkpoints and metrics live in the run folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from stratos_agent.records.calibration import LearningCurve

Method = Literal["sft", "grpo", "distill"]
DistillMode = Literal["auto", "logit", "sequence"]


class TrainConfig(BaseModel):
    """One training run. The same config (same `run_name`) resumes; a finished run is returned as is."""

    run_name: str = Field(description="Folder name under the runs dir; rerunning the same name resumes.")
    base_model: str = Field(description="Registry id (e.g. 'smollm2-135m'), local HF folder or hub id.")
    method: Method = "sft"
    data: Path = Field(description="HF dataset folder (save_to_disk) or JSONL with prompt/completion columns.")
    task: str | None = Field(default=None, description="Task pack for GRPO rewards (e.g. 'mahjong').")
    data_card: str | None = Field(default=None, description="Path/URL of the dataset's data card.")
    # Adapter vs full fine-tune: LoRA trains ~1-5% of weights (less memory, less forgetting); full FT
    # moves every weight (more capacity for a genuinely new skill).
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup: float = Field(default=0.03, description="Warm-up: a fraction of the steps (< 1) or a step count.")
    weight_decay: float = 0.0
    epochs: float = 1.0
    max_steps: int = Field(default=-1, description="Overrides epochs when > 0.")
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    save_steps: int = 50
    save_total_limit: int | None = Field(default=2, description="Checkpoints kept; None keeps all.")
    logging_steps: int = 5
    seed: int = 0
    gradient_checkpointing: bool = False
    threads: int | None = Field(default=None, description="torch threads; None = settings/torch default.")
    time_limit_s: float | None = Field(default=None, description="Stop (and save) after this many seconds.")
    chat_template: str | None = Field(
        default=None, description="Jinja chat template to train and ship with; None keeps the base model's."
    )
    # Distillation (knowledge alignment)
    teacher_model: str | None = None
    distill_mode: DistillMode = "auto"
    kd_lmbda: float = Field(default=0.0, description="GKD on-policy fraction: share of steps on student samples.")
    kd_beta: float = Field(default=0.5, description="Generalized JSD interpolation: 0 = forward KL, 1 = reverse KL.")
    kd_temperature: float = 1.0
    kd_weight: float = 1.0
    ce_weight: float = Field(default=0.0, description="Weight of the plain LM (cross-entropy) term next to KD.")
    # GRPO (reinforcement with verifiable rewards)
    grpo_num_generations: int = 4
    grpo_max_completion_len: int = 64
    grpo_temperature: float = 1.0
    grpo_beta: float = 0.0
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"exact": 1.0, "partial": 0.5, "format": 0.2}
    )
    # Streaming (tools/stream_train.py): solver-backed packs only; every step a fresh batch of verified
    # items, none whose canonical key is in `data`'s val/test splits. Full fine-tune (lora must be off).
    stream: bool = Field(default=False, description="Train on a fresh stream of verified items, not on `data`.")
    examples_budget: int | None = Field(default=None, description="Stream: stop after this many examples.")
    stream_mix: float = Field(
        default=0.5, ge=0, le=1,
        description="Stream: share of items from the pack's natural generator; the rest even over difficulty.",
    )
    stream_weighting: Literal["even", "adaptive"] = Field(
        default="even",
        description="Stream: the non-natural share even over difficulty buckets, or 'adaptive': weighted by "
        "floor + validation error per bucket, re-weighed at every learning-curve evaluation.",
    )
    bf16_autocast: bool | None = Field(
        default=None, description="Stream: bf16 autocast (fp32 master weights). None: measured on this machine "
        "(tools/precision.py: ~5x faster on CPUs with AVX512-BF16, 35x slower on AVX2-only CPUs)."
    )
    eval_every: int = Field(default=4096, gt=0, description="Stream: validation exact match every N examples.")
    eval_n: int = Field(default=200, gt=0, description="Stream: validation items per learning-curve point.")
    # A round of the result gate's "train on" starts from the last round's folder: its learning curve is
    # recorded under the registry student it descends from, at the examples its weights have seen in all.
    lineage: str | None = Field(default=None, description="Registry id the `base_model` folder descends from.")
    examples_before: int = Field(default=0, ge=0, description="Examples the base weights saw in earlier rounds.")

    @property
    def curve_student(self) -> str:
        """The student a learning curve of this run belongs to (the lineage's registry id, else the base)."""
        return self.lineage or self.base_model

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (threads, time limit, eval cadence do not --
        except under adaptive stream weighting, whose bucket weights follow each evaluation).

        The stream fields enter only when `stream` is on, so configs written before they existed keep
        their fingerprint."""
        adaptive = self.stream and self.stream_weighting == "adaptive"
        payload = self.model_dump(mode="json", exclude={"threads", "time_limit_s", "logging_steps", "lineage",
                                                        "examples_before", *(() if adaptive else _EVAL_ONLY)})
        if not self.stream:
            for name in _STREAM_FIELDS:
                payload.pop(name)
        for name in _HASHED_WHEN_SET:
            if payload.get(name) == type(self).model_fields[name].default:
                payload.pop(name)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


_STREAM_FIELDS = ("stream", "examples_budget", "stream_mix", "bf16_autocast", "stream_weighting")
_HASHED_WHEN_SET = ("stream_weighting",)  # added later: at its default a field leaves earlier runs' hash as it was
_EVAL_ONLY = ("eval_every", "eval_n")


class MemoryEstimate(BaseModel):
    """Bytes a run needs, by part, computed before anything is loaded."""

    parameters: int
    trainable_parameters: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    logits_bytes: int
    teacher_bytes: int = 0
    runtime_overhead_bytes: int
    total_bytes: int
    available_bytes: int
    fits: bool

    def summary(self) -> str:
        gib = 1024**3
        parts = (
            f"weights {self.weights_bytes / gib:.2f} + grads {self.gradients_bytes / gib:.2f} + "
            f"Adam {self.optimizer_bytes / gib:.2f} + activations {self.activations_bytes / gib:.2f} + "
            f"logits {self.logits_bytes / gib:.2f} + teacher {self.teacher_bytes / gib:.2f} + "
            f"runtime {self.runtime_overhead_bytes / gib:.2f}"
        )
        return f"{self.total_bytes / gib:.2f} GiB needed ({parts}) vs {self.available_bytes / gib:.2f} GiB available"


class StudentModel(BaseModel):
    """A trained model folder plus how it was made."""

    run_dir: Path
    model_dir: Path = Field(description="Plain HF folder (LoRA merged), ready for transformers/vLLM.")
    adapter_dir: Path | None = Field(default=None, description="The LoRA adapter alone, when LoRA was used.")
    base_model: str
    method: Method
    method_detail: str = Field(description="e.g. 'sft+lora', 'distill:logit(gkd)', 'distill:sequence'.")
    config_fingerprint: str
    global_step: int
    resumed_from_step: int | None = None
    train_loss: float | None = None
    train_seconds: float
    tokens_seen: int | None = None
    peak_rss_bytes: int
    memory_estimate: MemoryEstimate
    metrics_csv: Path
    loss_png: Path | None = None
    fallback_reason: str | None = Field(default=None, description="Why logit KD fell back to sequence KD.")
    streamed_examples: int | None = Field(
        default=None, description="Stream runs: verified examples drawn and trained on (see stream_card.json)."
    )
    learning_curve: LearningCurve | None = Field(
        default=None, description="Stream runs: validation exact match against examples seen."
    )
    config: TrainConfig
