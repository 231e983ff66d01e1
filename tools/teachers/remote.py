"""Teachers behind an OpenAI-compatible HTTP API: OpenAI, vLLM, SGLang, llama.cpp, Ollama.

Uses the official `openai` client with its own retries switched off, so that the policy is ours and
visible: bounded concurrency (a thread pool), a per-request timeout, retries with exponential backoff
and full jitter on 429 / 5xx / timeouts / dropped connections (honouring Retry-After), and a
`ServiceError` naming the endpoint and the last failure once the retries are spent. Client errors
(400/401/404) are not retried: repeating them cannot help.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from stratos_agent.tools.teachers.base import Prompt, as_messages

from stratos_agent.errors import ServiceError

log = logging.getLogger(__name__)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}


def endpoint_host(base_url: str) -> str:
    """Host part used in identities: 'local' for this machine (a restarted server on another port
    serves the same weights, so its cache entries stay valid); never any userinfo/credentials."""
    host = urlsplit(base_url).hostname or base_url
    return "local" if host in _LOCAL_HOSTS else host


class OpenAICompatibleTeacher:
    """Chat completions against `base_url` (e.g. `http://127.0.0.1:8000/v1`)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        backend: str = "openai-compatible",
    ) -> None:
        import openai

        self._openai = openai
        self.base_url = base_url
        self.model = model
        self.identity = f"{backend}:{model}@{endpoint_host(base_url)}"
        self.concurrency = max(1, concurrency)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        # Local servers (vLLM, llama.cpp) accept any key; the client insists on a non-empty one.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0
        )
        self._rng = random.Random()  # jitter only: must differ between clients, so not seeded
        self._rng_lock = threading.Lock()

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, o.APITimeoutError | o.APIConnectionError | o.RateLimitError):
            return True
        return isinstance(exc, o.APIStatusError) and exc.status_code >= 500

    def _delay(self, attempt: int, exc: Exception) -> float:
        with self._rng_lock:
            delay = self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                delay = max(delay, min(self.backoff_cap_s, float(retry_after)))
            except ValueError:  # an HTTP date: fall back to our own backoff
                pass
        return delay

    def _describe(self, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        return f"HTTP {status}" if status else type(exc).__name__

    def _complete(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, seed: int) -> str:
        attempt = 0
        while True:
            try:
                # max_tokens, not max_completion_tokens: every OpenAI-compatible server accepts it.
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_new_tokens,
                    temperature=temperature, seed=seed,
                )
                return response.choices[0].message.content or ""
            except self._openai.OpenAIError as exc:
                if not self._retryable(exc):
                    raise ServiceError(
                        f"teacher {self.identity} at {self.base_url} refused the request "
                        f"({self._describe(exc)}); not retried: check the model name and API key"
                    ) from None
                if attempt == self.max_retries:
                    raise ServiceError(
                        f"teacher {self.identity} at {self.base_url} failed after {self.max_retries + 1} "
                        f"attempts (last: {self._describe(exc)})"
                    ) from None
                delay = self._delay(attempt, exc)
                log.warning("teacher %s: %s, retry %d/%d in %.2f s", self.identity, self._describe(exc),
                            attempt + 1, self.max_retries, delay)
                time.sleep(delay)
                attempt += 1

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        messages = [as_messages(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(messages)))) as pool:
            return list(pool.map(lambda m: self._complete(m, max_new_tokens, temperature, seed), messages))


def vllm_teacher(base_url: str, model: str | None = None, **kwargs) -> OpenAICompatibleTeacher:
    """A running vLLM server (started by the deploy tool or by hand). Without `model`, ask the server
    which model it serves (`GET /v1/models`), so a URL alone is enough."""
    probe = OpenAICompatibleTeacher(base_url, model or "?", backend="vllm", **kwargs)
    if model is None:
        try:
            served = [m.id for m in probe._client.models.list().data]
        except probe._openai.OpenAIError as exc:
            raise ServiceError(f"no vLLM server answers at {base_url} ({probe._describe(exc)})") from None
        if not served:
            raise ServiceError(f"the server at {base_url} serves no model")
        return OpenAICompatibleTeacher(base_url, served[0], backend="vllm", **kwargs)
    return probe
