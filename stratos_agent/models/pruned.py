"""Width-pruned and vocabulary-trimmed students, initialised from their teacher's weights.

Width (Minitron: Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation"): forward passes over calibration text rank every MLP channel by its mean |activation|
(the input of `down_proj`), every attention head by the mean L2 norm of its output (the input of
`o_proj`), and every embedding channel by the mean |output| of all RMSNorms; the least important are
cut, the same number in every layer (one config for all blocks). Query heads are kept per KV group, the
same count in each, so grouped-query attention stays consistent (SmolLM2: 9 heads over 3 KV heads; 6
heads = the 2 strongest of each group; the registered narrow student keeps all 9, see NARROW). Removing an MLP channel or a head is exactly zeroing its
`down_proj` / `o_proj` column, so the pruned model computes what the teacher would with those parts muted.

Vocabulary: a task's prompts and answers use a few hundred of SmolLM2's 49,152 tokens, yet every token
pays for a 49k-way LM head. Trimming keeps the tokens seen in a large sample of the task's chats, the
special tokens, every single-byte token (so any text still encodes, bytewise where needed) and every
token a kept token is merged from; the BPE keeps the merges whose parts and result are all kept. Then
the trimmed tokenizer encodes the task's texts into exactly the original tokens, renumbered (the
merges a text applies are all still there, in the same order), and the embedding/LM-head rows are cut
to that set. The folder stays a plain Llama + tokenizer.json that transformers and vLLM load.

    folder = narrow_folder(teacher_dir, models_dir / "smollm2-135m-narrow", "smollm2-135m-narrow")
    folder = task_vocab_folder(half_dir, models_dir / "smollm2-135m-half-mahjong-vocab", "mahjong", "...")

Measured (`evals/models_pruned.py`, no training, evals/results/models_pruned.json): token NLL on held-out
Mahjong chats / prose, full fine-tuning examples/s (batch 8, 1 thread, shared 2-core EPYC):
  smollm2-135m (teacher)          134.5M  3.55 / 2.92  1.46
  smollm2-135m-half (depth)        81.4M  6.05 / 6.59  1.91
  smollm2-135m-narrow (width)      88.1M  4.16 / 6.14  1.99
  smollm2-135m-half-mahjong-vocab  53.4M  5.22 / (prose spelled bytewise)  3.21
The trimmed vocabulary lowers the chat NLL (6.05 -> 5.22: the softmax no longer spreads over 48k tokens
the task never uses) and its LM head is 112x smaller, which is where its speed comes from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratos_agent.errors import InputError
from stratos_agent.models.atomic import materialise, read_marker
from stratos_agent.models.derived import CALIBRATION_CHAT, CALIBRATION_TEXTS, calibration_texts
from stratos_agent.models.fingerprint import tokenizer_fingerprint

if TYPE_CHECKING:
    import torch

PRUNER_VERSION = 1
TRIMMER_VERSION = 1
CALIBRATION_TASK = "mahjong"
CALIBRATION_TASK_ITEMS = 8  # task chats added to the calibration text (seed 0, the pack's default rationale)
VOCAB_SAMPLE = 1000  # items per distribution (natural and even) whose chats define a task vocabulary
# The narrow student: 640 of 1536 MLP channels, every head, the full residual width (88.1M parameters).
# Cutting heads costs more than cutting channels: at the same 88.1M, 768 channels + 6 of 9 heads score a
# token NLL of 5.82 on held-out Mahjong chats and 8.03 on prose, 640 channels + 9 heads 4.16 and 6.14
# (teacher 3.55 / 2.92; `smollm2-135m-half`, 81.4M: 6.05 / 6.59; evals/models_pruned.py, no training).
NARROW = {"intermediate": 640, "heads_per_group": 3, "hidden": None}


# ----------------------------------------------------------------------------------- calibration
def task_messages(task: str, n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Chats of `n` items of `task` with the solver's rationale (the pack's default style)."""
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack(task)
    return [pack.chat_messages(item, pack.solver_rationale(item)) for item in pack.sample(n, seed=seed)]


