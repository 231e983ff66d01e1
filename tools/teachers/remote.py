"""Teachers behind an OpenAI-compatible HTTP API: OpenAI, vLLM, SGLang, llama.cpp, Ollama.

Uses the official `openai` client with its own retries switched off, so that the policy is ours and
visible: bounded concurrency (a thread pool), a per-request timeout, retries with exponential backoff
and full jitter on 429 / 5xx / timeouts / dropped connections (honouring Retry-After), and an
`EndpointError` naming the endpoint, the last failure and its HTTP status once the retries are spent.
Client errors (4xx) are not retried: repeating them cannot help.

Failures are per item: `generate_each` gives up on one prompt (None) and goes on with the others, until a
circuit breaker sees most recent calls failing (the endpoint is down, not unlucky) and stops the batch.
Every answer is metered (its `usage` at the endpoint's $/token, charged to the stage's `SpendMeter`,
which refuses a call that could pass the budget) and handed to `on_answer` the moment it arrives.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from stratos_agent.tools.teachers.base import (
    EndpointError,
    OnAnswer,
    Prompt,
    as_messages,
    is_transient_status,
)

from stratos_agent.errors import InputError
from stratos_agent.ledger import BudgetExhausted, SpendMeter, active_meter

log = logging.getLogger(__name__)

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1"}
USD_PER_MTOK_ENV = "STRATOS_TEACHER_USD_PER_MTOK"
FATAL_STATUSES = {401, 403, 404}  # a bad key or model name: every other item would fail the same way
T = TypeVar("T")


def endpoint_host(base_url: str) -> str:
    """Host part used in identities: 'local' for this machine (a restarted server on another port
    serves the same weights, so its cache entries stay valid); never any userinfo/credentials."""
    host = urlsplit(base_url).hostname or base_url
    return "local" if host in _LOCAL_HOSTS else host


def endpoint_usd_per_mtok(model: str, base_url: str | None) -> float:
    """$ per million tokens (prompt and completion alike) of `model` at `base_url`: the user's
    STRATOS_TEACHER_USD_PER_MTOK when set; else $0 on this machine (its time is priced as a server, not by
    token); else the planner's endpoint price table (tools/pairing.py)."""
    override = os.environ.get(USD_PER_MTOK_ENV)
    if override:
        try:
            price = float(override)
        except ValueError:
            raise InputError(f"{USD_PER_MTOK_ENV}={override!r} is not a number of dollars") from None
        if not price >= 0:
            raise InputError(f"{USD_PER_MTOK_ENV} must be 0 or more, got {override}")
        return price
    if base_url and endpoint_host(base_url) == "local":
        return 0.0
    from stratos_agent.tools.pairing import DEFAULT_ENDPOINT_USD_PER_1K, ENDPOINT_USD_PER_1K

    return 1000.0 * ENDPOINT_USD_PER_1K.get(model.removeprefix("endpoint:"), DEFAULT_ENDPOINT_USD_PER_1K)


def metered_call(
    send: Callable[[], T], *, messages: list[dict[str, str]], max_tokens: int, usd_per_mtok: float,
    meter: SpendMeter | None, what: str,
) -> tuple[T, int, float]:
    """Send one request under the stage's meter: hold its worst case (a token is at least one character,
    so prompt characters + max_tokens bound its tokens), then charge its measured `usage`.
    Returns (response, tokens, usd)."""
    bound = (sum(len(m.get("content") or "") for m in messages) + max_tokens) * usd_per_mtok / 1e6
    held = meter.reserve(bound, what) if meter is not None else 0.0
    try:
        response = send()
    except BaseException:
        if meter is not None:
            meter.release(held)
        raise
    usage = getattr(response, "usage", None)
    tokens = (usage.prompt_tokens + usage.completion_tokens) if usage else 0
    usd = tokens * usd_per_mtok / 1e6 if usage else bound  # no usage reported: assume the worst case
    if meter is not None:
        meter.charge(held, usd, tokens)
    return response, tokens, usd


class CircuitOpen(EndpointError):
    """Most recent calls failed: the endpoint is down, not unlucky; retrying now cannot help."""


class CircuitBreaker:
    """Opens when at least `threshold` of the last `window` calls failed: the endpoint is down."""

    def __init__(self, window: int = 20, threshold: float = 0.8) -> None:
        self.window, self.threshold = window, threshold
        self._recent: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        with self._lock:
            self._recent.append(ok)

    def failures(self) -> int:
        with self._lock:
            return self._recent.count(False)

    @property
    def open(self) -> bool:
        with self._lock:
            full = len(self._recent) == self.window
            return full and self._recent.count(False) >= self.threshold * self.window


