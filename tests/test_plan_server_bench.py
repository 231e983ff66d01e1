"""Server benchmark: fingerprint, cache, local offer; a real (slow) measurement of the 135M model."""

from __future__ import annotations

import pytest
from stratos_agent.tools import server_bench


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "cache"))
    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    yield tmp_path / "cache"
    get_settings.cache_clear()


def test_fingerprint_is_stable_and_thread_sensitive():
    a, b = server_bench.hardware_fingerprint(1), server_bench.hardware_fingerprint(1)
    assert a.key == b.key and a.cores >= 1 and a.cpu_model
    assert server_bench.hardware_fingerprint(2).key != a.key


def test_local_offer_is_measured_and_cached(cache_dir):
    offer = server_bench.local_offer(threads=1)
    assert offer.is_local and offer.on_demand_usd_h == 0 and offer.source.startswith("measured")
    assert offer.mem_bw_gbps > 0.1 and offer.bf16_tflops > 1e-4
    assert server_bench.local_offer(threads=1).mem_bw_gbps == offer.mem_bw_gbps  # from the cache


def test_cached_results_skips_foreign_files(cache_dir):
    server_bench.bench_dir().mkdir(parents=True)
    (server_bench.bench_dir() / "bench-junk.json").write_text("{not json")
    assert server_bench.cached_results() == []


def test_bad_bench_arguments(cache_dir):
    from stratos_agent.errors import InputError

    with pytest.raises(InputError, match="output_tokens >= 2"):
        server_bench.bench_model("smollm2-135m", output_tokens=1)


@pytest.mark.slow
def test_bench_real_model_and_calibrate():  # the real cache: the model conversion is shared and slow
    from stratos_agent.tools import roofline

    res = server_bench.bench_model(
        "smollm2-135m-half",
        prompt_tokens=16,
        output_tokens=4,
        batches=(1, 2),
        requests=2,
        threads=1,
        force=True,
    )
    assert res.backend == "transformers" and res.layers == 15
    assert res.decode_tok_s[1] > 0 and res.p95_ms >= res.p50_ms > res.ttft_ms > 0
    again = server_bench.bench_model(
        "smollm2-135m-half", prompt_tokens=16, output_tokens=4, batches=(1, 2), requests=2, threads=1
    )
    assert again == res  # today's cached measurement
    eff = roofline.calibrate([res], res.peak_mem_bw_gbps, res.peak_tflops)
    assert eff.source == f"measured:{res.fingerprint.key}"