def width_calibration(tokenizer: Any) -> list[str]:
    """derived.py's calibration texts plus a few task chats, rendered with the tokenizer's template."""
    chats = task_messages(CALIBRATION_TASK, CALIBRATION_TASK_ITEMS)
    return calibration_texts(tokenizer) + [tokenizer.apply_chat_template(m, tokenize=False) for m in chats]


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------- width importance
@dataclass
class WidthImportance:
    """Mean activation magnitudes over the calibration tokens (Minitron's importance scores)."""

    mlp: list[torch.Tensor]  # per layer: [intermediate] mean |input of down_proj|
    heads: list[torch.Tensor]  # per layer: [num_heads] mean L2 norm of each head's output
    hidden: torch.Tensor  # [hidden] mean |output| summed over every RMSNorm


def _check_llama(config: Any) -> None:
    if config.model_type != "llama" or getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise InputError(f"width pruning supports Llama models without biases, not {config.model_type!r}")


def width_importance(model: Any, batches: Iterable[torch.Tensor]) -> WidthImportance:
    """Run `batches` (token id tensors [1, T]) through `model` and average activation magnitudes."""
    import torch

    _check_llama(model.config)
    config = model.config
    layers = model.model.layers
    mlp = [torch.zeros(config.intermediate_size, dtype=torch.float64) for _ in layers]
    heads = [torch.zeros(config.num_attention_heads, dtype=torch.float64) for _ in layers]
    hidden = torch.zeros(config.hidden_size, dtype=torch.float64)
    head_dim = config.head_dim

    # Pre-hooks return None: a returned value would replace the module's input.
    def add_mlp(i: int):
        def hook(_module, args) -> None:
            mlp[i].add_(args[0].abs().flatten(0, -2).sum(0).double())
        return hook

    def add_heads(i: int):
        def hook(_module, args) -> None:
            per_head = args[0].unflatten(-1, (-1, head_dim)).norm(dim=-1)  # [B, T, heads]
            heads[i].add_(per_head.flatten(0, -2).sum(0).double())
        return hook

    def add_hidden(_module, _args, output) -> None:
        hidden.add_(output.abs().flatten(0, -2).sum(0).double())

    norms = [module for block in layers for module in (block.input_layernorm, block.post_attention_layernorm)]
    handles = [block.mlp.down_proj.register_forward_pre_hook(add_mlp(i)) for i, block in enumerate(layers)]
    handles += [block.self_attn.o_proj.register_forward_pre_hook(add_heads(i)) for i, block in enumerate(layers)]
    handles += [norm.register_forward_hook(add_hidden) for norm in [*norms, model.model.norm]]
    tokens = 0
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
                tokens += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
    if not tokens:
        raise InputError("width importance needs at least one calibration token")
    return WidthImportance([m / tokens for m in mlp], [h / tokens for h in heads], hidden / tokens)


def top_k(scores: torch.Tensor, k: int) -> list[int]:
    """Indices (ascending) of the `k` highest scores; ties go to the lower index (deterministic)."""
    ranked = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(ranked[:k])


@dataclass(frozen=True)
class WidthPlan:
    """What each layer keeps: MLP channels, query heads (KV heads all stay), residual channels."""

    mlp: list[list[int]]
    heads: list[list[int]]
    hidden: list[int]
    kv_heads: int


