"""Measure serving figures of candidate models on the hardware at hand.

Per model: prefill tokens/s, decode tokens/s at batch 1/4/8, time to first token and p50/p95
request latency for a fixed prompt/answer length. Through a vLLM (any OpenAI-compatible) server
when a URL is given, else transformers with a hand-written KV-cached greedy loop (so each decode
step is timed, not `generate`'s extras). Results are cached as JSON keyed by hardware fingerprint
+ model + request shape + backend + date, under a cache version; the fingerprint, the machine's
peaks and the cache naming live in `tools/machine_peaks.py`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from stratos_agent.tools.machine_peaks import (
    CACHE_VERSION,
    _cache_path,
    bench_dir,
    hardware_fingerprint,
    measure_peaks,
)

from stratos_agent.errors import InputError, ServiceError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.servers import BenchResult, HardwareFingerprint
from stratos_agent.redact import redact_text
from stratos_agent.settings import api_key_from, get_settings

DEFAULT_BATCHES = (1, 4, 8)
Progress = Callable[[str], None]


def _pcts(samples: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95_index = min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))
    return statistics.median(ordered), ordered[p95_index]


def _kv_bytes_per_token(config, dtype_bytes: int) -> int:
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return int(config.num_hidden_layers * kv_heads * head_dim * 2 * dtype_bytes)


def _bench_transformers(
    model_id: str,
    prompt_tokens: int,
    output_tokens: int,
    batches: Sequence[int],
    requests: int,
    progress: Progress,
) -> dict:
    import torch

    from stratos_agent.models import load_model_and_tokenizer

    model, _tok = load_model_and_tokenizer(model_id)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    dtype_bytes = next(model.parameters()).element_size()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)

    def prompt(batch: int) -> torch.Tensor:  # random token ids: the cost does not depend on the text
        low = 100 if vocab > 200 else 0  # skip a large vocabulary's special ids; a micro one is all symbols
        return torch.randint(low, vocab, (1, prompt_tokens), generator=gen).repeat(batch, 1)

    @torch.inference_mode()
    def run(batch: int, steps: int) -> tuple[float, list[float]]:
        """(prefill seconds, seconds of each KV-cached decode step) of one greedy request batch."""
        t0 = time.perf_counter()
        out = model(prompt(batch), use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        prefill_s = time.perf_counter() - t0
        cache, step_s = out.past_key_values, []
        for _ in range(steps):
            t1 = time.perf_counter()
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            step_s.append(time.perf_counter() - t1)
        return prefill_s, step_s

    progress("warm-up")
    run(1, 2)
    progress("prefill")
    prefill = statistics.median(run(1, 0)[0] for _ in range(3))
    decode: dict[int, float] = {}
    for batch in batches:
        progress(f"decode batch {batch}")
        # Median step time: on a shared machine a few steps stall behind other processes.
        decode[batch] = batch / statistics.median(run(batch, output_tokens)[1])
    latencies, ttfts = [], []
    for i in range(requests):
        progress(f"request {i + 1}/{requests}")
        pre, steps = run(1, output_tokens - 1)  # the first output token comes out of the prefill
        ttfts.append(pre)
        latencies.append(pre + sum(steps))
    p50, p95 = _pcts(latencies)
    return {
        "params": params,
        "weight_bytes": params * dtype_bytes,
        "layers": model.config.num_hidden_layers,
        "kv_bytes_per_token": _kv_bytes_per_token(model.config, dtype_bytes),
        "prefill_tok_s": prompt_tokens / prefill,
        "decode_tok_s": decode,
        "ttft_ms": statistics.median(ttfts) * 1e3,
        "p50_ms": p50 * 1e3,
        "p95_ms": p95 * 1e3,
    }


def _bench_vllm(
    url: str,
    model_id: str,
    served_name: str,
    prompt_tokens: int,
    output_tokens: int,
    batches: Sequence[int],
    requests: int,
    progress: Progress,
    api_key: str | None,
) -> dict:
    """Time an OpenAI-compatible server (vLLM: `ignore_eos` forces the answer length) with streaming."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from stratos_agent.models import get_registry

    cand = get_registry().get(model_id)
    if cand.parameters is None:
        raise InputError(f"model {model_id!r} has no parameter count; cannot relate a vLLM timing to it")
    body = {
        "model": served_name,
        "prompt": " hello" * prompt_tokens,
        "max_tokens": output_tokens,
        "min_tokens": output_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def one() -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        try:
            with httpx.stream(
                "POST", url.rstrip("/") + "/completions", json=body, headers=headers, timeout=120
            ) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if line.startswith("data:") and first is None:
                        first = time.perf_counter() - t0
        except httpx.HTTPError as exc:
            raise ServiceError(redact_text(f"vLLM server at {url} failed: {exc}")) from exc
        return first or 0.0, time.perf_counter() - t0

    progress("warm-up")
    one()
    decode = {}
    for batch in batches:
        progress(f"decode batch {batch}")
        with ThreadPoolExecutor(batch) as pool:
            res = list(pool.map(lambda _: one(), range(batch)))
        decode[batch] = batch * (output_tokens - 1) / max(lat - ttft for ttft, lat in res)
    runs = [one() for _ in range(requests)]
    ttft = statistics.median(r[0] for r in runs)
    p50, p95 = _pcts([r[1] for r in runs])
    return {
        "params": cand.parameters,
        "weight_bytes": cand.weight_bytes(2),
        "layers": cand.layers or 0,
        "kv_bytes_per_token": cand.kv_cache_bytes_per_token(2) or 0,
        "prefill_tok_s": prompt_tokens / ttft,
        "decode_tok_s": decode,
        "ttft_ms": ttft * 1e3,
        "p50_ms": p50 * 1e3,
        "p95_ms": p95 * 1e3,
    }


def bench_model(
    model_id: str,
    *,
    url: str | None = None,
    served_name: str | None = None,
    api_key: str | None = None,
    api_key_file: Path | None = None,
    prompt_tokens: int = 64,
    output_tokens: int = 16,
    batches: Sequence[int] = DEFAULT_BATCHES,
    requests: int = 5,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BenchResult:
    """Measure (or reuse today's cached measurement of) one model on this hardware. The key for `url`:
    `api_key`, else the content of `api_key_file`, else OPENAI_API_KEY."""
    import torch

    if prompt_tokens < 1 or output_tokens < 2 or requests < 1 or any(b < 1 for b in batches):
        raise InputError(
            "prompt_tokens >= 1, output_tokens >= 2, requests >= 1 and batch sizes >= 1 are required"
        )
    threads = threads or get_settings().threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    fp = hardware_fingerprint(threads)
    backend = "vllm" if url else "transformers"
    day = date.today().isoformat()
    shape = f"p{prompt_tokens}-o{output_tokens}-b{'_'.join(map(str, batches))}"
    path = _cache_path("bench", fp, f"{model_id}-{shape}", backend, day)
    if path.exists() and not force:
        return BenchResult.model_validate_json(path.read_text())
    progress = progress or (lambda _msg: None)
    start = time.perf_counter()
    if url:
        settings_key = get_settings().openai_api_key
        key = api_key_from(api_key, api_key_file) or (settings_key.get_secret_value() if settings_key else None)
        figures = _bench_vllm(
            url,
            model_id,
            served_name or model_id,
            prompt_tokens,
            output_tokens,
            batches,
            requests,
            progress,
            key,
        )
        peak_bw = peak_tf = None
    else:
        peak_bw, peak_tf = measure_peaks(threads, force=force)
        figures = _bench_transformers(model_id, prompt_tokens, output_tokens, batches, requests, progress)
    result = BenchResult(
        model=model_id,
        backend=backend,
        fingerprint=fp,
        date=day,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        requests=requests,
        peak_mem_bw_gbps=peak_bw,
        peak_tflops=peak_tf,
        seconds=time.perf_counter() - start,
        **figures,
    )
    write_text_atomic(path, result.model_dump_json(indent=1))
    return result


def cached_results(fingerprint: HardwareFingerprint | None = None) -> list[BenchResult]:
    """Every cached measurement (newest per fingerprint + model + backend + request shape), optionally
    for one machine: the calibration points of the roofline model."""
    latest: dict[tuple, BenchResult] = {}
    for path in sorted(bench_dir().glob(f"bench-v{CACHE_VERSION}-*.json")):  # older versions: ignored
        try:
            res = BenchResult.model_validate_json(path.read_text())
        except ValueError:
            continue  # a half-written or foreign file is not a measurement
        key = (
            res.fingerprint.key,
            res.model,
            res.backend,
            res.prompt_tokens,
            res.output_tokens,
            tuple(sorted(res.decode_tok_s)),
        )
        if key not in latest or res.date >= latest[key].date:
            latest[key] = res
    return [r for r in latest.values() if fingerprint is None or r.fingerprint.key == fingerprint.key]
