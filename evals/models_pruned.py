"""Pruned students of SmolLM2-135M against the teacher and the half-depth student, before any training.

    .venv/bin/python evals/models_pruned.py [--items 6] [--batch 8] [--steps 3] [--threads 1] [--out PATH]

Candidates (all initialised from the teacher's weights, measured in the same run):
  smollm2-135m                     the teacher
  smollm2-135m-half                depth: the 15 of 30 blocks with the highest block influence
  smollm2-135m-narrow              width (Minitron): 640 of 1536 MLP channels per block, every head
  narrow-6-heads (not registered)  width at the same size, spent otherwise: 768 MLP channels, 6 of 9 heads
  smollm2-135m-half-mahjong-vocab  the half-depth student with its vocabulary trimmed to the Mahjong task's
Metrics: parameters; token NLL on held-out text the calibration never saw (Mahjong chats with the solver's
rationale, and general prose), also per character (comparable across tokenizers: the trimmed vocabulary
spells prose out byte by byte); training throughput: examples/s of a few full fine-tuning SFT steps (AdamW,
the same `--batch` Mahjong chats as the student recipe prompts them: short prompt, answer only) at
`--threads` torch threads, after one warm-up step. Prints and saves evals/results/models_pruned.json.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from _common import add_out, add_threads, machine_info, make_parser, save_json
from models_student_init import PROSE

from stratos_agent.models import load_model_and_tokenizer, local_model_path
from stratos_agent.models.pruned import (
    plan_width,
    prune_width,
    task_messages,
    width_calibration,
    width_importance,
)
from stratos_agent.tasks.recipes import recipe_for

REGISTERED = ("smollm2-135m", "smollm2-135m-half", "smollm2-135m-narrow", "smollm2-135m-half-mahjong-vocab")
HEADS_VARIANT = "narrow-6-heads"


def held_out(tokenizer: Any, items: int) -> dict[str, list[str]]:
    chats = [tokenizer.apply_chat_template(m, tokenize=False) for m in task_messages("mahjong", items, seed=123)]
    return {"mahjong-chat": chats, "prose": list(PROSE)}


def sft_batch(tokenizer: Any, batch: int) -> list[str]:
    pack = recipe_for("mahjong").pack("mahjong", "student")
    return [tokenizer.apply_chat_template(pack.chat_messages(item, pack.format_answer(item.answer)), tokenize=False)
            for item in pack.sample(batch, seed=55)]


@torch.no_grad()
def nll(model: Any, tokenizer: Any, texts: list[str]) -> dict[str, float]:
    total = tokens = chars = 0.0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        total += model(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
        chars += len(text)
    return {"nll": round(total / tokens, 3), "nll_per_char": round(total / chars, 3), "tokens": int(tokens)}


def throughput(model: Any, tokenizer: Any, texts: list[str], steps: int) -> dict[str, float]:
    """Examples/s of full fine-tuning SFT steps on `texts` (one batch, padded), after a warm-up step."""
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seconds = 0.0
    for step in range(steps + 1):
        start = time.perf_counter()
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += (time.perf_counter() - start) if step else 0.0  # step 0 warms up
    model.eval()
    return {"examples_per_s": round(len(texts) * steps / seconds, 2), "batch_tokens": int(enc.input_ids.numel())}


def heads_variant() -> tuple[Any, Any]:
    """The narrow student's size reached by cutting heads too: 768 MLP channels and 2 of 3 heads per KV group."""
    model, tokenizer = load_model_and_tokenizer("smollm2-135m")
    batches = [tokenizer(text, return_tensors="pt").input_ids for text in width_calibration(tokenizer)]
    plan = plan_width(width_importance(model, batches), model.config, intermediate=768, heads_per_group=2)
    return prune_width(model, plan), tokenizer


def measure(name: str, model: Any, tokenizer: Any, args: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()),
                           "vocab_size": model.config.vocab_size}
    for domain, texts in held_out(tokenizer, args.items).items():
        row[domain] = nll(model, tokenizer, texts)
    row["train"] = throughput(model, tokenizer, sft_batch(tokenizer, args.batch), args.steps)
    print(f"{name:32s} {row['parameters'] / 1e6:6.1f}M  chat NLL {row['mahjong-chat']['nll']:6.3f}  prose NLL "
          f"{row['prose']['nll']:6.3f} ({row['prose']['nll_per_char']:.3f}/char)  "
          f"train {row['train']['examples_per_s']:6.2f} ex/s", flush=True)
    return row


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=6, help="held-out Mahjong chats")
    parser.add_argument("--batch", type=int, default=8, help="examples per SFT step")
    parser.add_argument("--steps", type=int, default=3, help="timed SFT steps (after one warm-up)")
    add_threads(parser)
    add_out(parser, "models_pruned.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    settings = {key: value for key, value in vars(args).items() if key != "out"}
    results: dict[str, Any] = {"settings": settings, "candidates": {},
                               "machine": machine_info()}
    for name in REGISTERED:
        local_model_path(name)  # built (once) before anything is timed
    for name in (*REGISTERED[:3], HEADS_VARIANT, REGISTERED[3]):
        model, tokenizer = heads_variant() if name == HEADS_VARIANT else load_model_and_tokenizer(name)
        results["candidates"][name] = measure(name, model, tokenizer, args)
        del model
    save_json(results, args.out)


if __name__ == "__main__":
    main()
