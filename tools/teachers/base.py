"""The one teacher interface every backend speaks, and the canonical form of a request.

A teacher turns a batch of chat prompts into a batch of texts. Backends differ (local transformers,
a vLLM server, any OpenAI-compatible endpoint) but callers -- synthesis, probing, pairing -- see only
`Teacher.generate`. A teacher is named by `identity` (backend, model, host) and never by its key,
so identities are safe to cache, log and store in records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from stratos_agent.errors import ServiceError

Messages = list[dict[str, str]]
Prompt = str | Messages
OnAnswer = Callable[[int, str], None]  # (index in the batch, text): called as each answer arrives


class EndpointError(ServiceError):
    """A remote endpoint failed; `status_code` (None: no HTTP answer) says whether retrying can help."""

    def __init__(self, message: str, status_code: int | None = None, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.transient = is_transient_status(status_code) if transient is None else transient
        # A refused request (4xx) fails the same way every time: the planner stops instead of retrying.
        self.tool_error_kind = "failed" if self.transient else "permanent"


def is_transient_status(status_code: int | None) -> bool:
    """Worth retrying: no answer at all (timeout, dropped connection), 429 or a 5xx."""
    return status_code is None or status_code == 429 or status_code >= 500


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


def answer_each(
    teacher: Teacher, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0,
    seed: int = 0, on_answer: OnAnswer | None = None,
) -> list[str | None]:
    """One completion per prompt, None where the teacher gave up on that prompt. A backend with its own
    per-item failure handling (`generate_each`, the remote teacher) reports each answer as it arrives;
    any other backend answers the batch whole (or raises)."""
    each = getattr(teacher, "generate_each", None)
    if each is not None:
        return each(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, on_answer=on_answer)
    texts = teacher.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    for i, text in enumerate(texts):
        if on_answer is not None:
            on_answer(i, text)
    return list(texts)
