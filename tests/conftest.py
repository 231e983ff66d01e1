"""Shared test set-up: one torch thread (2 shared cores), and runs kept out of the work tree."""

from __future__ import annotations

import os
import tempfile

import pytest
from support.env import private_settings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("STRATOS_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests plan from the calibration curves they record themselves, never from a user's store.
os.environ.setdefault("STRATOS_CALIBRATION_DIR", tempfile.mkdtemp(prefix="stratos-test-calibration-"))
os.environ.setdefault("STRATOS_CALIBRATION_SEEDS", "0")
# This machine's datasheet for every test, subprocesses included (tools/machine_peaks.py): stream-copy
# GB/s, fp32 matmul TFLOP/s at 1 thread (measured idle: ~37 GB/s best, ~33 median; ~0.1 TFLOP/s), so
# that no plan depends on a peak measured under whatever load the day had. Tests of the measurement
# itself delete it.
os.environ.setdefault("STRATOS_SERVER_PEAKS", "30,0.1")
# Plans keep the roofline's local p95 instead of starting vLLM to time the chosen student (~25 s each);
# tests/test_latency_probe.py times it for real.
os.environ.setdefault("STRATOS_LATENCY_PROBE", "0")
# Likewise no pilot run (~1 minute of training) for candidates the test's empty calibration store lacks.
os.environ.setdefault("STRATOS_PILOTS", "0")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(1)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs directory for the test (the model cache stays shared: converting is slow)."""
    with private_settings(monkeypatch, runs_dir=tmp_path / "runs"):
        yield tmp_path / "runs"


def build_tiny_llama(folder, *, seed: int = 0):
    """A randomly initialised 2-layer Llama with the real SmolLM2 tokenizer (fast train/eval tests).

    Its vocabulary (49k) is the real one so chat templates, fingerprints and parsing are real; only
    the network is tiny. Needs the bundled model converted once (shared cache).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from stratos_agent.models import local_model_path

    tokenizer = AutoTokenizer.from_pretrained(local_model_path("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Folder of a tiny random Llama with the SmolLM2 tokenizer (built once per session)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")
