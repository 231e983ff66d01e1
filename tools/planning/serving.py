"""Serving table: the student on each server offer, as p95, capacity, replicas, $ and memory fit.

Figures are roofline-modelled (tools/roofline.py) and replaced by this machine's measurements where
it timed the model with the spec's request shape; on this machine the p95 of a student timed through its
serving engine (tools/latency_probe.py) replaces both. Each figure says which it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from stratos_agent.tools import roofline
from stratos_agent.tools.planning.inputs import PlanningInputs
from stratos_agent.tools.roofline import Efficiency

from stratos_agent.records.servers import Figure, ServerOffer, ServerProfile
from stratos_agent.spec import DistillationSpec

TP_EFFICIENCY = 0.8  # tensor parallel across NVLink loses ~20% to all-reduce (assumption, Megatron-LM)
# Efficiency fields carried as per-offer arrays by `offer_arrays` / `eff_from`.
EFF_FIELDS = (
    "bw",
    "flops",
    "step_overhead_s",
    "request_overhead_s",
    "tail",
    "train_mfu",
    "batched_read",
    "layer_overhead_s",
    "overlap",
)


def offer_arrays(offers: list[ServerOffer], effs: list[Efficiency]) -> dict[str, np.ndarray]:
    """Per-offer columns (price, bandwidth, FLOP/s, memory, GPU count, kind, efficiency fields)."""

    def col(f) -> np.ndarray:
        return np.array([f(o) for o in offers], dtype=float)

    def eff_col(name: str) -> np.ndarray:
        return np.array([getattr(e, name) for e in effs], dtype=float)

    return {
        "price": col(lambda o: o.on_demand_usd_h),
        "bw": col(lambda o: o.mem_bw_gbps),
        "tflops": col(lambda o: o.bf16_tflops),
        "mem": col(lambda o: o.gpu_memory_gb),
        "count": col(lambda o: o.gpu_count),
        "is_gpu": np.array([not o.is_local for o in offers]),
        "local": np.array([o.is_local for o in offers]),
        **{f"eff_{k}": eff_col(k) for k in EFF_FIELDS},
    }


def eff_from(a: dict[str, np.ndarray], idx=slice(None)) -> Efficiency:
    """An Efficiency whose fields are arrays (one per offer, or gathered per candidate)."""
    return Efficiency(source="arrays", **{k: a[f"eff_{k}"][idx] for k in EFF_FIELDS})


def shape_of(spec: DistillationSpec, inputs: PlanningInputs, student: str) -> tuple[int, int]:
    """(prompt, output) tokens of one student's requests: its own measured shape (its prompt variant and
    tokenizer), else the spec's traffic."""
    shape = inputs.request_shapes.get(student)
    if shape is None:
        return spec.traffic.prompt_tokens, spec.traffic.output_tokens
    return shape.prompt_tokens, shape.output_tokens


def student_tokens(spec: DistillationSpec, inputs: PlanningInputs) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output tokens per student (arrays aligned with `inputs.students`)."""
    pairs = [shape_of(spec, inputs, s.id) for s in inputs.students]
    return np.array([p for p, _ in pairs], dtype=float), np.array([o for _, o in pairs], dtype=float)


@dataclass
class ServingTable:
    """Per (offer, student): modelled p95, sustainable qps per instance, replicas, $ and fit."""

    p95_ms: np.ndarray
    capacity_qps: np.ndarray
    instances: np.ndarray
    cost_usd: np.ndarray
    usd_per_1m_tokens: np.ndarray
    mem_needed_gb: np.ndarray
    fits: np.ndarray
    carries: np.ndarray  # False: this machine alone cannot carry the qps
    source: np.ndarray  # "measured" / "modelled"


def serving_table(spec: DistillationSpec, inputs: PlanningInputs) -> ServingTable:
    """Every (offer, student) at once: memory fit (one GPU, or tensor parallel across the instance),
    modelled p95 and capacity, instances for the spec's qps, and $ over its duration."""
    a = offer_arrays(inputs.offers, inputs.efficiencies)
    tr = spec.traffic
    prompt, output = (t[None, :] for t in student_tokens(spec, inputs))
    ctx = prompt + output
    shapes = [inputs.shapes[s.id] for s in inputs.students]
    dtype = np.where(a["is_gpu"], 2.0, 4.0)[:, None]  # bf16 on GPUs, fp32 on CPU (as measured)
    params = np.array([s.params for s in shapes])[None, :]
    layers = np.array([s.layers for s in shapes])[None, :]
    w = params * dtype
    kv = np.array([s.kv_bytes_per_token_bf16 for s in shapes])[None, :] * dtype / 2
    need = roofline.memory_needed_gb(w, kv, ctx, tr.concurrency, a["is_gpu"][:, None])
    avail_one = roofline.memory_available_gb(a["mem"], a["is_gpu"])[:, None]
    one_gpu = need <= avail_one
    tp = ~one_gpu & (need <= avail_one * a["count"][:, None])  # shard across the instance's GPUs
    fits = one_gpu | tp
    # One replica per GPU when the model fits one GPU; else one tensor-parallel replica per instance.
    replicas = np.where(one_gpu, a["count"][:, None], 1.0)
    scale = np.where(tp, a["count"][:, None] * TP_EFFICIENCY, 1.0)
    eff = eff_from({k: v[:, None] for k, v in a.items()})
    fig = roofline.serving_figures(
        w,
        kv,
        params,
        layers,
        a["bw"][:, None] * scale,
        a["tflops"][:, None] * scale,
        eff,
        prompt,
        output,
        tr.concurrency,
        batches=(),
    )
    cap = fig.capacity_qps * replicas
    instances = np.maximum(1.0, np.ceil(tr.qps / cap))
    carries = ~(a["local"][:, None] & (instances > 1))
    hours = tr.duration_days * 24
    cost = instances * a["price"][:, None] * hours
    usd_1m = a["price"][:, None] / (cap * 3600 * output) * 1e6
    source = np.full(cost.shape, "modelled", dtype=object)
    for i, offer in enumerate(inputs.offers):
        for j, s in enumerate(inputs.students):
            m = inputs.measured.get((offer.id, s.id))
            if m and (m.prompt_tokens, m.output_tokens) == shape_of(spec, inputs, s.id) and tr.concurrency == 1:
                fig.p95_s[i, j] = m.p95_ms / 1e3  # same request shape, no batching: the measurement itself
                source[i, j] = "measured"
            probe = inputs.latency_probes.get(s.id) if offer.is_local else None
            if probe is not None and probe.concurrency == tr.concurrency:
                fig.p95_s[i, j] = probe.p95_ms / 1e3  # the serving engine itself, at the spec's concurrency
                source[i, j] = "measured"
    return ServingTable(
        p95_ms=fig.p95_s * 1e3,
        capacity_qps=cap,
        instances=instances,
        cost_usd=cost,
        usd_per_1m_tokens=usd_1m,
        mem_needed_gb=need,
        fits=fits,
        carries=carries,
        source=source,
    )


