"""The plan's local p95 from the serving engine itself: request shapes per student, the vLLM probe, its
cache, and a plan whose chosen local student carries the measured figure."""

from __future__ import annotations

import pytest
from stratos_agent.tools import latency_probe, planning
from stratos_agent.tools.load_test import LOAD_TEST_ROUNDS, MIN_BUDGETED_REQUESTS
from stratos_agent.tools.planning.serving import serving_table
from stratos_agent.tools.request_shape import answer_lengths, task_shape
from stratos_agent.tools.survey import plan_measured

from stratos_agent.records.plans import PairTable
from stratos_agent.records.servers import LatencyProbe
from stratos_agent.spec import Constraints, DistillationSpec, Traffic


def _local_spec(concurrency: int = 2) -> DistillationSpec:
    return DistillationSpec(task="mahjong", student="mahjong-micro-2m", teacher="smollm2-135m",
                            constraints=Constraints(budget_usd=5, clouds=["local"]),
                            traffic=Traffic(qps=0.1, concurrency=concurrency, prompt_tokens=25, output_tokens=8))


def test_each_student_has_its_own_request_shape():
    smol = task_shape("mahjong", tokenizer_model="smollm2-135m")
    micro = task_shape("mahjong", tokenizer_model="mahjong-micro-2m")
    # The micro student reads the short prompt in its tile vocabulary: fewer tokens both ways.
    assert micro.prompt_tokens < smol.prompt_tokens and micro.output_tokens < smol.output_tokens
    assert "mahjong-micro-2m tokenizer" in micro.source


def test_a_probe_replaces_the_modelled_local_p95_only_at_its_concurrency():
    spec = _local_spec()
    fake = LatencyProbe(model="mahjong-micro-2m", engine="vllm", hardware="x", concurrency=2, output_tokens=8,
                        requests=8, p50_ms=40.0, p95_ms=123.0, load_avg=0.1, measured_at="now")
    inputs = planning.gather_inputs(spec, gpus=["CPU"], latency_probes={"mahjong-micro-2m": fake})
    table = serving_table(spec, inputs)
    assert table.p95_ms[0, 0] == pytest.approx(123.0) and table.source[0, 0] == "measured"
    other = spec.model_copy(update={"traffic": spec.traffic.model_copy(update={"concurrency": 3})})
    table = serving_table(other, planning.gather_inputs(other, gpus=["CPU"], latency_probes={"mahjong-micro-2m": fake}))
    assert table.source[0, 0] == "modelled"


@pytest.mark.slow
def test_vllm_probe_is_cached_and_the_plan_carries_it(monkeypatch):
    monkeypatch.setenv(latency_probe.ENV_SWITCH, "1")
    shape = task_shape("mahjong", tokenizer_model="mahjong-micro-2m")
    lengths = answer_lengths("mahjong", tokenizer_model="mahjong-micro-2m")
    fresh = latency_probe.probe_student("mahjong", "mahjong-micro-2m", concurrency=2, refresh=True)
    assert fresh.errors == 0 and 0 < fresh.p50_ms <= fresh.p95_ms
    # the time budget may cut the request count on a busy machine, never below its floor
    assert MIN_BUDGETED_REQUESTS <= fresh.requests <= latency_probe.PROBE_REQUESTS * LOAD_TEST_ROUNDS
    assert len(fresh.round_p95_ms) == fresh.rounds and sorted(fresh.round_p95_ms)[(fresh.rounds - 1) // 2] == fresh.p95_ms
    assert fresh.output_tokens == shape.output_tokens  # the p95 of the forced distribution
    assert latency_probe.cached_probe("mahjong-micro-2m", lengths, 2) == fresh
    assert latency_probe.probe_student("mahjong", "mahjong-micro-2m", concurrency=2) == fresh  # cache hit

    spec = _local_spec()
    pairs = PairTable(pairs=planning.prepare(spec, gpus=["CPU"]).pairs)
    # the student's own shape: the plan probes its answer-length distribution (the cached probe above)
    plan = plan_measured(spec, ["CPU"], pairs, shapes={"mahjong-micro-2m": shape})
    assert plan.chosen is not None and plan.chosen.student == "mahjong-micro-2m"
    assert plan.chosen.latency_source == "measured"
    assert plan.chosen.p95_ms == pytest.approx(fresh.p95_ms)
    assert plan.latency_probes == [fresh]


@pytest.mark.slow
def test_vllm_generates_exactly_the_forced_lengths():
    """vLLM honours min_tokens = max_tokens with ignore_eos: the served answers have the forced lengths."""
    from stratos_agent.tools import deploy
    from stratos_agent.tools.load_test import load_test

    from stratos_agent.models import local_model_path

    lengths = answer_lengths("mahjong", tokenizer_model="mahjong-micro-2m")
    folder = local_model_path("mahjong-micro-2m")
    dep = deploy.deploy_local(folder, name="test-forced-lengths", smoke=False, task="mahjong")
    try:
        test = load_test(dep.base_url, dep.model, latency_probe.probe_pack("mahjong", folder),
                         requests=len(lengths), concurrency=2, warmup=0, forced_lengths=lengths, rounds=1)
    finally:
        deploy.stop_deployment(dep)
    assert test.errors == 0 and test.output_tokens == pytest.approx(sum(lengths) / len(lengths))


def test_each_process_probes_on_its_own_server(tmp_path, monkeypatch):
    """Two runs probing one student at once must not share a server: the second would reuse the first's
    (and stop it when done) or, starting in the same folder, stop it as a stale leftover."""
    import os
    import types

    from stratos_agent.tools import deploy

    from stratos_agent.records.deployment import LoadTest
    from stratos_agent.settings import get_settings

    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    started = []

    def fake_deploy(folder, *, name, state_dir, **_):
        state_dir.mkdir(parents=True)
        started.append((name, state_dir))
        return types.SimpleNamespace(base_url="http://x/v1", model=name, log_path=str(state_dir / "server.log"))

    failing = {"errors": 0}
    monkeypatch.setattr(deploy, "deploy_local", fake_deploy)
    monkeypatch.setattr(deploy, "stop_deployment", lambda dep: dep)
    monkeypatch.setattr(latency_probe, "forced_load_test", lambda dep, pack, **kw: LoadTest(
        requests=64, concurrency=2, p50_ms=20.0, p95_ms=40.0, errors=failing["errors"], wall_s=1.0))
    try:
        probe = latency_probe.probe_student("mahjong", "mahjong-micro-2m", concurrency=2, refresh=True)
        (name, state), = started
        assert name.endswith(f"-{os.getpid()}") and state.name == name and probe.p95_ms == 40.0
        assert not state.exists()  # a probe that answered leaves no server folder behind
        failing["errors"] = 64
        with pytest.raises(Exception, match="every request of the latency probe"):
            latency_probe.probe_student("mahjong", "mahjong-micro-2m", concurrency=2, refresh=True)
        assert started[-1][1].exists()  # a failed one keeps its log for the message
    finally:
        get_settings.cache_clear()