@dataclass
class Spend:
    """What this client paid for, across its lifetime (also charged to the stage meter, if any)."""

    answers: int = 0
    tokens: int = 0
    usd: float = 0.0


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
        usd_per_mtok: float | None = None,
        breaker: CircuitBreaker | None = None,
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
        self.usd_per_mtok = endpoint_usd_per_mtok(model, base_url) if usd_per_mtok is None else usd_per_mtok
        self.breaker = breaker or CircuitBreaker()
        self.spend = Spend()
        self.last_failure = ""
        # Local servers (vLLM, llama.cpp) accept any key; the client insists on a non-empty one.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0
        )
        self._rng = random.Random()  # jitter only: must differ between clients, so not seeded
        self._lock = threading.Lock()

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        if isinstance(exc, o.APITimeoutError | o.APIConnectionError):
            return True
        return isinstance(exc, o.APIStatusError) and is_transient_status(exc.status_code)  # 429, 5xx

    def _delay(self, attempt: int, exc: Exception) -> float:
        with self._lock:
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

    def _check_breaker(self) -> None:
        if self.breaker.open:
            raise CircuitOpen(
                f"teacher {self.identity} at {self.base_url}: circuit breaker open, {self.breaker.failures()} of "
                f"the last {self.breaker.window} calls failed (last: {self.last_failure}); the endpoint looks "
                "down, so the batch stops here (answers so far are kept)", transient=False,
            )

    def _send(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, seed: int) -> Any:
        # max_tokens, not max_completion_tokens: every OpenAI-compatible server accepts it.
        return self._client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_new_tokens, temperature=temperature, seed=seed,
        )

    def _complete(
        self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float, seed: int,
        meter: SpendMeter | None,
    ) -> str:
        attempt = 0
        while True:
            self._check_breaker()
            try:
                response, tokens, usd = metered_call(
                    lambda: self._send(messages, max_new_tokens, temperature, seed), messages=messages,
                    max_tokens=max_new_tokens, usd_per_mtok=self.usd_per_mtok, meter=meter,
                    what=f"a call to teacher {self.identity}",
                )
            except self._openai.OpenAIError as exc:
                self.breaker.record(False)
                self.last_failure = self._describe(exc)
                status = getattr(exc, "status_code", None)
                if not self._retryable(exc):
                    raise EndpointError(
                        f"teacher {self.identity} at {self.base_url} refused the request "
                        f"({self._describe(exc)}); not retried: check the model name and API key", status,
                    ) from None
                if attempt == self.max_retries:
                    raise EndpointError(
                        f"teacher {self.identity} at {self.base_url} failed after {self.max_retries + 1} "
                        f"attempts (last: {self._describe(exc)})", status,
                    ) from None
                delay = self._delay(attempt, exc)
                log.warning("teacher %s: %s, retry %d/%d in %.2f s", self.identity, self._describe(exc),
                            attempt + 1, self.max_retries, delay)
                time.sleep(delay)
                attempt += 1
                continue
            self.breaker.record(True)
            with self._lock:
                self.spend.answers += 1
                self.spend.tokens += tokens
                self.spend.usd += usd
            return response.choices[0].message.content or ""

    def _fatal(self, exc: BaseException) -> bool:
        """Failures that end the batch: the budget, an open breaker, a key or model the endpoint refuses."""
        if isinstance(exc, BudgetExhausted | CircuitOpen):
            return True
        return isinstance(exc, EndpointError) and exc.status_code in FATAL_STATUSES

    def _run(
        self, prompts: Sequence[Prompt], max_new_tokens: int, temperature: float, seed: int,
        on_answer: OnAnswer | None,
    ) -> tuple[list[str | None], list[BaseException]]:
        """Every prompt tried (concurrently, order kept): the answers, and the failures in item order."""
        messages = [as_messages(p) for p in prompts]
        meter = active_meter()  # a context variable: read here, worker threads do not inherit it
        halt = threading.Event()  # set by a fatal failure: prompts not yet sent are skipped (None)

        def one(i: int) -> str | None:
            if halt.is_set():
                return None
            try:
                text = self._complete(messages[i], max_new_tokens, temperature, seed, meter)
            except BaseException as exc:
                if self._fatal(exc):
                    halt.set()
                raise
            if on_answer is not None:
                on_answer(i, text)  # in the worker: kept even if the batch fails later
            return text

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(messages)))) as pool:
            futures = [pool.submit(one, i) for i in range(len(messages))]
            wait(futures)
        errors = [exc for f in futures if (exc := f.exception()) is not None]
        return [None if f.exception() else f.result() for f in futures], errors

    def generate_each(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0,
        on_answer: OnAnswer | None = None,
    ) -> list[str | None]:
        """One completion per prompt, None for a prompt whose retries were spent (or that the endpoint
        refused alone); `on_answer(i, text)` runs as each answer arrives. Raises a fatal failure
        (`_fatal`) once the batch's other calls have ended."""
        texts, errors = self._run(prompts, max_new_tokens, temperature, seed, on_answer)
        fatal = next((e for e in errors if self._fatal(e)), None)
        if fatal is not None:
            raise fatal
        for exc in errors:
            if not isinstance(exc, EndpointError):
                raise exc  # a bug, not the endpoint: keep its traceback
            log.warning("teacher %s gave up on one item: %s", self.identity, exc)
        return texts

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        """All or nothing: the first failure is raised."""
        texts, errors = self._run(prompts, max_new_tokens, temperature, seed, None)
        if errors:
            raise errors[0]
        return texts  # type: ignore[return-value]


def vllm_teacher(base_url: str, model: str | None = None, **kwargs) -> OpenAICompatibleTeacher:
    """A running vLLM server (started by the deploy tool or by hand). Without `model`, ask the server
    which model it serves (`GET /v1/models`), so a URL alone is enough."""
    probe = OpenAICompatibleTeacher(base_url, model or "?", backend="vllm", **kwargs)
    if model is None:
        try:
            served = [m.id for m in probe._client.models.list().data]
        except probe._openai.OpenAIError as exc:
            raise EndpointError(f"no vLLM server answers at {base_url} ({probe._describe(exc)})",
                                getattr(exc, "status_code", None)) from None
        if not served:
            raise EndpointError(f"the server at {base_url} serves no model", transient=False)
        return OpenAICompatibleTeacher(base_url, served[0], backend="vllm", **kwargs)
    return probe
