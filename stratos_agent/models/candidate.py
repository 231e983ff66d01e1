"""`ModelCandidate`: what the planner needs to know about a model before touching its weights.

Metadata of a materialised model is computed from its folder (config.json, safetensors headers,
tokenizer); a candidate that is not on disk yet carries catalog numbers and says so
(`metadata_origin="catalog"`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

TASK_FILE = "stratos_task.json"  # in a micro student's folder: the task pack (and options) it serves
Source = Literal["bundled-gguf", "hf", "local-folder", "endpoint", "derived", "scratch"]
MetadataOrigin = Literal["computed", "catalog", "unknown"]


class ModelCandidate(BaseModel):
    """One teacher or student candidate. Sizes are None where they cannot be known (endpoints)."""

    id: str = Field(description="Registry id ('smollm2-135m'), HF id, local path or 'endpoint:<model>'.")
    family: str = Field(description="Architecture family, e.g. 'llama', 'gemma3', or 'unknown'.")
    source: Source
    parameters: int | None = None
    layers: int | None = None
    hidden_size: int | None = None
    attention_heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    tokenizer_fingerprint: str | None = Field(
        default=None, description="sha256 of the sorted vocabulary + special tokens; None = no tokenizer."
    )
    has_chat_template: bool | None = None
    is_instruct: bool | None = Field(default=None, description="False for base models (no chat tuning).")
    licence: str = "unknown"
    roles: list[Literal["teacher", "student"]] = Field(
        default_factory=lambda: ["teacher", "student"], description="Endpoints only teach; derived models only learn."
    )
    local_path: Path | None = Field(default=None, description="HF folder once materialised.")
    available: bool = True
    unavailable_reason: str | None = None
    metadata_origin: MetadataOrigin = "computed"
    base_url: str | None = Field(default=None, description="Endpoints: OpenAI-compatible base URL.")
    endpoint_model: str | None = Field(default=None, description="Endpoints: model name sent to the API.")
    derived_from: str | None = None
    task: str | None = Field(
        default=None, description="The only task pack this model serves (a micro student's tokenizer covers "
        "that pack's notation and nothing else); None = any task."
    )
    notes: str = ""

    @property
    def trains_on_a_stream(self) -> bool:
        """A micro student (built from scratch for one task, or a folder trained from one): full training on a
        stream of verified items. A pruned student trimmed to a task's vocabulary serves one task too, but
        keeps its teacher's lineage and trains like its teacher."""
        return self.task is not None and self.source in ("scratch", "local-folder")

    @property
    def bytes_fp32(self) -> int | None:
        return self.weight_bytes(4)

    @property
    def bytes_bf16(self) -> int | None:
        return self.weight_bytes(2)

    def weight_bytes(self, dtype_bytes: float) -> int | None:
        return None if self.parameters is None else int(self.parameters * dtype_bytes)

    def kv_cache_bytes_per_token(self, dtype_bytes: float = 2) -> int | None:
        """K and V for every layer: layers x kv_heads x head_dim x 2 x dtype_bytes."""
        if None in (self.layers, self.kv_heads, self.head_dim):
            return None
        return int(self.layers * self.kv_heads * self.head_dim * 2 * dtype_bytes)

    @property
    def white_box(self) -> bool:
        """Logits and a tokenizer are available (logit-level KD is possible)."""
        return self.source != "endpoint" and self.tokenizer_fingerprint is not None

    def same_tokenizer(self, other: ModelCandidate) -> bool | None:
        """True/False when both fingerprints are known; None when either side has no tokenizer."""
        if self.tokenizer_fingerprint is None or other.tokenizer_fingerprint is None:
            return None
        return self.tokenizer_fingerprint == other.tokenizer_fingerprint

    def summary(self) -> dict[str, Any]:
        """A flat dict for tables and JSON (sizes included, paths as strings)."""
        data = self.model_dump(mode="json")
        data.update(
            bytes_bf16=self.bytes_bf16,
            bytes_fp32=self.bytes_fp32,
            kv_bytes_per_token_bf16=self.kv_cache_bytes_per_token(2),
        )
        return data


def count_safetensors_parameters(folder: Path) -> int | None:
    """Parameter count from the safetensors headers (no weights read; tied weights stored once)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= dim
            total += count
    return total


def read_config(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text())
    # Multimodal/wrapper configs (Gemma 3 4B+, ...) keep the language model under text_config.
    return {"model_type": config.get("model_type", "unknown"), **(config.get("text_config") or config)}


def architecture_fields(config: dict[str, Any]) -> dict[str, Any]:
    """ModelCandidate fields from a (text) config.json dict."""
    heads = config.get("num_attention_heads")
    hidden = config.get("hidden_size")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    return {
        "family": config.get("model_type", "unknown"),
        "layers": config.get("num_hidden_layers"),
        "hidden_size": hidden,
        "attention_heads": heads,
        "kv_heads": config.get("num_key_value_heads", heads),
        "head_dim": head_dim,
        "vocab_size": config.get("vocab_size"),
        "context_length": config.get("max_position_embeddings"),
    }
