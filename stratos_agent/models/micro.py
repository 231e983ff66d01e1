"""Micro students: a few-million-parameter Llama with a task tokenizer, for packs with a solver.

On 2 CPU cores the 135M SmolLM2 sees ~1 training example a second; a 6M Llama from scratch sees
~100, and on a closed task with a solver (Mahjong winning tiles) examples are free, so the small model
that sees many examples wins (issue 12: 33.6% exact on the even 0-9 hold-out after 8 minutes, vs 9%
for the demo's LoRA'd half-SmolLM2). What makes it possible is the pack's closed notation
(`TaskPack.closed_vocabulary()`): ~20 symbols instead of a 49k BPE vocabulary, so embeddings cost
nothing and every position carries one tile digit or suit letter.

    folder = build_micro_student("mahjong", Path("models/mahjong-micro-6m"), layers=6, width=256, heads=4,
                                 task_options={"prompt": "short"})

The folder is plain Hugging Face (config.json, model.safetensors, tokenizer.json, tokenizer_config.json
with the chat template, generation_config.json, README.md) plus `stratos_task.json`, which names the
task pack and options the tokenizer covers: the endpoint understands exactly that pack's user message
(Mahjong: `Hand: 456m 999p 666999s 7z`) and answers its answer line (`Winning tiles: 7z` / `... none`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.files import write_text_atomic
from stratos_agent.models.atomic import materialise
from stratos_agent.models.candidate import TASK_FILE
from stratos_agent.tasks import TaskPack, get_task_pack

BUILDER_VERSION = 1
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIALS = (PAD, BOS, EOS, UNK, USER, ASSISTANT, END)
# The pack's chat messages, one user turn (its `render_prompt`) and optionally the answer, nothing else:
# no system prompt (a system message is ignored: the task's rules live in the weights).
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}" + USER + "{{- message['content'] -}}" + END +
    "{%- elif message['role'] == 'assistant' -%}" + ASSISTANT + "{{- message['content'] -}}{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)
_LENGTH_SAMPLE = 1000  # items whose prompt + answer size the context


# ----------------------------------------------------------------------------------- the task
def resolve_pack(task: str | TaskPack, options: Mapping[str, Any] | None = None) -> TaskPack:
    return get_task_pack(task, **dict(options or {})) if isinstance(task, str) else task


def pack_symbols(pack: TaskPack) -> list[str]:
    hook = getattr(pack, "closed_vocabulary", None)
    symbols = hook() if hook else None
    if not symbols:
        raise InputError(
            f"task {pack.name!r} (with these options) has no closed vocabulary: a micro student needs a pack "
            "with a solver and a compact notation (Mahjong: prompt=short, notation=compact)"
        )
    return list(dict.fromkeys(symbols))


def read_task_file(model_dir: str | Path) -> dict[str, Any] | None:
    """`stratos_task.json` of a micro student folder (task, options, example): None for other models."""
    path = Path(model_dir) / TASK_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def pack_for_model(model_dir: str | Path, default: str | TaskPack | None = None) -> TaskPack | None:
    """The pack a model folder was built for (its task file), else `default` resolved, else None."""
    info = read_task_file(model_dir)
    if info is not None:
        return get_task_pack(info["task"], **info.get("options", {}))
    return resolve_pack(default) if default is not None else None


# ----------------------------------------------------------------------------------- tokenizer
def task_tokenizer(pack: TaskPack, model_max_length: int = 128):
    """A WordLevel `PreTrainedTokenizerFast` over the pack's symbols plus specials and the chat template.

    Pre-tokenisation cuts the text into the longest symbols (`Winning tiles:` before `W`), anything else
    into single characters; a character outside the vocabulary becomes `<unk>` (and does not round-trip).
    The decoder fuses tokens without separators, so decode(encode(x)) == x for every text in the notation.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = pack_symbols(pack)
    vocab = {token: i for i, token in enumerate([*SPECIALS, *(s for s in symbols if s not in SPECIALS)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    alternatives = "|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{alternatives}|[\\s\\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, END], model_max_length=model_max_length,
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def longest_example(pack: TaskPack, tokenizer, n: int = _LENGTH_SAMPLE) -> int:
    """Tokens of the longest chat (prompt + answer + eos) over `n` natural and `n` even items."""
    items = pack.sample(n, seed=0) + pack.sample(n, seed=1, distribution="even")
    longest = 0
    for item in items:
        messages = pack.chat_messages(item, pack.format_answer(item.answer))
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        longest = max(longest, len(ids))
    return longest


def positions_for(longest: int) -> int:
    """Context: twice the longest example, rounded up to a power of two, at least 128 (serving margin)."""
    return max(128, 1 << (2 * longest - 1).bit_length())


# ----------------------------------------------------------------------------------- the model
def parameter_count(vocab: int, layers: int, width: int, intermediate: int) -> int:
    """Llama parameters with tied embeddings and full (non-grouped) KV heads."""
    per_layer = 4 * width * width + 3 * width * intermediate + 2 * width
    return vocab * width + layers * per_layer + width


def build_micro_student(
    task: str | TaskPack,
    out_dir: str | Path,
    *,
    layers: int = 6,
    width: int = 256,
    heads: int = 4,
    intermediate: int | None = None,
    task_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    label: str | None = None,
) -> Path:
    """Write a randomly initialised Llama + the task tokenizer as a plain HF folder (atomic; built once).

    `intermediate` defaults to 4x `width` (6 layers x 256: 6.3M parameters). Rebuilding with the same
    arguments returns the existing folder; other arguments replace it.
    """
    if width % heads:
        raise InputError(f"width {width} is not divisible by {heads} heads")
    pack = resolve_pack(task, task_options)
    options = dict(task_options or {})
    symbols = pack_symbols(pack)
    intermediate = intermediate or 4 * width
    target = Path(out_dir)
    recipe = {"kind": "micro-student", "task": pack.name, "options": options, "symbols": symbols,
              "layers": layers, "width": width, "heads": heads, "intermediate": intermediate, "seed": seed,
              "builder": BUILDER_VERSION}

    def build(tmp: Path) -> dict[str, Any]:
        return _write_folder(tmp, pack, options, recipe, label or target.name)

    return materialise(target, recipe, build)


def _write_folder(folder: Path, pack: TaskPack, options: dict[str, Any], recipe: dict[str, Any],
                  label: str) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from stratos_agent.models.fingerprint import tokenizer_fingerprint

    tokenizer = task_tokenizer(pack)
    longest = longest_example(pack, tokenizer)
    positions = positions_for(longest)
    tokenizer.model_max_length = positions
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe["width"], intermediate_size=recipe["intermediate"],
        num_hidden_layers=recipe["layers"], num_attention_heads=recipe["heads"],
        num_key_value_heads=recipe["heads"], max_position_embeddings=positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(recipe["seed"])
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, do_sample=False, max_new_tokens=positions // 2,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    portable_tokenizer_config(folder)
    item = pack.sample(1, seed=0)[0]
    example = {"messages": pack.chat_messages(item), "answer": pack.format_answer(item.answer)}
    info = {"task": pack.name, "options": options, "symbols": recipe["symbols"], "example": example,
            "longest_example_tokens": longest, "max_position_embeddings": positions}
    write_text_atomic(folder / TASK_FILE, json.dumps(info, indent=1, ensure_ascii=False))
    params = sum(p.numel() for p in model.parameters())
    shape = f"{recipe['layers']} layers, width {recipe['width']}, {recipe['heads']} heads"
    write_card(folder, label, pack, info, params, shape)
    return {"tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "parameters": params}


def portable_tokenizer_config(folder: Path) -> None:
    """transformers 5 writes `chat_template.jinja` and class `TokenizersBackend`; also put the template in
    tokenizer_config.json and name the class `PreTrainedTokenizerFast`, so 4.x loaders (and any tool that
    reads the config) get the same tokenizer and template."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=CHAT_TEMPLATE,
                  additional_special_tokens=[USER, ASSISTANT, END])
    write_text_atomic(path, json.dumps(config, indent=2, ensure_ascii=False))


def write_card(folder: Path, label: str, pack: TaskPack, info: dict[str, Any], params: int, shape: str,
               trained: str = "not trained: random initialisation", extra: Sequence[str] = ()) -> Path:
    """README.md: what the endpoint expects (exactly the pack's user message) and what it answers."""
    example = info["example"]
    options = ", ".join(f"{k}={v}" for k, v in info["options"].items()) or "defaults"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [stratos, micro-student]",
        "---", "", f"# {label}", "",
        (f"A {params / 1e6:.1f}M-parameter Llama ({shape}) with a {len(info['symbols']) + len(SPECIALS)}-token "
         f"task tokenizer for the **{pack.name}** task pack ({options}); {trained}."), "",
        "## The prompt this model expects", "",
        "Exactly one user message: the pack's prompt, nothing else (no system prompt, no instructions).",
        "A system message is ignored; text outside the vocabulary below becomes `<unk>`.", "",
        "```json", json.dumps(example["messages"], ensure_ascii=False), "```", "",
        f"Answer (one line): `{example['answer']}`", "",
        (f"Vocabulary: {', '.join(f'`{s}`' for s in info['symbols'])} + specials "
         f"{', '.join(f'`{s}`' for s in SPECIALS)}."),
        (f"Context: {info['max_position_embeddings']} positions (the longest prompt + answer is "
         f"{info['longest_example_tokens']} tokens); serve with `--max-model-len` at most that."), "",
        "```python",
        "from openai import OpenAI",
        "client = OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='EMPTY')",
        (f"client.chat.completions.create(model='<served name>', messages={example['messages']!r}, "
         "max_tokens=24, temperature=0)"),
        "```", "", *extra,
    ]
    path = folder / "README.md"
    return write_text_atomic(path, "\n".join(lines))
