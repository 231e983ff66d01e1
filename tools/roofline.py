"""Roofline model of LLM serving and training on a server, calibrated from measured points.

Decode is memory-bound at small batch: every step reads all weights plus the KV cache of every
sequence in the batch, so `t_step = overhead + max(bytes / (BW * e_bw), 2 * params * batch / (FLOPs * e_f))`.
Prefill is compute-bound: `t_prefill = max(2 * params * tokens / (FLOPs * e_f), weights / (BW * e_bw))`.
The efficiencies `e_bw`, `e_f` and the per-step overhead are fitted to measured points
(`calibrate`), so a figure predicted for another batch size or model on the same hardware is only
as wrong as the model's shape, not as wrong as a datasheet. All functions take numpy arrays
(broadcasting), so the planner evaluates 1M candidate plans in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from stratos_agent.records.servers import BenchResult

GB = 1e9


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of peak, per-step and per-request overheads, and the p95/p50 tail ratio."""

    bw: float  # fraction of peak memory bandwidth reached by decode
    flops: float  # fraction of peak FLOP/s reached by prefill (MFU)
    step_overhead_s: float  # fixed cost of one decode step (scheduling, sampling)
    request_overhead_s: float  # fixed cost per request (tokenise, schedule, detokenise)
    tail: float  # p95 / p50 request latency
    train_mfu: float  # fraction of peak FLOP/s reached by fine-tuning
    source: str  # "measured:<fingerprint>" when fitted, else "default:<why>"
    # Weight bytes moved per step at batch > 1, relative to batch 1. CPU BLAS switches from GEMV to
    # GEMM, which packs (copies) the weight panels: measured ~2x here. GPU GEMMs read weights once.
    batched_read: float = 1.0
    # Per decoder layer per step: eager kernels launch ~15 ops a layer, each paying dispatch cost
    # (python + framework). It dominates tiny models on CPU; GPU servers hide it with CUDA graphs.
    layer_overhead_s: float = 0.0
    # GPUs overlap weight streaming with tensor-core math (classic roofline: max of the two). One CPU
    # thread does loads and FMAs itself, so the times add (fits this machine's b1..b16 points better).
    overlap: bool = True


# GPU defaults until a GPU point is measured (`stratos bench-servers` on a GPU stores one).
# e_bw 0.6 / e_f 0.45: vLLM-class servers reach ~60% of HBM bandwidth in decode and ~40-50% MFU in
# prefill (Databricks, "LLM Inference Performance Engineering: Best Practices", 2023, MBU/MFU tables).
# 3 ms/step: scheduler + sampling + launch cost that dominates tiny models (vLLM v1 blog, 2025, shows
# CPU overhead of a few ms per step before CUDA graphs hide it). 20 ms/request: HTTP + tokenisation.
# tail 1.3: p95/p50 of a continuously batched server at moderate load (assumption; measured on CPU).
# train_mfu 0.35: HF Trainer fine-tuning of sub-1B models reaches 30-40% MFU on A100/H100.
GPU_DEFAULT = Efficiency(
    bw=0.6,
    flops=0.45,
    step_overhead_s=0.003,
    request_overhead_s=0.02,
    tail=1.3,
    train_mfu=0.35,
    source="default:datasheet x published efficiencies",
)
# vLLM keeps 10% of GPU memory free (gpu_memory_utilization=0.9) and a CUDA context costs ~1 GB.
GPU_MEMORY_UTILISATION = 0.9
GPU_RUNTIME_OVERHEAD_GB = 1.5
# On CPU the OS, python and torch need headroom; keep 20% of RAM free.
CPU_MEMORY_UTILISATION = 0.8
CPU_RUNTIME_OVERHEAD_GB = 1.0


@dataclass(frozen=True)
class ModelShape:
    """What the roofline needs to know about a model."""

    name: str
    params: float
    kv_bytes_per_token_bf16: float  # K+V for every layer at 2 bytes/value
    layers: int

    def weight_bytes(self, dtype_bytes: float) -> float:
        return self.params * dtype_bytes

    def kv_bytes(self, dtype_bytes: float) -> float:
        return self.kv_bytes_per_token_bf16 * dtype_bytes / 2


