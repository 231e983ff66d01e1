"""Content-addressed on-disk cache in front of any teacher: a resumed run never pays twice.

Layout: `<cache_dir>/<key[:2]>/<key>.json` holding the request (no credentials: the key is not part
of a teacher's identity) and the response. Each answer is written the moment it arrives (atomically:
unique temp file + fsync + rename), not after its batch: a batch that fails half way, or a kill, loses
no answer that was paid for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

from stratos_agent.files import write_text_atomic
from stratos_agent.settings import get_settings


class CachedTeacher:
    """Wraps a teacher; only prompts missing from the cache reach it (in one batch per call)."""

    def __init__(self, inner: Teacher, cache_dir: Path | None = None) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.cache_dir = Path(cache_dir) if cache_dir is not None else get_settings().teacher_cache_dir
        self.hits = 0
        self.misses = 0
        self.failures = 0  # prompts the teacher gave up on (counted by `generate_each`)

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _read(self, key: str) -> str | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))["response"]
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, KeyError):  # a foreign or damaged file: treat as a miss, rewrite
            return None

    def _write(self, key: str, request: dict, response: str) -> None:
        write_text_atomic(self._path(key), json.dumps({"request": request, "response": response}, ensure_ascii=False))

    def generate_each(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
    ) -> list[str | None]:
        """Cached answers, and fresh ones from the teacher, each saved as it arrives; None where the
        teacher gave up on a prompt (a backend without per-item failures raises instead)."""
        messages = [as_messages(p) for p in prompts]
        keys = [request_key(self.identity, m, max_new_tokens, temperature, seed) for m in messages]
        cached: list[str | None] = [self._read(k) for k in keys]
        todo = [i for i, text in enumerate(cached) if text is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if not todo:
            return cached

        def keep(j: int, text: str) -> None:
            i = todo[j]
            self._write(keys[i], self._request(messages[i], max_new_tokens, temperature, seed), text)

        fresh = answer_each(self.inner, [messages[i] for i in todo], max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=seed, on_answer=keep)
        for i, text in zip(todo, fresh, strict=True):
            cached[i] = text
        self.failures += fresh.count(None)
        return cached

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        """All or nothing (the `Teacher` protocol); answers that did arrive are cached all the same."""
        texts = self.generate_each(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        if None in texts:
            last = getattr(self.inner, "last_failure", "") or "see the log"
            raise EndpointError(f"teacher {self.identity} gave up on {texts.count(None)} of {len(texts)} prompts "
                                f"after its retries (last failure: {last})")
        return texts  # type: ignore[return-value]

    def _request(self, messages: Messages, max_new_tokens: int, temperature: float, seed: int) -> dict:
        return {"teacher": self.identity, "messages": messages, "max_new_tokens": max_new_tokens,
                "temperature": temperature, "seed": seed}