def plan_width(
    importance: WidthImportance, config: Any, *, intermediate: int, heads_per_group: int, hidden: int | None = None,
) -> WidthPlan:
    """Keep the `intermediate` strongest MLP channels and the `heads_per_group` strongest query heads of every
    KV group in each layer, and the `hidden` strongest residual channels (None = all)."""
    kv = config.num_key_value_heads
    group = config.num_attention_heads // kv
    if not (0 < intermediate <= config.intermediate_size and 0 < heads_per_group <= group):
        raise InputError(f"cannot keep {intermediate} of {config.intermediate_size} MLP channels and "
                         f"{heads_per_group} of {group} heads per KV group")
    hidden = hidden or config.hidden_size
    if not 0 < hidden <= config.hidden_size:
        raise InputError(f"cannot keep {hidden} of {config.hidden_size} residual channels")
    if hidden % (kv * heads_per_group):  # transformers refuses such a config, even with head_dim explicit
        raise InputError(f"the residual width {hidden} must be a multiple of the {kv * heads_per_group} kept heads")

    def layer_heads(scores: torch.Tensor) -> list[int]:
        # Llama maps query head h to KV head h // group: pick within each group so the mapping holds.
        return [g * group + h for g in range(kv) for h in top_k(scores[g * group:(g + 1) * group], heads_per_group)]

    return WidthPlan(
        mlp=[top_k(scores, intermediate) for scores in importance.mlp],
        heads=[layer_heads(scores) for scores in importance.heads],
        hidden=top_k(importance.hidden, hidden),
        kv_heads=kv,
    )


def prune_width(model: Any, plan: WidthPlan) -> Any:
    """A new model of the same class holding only the planned channels and heads of `model`."""
    import copy

    import torch

    _check_llama(model.config)
    old_config = model.config
    head_dim = old_config.head_dim
    config = copy.deepcopy(old_config)
    config.intermediate_size = len(plan.mlp[0])
    config.num_attention_heads = len(plan.heads[0])
    config.hidden_size = len(plan.hidden)
    config.head_dim = head_dim  # explicit: hidden_size / heads no longer gives it
    pruned = type(model)(config).to(model.dtype)
    hid = torch.tensor(plan.hidden)
    with torch.no_grad():
        pruned.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[:, hid])
        pruned.model.norm.weight.copy_(model.model.norm.weight[hid])
        if not config.tie_word_embeddings:
            pruned.lm_head.weight.copy_(model.lm_head.weight[:, hid])
        for old, new, channels, heads in zip(model.model.layers, pruned.model.layers, plan.mlp, plan.heads):
            ch = torch.tensor(channels)
            rows = torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)])
            attn, new_attn = old.self_attn, new.self_attn
            new_attn.q_proj.weight.copy_(attn.q_proj.weight[rows][:, hid])
            new_attn.k_proj.weight.copy_(attn.k_proj.weight[:, hid])
            new_attn.v_proj.weight.copy_(attn.v_proj.weight[:, hid])
            new_attn.o_proj.weight.copy_(attn.o_proj.weight[hid][:, rows])
            new.mlp.gate_proj.weight.copy_(old.mlp.gate_proj.weight[ch][:, hid])
            new.mlp.up_proj.weight.copy_(old.mlp.up_proj.weight[ch][:, hid])
            new.mlp.down_proj.weight.copy_(old.mlp.down_proj.weight[hid][:, ch])
            new.input_layernorm.weight.copy_(old.input_layernorm.weight[hid])
            new.post_attention_layernorm.weight.copy_(old.post_attention_layernorm.weight[hid])
    pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.eval()


def build_narrow(teacher_dir: Path, out_dir: Path, *, intermediate: int, heads_per_group: int,
                 hidden: int | None) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    batches = [tokenizer(text, return_tensors="pt").input_ids for text in width_calibration(tokenizer)]
    plan = plan_width(width_importance(model, batches), model.config, intermediate=intermediate,
                      heads_per_group=heads_per_group, hidden=hidden)
    pruned = prune_width(model, plan)
    pruned.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "parameters": sum(p.numel() for p in pruned.parameters()),
        "kept_heads": plan.heads,
        "calibration_tokens": sum(b.numel() for b in batches),
    }


