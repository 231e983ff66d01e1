"""Evaluation tool: Wilson CI, scoring on the public Mahjong JSONL, local model vs OpenAI-compatible
endpoint (a real HTTP server in this process), baselines, and the `stratos eval` command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from stratos_agent.tools.evaluate import baselines, evaluate, percentile, wilson

from stratos_agent.errors import InputError
from stratos_agent.tasks import TaskItem, get_task_pack

PACK = get_task_pack("mahjong")


@contextmanager
def chat_server(answer: Callable[[list[dict], int], str]) -> Iterator[str]:
    """A minimal OpenAI-compatible server (POST /v1/chat/completions, GET /v1/models) on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _send(self, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "student", "object": "model", "owned_by": "test"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = answer(request["messages"], request.get("max_tokens") or 16)
            self._send({
                "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()), "total_tokens": 10},
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> tuple[Path, list[TaskItem]]:
    """20 items in the public benchmark format (Unicode tiles), two per difficulty 0-9."""
    items = PACK.sample(20, seed=5, distribution="even", unique=True)
    path = tmp_path_factory.mktemp("eval") / "held_out.jsonl"
    PACK.write_jsonl(items, path)
    assert "\U0001f007" <= json.loads(path.read_text().splitlines()[0])["hand"][0] <= "\U0001f021"
    return path, PACK.read_jsonl(path)


def test_wilson_interval_known_values():
    assert wilson(0, 10).high == pytest.approx(0.2775, abs=1e-4) and wilson(0, 10).low == 0
    half = wilson(5, 10)
    assert (half.low, half.high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson(10, 10).high == pytest.approx(1.0) and wilson(0, 0).n == 0
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 95) == 5


def test_scripted_endpoint_gives_exact_numbers(held_out):
    """Right on every other item, garbage on a quarter, so every number of the report is known."""
    path, items = held_out
    gold = {PACK.render_prompt(it): PACK.format_answer(it.answer) for it in items}
    order = [PACK.render_prompt(it) for it in items]

    def answer(messages, _max_tokens):
        i = order.index(messages[-1]["content"])
        return gold[order[i]] if i % 2 == 0 else ("no idea" if i % 4 == 1 else "Winning tiles: 1234567z")  # 7 honor waits: never right

    with chat_server(answer) as url:
        report = evaluate("mahjong", path, endpoint=url, model_name="student", concurrency=4)
    assert report.n == 20 and report.exact_match == 0.5 and report.exact_match_ci.successes == 10
    assert report.parse_failure_rate == 0.25
    assert report.item_exact == [i % 2 == 0 for i in range(20)]
    assert sum(r.n for r in report.by_difficulty) == 20
    assert [r.difficulty for r in report.by_difficulty] == [str(b) for b in range(10)]
    assert report.latency_p95_ms >= report.latency_p50_ms > 0 and report.tokens_per_s > 0
    assert report.endpoint == url and report.model == "student"


def test_endpoint_and_local_folder_agree_on_the_real_tiny_model(tiny_llama, held_out):
    """The same greedy generations through HTTP (like a vLLM server) and in-process score the same."""
    from stratos_agent.tools.teachers import TransformersTeacher

    path, _ = held_out
    teacher = TransformersTeacher(str(tiny_llama), batch_size=1)
    lock = threading.Lock()

    def answer(messages, max_tokens):
        with lock:
            return teacher.generate([messages], max_new_tokens=max_tokens)[0]

    with chat_server(answer) as url:
        remote = evaluate("mahjong", path, endpoint=url, model_name="tiny", limit=4, max_new_tokens=6)
    local = evaluate("mahjong", path, model=str(tiny_llama), limit=4, batch_size=1, max_new_tokens=6)
    assert [s.output for s in remote.samples] == [s.output for s in local.samples]
    assert remote.item_exact == local.item_exact and remote.n == local.n == 4
    assert local.batch_size == 1 and local.generated_tokens > 0


def test_baselines_are_scored_on_the_same_items():
    from collections import Counter

    items = PACK.sample(30, seed=8, distribution="even")
    scores = {b.name.split(" (")[0]: b for b in baselines(PACK, items)}
    assert scores["empty answer"].exact_match.successes == sum(not it.answer for it in items) == 3
    top = Counter(t for it in items for t in it.answer).most_common(1)[0][0]
    common = scores["most common element"]
    assert common.answer_text == PACK.format_answer([top])
    assert common.exact_match.successes == sum(it.answer == [top] for it in items)
    assert scores["empty answer"].by_difficulty["0"] == 1.0 and scores["empty answer"].by_difficulty["5"] == 0.0


def test_input_errors(held_out):
    path, _ = held_out
    with pytest.raises(InputError, match="exactly one"):
        evaluate("mahjong", path, model="x", endpoint="http://127.0.0.1:1/v1", model_name="m")
    with pytest.raises(InputError, match="--model-name"):
        evaluate("mahjong", path, endpoint="http://127.0.0.1:1/v1")
    with pytest.raises(InputError, match="--limit"):
        evaluate("mahjong", path, model="x", limit=0)


def test_stratos_eval_cli(tiny_llama, held_out, tmp_path):
    path, _ = held_out
    out = tmp_path / "report.json"
    cmd = [str(Path(sys.executable).parent / "stratos"), "eval", "--task", "mahjong", "--data", str(path),
           "--model", str(tiny_llama), "--limit", "2", "--max-new-tokens", "4", "--out", str(out)]
    done = subprocess.run(cmd + ["--teacher", str(tiny_llama)], check=False, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["n"] == 2 and 0 <= report["exact_match"] <= 1
    assert report["teacher"]["n"] == 2 and report["teacher"]["item_exact"] == report["item_exact"]  # same model
    assert {b["name"].split(" (")[0] for b in report["baselines"]} == {"empty answer", "most common element"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().splitlines()[0] + "\n{not json\n")
    failed = subprocess.run(cmd[:5] + [str(bad)] + cmd[6:], check=False,
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0 and "bad.jsonl:2" in failed.stderr and "Traceback" not in failed.stderr


def test_evaluate_pair_keeps_the_teachers_report_for_the_next_round(tiny_llama, held_out, tmp_path, monkeypatch):
    """A train-on round re-evaluates the student only: the teacher's report on the same items is reused."""
    from stratos_agent.tools import evaluate as ev

    from stratos_agent.tasks.recipes import recipe_for

    path, _ = held_out
    calls: list[str] = []
    real = ev.evaluate

    def counting(task, data, **kw):
        calls.append(str(kw.get("model")))
        return real(task, data, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    recipe = recipe_for("mahjong").model_copy(update={"student_tokens": 4, "teacher_tokens": 4})
    first = ev.evaluate_pair("mahjong", path, tiny_llama, str(tiny_llama), recipe, limit=4, threads=1,
                             teacher_cache=tmp_path / "eval")
    again = ev.evaluate_pair("mahjong", path, tiny_llama, str(tiny_llama), recipe, limit=4, threads=1,
                             teacher_cache=tmp_path / "eval")
    assert calls == [str(tiny_llama)] * 3  # student, teacher, then the student alone
    assert again.teacher == first.teacher and again.n == 4 and len(list((tmp_path / "eval").glob("*.json"))) == 1
