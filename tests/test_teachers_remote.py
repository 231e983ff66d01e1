"""OpenAI-compatible teacher against a real local HTTP server: retries, errors, concurrency, cache, keys.

The server is a tiny `http.server` on 127.0.0.1 that plays a script of statuses (429, 500, slow...)
before answering like a chat-completions endpoint; nothing inside the openai client is mocked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from stratos_agent.tools.teachers import CachedTeacher, OpenAICompatibleTeacher, make_teacher, vllm_teacher

from stratos_agent.errors import InputError, ServiceError

SECRET = "sk-stratos-test-SECRET-0123456789abcdef"


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that timed out hangs up: expected
        pass


class FakeEndpoint:
    """Chat completions server. `script` holds per-request actions: an HTTP status, or ("sleep", s)."""

    def __init__(self, respond: Callable[[dict], str] | None = None) -> None:
        self.script: deque = deque()
        self.respond = respond or (lambda body: f"Winning tiles: none [{body['messages'][-1]['content'][:20]}]")
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                endpoint.auth.append(self.headers.get("Authorization", ""))
                self._send(200, {"object": "list", "data": [
                    {"id": "served-model", "object": "model", "created": 0, "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    endpoint.requests.append(body)
                    endpoint.auth.append(self.headers.get("Authorization", ""))
                    action = endpoint.script.popleft() if endpoint.script else 200
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                try:
                    if isinstance(action, tuple):  # ("sleep", seconds): outlast the client's timeout
                        time.sleep(action[1])
                        action = 200
                    else:
                        time.sleep(0.05)  # long enough for concurrent requests to overlap
                    if action != 200:
                        headers = {"Retry-After": "0"} if action == 429 else None
                        self._send(action, {"error": {"message": f"scripted {action}", "type": "x"}}, headers)
                        return
                    content = endpoint.respond(body)
                    self._send(200, {
                        "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    })
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEndpoint:  # noqa: PYI034 - final test helper
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    with FakeEndpoint() as ep:
        yield ep


def _teacher(url: str, **kwargs) -> OpenAICompatibleTeacher:
    opts = {"api_key": SECRET, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "timeout_s": 5.0, **kwargs}
    return OpenAICompatibleTeacher(url, "test-model", **opts)


def test_retries_429_and_5xx_then_succeeds(endpoint):
    endpoint.script.extend([429, 500, 503])
    out = _teacher(endpoint.url, max_retries=3).generate(["hello"], max_new_tokens=8)
    assert out == ["Winning tiles: none [hello]"]
    assert len(endpoint.requests) == 4  # three failures, then the answer
    assert all(a == f"Bearer {SECRET}" for a in endpoint.auth)  # the key did reach the server
    sent = endpoint.requests[-1]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("test-model", 8, 0.0)


def test_timeout_is_retried(endpoint):
    endpoint.script.append(("sleep", 1.0))
    out = _teacher(endpoint.url, timeout_s=0.3, max_retries=2).generate(["slow"], max_new_tokens=4)
    assert out == ["Winning tiles: none [slow]"]
    assert len(endpoint.requests) == 2


def test_clear_service_error_after_last_retry(endpoint, caplog):
    endpoint.script.extend([500] * 10)
    with caplog.at_level(logging.DEBUG), pytest.raises(ServiceError) as info:
        _teacher(endpoint.url, max_retries=2).generate(["x"], max_new_tokens=4)
    message = str(info.value)
    assert "failed after 3 attempts" in message and "HTTP 500" in message and endpoint.url in message
    assert len(endpoint.requests) == 3
    assert "retry 2/2" in caplog.text
    assert SECRET not in message and SECRET not in caplog.text


def test_client_errors_are_not_retried(endpoint):
    endpoint.script.extend([401, 200])
    with pytest.raises(ServiceError, match="refused the request.*HTTP 401"):
        _teacher(endpoint.url, max_retries=5).generate(["x"], max_new_tokens=4)
    assert len(endpoint.requests) == 1


def test_concurrency_is_bounded_and_order_kept(endpoint):
    prompts = [f"p{i}" for i in range(12)]
    out = _teacher(endpoint.url, concurrency=3).generate(prompts, max_new_tokens=4)
    assert out == [f"Winning tiles: none [{p}]" for p in prompts]
    assert 2 <= endpoint.max_in_flight <= 3


def test_vllm_teacher_discovers_the_served_model(endpoint):
    teacher = vllm_teacher(endpoint.url)
    assert teacher.identity == "vllm:served-model@local"
    teacher.generate(["q"], max_new_tokens=4)
    assert endpoint.requests[-1]["model"] == "served-model"


def test_model_name_needs_an_endpoint():
    with pytest.raises(InputError, match="--model-name needs --endpoint"):
        make_teacher(model_name="gpt-4o")


def test_no_server_is_a_clear_error():
    with pytest.raises(ServiceError, match="no vLLM server answers at http://127.0.0.1:9/v1"):
        vllm_teacher("http://127.0.0.1:9/v1", max_retries=0, timeout_s=1.0)


def test_cache_never_pays_twice_and_never_stores_the_key(endpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("STRATOS_CACHE_DIR", str(tmp_path / "cache"))
    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG):
            teacher = make_teacher(endpoint=endpoint.url, model_name="test-model")
            endpoint.script.append(429)  # one retry, logged
            first = teacher.generate(["a", "b", "c"], max_new_tokens=16, seed=3)
            calls = len(endpoint.requests)
            again = CachedTeacher(_teacher(endpoint.url)).generate(["c", "a", "b"], max_new_tokens=16, seed=3)
            other_seed = teacher.generate(["a"], max_new_tokens=16, seed=4)
    finally:
        get_settings.cache_clear()
    assert calls == 4 and teacher.misses == 4 and teacher.hits == 0
    assert again == [first[2], first[0], first[1]]  # a fresh client, same cache: zero new requests
    assert len(endpoint.requests) == calls + 1 and other_seed  # a new seed is a new request
    assert all(a == f"Bearer {SECRET}" for a in endpoint.auth)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 4
    blob = b"".join(p.read_bytes() for p in files)
    assert SECRET.encode() not in blob and SECRET[-12:].encode() not in blob
    assert b"test-model" in blob  # the request itself is kept (for audits), minus credentials
    assert SECRET not in caplog.text and SECRET not in teacher.identity
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # atomic writes leave no temp files