def narrow_folder(teacher_dir: Path, target: Path, label: str, *, intermediate: int = NARROW["intermediate"],
                  heads_per_group: int = NARROW["heads_per_group"], hidden: int | None = NARROW["hidden"]) -> Path:
    """HF folder of the width-pruned student of the teacher in `teacher_dir` (built once, atomically)."""
    from stratos_agent.models.progress import step

    recipe = {
        "kind": "width-prune",
        "importance": "minitron-activation",
        "teacher": str(teacher_dir),
        "teacher_recipe": (read_marker(teacher_dir) or {}).get("recipe"),
        "calibration_sha256": _sha256([CALIBRATION_TEXTS, CALIBRATION_CHAT,
                                       task_messages(CALIBRATION_TASK, CALIBRATION_TASK_ITEMS)]),
        "intermediate": intermediate, "heads_per_group": heads_per_group, "hidden": hidden,
        "pruner": PRUNER_VERSION,
    }

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"Building {label}: the teacher's most active channels and heads"):
            return build_narrow(teacher_dir, tmp, intermediate=intermediate, heads_per_group=heads_per_group,
                                hidden=hidden)

    return materialise(target, recipe, build)


# ----------------------------------------------------------------------------------- vocabulary
def task_texts(task: str, tokenizer: Any, n: int = VOCAB_SAMPLE, seed: int = 0) -> list[str]:
    """Chats of `task` rendered with the tokenizer's template, as the teacher and the student are prompted
    (the recipe's packs): every rationale style and the bare answer, and the prompt alone (generation)."""
    from stratos_agent.tasks.recipes import recipe_for

    recipe = recipe_for(task)
    texts = []
    for pack in (recipe.pack(task, "teacher"), recipe.pack(task, "student")):
        items = pack.sample(n, seed=seed) + pack.sample(n, seed=seed + 1, distribution="even")
        for item in items:
            completions = [pack.format_answer(item.answer)]
            completions += [pack.solver_rationale(item, style) for style in pack.rationale_styles]
            for completion in dict.fromkeys(completions):
                texts.append(tokenizer.apply_chat_template(pack.chat_messages(item, completion), tokenize=False))
            texts.append(tokenizer.apply_chat_template(pack.chat_messages(item), tokenize=False,
                                                       add_generation_prompt=True))
    return texts