def decode_step_s(
    weight_bytes, kv_bytes_per_token, params, layers, batch, ctx_tokens, bw_gbps, tflops, eff: Efficiency
):
    """Seconds for one decode step of `batch` sequences each holding `ctx_tokens` of KV cache."""
    weights = weight_bytes * np.where(np.asarray(batch) > 1, eff.batched_read, 1.0)
    mem = (weights + batch * ctx_tokens * kv_bytes_per_token) / (bw_gbps * GB * eff.bw)
    comp = 2.0 * params * batch / (tflops * 1e12 * eff.flops)
    return (
        eff.step_overhead_s
        + eff.layer_overhead_s * layers
        + np.where(eff.overlap, np.maximum(mem, comp), mem + comp)
    )


def prefill_s(weight_bytes, params, tokens, bw_gbps, tflops, eff: Efficiency):
    """Seconds to prefill `tokens` prompt tokens (compute-bound unless the prompt is tiny)."""
    comp = 2.0 * params * tokens / (tflops * 1e12 * eff.flops)
    return np.maximum(comp, weight_bytes / (bw_gbps * GB * eff.bw))


@dataclass(frozen=True)
class ServingFigures:
    prefill_tok_s: np.ndarray
    decode_tok_s: dict[int, np.ndarray]
    ttft_s: np.ndarray
    p50_s: np.ndarray
    p95_s: np.ndarray
    capacity_qps: np.ndarray  # requests/s one model replica sustains at the given concurrency


def serving_figures(
    weight_bytes,
    kv_bytes_per_token,
    params,
    layers,
    bw_gbps,
    tflops,
    eff: Efficiency,
    prompt_tokens: int,
    output_tokens: int,
    concurrency,
    batches: Sequence[int] = (1, 4, 8),
) -> ServingFigures:
    """Modelled figures for one model replica: the request latency is measured at full concurrency
    (every slot busy: the slow case a p95 must cover) and p95 = tail x that latency."""
    mid_ctx = prompt_tokens + output_tokens / 2  # average KV length during decode
    pre = prefill_s(weight_bytes, params, prompt_tokens, bw_gbps, tflops, eff)
    decode = {
        b: b
        / decode_step_s(weight_bytes, kv_bytes_per_token, params, layers, b, mid_ctx, bw_gbps, tflops, eff)
        for b in batches
    }
    step_full = decode_step_s(
        weight_bytes, kv_bytes_per_token, params, layers, concurrency, mid_ctx, bw_gbps, tflops, eff
    )
    ttft = eff.request_overhead_s + pre
    latency = ttft + output_tokens * step_full
    return ServingFigures(
        prefill_tok_s=prompt_tokens / pre,
        decode_tok_s=decode,
        ttft_s=ttft,
        p50_s=latency,
        p95_s=latency * eff.tail,
        capacity_qps=concurrency / latency,
    )


def memory_needed_gb(weight_bytes, kv_bytes_per_token, ctx_tokens, concurrency, is_gpu):
    """Weights + KV cache for every concurrent sequence at full context + runtime overhead, in GB."""
    overhead = np.where(is_gpu, GPU_RUNTIME_OVERHEAD_GB, CPU_RUNTIME_OVERHEAD_GB)
    return (weight_bytes + kv_bytes_per_token * ctx_tokens * concurrency) / GB + overhead


def memory_available_gb(memory_gb, is_gpu):
    return memory_gb * np.where(is_gpu, GPU_MEMORY_UTILISATION, CPU_MEMORY_UTILISATION)


# ---------------------------------------------------------------- training


def training_flops(student_params, tokens, teacher_params=0.0, lora=False, rl_rollouts=0.0, rl_tokens=0.0):
    """~6 x params x tokens for full fine-tuning (forward 2, backward 4, Kaplan et al. 2020);
    LoRA skips the weight gradients of the frozen base: ~4 x params x tokens (forward 2 + input grads 2).
    Logit KD adds a teacher forward (2 x teacher params x tokens). GRPO adds `rl_rollouts` sampled
    completions of `rl_tokens` tokens each: generation (2 P) + a policy update on them (6 P or 4 P)."""
    per_token = np.where(lora, 4.0, 6.0) * student_params
    sft = per_token * tokens + 2.0 * teacher_params * tokens
    rl = rl_rollouts * rl_tokens * (2.0 * student_params + per_token)
    return sft + rl


