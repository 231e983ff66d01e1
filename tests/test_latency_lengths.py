"""The latency probe forces answer lengths that follow the student's measured distribution: checked on the
request bodies a real HTTP server (in this process, no engine) receives from the load test and the probe."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from stratos_agent.tools import deploy, latency_probe
from stratos_agent.tools.load_test import MIN_BUDGETED_REQUESTS, budgeted_requests, load_test, spread_lengths
from stratos_agent.tools.request_shape import answer_lengths, task_shape
from support.env import private_settings

from stratos_agent.tasks.recipes import recipe_for

MICRO = "mahjong-micro-2m"


@contextmanager
def recording_server() -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 that answers `max_tokens` tokens and keeps every
    request body, in arrival order."""
    bodies: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                bodies.append(body)
            tokens = body["max_tokens"]
            data = json.dumps({
                "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "length",
                             "message": {"role": "assistant", "content": "x" * tokens}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spread_lengths_repeats_each_length_equally_often():
    lengths = [4, 6, 6, 9]
    spread = spread_lengths(lengths, 12, seed=3)
    assert Counter(spread) == {4: 3, 6: 6, 9: 3}
    assert spread != sorted(spread)  # shuffled: the long answers do not all come last
    # a remainder is drawn without repeats: each length at most once more than its even share
    even = Counter({4: 3, 6: 6, 9: 3})
    counts = Counter(spread_lengths(lengths, 14, seed=3))
    assert counts.total() == 14 and even <= counts and counts - even <= Counter(lengths)
    assert spread_lengths(lengths, 12, seed=3) == spread_lengths(list(reversed(lengths)), 12, seed=3)


def test_forced_requests_follow_the_students_answer_lengths():
    lengths = answer_lengths("mahjong", tokenizer_model=MICRO)
    assert len(set(lengths)) > 2  # a distribution, not one figure
    pack = recipe_for("mahjong").pack("mahjong", "student")
    with recording_server() as (url, bodies):
        result = load_test(url, "m", pack, requests=2 * len(lengths), concurrency=2, warmup=5,
                           forced_lengths=lengths)
    timed = bodies[5:]  # the warm-up ends before the timed requests start
    assert len(bodies) == 5 + 2 * len(lengths) and result.requests == 2 * len(lengths) and result.errors == 0
    assert all(b["min_tokens"] == b["max_tokens"] and b["ignore_eos"] is True for b in bodies)
    assert Counter(b["max_tokens"] for b in timed) == Counter(lengths * 2)
    assert result.output_tokens == pytest.approx(sum(lengths) / len(lengths))


def test_a_free_load_test_leaves_the_answer_length_to_the_model():
    pack = recipe_for("mahjong").pack("mahjong", "student")
    with recording_server() as (url, bodies):
        load_test(url, "m", pack, requests=6, concurrency=2, warmup=0, max_tokens=24)
    assert [b["max_tokens"] for b in bodies] == [24] * 6
    assert not any("min_tokens" in b or "ignore_eos" in b for b in bodies)


def test_a_time_budget_cuts_the_request_count_down_to_a_floor():
    assert budgeted_requests(256, 0.1, 60) == 256  # 600 fit: all wanted
    assert budgeted_requests(256, 0.3, 60) == 200
    assert budgeted_requests(256, 2.0, 60) == MIN_BUDGETED_REQUESTS  # 30 fit: the floor
    assert budgeted_requests(MIN_BUDGETED_REQUESTS - 8, 2.0, 60) == MIN_BUDGETED_REQUESTS - 8  # never more than wanted
    pack = recipe_for("mahjong").pack("mahjong", "student")
    with recording_server() as (url, bodies):
        result = load_test(url, "m", pack, requests=MIN_BUDGETED_REQUESTS + 40, concurrency=4, warmup=4,
                           time_budget_s=1e-9)
    assert result.requests == MIN_BUDGETED_REQUESTS and len(bodies) == 4 + MIN_BUDGETED_REQUESTS


def test_probe_forces_the_distribution_and_caches_by_it(tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "stop_deployment", lambda dep: None)
    lengths = answer_lengths("mahjong", tokenizer_model=MICRO)
    with private_settings(monkeypatch, cache_dir=tmp_path), recording_server() as (url, bodies):
        monkeypatch.setattr(deploy, "deploy_local", lambda *a, **kw: SimpleNamespace(
            base_url=url, model="m", log_path="server.log"))
        probe = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths))
        warmup = len(bodies) - len(lengths)
        assert Counter(b["max_tokens"] for b in bodies[warmup:]) == Counter(lengths)
        assert probe.output_tokens == task_shape("mahjong", tokenizer_model=MICRO).output_tokens  # the p95
        assert latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths)) == probe
        assert len(bodies) == warmup + len(lengths)  # a cache hit sends nothing

        # a user-stated answer length is another distribution: another probe, every answer that long
        sent = len(bodies)
        fixed = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths),
                                            output_tokens=8)
        assert {b["max_tokens"] for b in bodies[sent:]} == {8} and fixed.output_tokens == 8
        assert latency_probe.cached_probe(MICRO, [8], 2, len(lengths)) == fixed
        assert latency_probe.cached_probe(MICRO, lengths, 2, len(lengths)) == probe