def _merge_pairs(merges: Sequence[Any]) -> list[tuple[str, str]]:
    """tokenizer.json writes a merge as "a b" (older) or ["a", "b"] (tokenizers >= 0.20)."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def kept_token_ids(tokenizer_json: dict[str, Any], seen: Iterable[int]) -> list[int]:
    """`seen` + special tokens + single-byte tokens, closed under "the parts a kept token is merged from"
    (so every merge a kept token's encoding applies survives the trim). Ascending ids."""
    from tokenizers import pre_tokenizers

    model = tokenizer_json["model"]
    byte_level = '"ByteLevel"' in json.dumps(tokenizer_json.get("pre_tokenizer"))
    if model["type"] != "BPE" or not byte_level:  # single bytes are what keeps any text encodable
        raise InputError(f"vocabulary trimming supports byte-level BPE tokenizers, not this {model['type']} one")
    vocab: dict[str, int] = model["vocab"]
    by_id = {i: token for token, i in vocab.items()}
    parts: dict[str, list[str]] = {}
    for a, b in _merge_pairs(model["merges"]):
        parts.setdefault(a + b, []).extend((a, b))
    single_bytes = [c for c in pre_tokenizers.ByteLevel.alphabet() if c in vocab]
    todo = [by_id[i] for i in seen] + [t["content"] for t in tokenizer_json["added_tokens"]] + single_bytes
    kept: set[str] = set()
    while todo:
        token = todo.pop()
        if token not in kept:
            kept.add(token)
            todo.extend(parts.get(token, ()))
    return sorted(vocab[t] for t in kept if t in vocab)


def trim_tokenizer_json(tokenizer_json: dict[str, Any], keep: Sequence[int]) -> dict[str, Any]:
    """A copy with the vocabulary cut to `keep` (old ids, renumbered 0.. in order), the merges whose parts and
    result are all kept, and added tokens renumbered."""
    import copy

    out = copy.deepcopy(tokenizer_json)
    model = out["model"]
    new_id = {old: new for new, old in enumerate(keep)}
    model["vocab"] = {token: new_id[i] for token, i in model["vocab"].items() if i in new_id}
    vocab = model["vocab"]
    merges = _merge_pairs(model["merges"])
    model["merges"] = [[a, b] for a, b in merges if a in vocab and b in vocab and a + b in vocab]
    for token in out["added_tokens"]:
        if token["id"] not in new_id:
            raise InputError(f"special token {token['content']!r} (id {token['id']}) is not in the kept set")
        token["id"] = new_id[token["id"]]
    processor = out.get("post_processor") or {}
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return out


def trim_model_vocab(model: Any, keep: Sequence[int]) -> Any:
    """Cut `model`'s embedding and LM head to the rows `keep` (in place), renumbering special ids."""
    import torch

    rows = torch.tensor(list(keep))
    new_id = {old: new for new, old in enumerate(keep)}
    embedding = model.get_input_embeddings()
    model.set_input_embeddings(torch.nn.Embedding.from_pretrained(embedding.weight[rows].clone(), freeze=False))
    head = model.get_output_embeddings()
    trimmed_head = torch.nn.Linear(head.in_features, len(keep), bias=False)
    tied = model.config.tie_word_embeddings
    trimmed_head.weight = model.get_input_embeddings().weight if tied else torch.nn.Parameter(head.weight[rows].clone())
    model.set_output_embeddings(trimmed_head)
    model.config.vocab_size = len(keep)
    for config in (model.config, model.generation_config):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            value = getattr(config, key, None)
            if value is not None:
                ids = [value] if isinstance(value, int) else value
                if any(i not in new_id for i in ids):
                    raise InputError(f"{key} {value} is not among the kept tokens")
                setattr(config, key, new_id[value] if isinstance(value, int) else [new_id[i] for i in value])
    return model


_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def build_task_vocab(base_dir: Path, out_dir: Path, task: str, *, n: int, seed: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer_json = json.loads((base_dir / "tokenizer.json").read_text(encoding="utf-8"))
    seen = {i for ids in tokenizer(task_texts(task, tokenizer, n, seed)).input_ids for i in ids}
    keep = kept_token_ids(tokenizer_json, seen)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    trim_model_vocab(model, keep).save_pretrained(out_dir)
    trimmed = trim_tokenizer_json(tokenizer_json, keep)
    (out_dir / "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
    for name in _TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out_dir / name)
    loaded = AutoTokenizer.from_pretrained(out_dir)
    if len(loaded) != len(keep):
        raise InputError(f"trimmed tokenizer has {len(loaded)} tokens, expected {len(keep)}")
    return {"tokenizer_fingerprint": tokenizer_fingerprint(loaded), "vocab_size": len(keep),
            "seen_tokens": len(seen), "kept_ids": keep}


def task_vocab_folder(base_dir: Path, target: Path, task: str, label: str, *, n: int = VOCAB_SAMPLE,
                      seed: int = 0) -> Path:
    """HF folder of the model in `base_dir` with its vocabulary trimmed to `task` (built once, atomically)."""
    from stratos_agent.models.progress import step
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack(task)
    probe = [pack.chat_messages(item, pack.solver_rationale(item)) for item in pack.sample(20, seed=seed)]
    recipe = {
        "kind": "vocab-trim",
        "base": str(base_dir),
        "base_recipe": (read_marker(base_dir) or {}).get("recipe"),
        "task": task, "sample": n, "seed": seed,
        "texts_sha256": _sha256(probe),  # the pack's text format: a changed prompt rebuilds the vocabulary
        "trimmer": TRIMMER_VERSION,
    }

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"Building {label}: the vocabulary the {task} task uses"):
            return build_task_vocab(base_dir, tmp, task, n=n, seed=seed)

    return materialise(target, recipe, build)
