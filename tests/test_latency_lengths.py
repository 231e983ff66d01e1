"""The latency probe forces answer lengths that follow the student's measured distribution: checked on the
request bodies a real HTTP server (in this process, no engine) receives from the load test and the probe."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from stratos_agent.tools import deploy, latency_probe
from stratos_agent.tools.load_test import (
    LOAD_TEST_ROUNDS,
    MIN_BUDGETED_REQUESTS,
    budgeted_requests,
    budgeted_rounds,
    load_test,
    spread_lengths,
    summarise_rounds,
)
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
                           forced_lengths=lengths, rounds=1)
    timed = bodies[5:]  # the warm-up ends before the timed requests start
    assert len(bodies) == 5 + 2 * len(lengths) and result.requests == 2 * len(lengths) and result.errors == 0
    assert all(b["min_tokens"] == b["max_tokens"] and b["ignore_eos"] is True for b in bodies)
    assert Counter(b["max_tokens"] for b in timed) == Counter(lengths * 2)
    assert result.output_tokens == pytest.approx(sum(lengths) / len(lengths))


def test_a_free_load_test_leaves_the_answer_length_to_the_model():
    pack = recipe_for("mahjong").pack("mahjong", "student")
    with recording_server() as (url, bodies):
        load_test(url, "m", pack, requests=6, concurrency=2, warmup=0, max_tokens=24, rounds=1)
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
    assert result.rounds == 1  # no room for a second round of at least the floor


def test_a_budget_keeps_rounds_only_while_each_has_the_floor():
    assert budgeted_rounds(256, 3, 0.02, None) == (3, 256)  # no budget: everything
    assert budgeted_rounds(256, 3, 0.02, 60) == (3, 256)  # 3,000 fit
    assert budgeted_rounds(256, 3, 0.2, 60) == (3, 100)  # 300 fit: 3 rounds of 100
    assert budgeted_rounds(256, 3, 0.5, 60) == (1, 120)  # 120 fit: one round (two would have 60 each)
    assert budgeted_rounds(256, 3, 5.0, 60) == (1, MIN_BUDGETED_REQUESTS)  # the floor
    assert budgeted_rounds(10, 3, 5.0, 60) == (3, 10)  # small rounds asked for are kept


def test_the_p95_is_the_median_of_the_rounds():
    fast, slow = [0.1] * 18 + [0.2] * 2, [0.1] * 18 + [0.9] * 2  # p95 of each: 0.2 s and 0.9 s
    p50, p95, per_round = summarise_rounds([fast, slow, fast])
    assert per_round == [200.0, 900.0, 200.0] and p95 == 200.0 and p50 == 100.0  # one slow round moves nothing
    assert summarise_rounds([slow, slow, fast])[1] == 900.0  # two do


def test_rounds_ask_other_prompts_and_report_each_p95():
    pack = recipe_for("mahjong").pack("mahjong", "student")
    with recording_server() as (url, bodies):
        result = load_test(url, "m", pack, requests=8, concurrency=2, warmup=2)
    assert result.rounds == LOAD_TEST_ROUNDS and result.requests == 8 * LOAD_TEST_ROUNDS
    assert len(result.round_p95_ms) == LOAD_TEST_ROUNDS and result.p95_ms in result.round_p95_ms
    prompts = [json.dumps(b["messages"]) for b in bodies[2:]]
    rounds = [set(prompts[i * 8:(i + 1) * 8]) for i in range(LOAD_TEST_ROUNDS)]
    assert len(set.union(*rounds)) > 8 + 4  # each round draws its own prompts (a prefix cache would flatter repeats)


@pytest.fixture
def probe_server(tmp_path, monkeypatch) -> Iterator[list[dict]]:
    """The probe's engine replaced by the recording server (its request bodies), the cache in tmp_path."""
    monkeypatch.setattr(deploy, "stop_deployment", lambda dep: None)
    with private_settings(monkeypatch, cache_dir=tmp_path), recording_server() as (url, bodies):
        monkeypatch.setattr(deploy, "deploy_local", lambda *a, **kw: SimpleNamespace(
            base_url=url, model="m", log_path="server.log"))
        yield bodies


