"""Pruned students: Minitron width pruning, task vocabulary trimming, their registry entries, serving (slow)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from stratos_agent.errors import InputError
from stratos_agent.models import get_registry, load_model_and_tokenizer, local_model_path
from stratos_agent.models.atomic import read_marker
from stratos_agent.models.pruned import (
    kept_token_ids,
    plan_width,
    prune_width,
    task_texts,
    trim_model_vocab,
    trim_tokenizer_json,
    width_importance,
)

PROMPT = [{"role": "user", "content": "Hand: 123m 456p 789s 11z 23s\nWhich tiles complete it?"}]


def tiny_gqa_llama(vocab: int = 50, seed: int = 0):
    """3 layers, 6 query heads over 2 KV heads (groups of 3), head_dim 8, width 48, MLP 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def calibration_ids(vocab: int = 50, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (1, 24), generator=generator) for _ in range(3)]


def mean_nll(model, tokenizer, texts: list[str]) -> float:
    total = tokens = 0.0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            total += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    return total / tokens


# ----------------------------------------------------------------------------------- width pruning
def test_removing_channels_and_heads_is_exactly_muting_them():
    """The pruned model computes what the original does with the dropped MLP channels (down_proj columns) and
    query heads (o_proj columns) zeroed: proof that every slice lines up."""
    model = tiny_gqa_llama()
    plan = plan_width(width_importance(model, calibration_ids()), model.config, intermediate=40, heads_per_group=2)
    pruned = prune_width(model, plan)
    config = pruned.config
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (40, 4, 2)
    assert config.head_dim == 8 and config.hidden_size == 48
    for heads in plan.heads:  # 2 heads from each KV group of 3 (query head h reads KV head h // 3)
        assert [h // 3 for h in heads] == [0, 0, 1, 1]
    with torch.no_grad():
        for block, channels, heads in zip(model.model.layers, plan.mlp, plan.heads):
            dropped = [c for c in range(64) if c not in channels]
            block.mlp.down_proj.weight[:, dropped] = 0
            for h in set(range(6)) - set(heads):
                block.self_attn.o_proj.weight[:, h * 8:(h + 1) * 8] = 0
        ids = calibration_ids(seed=9)[0]
        torch.testing.assert_close(pruned(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)


def test_importance_ranks_silent_parts_last_and_is_deterministic():
    model = tiny_gqa_llama()
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[:10] = 0  # channels 0-9 of block 0 never fire
    first = width_importance(model, calibration_ids())
    again = width_importance(model, calibration_ids())
    assert all(torch.equal(a, b) for a, b in zip(first.mlp + first.heads, again.mlp + again.heads))
    assert torch.equal(first.hidden, again.hidden)
    assert first.mlp[0][:10].abs().sum() == 0 and (first.mlp[0][10:] > 0).all()
    plan = plan_width(first, model.config, intermediate=54, heads_per_group=1, hidden=20)
    assert plan.mlp[0] == list(range(10, 64))
    for scores, kept in zip(first.heads, plan.heads):  # the strongest head of each group of 3
        assert kept == [int(scores[g * 3:(g + 1) * 3].argmax()) + g * 3 for g in range(2)]
    assert plan.hidden == sorted(first.hidden.argsort(descending=True)[:20].tolist())


def test_residual_pruning_gives_a_consistent_model_that_saves_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_gqa_llama()
    plan = plan_width(width_importance(model, calibration_ids()), model.config, intermediate=32,
                      heads_per_group=3, hidden=24)
    pruned = prune_width(model, plan)
    expected = {"embed_tokens": (50, 24), "lm_head": (50, 24), "q_proj": (48, 24), "k_proj": (16, 24), "v_proj": (16, 24),
                "o_proj": (24, 48), "gate_proj": (32, 24), "up_proj": (32, 24), "down_proj": (24, 32), "norm": (24,)}
    for name, weight in pruned.state_dict().items():
        part = next(key for key in expected if key in name.split(".")[-2])
        assert tuple(weight.shape) == expected[part], name
    pruned.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert (loaded.config.hidden_size, loaded.config.intermediate_size, loaded.config.head_dim) == (24, 32, 8)
    ids = calibration_ids(seed=5)[0]
    logits = loaded(ids).logits
    assert logits.shape == (1, 24, 50) and torch.isfinite(logits).all()
    assert loaded.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == 27


@pytest.mark.parametrize(("sizes", "message"), [
    ({"intermediate": 65, "heads_per_group": 1}, "MLP channels"),
    ({"intermediate": 8, "heads_per_group": 4}, "heads per KV group"),
    ({"intermediate": 8, "heads_per_group": 1, "hidden": 49}, "residual channels"),
    ({"intermediate": 8, "heads_per_group": 2, "hidden": 30}, "multiple of the 4 kept heads"),
])
def test_impossible_widths_are_input_errors(sizes, message):
    model = tiny_gqa_llama()
    with pytest.raises(InputError, match=message):
        plan_width(width_importance(model, calibration_ids()), model.config, **sizes)


# ----------------------------------------------------------------------------------- vocabulary trimming
@pytest.fixture(scope="module")
def smollm2_tokenizer_json() -> dict:
    return json.loads((local_model_path("smollm2-135m") / "tokenizer.json").read_text(encoding="utf-8"))


def test_trimmed_bpe_encodes_like_the_original_renumbered(smollm2_tokenizer_json):
    from tokenizers import Tokenizer

    original = Tokenizer.from_str(json.dumps(smollm2_tokenizer_json))
    texts = ["Winning tiles: 36m 5p", "<|im_start|>user\nHand: 1112345678999m<|im_end|>", "nobody"]
    seen = {i for text in texts for i in original.encode(text).ids}
    keep = kept_token_ids(smollm2_tokenizer_json, seen)
    trimmed_json = trim_tokenizer_json(smollm2_tokenizer_json, keep)
    trimmed = Tokenizer.from_str(json.dumps(trimmed_json))
    new_id = {old: new for new, old in enumerate(keep)}
    assert trimmed.get_vocab_size() == len(keep) < 600
    for text in texts:
        assert trimmed.encode(text).ids == [new_id[i] for i in original.encode(text).ids]
    # "nobody" is one token; the merges that build it are kept with their parts, or BPE could not reach it
    vocab = trimmed_json["model"]["vocab"]
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in trimmed_json["model"]["merges"])
    assert len(trimmed_json["model"]["merges"]) >= len(keep) - 256 - len(trimmed_json["added_tokens"])
    assert [t["content"] for t in trimmed_json["added_tokens"]] == [
        t["content"] for t in smollm2_tokenizer_json["added_tokens"]]
    for text in ("Grüße, naïve café! 😀", "def f(x):\n\treturn {x: [1, 2]}"):  # unseen: bytes still cover it
        assert trimmed.decode(trimmed.encode(text).ids) == text


def test_only_byte_level_bpe_is_trimmed():
    from tokenizers import Tokenizer, models, pre_tokenizers

    word_level = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(InputError, match="byte-level BPE"):
        kept_token_ids(json.loads(word_level.to_str()), [1])


def test_trimmed_model_keeps_the_logits_of_kept_tokens():
    model = tiny_gqa_llama(vocab=50)
    for config in (model.config, model.generation_config):
        config.bos_token_id, config.eos_token_id, config.pad_token_id = 3, [7, 9], None
    keep = [0, 3, 5, 7, 9, 20, 41]
    ids = torch.tensor([[3, 20, 5, 41, 9]])
    with torch.no_grad():
        before = model(ids).logits[..., keep]
        trim_model_vocab(model, keep)
        after = model(torch.tensor([[1, 5, 2, 6, 4]])).logits
    torch.testing.assert_close(after, before)
    assert model.config.vocab_size == 7 and model.config.bos_token_id == 1 and model.config.eos_token_id == [3, 4]
    assert model.generation_config.eos_token_id == [3, 4]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    with pytest.raises(InputError, match="bos_token_id 1 is not among the kept tokens"):
        trim_model_vocab(model, [0, 2, 3, 4])


# ----------------------------------------------------------------------------------- registry candidates
def test_registry_lists_the_pruned_students():
    registry = get_registry()
    narrow, vocab = registry.get("smollm2-135m-narrow"), registry.get("smollm2-135m-half-mahjong-vocab")
    assert narrow.roles == vocab.roles == ["student"] and narrow.source == vocab.source == "derived"
    assert narrow.derived_from == "smollm2-135m" and vocab.derived_from == "smollm2-135m-half"
    assert narrow.task is None and vocab.task == "mahjong"
    assert narrow.parameters == 88_066_368 and vocab.layers == 15 and vocab.vocab_size < 1000


def test_narrow_student_loads_generates_and_beats_a_random_init_of_its_shape():
    """Built once from the teacher into the shared model cache (~30 s the first time)."""
    from transformers import AutoModelForCausalLM

    from stratos_agent.models.pruned import task_messages

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-narrow")
    config = model.config
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (640, 9, 3)
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    candidate = get_registry().get("smollm2-135m-narrow")
    assert candidate.metadata_origin == "computed" and candidate.parameters == 88_066_368
    assert candidate.tokenizer_fingerprint == get_registry().get("smollm2-135m").tokenizer_fingerprint
    marker = read_marker(local_model_path("smollm2-135m-narrow"))
    assert marker["recipe"]["kind"] == "width-prune" and marker["facts"]["parameters"] == 88_066_368
    assert read_marker(local_model_path("smollm2-135m-narrow")) == marker  # same recipe: not rebuilt
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in task_messages("mahjong", 2, seed=321)]
    nll = mean_nll(model, tokenizer, texts)
    torch.manual_seed(0)
    random_nll = mean_nll(AutoModelForCausalLM.from_config(config).eval(), tokenizer, texts)
    assert math.isfinite(nll) and nll < random_nll - 3, (nll, random_nll)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_task_vocab_student_tokenises_held_out_task_texts_exactly_as_its_base():
    from transformers import AutoTokenizer

    model, tokenizer = load_model_and_tokenizer("smollm2-135m-half-mahjong-vocab")
    folder = local_model_path("smollm2-135m-half-mahjong-vocab")
    base = AutoTokenizer.from_pretrained(local_model_path("smollm2-135m-half"))
    keep = read_marker(folder)["facts"]["kept_ids"]
    new_id = {old: new for new, old in enumerate(keep)}
    candidate = get_registry().get("smollm2-135m-half-mahjong-vocab")
    assert candidate.task == "mahjong" and candidate.metadata_origin == "computed"
    assert model.config.vocab_size == len(tokenizer) == len(keep) == candidate.vocab_size
    assert candidate.vocab_size == get_registry().builtins[candidate.id].catalog["vocab_size"]  # catalog is current
    assert candidate.tokenizer_fingerprint != get_registry().get("smollm2-135m-half").tokenizer_fingerprint
    for text in task_texts("mahjong", base, 40, seed=4242):  # items the vocabulary was not built from
        assert tokenizer(text).input_ids == [new_id[i] for i in base(text).input_ids]
    assert tokenizer.chat_template == base.chat_template
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0]), str)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (extra `serve`)")
def test_task_vocab_student_serves_through_vllm(tmp_path, monkeypatch):
    """The trimmed tokenizer and 439-row LM head load in vLLM and answer a chat completion."""
    from openai import OpenAI
    from stratos_agent.tools import deploy
    from support.env import private_settings

    folder = local_model_path("smollm2-135m-half-mahjong-vocab")  # the shared model cache
    with private_settings(monkeypatch, cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs"):  # serving state
        dep = deploy.deploy_local(folder, name="vocab-test", smoke=False, timeout_s=900)
        try:
            client = OpenAI(base_url=dep.base_url, api_key="EMPTY", timeout=120)
            reply = client.chat.completions.create(model=dep.model, messages=PROMPT, max_tokens=8, temperature=0)
            assert isinstance(reply.choices[0].message.content, str)
            assert reply.usage.completion_tokens > 0
        finally:
            deploy.stop_deployment(dep)