def server_profiles(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    table: ServingTable | None = None,
    batches: tuple[int, ...] = (1, 4, 8),
) -> list[ServerProfile]:
    """One ServerProfile per (offer, student): measured figures where this machine timed the model with
    the spec's request shape, roofline-modelled ones elsewhere, each labelled."""
    table = table or serving_table(spec, inputs)
    tr = spec.traffic
    out = []
    for i, (offer, eff) in enumerate(zip(inputs.offers, inputs.efficiencies, strict=True)):
        dtype = 4.0 if offer.is_local else 2.0
        for j, student in enumerate(inputs.students):
            shape = inputs.shapes[student.id]
            prompt, output = shape_of(spec, inputs, student.id)
            m = inputs.measured.get((offer.id, student.id))
            if m and (m.prompt_tokens, m.output_tokens) != (prompt, output):
                m = None  # another request shape: not this student's figure
            fig = roofline.serving_figures(
                shape.weight_bytes(dtype),
                shape.kv_bytes(dtype),
                shape.params,
                shape.layers,
                offer.mem_bw_gbps,
                offer.bf16_tflops,
                eff,
                prompt,
                output,
                tr.concurrency,
                batches,
            )

            def pick(measured: float | None, modelled: float, unit: str) -> Figure:
                src = "measured" if measured is not None else "modelled"
                return Figure(
                    value=float(measured if measured is not None else modelled), unit=unit, source=src
                )

            need, fits = float(table.mem_needed_gb[i, j]), bool(table.fits[i, j])
            avail = offer.gpu_memory_gb * offer.gpu_count
            out.append(
                ServerProfile(
                    offer=offer,
                    model=student.id,
                    fits=fits,
                    memory_needed_gb=need,
                    fit_reason=f"needs {need:.1f} GB (weights + KV cache for {tr.concurrency} x "
                    f"{prompt + output} tokens + runtime) of {avail:g} GB",
                    prefill_tok_s=pick(m and m.prefill_tok_s, float(fig.prefill_tok_s), "tok/s"),
                    decode_tok_s={
                        b: pick(m.decode_tok_s.get(b) if m else None, float(fig.decode_tok_s[b]), "tok/s")
                        for b in batches
                    },
                    ttft_ms=pick(m and m.ttft_ms, float(fig.ttft_s) * 1e3, "ms"),
                    p50_ms=pick(m and m.p50_ms, float(fig.p50_s) * 1e3, "ms"),
                    p95_ms=Figure(value=float(table.p95_ms[i, j]), unit="ms", source=table.source[i, j]),
                    capacity_qps=Figure(
                        value=float(table.capacity_qps[i, j]), unit="req/s", source="modelled"
                    ),
                )
            )
    return out


def student_serving_summary(table: ServingTable, inputs: PlanningInputs) -> dict[str, tuple[float, float]]:
    """Per student: best p95 and cheapest $/1M tokens over the servers where it fits (the extremes of
    its (p95, $/1M) Pareto front)."""
    out = {}
    for j, s in enumerate(inputs.students):
        ok = table.fits[:, j] & table.carries[:, j]
        if ok.any():
            out[s.id] = (float(table.p95_ms[ok, j].min()), float(table.usd_per_1m_tokens[ok, j].min()))
    return out
