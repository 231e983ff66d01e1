"""Derived students: a teacher with decoder blocks dropped, initialised from the teacher's weights.

DistilBERT initialises its student with every other layer of its teacher; Minitron prunes depth
from the teacher and then distils. The student keeps the teacher's embeddings, final norm and
tokenizer (so logit-level KD needs no vocabulary mapping) and about half its compute per token.

Which half to keep matters a lot on a 30-block, 135M model. Measured on held-out text
(`evals/models_student_init.py`, no training): keeping literally every other block (DistilBERT's
rule) gives a token NLL *above* uniform (14.4 on prose, 11.8 on Mahjong chats; ln 49152 = 10.8:
garbage), while ranking blocks by Block Influence (ShortGPT: BI = 1 - cos(h_in, h_out), how much a
block changes the residual stream) on a fixed calibration text and keeping the most influential
half gives 6.6 / 6.0, with 13% / 21% next-token agreement with the teacher. So "half depth" here
means half the blocks, chosen by BI (the first and last blocks always rank on top).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from stratos_agent.models.atomic import materialise, read_marker
from stratos_agent.models.fingerprint import tokenizer_fingerprint

DERIVER_VERSION = 2

# Calibration text for block influence: varied registers, and a chat turn since the teacher is an
# instruct model. Fixed, so the derived student is reproducible.
CALIBRATION_TEXTS = (
    ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Berlin is the "
    "capital of Germany. Water boils at 100 degrees Celsius at sea level."),
    ("In mathematics, a prime number is a natural number greater than 1 that is not a product of two "
    "smaller natural numbers. For example, 7 is prime because 7 = 1 x 7 is its only factorisation."),
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\nprint(add(2, 3))",
    ("A winning Mahjong hand has four melds and one pair. A meld is three identical tiles or three "
    "consecutive tiles of the same suit, such as 3, 4 and 5 of bamboo."),
)
CALIBRATION_CHAT = (
    {"role": "user", "content": "Give me one tip for staying focused while studying."},
    {"role": "assistant", "content": "Put your phone in another room and work in 25-minute blocks."},
)


def calibration_texts(tokenizer: Any) -> list[str]:
    """The fixed calibration texts, plus the chat turn rendered with the tokenizer's template (if any)."""
    texts = list(CALIBRATION_TEXTS)
    if tokenizer.chat_template:
        texts.append(tokenizer.apply_chat_template(list(CALIBRATION_CHAT), tokenize=False))
    return texts


def block_influence(model: Any, tokenizer: Any) -> list[float]:
    """ShortGPT Block Influence of every decoder block, averaged over the calibration texts."""
    import torch

    texts = calibration_texts(tokenizer)
    totals = [0.0] * model.config.num_hidden_layers
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            hidden = model(ids, output_hidden_states=True).hidden_states
            for i in range(len(totals)):
                cos = torch.nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1)
                totals[i] += (1 - cos).mean().item() / len(texts)
    return totals


def most_influential_half(influence: list[float]) -> list[int]:
    """Indices (ascending) of the ceil(n/2) blocks with the highest influence."""
    keep_count = math.ceil(len(influence) / 2)
    ranked = sorted(range(len(influence)), key=lambda i: (-influence[i], i))
    return sorted(ranked[:keep_count])


def every_other_layer(num_layers: int) -> list[int]:
    """DistilBERT's rule (blocks 0, 2, 4, ...): the baseline BI selection is measured against."""
    return list(range(0, num_layers, 2))


def drop_layers(model: Any, keep: list[int]) -> Any:
    """Keep only decoder blocks `keep` (in order) in a HF decoder-only model, in place.

    Attention modules carry `layer_idx` to find their slot in the KV cache; it is renumbered so
    generation with a cache works. Per-layer config lists (`layer_types`) are sliced too.
    """
    import torch

    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_idx, block in enumerate(model.model.layers):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    return model


def build_layer_dropped(teacher_dir: Path, out_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    influence = block_influence(model, tokenizer)
    keep = most_influential_half(influence)
    drop_layers(model, keep)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "kept_layers": keep,
        "block_influence": [round(x, 5) for x in influence],
    }


def layer_dropped_folder(teacher_dir: Path, target: Path, label: str) -> Path:
    """HF folder of the half-depth student of the teacher in `teacher_dir` (built once, atomically)."""
    calibration = repr((CALIBRATION_TEXTS, CALIBRATION_CHAT)).encode()
    recipe = {
        "kind": "layer-drop",
        "selection": "block-influence-half",
        "teacher": str(teacher_dir),
        "teacher_recipe": (read_marker(teacher_dir) or {}).get("recipe"),
        "calibration_sha256": hashlib.sha256(calibration).hexdigest(),
        "deriver": DERIVER_VERSION,
    }
    from stratos_agent.models.progress import step

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"Building {label}: the most influential half of the teacher's blocks"):
            return build_layer_dropped(teacher_dir, tmp)

    return materialise(target, recipe, build)
