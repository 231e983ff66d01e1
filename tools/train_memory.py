"""Memory estimate before a training run is launched: refuse a plan that cannot fit instead of an OOM.

Counts come from the model's config instantiated on the meta device (exact parameter counts, no
weights loaded). Activation bytes follow the usual per-layer tally for a Llama block in fp32
(Korthikanti et al. 2022, adapted: SwiGLU MLP, grouped KV heads, attention probabilities kept for
backward), or one hidden state per layer with gradient checkpointing.
"""

from __future__ import annotations

from pathlib import Path

import psutil

from stratos_agent.errors import ResourceError
from stratos_agent.records.training import MemoryEstimate, TrainConfig

FP32 = 4
# torch + transformers + TRL + tokenizer + dataset in a Python process, measured ~0.8-1 GiB here.
RUNTIME_OVERHEAD = int(1.0 * 1024**3)
# Fraction of available RAM a run may plan to use: the rest absorbs allocator slack and neighbours.
SAFETY = 0.9


def _meta_model(model_dir: Path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config), config


def count_parameters(model_dir: Path, *, lora_r: int | None) -> tuple[int, int, object]:
    """(total params, trainable params, config). LoRA trains r*(in+out) per linear layer (not lm_head)."""
    import torch

    model, config = _meta_model(model_dir)
    total = sum(p.numel() for p in model.parameters())
    if lora_r is None:
        return total, total, config
    trainable = sum(
        lora_r * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    )
    return total, trainable, config


def activation_bytes(config, *, batch: int, seq: int, checkpointing: bool) -> int:
    """Bytes of activations kept for backward across all decoder layers."""
    h = config.hidden_size
    inter = config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) * (h // heads)
    layers = config.num_hidden_layers
    # norms, q, k, v, attn out, o_proj out, residuals; gate, up, act, product; attention probabilities.
    per_token_layer = 6 * h + 2 * kv + 4 * inter + heads * seq
    full_layer = batch * seq * per_token_layer * FP32
    if checkpointing:  # one saved hidden state per layer + one layer recomputed at a time
        return batch * seq * h * FP32 * layers + full_layer
    return full_layer * layers


def estimate_memory(
    model_dir: Path,
    config: TrainConfig,
    *,
    teacher_dir: Path | None = None,
    available_bytes: int | None = None,
) -> MemoryEstimate:
    """Estimate peak RSS of a run on CPU (fp32 weights, AdamW) before loading anything."""
    total, trainable, mconfig = count_parameters(model_dir, lora_r=config.lora_r if config.lora else None)
    seq = config.max_seq_len
    batch = config.batch_size
    if config.method == "grpo":  # a step scores num_generations completions per prompt
        batch = max(batch, config.grpo_num_generations)
        seq = min(seq, 512) + config.grpo_max_completion_len
    vocab = mconfig.vocab_size
    # logits, their log-softmax and the gradient, fp32, for every position
    logits = 3 * batch * seq * vocab * FP32
    teacher = 0
    if teacher_dir is not None:
        teacher_params, _, _ = count_parameters(teacher_dir, lora_r=None)
        teacher = teacher_params * FP32 + batch * seq * vocab * FP32
    elif config.method == "grpo" and config.grpo_beta > 0:  # frozen reference model for the KL term
        teacher = total * FP32
    parts = {
        "weights_bytes": total * FP32,
        "gradients_bytes": trainable * FP32,
        "optimizer_bytes": 2 * trainable * FP32,  # AdamW: exp_avg + exp_avg_sq
        "activations_bytes": activation_bytes(
            mconfig, batch=batch, seq=seq, checkpointing=config.gradient_checkpointing
        ),
        "logits_bytes": logits,
        "teacher_bytes": teacher,
        "runtime_overhead_bytes": RUNTIME_OVERHEAD,
    }
    needed = sum(parts.values())
    available = available_bytes if available_bytes is not None else psutil.virtual_memory().available
    return MemoryEstimate(
        parameters=total,
        trainable_parameters=trainable,
        total_bytes=needed,
        available_bytes=available,
        fits=needed <= SAFETY * available,
        **parts,
    )


def check_fits(estimate: MemoryEstimate, config: TrainConfig) -> None:
    """Raise ResourceError with what to change when the estimate does not fit."""
    if estimate.fits:
        return
    hints = []
    if not config.gradient_checkpointing:
        hints.append("gradient checkpointing")
    if not config.lora:
        hints.append("LoRA instead of a full fine-tune")
    hints.append(f"a smaller batch (now {config.batch_size}) or max_seq_len (now {config.max_seq_len})")
    raise ResourceError(
        f"training run '{config.run_name}' will not fit in memory: {estimate.summary()}. "
        f"Try {', '.join(hints)}."
    )
