"""Content-addressed on-disk cache in front of any teacher: a resumed run never pays twice.

Layout: `<cache_dir>/<key[:2]>/<key>.json` holding the request (no credentials: the key is not part
of a teacher's identity) and the response. Writes are atomic (temp file + fsync + rename), so a kill
mid-write leaves either the old state or a complete entry, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stratos_agent.tools.teachers.base import Prompt, Teacher, as_messages, request_key

from stratos_agent.settings import get_settings


class CachedTeacher:
    """Wraps a teacher; only prompts missing from the cache reach it (in one batch per call)."""

    def __init__(self, inner: Teacher, cache_dir: Path | None = None) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.cache_dir = Path(cache_dir) if cache_dir is not None else get_settings().teacher_cache_dir
        self.hits = 0
        self.misses = 0

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
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"request": request, "response": response}, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        messages = [as_messages(p) for p in prompts]
        keys = [request_key(self.identity, m, max_new_tokens, temperature, seed) for m in messages]
        cached = [self._read(k) for k in keys]
        todo = [i for i, text in enumerate(cached) if text is None]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        fresh: dict[int, str] = {}
        if todo:
            texts = self.inner.generate(
                [messages[i] for i in todo], max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
            )
            for i, text in zip(todo, texts, strict=True):
                request = {"teacher": self.identity, "messages": messages[i], "max_new_tokens": max_new_tokens,
                           "temperature": temperature, "seed": seed}
                self._write(keys[i], request, text)
                fresh[i] = text
        return [fresh[i] if text is None else text for i, text in enumerate(cached)]
