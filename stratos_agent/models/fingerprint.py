"""Tokenizer fingerprints: "same tokenizer" must be decidable before logit-level distillation.

Two tokenizers agree when they map the same strings to the same ids and treat the same tokens as
special; a sha256 over exactly that is stable across save/load and across file formats.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over the sorted (token, id) vocabulary plus the sorted special tokens."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": sorted(set(tokenizer.all_special_tokens)),
    }
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def folder_tokenizer_fingerprint(folder: Path) -> str | None:
    """Fingerprint of the tokenizer saved in an HF folder; None when the folder has none."""
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    return tokenizer_fingerprint(AutoTokenizer.from_pretrained(folder))
