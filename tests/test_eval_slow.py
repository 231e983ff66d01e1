"""`stratos eval` against a real vLLM OpenAI-compatible server (started by the deploy tool)."""

from __future__ import annotations

import importlib.util

import pytest
from stratos_agent.tools.evaluate import evaluate

from stratos_agent.tasks import get_task_pack


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (extra `serve`)")
def test_eval_against_a_vllm_endpoint_matches_the_local_model(tmp_path, monkeypatch):
    from stratos_agent.tools import deploy

    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path / "cache"))
    pack = get_task_pack("mahjong")
    data = tmp_path / "held_out.jsonl"
    pack.write_jsonl(pack.sample(8, seed=2, distribution="even", unique=True), data)
    dep = deploy.deploy_local("smollm2-135m", name="eval-test", smoke=False, timeout_s=900)
    try:
        remote = evaluate(pack, data, endpoint=dep.base_url, model_name=dep.model, limit=4,
                          max_new_tokens=24, concurrency=4)
    finally:
        deploy.stop(dep.name)
    local = evaluate(pack, data, model="smollm2-135m", limit=4, batch_size=1, max_new_tokens=24)
    assert remote.n == local.n == 4 and remote.endpoint == dep.base_url
    assert remote.generated_tokens > 0 and remote.latency_p95_ms >= remote.latency_p50_ms > 0
    # same weights, same chat template, greedy: the served answers start like the local ones
    same = sum(r.output[:20] == lo.output[:20] for r, lo in zip(remote.samples, local.samples, strict=True))
    assert same >= 3, [(r.output, lo.output) for r, lo in zip(remote.samples, local.samples, strict=True)]