def training_hours(flops, tflops_per_gpu, gpu_count, eff: Efficiency):
    """Wall time at the achievable FLOP/s of the server (data parallel over its GPUs)."""
    return flops / (tflops_per_gpu * 1e12 * gpu_count * eff.train_mfu) / 3600.0


# ---------------------------------------------------------------- calibration


def _decode_points(results: Sequence[BenchResult]):
    rows = []
    for r in results:
        ctx = r.prompt_tokens + r.output_tokens / 2
        for batch, tok_s in r.decode_tok_s.items():
            rows.append(
                (r.weight_bytes, r.kv_bytes_per_token, r.params, r.layers, int(batch), ctx, batch / tok_s)
            )
    return np.array(rows, dtype=float)


def calibrate(
    results: Sequence[BenchResult], peak_bw_gbps: float, peak_tflops: float, base: Efficiency = GPU_DEFAULT
) -> Efficiency:
    """Fit the efficiencies to measured points: e_bw, the per-layer overhead, the batched weight-read
    factor and (when batched points exist) the decode e_f by least squares on log step time, started
    from the prefill MFU; request overhead from TTFT minus modelled prefill; tail from p95/p50."""
    from scipy.optimize import least_squares

    if not results:
        return base
    e_f = float(np.median([2 * r.params * r.prefill_tok_s / (peak_tflops * 1e12) for r in results]))
    e_f = min(max(e_f, 1e-3), 1.0)  # a prefill faster than the measured peak is noise, not efficiency
    w, kv, p, layers, b, ctx, t_obs = _decode_points(results).T

    def model(x):
        eff = replace(base, bw=x[0], flops=x[3], layer_overhead_s=x[1], batched_read=x[2])
        return decode_step_s(w, kv, p, layers, b, ctx, peak_bw_gbps, peak_tflops, eff)

    # Efficiencies cannot beat the measured peaks (<= 1). Batch-1 points alone cannot separate the
    # batched read factor or the decode MFU: pin them.
    batched = bool((b > 1).any())
    lo = [1e-3, 0.0, 1.0, 1e-3 if batched else e_f]
    hi = [1.0, 1.0, 4.0 if batched else 1.0 + 1e-9, 1.0 if batched else e_f * (1 + 1e-9)]
    fit = least_squares(
        lambda x: np.log(model(x)) - np.log(t_obs),
        x0=[0.5, 1e-3, 1.5 if batched else 1.0, e_f],
        bounds=(lo, hi),
    )
    e_bw, overhead, read, e_dec = (float(v) for v in fit.x)
    eff = replace(base, bw=e_bw, flops=e_dec, layer_overhead_s=overhead, batched_read=read)
    pre = [
        float(prefill_s(r.weight_bytes, r.params, r.prompt_tokens, peak_bw_gbps, peak_tflops, eff))
        for r in results
    ]
    req = float(np.median([max(r.ttft_ms / 1e3 - s, 0.0) for r, s in zip(results, pre, strict=True)]))
    tail = float(np.median([r.p95_ms / r.p50_ms for r in results]))
    # Fine-tuning runs the same matmuls as prefill (forward + 2x backward), so prefill MFU bounds it.
    return replace(
        eff,
        request_overhead_s=req,
        tail=max(tail, 1.0),
        train_mfu=min(e_f, 1.0),
        source=f"measured:{results[0].fingerprint.key}",
    )


def predict_decode_tok_s(
    result_like: BenchResult, batch: int, peak_bw_gbps: float, peak_tflops: float, eff: Efficiency
) -> float:
    """Modelled decode tokens/s for a benchmarked model shape at `batch` (used to validate calibration)."""
    ctx = result_like.prompt_tokens + result_like.output_tokens / 2
    step = decode_step_s(
        result_like.weight_bytes,
        result_like.kv_bytes_per_token,
        result_like.params,
        result_like.layers,
        batch,
        ctx,
        peak_bw_gbps,
        peak_tflops,
        eff,
    )
    return float(batch / step)
