"""The two calls everything else uses: a local HF folder for a model reference, and the loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from stratos_agent.models.registry import get_registry

if TYPE_CHECKING:
    import torch


def local_model_path(id_or_path: str | Path) -> Path:
    """Plain HF folder for a built-in id, local folder, local .gguf file or HF hub id.

    Built-ins are converted/derived once into `settings.models_dir` (atomic, cached). Raises
    InputError for a missing folder or unknown id, OfflineError for a hub id without network.
    """
    return get_registry().path(str(id_or_path))


def load_model_and_tokenizer(
    id_or_path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu"
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for `id_or_path`; dtype defaults to torch.float32.

    The tokenizer always has a pad token (its EOS when it defines none) so batching works.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = local_model_path(id_or_path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32).to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
