"""The one teacher interface every backend speaks, and the canonical form of a request.

A teacher turns a batch of chat prompts into a batch of texts. Backends differ (local transformers,
a vLLM server, any OpenAI-compatible endpoint) but callers -- synthesis, probing, pairing -- see only
`Teacher.generate`. A teacher is named by `identity` (backend, model, host) and never by its key,
so identities are safe to cache, log and store in records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]
Prompt = str | Messages


def as_messages(prompt: Prompt) -> Messages:
    """A bare string is one user turn; chat messages pass through."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


@runtime_checkable
class Teacher(Protocol):
    """Batch text generation. `identity` must name the weights that answer, never a credential."""

    identity: str

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        """One completion per prompt, in order."""
        ...


def request_key(identity: str, messages: Messages, max_new_tokens: int, temperature: float, seed: int) -> str:
    """sha256 of the canonical request: same teacher + prompt + sampling -> same key, on any machine."""
    canonical = json.dumps(
        {
            "teacher": identity,
            "messages": messages,
            "max_new_tokens": int(max_new_tokens),
            "temperature": round(float(temperature), 6),
            "seed": int(seed),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
