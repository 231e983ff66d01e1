"""A short load test of a live OpenAI-compatible endpoint with the task's real prompts.

The plan's p95 is a measurement on this machine (or a model elsewhere); this is the check afterwards:
the deployed endpoint, at the spec's concurrency, with held-out prompts as the student sees them.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from stratos_agent.tools.evaluate import percentile

from stratos_agent.records.deployment import LoadTest
from stratos_agent.tasks.base import TaskPack


def load_test(
    base_url: str,
    model: str,
    pack: TaskPack,
    *,
    requests: int = 128,
    concurrency: int = 4,
    max_tokens: int = 32,
    api_key: str | None = None,
    seed: int = 11,
    exact_tokens: bool = False,
) -> LoadTest:
    """`requests` chat completions, `concurrency` in flight; latency per request (wall, client side).
    `exact_tokens`: every answer is exactly `max_tokens` long (vLLM's `min_tokens` + `ignore_eos`), for a
    model whose own answers mean nothing yet (an untrained stand-in timed before training)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0, timeout=120.0)
    prompts = [pack.chat_messages(item) for item in pack.sample(requests, seed=seed)]
    forced = {"min_tokens": max_tokens, "ignore_eos": True} if exact_tokens else None

    def one(messages: list[dict[str, str]]) -> tuple[float, int, int] | None:
        start = time.perf_counter()
        try:
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                   temperature=0.0, extra_body=forced)
        except Exception:  # noqa: BLE001 - a failed request is counted, not fatal
            return None
        usage = reply.usage
        return time.perf_counter() - start, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    ok = [r for r in results if r is not None]
    latencies = [r[0] for r in ok] or [float("nan")]
    return LoadTest(
        requests=requests, concurrency=concurrency, errors=requests - len(ok),
        p50_ms=round(percentile(latencies, 50) * 1000, 1), p95_ms=round(percentile(latencies, 95) * 1000, 1),
        prompt_tokens=sum(r[1] for r in ok) / len(ok) if ok else None,
        output_tokens=sum(r[2] for r in ok) / len(ok) if ok else None, wall_s=round(wall, 2),
    )
