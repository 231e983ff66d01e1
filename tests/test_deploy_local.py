"""Local serving: process groups, API-key hygiene, port conflicts, run resolution, and a real vLLM server."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from stratos_agent.tools import deploy, server_process, serving_state
from support.env import private_settings

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.deployment import LaunchSpec
from stratos_agent.settings import get_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Serving state (index, pid files, logs) in a private STRATOS_HOME."""
    with private_settings(monkeypatch, home=tmp_path / "home", runs_dir=tmp_path / "runs"):
        yield tmp_path / "home"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": 9}))
    return path


def test_port_conflict_names_the_holder(home, tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ResourceError, match=rf"port {port} on 127.0.0.1 is already in use by pid {os.getpid()}"):
            deploy.deploy_local(model_folder(tmp_path / "m"), port=port)
    assert not (home / "serving" / "index").exists()  # nothing was started or recorded


def test_server_gets_key_by_env_only_and_whole_group_stops(home, tmp_path):
    """A real child that forks a grandchild: the key is in its environment, not argv or files; stop kills both."""
    key = "sk-test-" + "z" * 24
    child = ("import os, subprocess, sys, time; "
             "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
             "print('server up', flush=True); time.sleep(60)")
    launch = LaunchSpec(engine="vllm", device="cpu", argv=[sys.executable, "-c", child], model_path=str(tmp_path),
                        served_model_name="m", host="127.0.0.1", port=1, max_model_len=16)
    proc, started = server_process.start_server(launch, tmp_path / "state", key)
    try:
        leader = psutil.Process(proc.pid)
        assert leader.environ()["VLLM_API_KEY"] == key
        assert key not in " ".join(leader.cmdline())
        deadline = time.monotonic() + 20
        while len(server_process.group_members(proc.pid, started)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        members = server_process.group_members(proc.pid, started)
        assert len(members) == 2 and os.getpgid(proc.pid) == proc.pid  # own session, grandchild in the group
    finally:
        assert server_process.stop_group(proc.pid, started, grace_s=5) == 2
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
    assert files_containing(tmp_path, key) == []
    assert "server up" in (tmp_path / "state" / server_process.LOG_FILE).read_text()


def test_record_never_dumps_a_generated_key():
    from stratos_agent.records.deployment import Deployment, key_fingerprint

    launch = LaunchSpec(engine="vllm", device="cpu", argv=["x"], model_path="/m", served_model_name="m",
                        host="0.0.0.0", port=8000, max_model_len=16)
    dep = Deployment(name="m", base_url="http://127.0.0.1:8000/v1", model="m", model_path="/m",
                     model_fingerprint="f", engine="vllm", host="0.0.0.0", port=8000, pid=1, process_started=0.0,
                     state_dir="/s", log_path="/s/server.log", api_key_required=True,
                     api_key_fingerprint=key_fingerprint("sk-secret-123"), started_at="now", launch=launch)
    dep._generated_api_key = "sk-secret-123"
    assert dep.generated_api_key == "sk-secret-123"
    assert "sk-secret-123" not in dep.model_dump_json() and "sk-secret-123" not in str(dep.model_copy().model_dump())


def test_resolve_run_folder_reads_the_student_record(home, tmp_path):
    run = get_settings().runs_dir / "r1"
    model_folder(run / "train" / "merged")
    (run / "student.json").write_text(json.dumps({"model_dir": "train/merged", "config": {"task": "gsm8k"}}))
    target = serving_state.resolve_target("r1")  # a run name under the runs dir
    assert (target.source, target.name, target.task) == ("run", "r1", "gsm8k")
    assert target.model_path == (run / "train" / "merged").resolve()
    assert target.state_root == run.resolve() / "serve"
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(InputError, match="neither a model folder"):
        serving_state.resolve_target(tmp_path / "empty-run")


def test_stop_needs_a_name_or_all_and_knows_names(home):
    with pytest.raises(InputError, match="or use --all"):
        deploy.stop()
    with pytest.raises(InputError, match="no endpoint named 'ghost'"):
        deploy.stop("ghost")
    assert deploy.stop(all=True) == []


def test_non_loopback_host_must_be_an_address():
    assert server_process.is_loopback("127.0.0.1") and server_process.is_loopback("localhost")
    assert not server_process.is_loopback("0.0.0.0")
    with pytest.raises(InputError, match="not an IP address"):
        server_process.is_loopback("example.com")


@pytest.mark.slow
def test_real_vllm_endpoint_lifecycle(tmp_path, monkeypatch):
    """Start vLLM (CPU) on the bundled half-depth model bound to 0.0.0.0 (so a key is generated), query it with
    the openai client, reuse it, kill it and see it restarted, stop it: no process and no key left behind."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'stratos-agent[serve]')")
    from openai import AuthenticationError, OpenAI

    from stratos_agent.models import local_model_path

    model = local_model_path("smollm2-135m-half")  # shared model cache: converted once
    monkeypatch.setenv("STRATOS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    port, pids = free_port(), set()
    try:
        dep = deploy.deploy_local(model, host="0.0.0.0", port=port, name="student", timeout_s=900)
        key = dep.generated_api_key
        assert key and dep.api_key_required and dep.smoke is not None and dep.smoke.ok, dep.smoke
        assert dep.smoke.key_enforced is True  # the smoke test asked without the key too: vLLM said 401
        pids |= {p.pid for p in server_process.group_members(dep.pid, dep.process_started)}
        client = OpenAI(base_url=dep.base_url, api_key=key)
        out = client.chat.completions.create(model=dep.model, max_tokens=8, temperature=0,
                                             messages=[{"role": "user", "content": "Say hi."}])
        assert out.choices[0].message.content
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=dep.base_url, api_key="wrong").models.list()

        again = deploy.deploy_local(model, host="0.0.0.0", port=port, name="student", api_key=key)
        assert again.reused and again.pid == dep.pid and again.generated_api_key is None

        os.kill(dep.pid, 9)  # the leader dies; its engine workers are orphaned in the group
        deadline = time.monotonic() + 10
        while deploy.is_alive(dep) and time.monotonic() < deadline:
            time.sleep(0.2)
        redo = deploy.deploy_local(model, host="0.0.0.0", port=port, name="student", api_key=key, timeout_s=900)
        assert redo.restarted and redo.pid != dep.pid and redo.smoke.ok
        assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        pids |= {p.pid for p in server_process.group_members(redo.pid, redo.process_started)}
        assert [d.name for d, alive in deploy.endpoints() if alive] == ["student"]
    finally:
        stopped = deploy.stop(all=True)
    assert [d.status for d in stopped] == ["stopped"]
    assert len(pids) >= 4  # API server + engine core (the model runs in it on CPU), twice
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert files_containing(tmp_path, key) == []
    get_settings.cache_clear()


def test_a_port_taken_while_the_server_starts_is_given_up_for_another(home, tmp_path, monkeypatch):
    """choose_port finds a free port, but another process may bind it before vLLM does: the deploy tries the
    next free port instead of failing (it did, in a test suite sharing the machine with another server)."""
    from types import SimpleNamespace

    from stratos_agent.errors import ServiceError

    sleeper = psutil.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tried: list[int] = []
    monkeypatch.setattr(deploy, "start_server", lambda launch, state, key: (SimpleNamespace(pid=sleeper.pid), 0.0))

    def wait_ready(proc, started, url, *args):
        tried.append(int(url.rsplit(":", 1)[1].split("/")[0]))
        if len(tried) == 1:
            raise ServiceError("the server exited (code 1) before it was ready: OSError: [Errno 98] Address already in use")

    monkeypatch.setattr(deploy, "wait_ready", wait_ready)
    try:
        dep = deploy.deploy_local(model_folder(tmp_path / "m"), name="race", smoke=False)
    finally:
        sleeper.kill()
    assert len(tried) == 2 and tried[0] != tried[1] and dep.port == tried[1]
    with pytest.raises(ServiceError, match="Address already in use"):  # an explicit --port is not swapped
        monkeypatch.setattr(deploy, "wait_ready", lambda *a: (_ for _ in ()).throw(ServiceError("Address already in use")))
        deploy.deploy_local(model_folder(tmp_path / "m2"), name="race2", port=free_port(), smoke=False)