def test_probe_forces_the_distribution_and_caches_by_it(probe_server):
    bodies = probe_server
    lengths = answer_lengths("mahjong", tokenizer_model=MICRO)
    probe = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths))
    warmup = len(bodies) - LOAD_TEST_ROUNDS * len(lengths)
    assert Counter(b["max_tokens"] for b in bodies[warmup:]) == Counter(lengths * LOAD_TEST_ROUNDS)
    assert probe.rounds == LOAD_TEST_ROUNDS and len(probe.round_p95_ms) == LOAD_TEST_ROUNDS
    assert probe.output_tokens == task_shape("mahjong", tokenizer_model=MICRO).output_tokens  # the p95
    assert latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths)) == probe
    assert len(bodies) == warmup + LOAD_TEST_ROUNDS * len(lengths)  # a cache hit sends nothing

    # a user-stated answer length is another distribution: another probe, every answer that long
    sent = len(bodies)
    fixed = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=len(lengths),
                                        output_tokens=8)
    assert {b["max_tokens"] for b in bodies[sent:]} == {8} and fixed.output_tokens == 8
    assert latency_probe.cached_probe(MICRO, [8], 2, len(lengths)) == fixed
    assert latency_probe.cached_probe(MICRO, lengths, 2, len(lengths)) == probe


def test_a_probe_older_than_its_max_age_is_measured_again(tmp_path, probe_server):
    bodies = probe_server
    lengths = answer_lengths("mahjong", tokenizer_model=MICRO)
    first = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=8)
    measured = datetime.fromisoformat(first.measured_at)
    assert latency_probe.is_fresh(first, measured + timedelta(hours=latency_probe.PROBE_MAX_AGE_H))
    assert not latency_probe.is_fresh(first, measured + timedelta(hours=latency_probe.PROBE_MAX_AGE_H, seconds=1))
    [path] = (tmp_path / "latency-probe").glob("*.json")
    old = (measured - timedelta(hours=latency_probe.PROBE_MAX_AGE_H + 1)).isoformat()
    path.write_text(first.model_copy(update={"measured_at": old}).model_dump_json())
    assert latency_probe.cached_probe(MICRO, lengths, 2, 8) is None
    sent = len(bodies)
    again = latency_probe.probe_student("mahjong", MICRO, concurrency=2, requests=8)
    assert len(bodies) > sent and latency_probe.is_fresh(again)  # measured now, and cached as such
    assert latency_probe.cached_probe(MICRO, lengths, 2, 8) == again


def test_the_outcome_shows_how_far_the_rounds_spread():
    from stratos_agent.tools.outcome import outcome_lines, planned_p95_text, rounds_text

    from stratos_agent.records.deployment import LoadTest
    from stratos_agent.records.plans import Plan
    from stratos_agent.records.servers import LatencyProbe

    assert rounds_text([267.1, 415.3, 310.4]) == "median of 3 rounds: 267-415 ms"
    assert rounds_text([310.4]) == ""  # one round: nothing to spread
    probe = LatencyProbe(model=MICRO, engine="vllm", hardware="x", concurrency=4, output_tokens=8, requests=768,
                         rounds=3, round_p95_ms=[328.8, 505.4, 582.5], p50_ms=117.4, p95_ms=505.4, load_avg=3.4,
                         measured_at="2026-12-02T16:56:55+00:00")
    point = SimpleNamespace(student=MICRO, p95_ms=505.4, latency_source="measured")
    plan = SimpleNamespace(chosen=point, latency_probes=[probe])
    assert planned_p95_text(plan) == "505 ms (measured; median of 3 rounds: 329-582 ms)"
    modelled = SimpleNamespace(chosen=SimpleNamespace(student=MICRO, p95_ms=577.0, latency_source="modelled"),
                               latency_probes=[probe])
    assert planned_p95_text(modelled) == "577 ms (modelled)"  # a probe of another shape is not this figure
    assert planned_p95_text(Plan.model_construct(chosen=None)) == "-"

    # the endpoint line: the deployed test's own spread next to the plan's
    deployed = LoadTest(requests=768, rounds=3, concurrency=4, p50_ms=120.0, p95_ms=310.4,
                        round_p95_ms=[267.1, 415.3, 310.4], wall_s=21.7)
    dep = SimpleNamespace(base_url="http://127.0.0.1:8000/v1", model="s", load_test=deployed)
    [line] = [x for x in outcome_lines({"plan": SimpleNamespace(feasible=True, **vars(plan)), "deployment": dep})
              if x.startswith("Endpoint:")]
    assert "p95 measured 310 ms (median of 3 rounds: 267-415 ms) at concurrency 4" in line
    assert "planned 505 ms (measured; median of 3 rounds: 329-582 ms), endpoint/plan 0.61x" in line
