"""Teacher clients: one interface (`Teacher.generate`), three backends, one on-disk cache.

- `TransformersTeacher`: a local model in this process (the bundled SmolLM2 by default);
- `vllm_teacher(base_url)`: a running vLLM server (the model name is discovered);
- `OpenAICompatibleTeacher`: any OpenAI-compatible endpoint (OpenAI, SGLang, llama.cpp, Ollama), metered
  at its $/token (`endpoint_usd_per_mtok`) against the running stage's budget.
`make_teacher` picks one from CLI-style options and wraps it in `CachedTeacher`.
"""

from __future__ import annotations

from pathlib import Path

from stratos_agent.tools.teachers.base import (
    EndpointError,
    Messages,
    Prompt,
    Teacher,
    answer_each,
    as_messages,
    request_key,
)
from stratos_agent.tools.teachers.cache import CachedTeacher
from stratos_agent.tools.teachers.local import TransformersTeacher
from stratos_agent.tools.teachers.remote import (
    CircuitBreaker,
    CircuitOpen,
    OpenAICompatibleTeacher,
    endpoint_host,
    endpoint_usd_per_mtok,
    metered_call,
    vllm_teacher,
)

from stratos_agent.errors import InputError
from stratos_agent.settings import get_settings

DEFAULT_TEACHER = "smollm2-135m"


def make_teacher(
    teacher: str | None = None,
    *,
    endpoint: str | None = None,
    model_name: str | None = None,
    api_key: str | None = None,
    cache_dir: Path | None = None,
    batch_size: int = 8,
    concurrency: int = 8,
) -> CachedTeacher:
    """A cached teacher from the options users type.

    `endpoint` (an OpenAI-compatible base URL) wins over `teacher` (a registry id, HF id or local
    folder run in-process). Without `model_name` the endpoint is asked which model it serves (vLLM,
    SGLang and llama.cpp answer `GET /models`). The API key defaults to `OPENAI_API_KEY`.
    """
    if endpoint:
        settings = get_settings()
        key = api_key or (settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
        if model_name:
            inner: Teacher = OpenAICompatibleTeacher(endpoint, model_name, api_key=key, concurrency=concurrency)
        else:
            inner = vllm_teacher(endpoint, api_key=key, concurrency=concurrency)
    elif model_name:
        raise InputError("--model-name needs --endpoint URL (a local --teacher names its own model)")
    else:
        inner = TransformersTeacher(teacher or DEFAULT_TEACHER, batch_size=batch_size)
    return CachedTeacher(inner, cache_dir)


__all__ = [
    "DEFAULT_TEACHER", "CachedTeacher", "CircuitBreaker", "CircuitOpen", "EndpointError", "Messages",
    "OpenAICompatibleTeacher", "Prompt", "Teacher", "TransformersTeacher", "answer_each", "as_messages",
    "endpoint_host", "endpoint_usd_per_mtok", "make_teacher", "metered_call", "request_key", "vllm_teacher",
]
