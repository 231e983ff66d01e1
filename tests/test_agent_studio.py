"""`langgraph dev` (the README's Studio path) serves the graph WITHOUT `--allow-blocking`.

Starts the real dev server (langgraph-cli[inmem], in the dev extra) on the graph from
tests/support/studio_graph.py, which goes through the same `studio_factory` as langgraph.json's
`graphs/studio.py:make_graph`, with the stand-in tools. Through the LangGraph SDK it runs a request to
the plan gate, resumes it with a rejection and checks the final state. The server's blockbuster guard
raises BlockingError for any blocking call on its event loop, so this fails if the factory blocks again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TESTS = Path(__file__).resolve().parent
REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"langgraph dev exited ({proc.returncode}):\n{_log_tail(log)}"
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"langgraph dev did not answer within {START_TIMEOUT_S} s:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the server's whole process group (start_new_session below)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_langgraph_dev_runs_to_the_plan_gate_and_a_rejection_without_allow_blocking(tmp_path: Path) -> None:
    from langgraph_sdk import get_sync_client

    # Absolute paths: `langgraph dev` resolves langgraph.json paths against the current folder (tmp_path).
    config = {
        "dependencies": [str(TESTS)],  # puts tests/ on the server's sys.path, so `support` imports
        "graphs": {"stratos": f"{TESTS / 'support' / 'studio_graph.py'}:make_graph"},
        "env": {},
    }
    (tmp_path / "langgraph.json").write_text(json.dumps(config))
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATOS_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(
        STRATOS_RUNS_DIR=str(runs),
        STRATOS_HOME=str(tmp_path / "home"),
        STRATOS_THREADS="1",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        LANGGRAPH_CLI_NO_ANALYTICS="1",  # langgraph-cli's usage ping
        LANGSMITH_TRACING="false",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    langgraph = Path(sys.executable).parent / "langgraph"
    # No --allow-blocking: that is the point. --no-reload: no file watcher process on the shared cores.
    cmd = [str(langgraph), "dev", "--no-browser", "--no-reload", "--port", str(port),
           "--config", str(tmp_path / "langgraph.json")]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_until_up(url, proc, log)
        client = get_sync_client(url=url, timeout=120)
        thread_id = client.threads.create()["thread_id"]

        client.runs.wait(thread_id, "stratos", input={"request": REQUEST})
        state = client.threads.get_state(thread_id)
        gates = [i["value"] for i in state["interrupts"]]
        assert [g["gate"] for g in gates] == ["plan"], gates
        assert gates[0]["budget_usd"] == 20
        assert state["values"]["plan"]["feasible"] is True
        assert client.threads.get(thread_id)["status"] == "interrupted"

        final = client.runs.wait(thread_id, "stratos", command={"resume": "reject"})
        assert final["status"] == "rejected", final.get("status")
        assert final.get("dataset") is None and final.get("model") is None
        state = client.threads.get_state(thread_id)
        assert state["next"] == [] and state["interrupts"] == []
        assert state["values"]["approvals"]["plan"]["decision"] == "reject"
        # The nodes' file I/O (run folder, report) ran in LangGraph's thread pool, under STRATOS_RUNS_DIR.
        assert final["run_dir"] == str(runs / thread_id)
        assert Path(final["report"]["markdown"]).is_file()
        assert client.threads.get(thread_id)["status"] == "idle"
    finally:
        _stop(proc)
    text = log.read_text(errors="replace")
    assert "BlockingError" not in text, _log_tail(log)
    assert "Heads up: You've set --allow-blocking" not in text
