"""bf16 autocast is a measured choice per machine (tools/precision.py), and the hardware key tells apart
machines that share a CPU name but not its bf16/vector features."""

from __future__ import annotations

import pytest
from stratos_agent.tools import precision
from support.env import private_settings

from stratos_agent.records.servers import HardwareFingerprint


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.delenv(precision.ENV, raising=False)
    precision.use_bf16.cache_clear()
    with private_settings(monkeypatch, cache_dir=tmp_path):
        yield tmp_path
    precision.use_bf16.cache_clear()


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected"), [(1.0, 0.2, True), (1.0, 35.0, False), (1.0, 0.95, False)])
def test_the_measurement_decides_and_is_cached(fresh, monkeypatch, fp32_s, bf16_s, expected):
    calls = []

    def timed(bf16: bool) -> float:
        calls.append(bf16)
        return bf16_s if bf16 else fp32_s

    monkeypatch.setattr(precision, "_step_seconds", timed)
    assert precision.use_bf16() is expected
    precision.use_bf16.cache_clear()
    assert precision.use_bf16() is expected  # read back from the cache file, not measured again
    assert calls == [False, True]
    assert list((fresh / "precision").glob("bf16-*.json"))


def test_a_pinned_choice_is_not_measured(fresh, monkeypatch):
    monkeypatch.setattr(precision, "_step_seconds", lambda bf16: pytest.fail("measured despite the pin"))
    monkeypatch.setenv(precision.ENV, "1")
    assert precision.use_bf16() is True
    precision.use_bf16.cache_clear()
    monkeypatch.setenv(precision.ENV, "0")
    assert precision.use_bf16() is False


def test_cpu_features_split_the_hardware_key_and_old_keys_stay_valid():
    base = {"cpu_model": "AMD EPYC", "cores": 2, "threads": 1, "torch_version": "2.13.0+cpu"}
    old, avx2, bf16 = (HardwareFingerprint(**base, cpu_features=f) for f in ("", "avx2", "avx512_bf16+avx512f+avx2"))
    assert len({old.key, avx2.key, bf16.key}) == 3
    assert old.key == "e018daea72b1"  # the key the shipped seed curves carry (recorded before features)
