"""Roofline physics, memory fit, training FLOPs and calibration (recovering known efficiencies)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from stratos_agent.tools import roofline

from stratos_agent.records.servers import BenchResult, HardwareFingerprint

P, LAYERS, KV = 135e6, 30, 30 * 3 * 64 * 2 * 2  # smollm2-135m-like, bf16


def figures(bw, tflops, concurrency=4, eff=roofline.GPU_DEFAULT):
    return roofline.serving_figures(P * 2, KV, P, LAYERS, bw, tflops, eff, 96, 48, concurrency)


def test_more_bandwidth_and_flops_is_faster_and_batching_adds_throughput():
    slow, fast = figures(300, 121), figures(3350, 989)
    assert float(fast.p95_s) < float(slow.p95_s)
    assert float(fast.prefill_tok_s) > float(slow.prefill_tok_s)
    assert float(slow.decode_tok_s[8]) > float(slow.decode_tok_s[4]) > float(slow.decode_tok_s[1])
    assert float(slow.p95_s) == pytest.approx(float(slow.p50_s) * roofline.GPU_DEFAULT.tail)


def test_decode_is_bandwidth_bound_without_overheads():
    eff = replace(roofline.GPU_DEFAULT, step_overhead_s=0.0, layer_overhead_s=0.0, bw=1.0)
    step = roofline.decode_step_s(16e9, 0.0, 8e9, 32, 1, 0, 1000, 1000, eff)
    assert float(step) == pytest.approx(16e9 / 1000e9)  # weights / bandwidth, compute negligible


def test_memory_fit():
    need = roofline.memory_needed_gb(140e9, 0.0, 0, 1, True)  # a 70B model in bf16
    assert need > roofline.memory_available_gb(80, True)  # does not fit one H100
    assert need <= roofline.memory_available_gb(80, True) * 2
    kv_heavy = roofline.memory_needed_gb(1e9, 1e6, 8192, 16, True)
    assert kv_heavy == pytest.approx(1 + 1e6 * 8192 * 16 / 1e9 + roofline.GPU_RUNTIME_OVERHEAD_GB)


def test_training_flops():
    assert roofline.training_flops(1e9, 1e6) == pytest.approx(6e15)
    assert roofline.training_flops(1e9, 1e6, lora=True) == pytest.approx(4e15)
    assert roofline.training_flops(1e9, 1e6, teacher_params=7e9) == pytest.approx(6e15 + 14e15)
    hours = roofline.training_hours(6e15, 100, 2, replace(roofline.GPU_DEFAULT, train_mfu=0.5))
    assert hours == pytest.approx(6e15 / (100e12 * 2 * 0.5) / 3600)


def _synthetic(eff, params, layers, peak_bw, peak_tf, batches=(1, 4, 8)):
    """A BenchResult whose numbers come from the model itself with known efficiencies."""
    w, kv, prompt, out = params * 4, layers * 3 * 64 * 2 * 4, 64, 16
    step = {
        b: float(roofline.decode_step_s(w, kv, params, layers, b, prompt + out / 2, peak_bw, peak_tf, eff))
        for b in batches
    }
    pre = float(roofline.prefill_s(w, params, prompt, peak_bw, peak_tf, eff))
    ttft = pre + eff.request_overhead_s
    fp = HardwareFingerprint(cpu_model="test", cores=2, threads=1, torch_version="x")
    return BenchResult(
        model=f"m{params:.0f}",
        backend="transformers",
        fingerprint=fp,
        date="2026-01-01",
        params=int(params),
        weight_bytes=int(w),
        kv_bytes_per_token=kv,
        layers=layers,
        prompt_tokens=prompt,
        output_tokens=out,
        prefill_tok_s=prompt / pre,
        decode_tok_s={b: b / s for b, s in step.items()},
        ttft_ms=ttft * 1e3,
        p50_ms=1000.0,
        p95_ms=1000.0 * eff.tail,
        requests=5,
        seconds=1.0,
    )


def test_calibration_recovers_known_efficiencies_and_predicts_held_out_model():
    truth = replace(
        roofline.GPU_DEFAULT,
        bw=0.4,
        flops=0.3,
        step_overhead_s=0.0,
        layer_overhead_s=0.002,
        batched_read=1.8,
        request_overhead_s=0.01,
        tail=1.15,
    )
    bw, tf = 10.0, 0.05
    train = [_synthetic(truth, 135e6, 30, bw, tf), _synthetic(truth, 80e6, 15, bw, tf)]
    eff = roofline.calibrate(train, bw, tf, base=replace(roofline.GPU_DEFAULT, step_overhead_s=0.0))
    assert eff.bw == pytest.approx(0.4, rel=0.02)
    assert eff.layer_overhead_s == pytest.approx(0.002, rel=0.05)
    assert eff.batched_read == pytest.approx(1.8, rel=0.05)
    assert eff.tail == pytest.approx(1.15) and eff.source.startswith("measured:")
    held_out = _synthetic(truth, 360e6, 32, bw, tf)
    for b in (1, 4, 8):
        assert roofline.predict_decode_tok_s(held_out, b, bw, tf, eff) == pytest.approx(
            held_out.decode_tok_s[b], rel=0.05
        )


def test_arrays_broadcast():
    eff = replace(roofline.GPU_DEFAULT, bw=np.array([0.5, 0.6]))
    step = roofline.decode_step_s(1e9, 0, 5e8, 24, 1, 100, np.array([300.0, 3350.0]), 100.0, eff)
    assert step.shape == (2,) and step[1] < step[0]
