"""Keys and endpoints: redaction at every sink, server keys that are refused or enforced, keys off argv
(SGLang locally and on SkyServe), quoted SkyPilot scripts, and a full failing run that leaves no key behind.

The serving tests start a small stand-in OpenAI server (stdlib HTTP, real process, real port) in place of
vLLM/SGLang: it enforces a key the way the engine it stands for reads it (vLLM: VLLM_API_KEY; SGLang:
`--config FILE.yaml`), or none at all ("open"), so the key logic is tested without a slow engine.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from langgraph.types import RetryPolicy
from stratos_agent.graphs.adapters import default_toolset, run_synth
from stratos_agent.graphs.execution import is_transient
from stratos_agent.graphs.session import AgentSession
from stratos_agent.tools import deploy, engine_launch, launch_specs, serving_state
from stratos_agent.tools.teachers.remote import OpenAICompatibleTeacher
from support.doubles import StageDouble, doubles, plan_for_budget, point
from support.env import private_settings

from stratos_agent.errors import InputError, ServiceError
from stratos_agent.records.deployment import LaunchSpec, SmokeResult
from stratos_agent.records.training import TrainConfig
from stratos_agent.redact import redact_text, redact_url, register_secret

STRATOS = [sys.executable, "-c", "from stratos_agent.cli import main; main()"]
ENV_KEY = "sk-planted-env-0123456789abcdefXYZ"      # OPENAI_API_KEY
FLAG_KEY = "planted-flag-key-9876543210qrstuv"     # given as --api-key / api_key=
URL_PASSWORD = "urlPassw0rd-planted-4242"
URL_QUERY_KEY = "query-key-planted-31337abc"
PLANTED = (ENV_KEY, FLAG_KEY, URL_PASSWORD, URL_QUERY_KEY)

# A stand-in engine: /health, /v1/models, /v1/chat/completions. argv: port host served-name mode [--config F]
FAKE_ENGINE = r"""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, host, served, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
key = None
if mode == "vllm":
    key = os.environ.get("VLLM_API_KEY")
elif mode == "sglang" and "--config" in sys.argv:  # SGLang: each `name: value` of the file is `--name value`
    key = json.load(open(sys.argv[sys.argv.index("--config") + 1]))["api-key"]
print("engine up, key enforced:", key is not None, flush=True)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def allowed(self):
        return key is None or self.headers.get("Authorization") == "Bearer " + key

    def do_GET(self):
        if self.path == "/health":
            return self.send(200, {})
        if not self.allowed():
            return self.send(401, {"error": "Unauthorized"})
        self.send(200, {"object": "list", "data": [{"id": served, "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self.allowed():
            return self.send(401, {"error": "Unauthorized"})
        self.send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": served,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "1m 4m"}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

ThreadingHTTPServer((host, port), Handler).serve_forever()
"""

# A remote teacher that is down: every request gets HTTP 500.
FAILING_TEACHER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "num_attention_heads": 9,
                                                  "max_position_embeddings": 512}))
    return path


def files_with(root: Path, secrets: tuple[str, ...]) -> tuple[int, dict[str, list[str]]]:
    """(files scanned, {file: [secrets found in it]}) for every file under `root`."""
    files = [p for p in root.rglob("*") if p.is_file()]
    hits = {str(p): [s for s in secrets if s.encode() in p.read_bytes()] for p in files}
    return len(files), {p: found for p, found in hits.items() if found}


@pytest.fixture
def home(tmp_path, monkeypatch):
    with private_settings(monkeypatch, home=tmp_path / "home", runs_dir=tmp_path / "runs"):
        yield tmp_path / "home"


@pytest.fixture
def fake_engine(monkeypatch):
    """deploy_local runs the stand-in engine; `mode` says how (or whether) it enforces its key."""
    modes: dict[str, str] = {"mode": "vllm"}

    def launch(target, engine, served, host, port, **_settings) -> LaunchSpec:
        argv = [sys.executable, "-c", FAKE_ENGINE, str(port), host, served, modes["mode"]]
        return LaunchSpec(engine=engine, device="gpu" if engine == "sglang" else "cpu", argv=argv,
                          model_path=str(target.model_path), served_model_name=served, host=host, port=port,
                          max_model_len=256)

    monkeypatch.setattr(deploy, "_launch", launch)
    monkeypatch.setattr(deploy, "require_engine", lambda engine: None)
    yield modes
    deploy.stop(all=True)


# ----------------------------------------------------------------------------------- redaction
def test_redact_url_masks_userinfo_and_key_like_query_values():
    url = (f"http://alice:{URL_PASSWORD}@example.com:8000/v1?api-key={URL_QUERY_KEY}&api_key=a1&key=a2"
           "&token=a3&access_token=a4&secret=a5&password=a6&sig=a7&X-Api-Key=a8&model=m1&n=2")
    safe = redact_url(url)
    assert safe == ("http://***@example.com:8000/v1?api-key=***&api_key=***&key=***&token=***&access_token=***"
                    "&secret=***&password=***&sig=***&X-Api-Key=***&model=m1&n=2")
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"  # a clean URL is untouched
    assert redact_url("https://h/cb#access_token=tok123&state=s") == "https://h/cb#access_token=***&state=s"
    assert redact_url(safe) == safe  # idempotent


def test_redact_text_finds_urls_bearer_tokens_and_configured_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("STRATOS_SOME_TOKEN", "stratos-token-value-123")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://u:{URL_PASSWORD}@h/v1")
    text = (f"teacher at 'http://u:{URL_PASSWORD}@h/v1?key={URL_QUERY_KEY}' failed; sent Authorization: "
            f"Bearer abc.def; key {ENV_KEY}; pw {URL_PASSWORD} alone; stratos-token-value-123; model=m")
    safe = redact_text(text)
    assert not any(s in safe for s in (ENV_KEY, URL_PASSWORD, URL_QUERY_KEY, "abc.def", "stratos-token-value-123"))
    assert "'http://***@h/v1?key=***'" in safe and "Bearer ***" in safe and "model=m" in safe
    register_secret(FLAG_KEY)  # a key from a flag or a file, not the environment
    assert redact_text(f"x {FLAG_KEY} y") == "x *** y"
    assert redact_text("short EMPTY key") == "short EMPTY key"  # short values never mangle ordinary text


def test_records_redact_urls_and_refuse_a_key_in_argv():
    smoke = SmokeResult(ok=False, task="t", item_key="k", error=f"at http://u:{URL_PASSWORD}@h/v1 refused")
    assert URL_PASSWORD not in smoke.model_dump_json() and "http://***@h/v1" in smoke.error
    with pytest.raises(ValueError, match="never goes on the command line"):
        LaunchSpec(engine="sglang", device="gpu", argv=["python", "--api-key", FLAG_KEY], model_path="/m",
                   served_model_name="m", host="0.0.0.0", port=8000, max_model_len=16)


def test_doctor_never_prints_url_credentials(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import stratos_agent.cli.doctor  # noqa: F401 - registers the command
    from stratos_agent.cli.app import app
    from stratos_agent.settings import get_settings

    monkeypatch.setenv("STRATOS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://alice:{URL_PASSWORD}@127.0.0.1:9/v1?api-key={URL_QUERY_KEY}")
    monkeypatch.setenv("STRATOS_TEACHER_MODEL", "gpt-x")
    get_settings.cache_clear()
    try:
        for args in (["--no-load", "--json"], ["--no-load"]):
            out = CliRunner().invoke(app, ["doctor", *args], env={"COLUMNS": "400"}).stdout
            assert URL_PASSWORD not in out and URL_QUERY_KEY not in out, out
            assert "http://***@127.0.0.1:9/v1?api-key=***" in out
    finally:
        get_settings.cache_clear()


# ----------------------------------------------------------------------------------- server keys
@pytest.mark.parametrize("key, why", [("", "is empty"), ("   ", "is empty"), ("short-key", "at least 16"),
                                      ("a-long-enough-key\n", "whitespace")])
def test_empty_whitespace_and_short_keys_are_refused_before_anything_starts(home, tmp_path, fake_engine, key, why):
    with pytest.raises(InputError, match=why) as refused:
        deploy.deploy_local(model_folder(tmp_path / "m"), host="0.0.0.0", api_key=key)
    assert key.strip() == "" or key.strip() not in str(refused.value)  # the message never repeats the key
    assert serving_state.list_deployments() == []


def test_non_loopback_server_enforces_its_key_and_the_smoke_test_proves_it(home, tmp_path, fake_engine):
    dep = deploy.deploy_local(model_folder(tmp_path / "m"), host="0.0.0.0", port=free_port(), name="open")
    key = dep.generated_api_key
    assert key and dep.api_key_required and len(key) >= deploy.MIN_KEY_LEN
    assert dep.smoke is not None and dep.smoke.ok and dep.smoke.key_enforced is True, dep.smoke
    assert psutil.Process(dep.pid).environ()["VLLM_API_KEY"] == key  # vLLM reads it from its environment
    assert deploy.refuses_without_key(dep.base_url)
    assert files_with(tmp_path, (key,))[1] == {}  # the key lives only in the server's environment


def test_a_server_that_ignores_its_key_is_stopped_not_recorded(home, tmp_path, fake_engine):
    """The old bug's shape: a key recorded as required on a server that answers without it."""
    fake_engine["mode"] = "open"
    before = {p.pid for p in psutil.process_iter()}
    with pytest.raises(ServiceError, match="does not enforce it; stopped it"):
        deploy.deploy_local(model_folder(tmp_path / "m"), host="0.0.0.0", port=free_port(), api_key=FLAG_KEY,
                            name="leaky")
    assert serving_state.load_deployment("leaky") is None
    started = [p for p in psutil.process_iter(["cmdline", "status"]) if p.pid not in before
               and "engine up" in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert started == []


def test_sglang_gets_its_key_from_a_private_config_file_never_argv(home, tmp_path, fake_engine):
    fake_engine["mode"] = "sglang"
    dep = deploy.deploy_local(model_folder(tmp_path / "m"), host="0.0.0.0", port=free_port(), api_key=FLAG_KEY,
                              engine="sglang", name="sg")
    assert dep.smoke is not None and dep.smoke.ok and dep.smoke.key_enforced is True, dep.smoke
    argv = psutil.Process(dep.pid).cmdline()
    assert FLAG_KEY not in " ".join(argv) and "--api-key" not in argv and "--config" in argv
    assert not Path(argv[argv.index("--config") + 1]).exists()  # removed once the server was ready
    assert "--config" not in dep.launch.argv  # the record keeps the plain command (reuse compares it)


def test_keyed_launch_is_the_command_sglang_would_run(tmp_path):
    launch = engine_launch.sglang_launch("/m", served_model_name="s", port=8100)
    with engine_launch.keyed_launch(launch, FLAG_KEY) as keyed:
        *head, flag, path = keyed.argv
        assert head == launch.argv and flag == "--config" and FLAG_KEY not in keyed.shell()
        config = Path(path)
        assert stat.S_IMODE(config.stat().st_mode) == 0o600 and stat.S_IMODE(config.parent.stat().st_mode) == 0o700
        assert yaml.safe_load(config.read_text()) == {"api-key": FLAG_KEY}  # SGLang reads it with yaml.safe_load
    assert not config.exists()
    vllm = engine_launch.vllm_launch("/m", served_model_name="s", device="cpu")
    with engine_launch.keyed_launch(vllm, FLAG_KEY) as keyed:
        assert keyed == vllm  # vLLM: VLLM_API_KEY in the environment, the command unchanged


# ----------------------------------------------------------------------------------- SkyPilot scripts
HOSTILE = "d$(touch pwned)`touch pwned2`;touch pwned3 'q\".jsonl"


def _run_script_words(script: str) -> list[list[str]]:
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # parses as a shell script
    return [shlex.split(line) for line in script.replace("\\\n", " ").splitlines()]  # one command a line


def test_training_script_never_sees_a_hostile_data_name(tmp_path):
    data = tmp_path / HOSTILE
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    config = TrainConfig(run_name="r1", base_model="smollm2-135m", data=data)
    request = launch_specs.training_task(config, tmp_path / "out", gpu="L4", gpus=1)
    task = request["task"]
    for script in (task["run"], task["setup"]):
        _run_script_words(script)
        assert "pwned" not in script
    remote = next(k for k in task["file_mounts"] if k.startswith("/stratos/data/"))
    assert shlex.split(remote) == [remote] and shlex.quote(remote) == remote  # a plain literal word
    assert task["file_mounts"][remote] == str(data.resolve())
    written = json.loads((tmp_path / "out" / launch_specs.TRAIN_CONFIG_FILE).read_text())
    assert written["data"] == remote


def test_service_script_quotes_names_and_keeps_the_key_in_the_environment(tmp_path):
    hub_id, served = "org/m$(touch pwned)", "s;touch pwned2"
    for engine in ("vllm", "sglang"):
        launch = engine_launch.gpu_launch(engine, hub_id, served_model_name=served, gpus=1, max_model_len=2048)
        run = launch_specs.service_task(launch, gpu="L4", gpus=1, qps=1.0)["task"]["run"]
        words = _run_script_words(run)[-1]
        assert hub_id in words and served in words  # each one literal word
        assert "--api-key" not in run and "STRATOS_API_KEY" in run
        # Run the script for real with stub engines: nothing hostile executes, the engine gets the key only
        # from its environment (vLLM) or the private config file (SGLang).
        home = tmp_path / engine
        (home / "stratos-venv" / "bin").mkdir(parents=True)
        (home / "stratos-venv" / "bin" / "activate").write_text(f'PATH="{home}/bin:$PATH"\n')
        (home / "bin").mkdir()
        for stub in ("vllm", "python"):
            real = "" if stub == "vllm" else f'[ "$1" = -c ] && exec {sys.executable} "$@"\n'
            (home / "bin" / stub).write_text(f'#!/bin/sh\n{real}printf "%s\\n" "$@" > "$HOME/argv.txt"\n'
                                             'env > "$HOME/env.txt"\n')
            (home / "bin" / stub).chmod(0o755)
        env = {"HOME": str(home), "PATH": os.environ["PATH"], "STRATOS_API_KEY": FLAG_KEY}
        subprocess.run(["bash", "-c", run], cwd=home, env=env, check=True)
        argv = (home / "argv.txt").read_text().splitlines()
        assert not list(home.glob("pwned*")) and FLAG_KEY not in argv and hub_id in argv and served in argv
        if engine == "vllm":
            assert f"VLLM_API_KEY={FLAG_KEY}" in (home / "env.txt").read_text().splitlines()
        else:
            key_file = home / engine_launch.SGLANG_KEY_FILE
            assert argv[-2:] == ["--config", str(key_file)] and stat.S_IMODE(key_file.stat().st_mode) == 0o600
            assert yaml.safe_load(key_file.read_text()) == {"api-key": FLAG_KEY}


# ----------------------------------------------------------------------------------- CLI
def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path / "home"), "STRATOS_HOME": str(tmp_path / "stratos"),
            "STRATOS_RUNS_DIR": str(tmp_path / "runs"), "COLUMNS": "400", **extra}


def test_serve_cli_refuses_an_empty_key_in_one_clean_line(tmp_path):
    model = model_folder(tmp_path / "m")
    out = subprocess.run([*STRATOS, "serve", str(model), "--host", "0.0.0.0", "--api-key", ""], text=True,
                         capture_output=True, env=_cli_env(tmp_path), timeout=300, check=False)
    assert out.returncode == 2 and "error: the API key is empty" in out.stderr and "Traceback" not in out.stderr
    assert "visible to every local user" in out.stderr  # a key on the command line draws a warning
    key_file = tmp_path / "key.txt"
    key_file.write_text("tiny\n")
    out = subprocess.run([*STRATOS, "serve", str(model), "--api-key-file", str(key_file)], text=True,
                         capture_output=True, env=_cli_env(tmp_path), timeout=300, check=False)
    assert out.returncode == 2 and "at least 16 are required" in out.stderr and "tiny" not in out.stderr
    assert "visible to every local user" not in out.stderr


# ----------------------------------------------------------------------------------- the whole run
def wait_listening(port: int, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            psutil.wait_procs([psutil.Process(proc.pid)], timeout=0.05)
    raise RuntimeError(f"the stand-in server exited with code {proc.returncode}")


@pytest.fixture
def failing_teacher():
    """The base URL (userinfo + ?api-key=) of a teacher that answers every request with HTTP 500."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FAILING_TEACHER, str(port)])
    wait_listening(port, proc)
    yield f"http://alice:{URL_PASSWORD}@127.0.0.1:{port}/v1?api-key={URL_QUERY_KEY}"
    proc.kill()
    proc.wait()


def endpoint_plan(ctx):
    """The doubles' plan, with a remote endpoint teacher that writes the data (forward synthesis)."""
    plan = plan_for_budget(ctx)
    chosen = point(teacher="endpoint:teach-x", strategy="alignment-seq", data_size=8)
    return plan.model_copy(update={"chosen": chosen, "front": [chosen]})


def test_planted_keys_are_found_in_no_artefact(home, tmp_path, monkeypatch, failing_teacher, fake_engine):
    """A full agent run whose remote teacher fails (real synthesis tool, real teacher client, real graph,
    checkpoints, log and report), a keyed endpoint and a failing `bench-servers --api-key`: afterwards no
    file under the run and cache folders holds a planted key or the URL's credentials."""
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", failing_teacher)
    monkeypatch.setattr(OpenAICompatibleTeacher, "_delay", lambda self, attempt, exc: 0.0)  # no backoff waits
    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    runners = {**doubles(), "make_plan": StageDouble(endpoint_plan), "synthesize_data": run_synth}
    retry = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=is_transient)
    session = AgentSession("leak", runs_dir=tmp_path / "runs",
                           graph_kwargs={"toolset": default_toolset(runners), "tool_retry": retry})
    out = session.start("a model that lists Mahjong winning tiles, under $20", auto_approve=True)
    assert out.status == "failed" and out.values.get("dataset") is None

    dep = deploy.deploy_local(model_folder(tmp_path / "student"), host="0.0.0.0", port=free_port(),
                              api_key=FLAG_KEY, name="keyed", state_dir=session.run_dir / "serve")
    assert dep.smoke is not None and dep.smoke.key_enforced is True
    bench = subprocess.run([*STRATOS, "bench-servers", "smollm2-135m", "--url", failing_teacher, "--api-key",
                            FLAG_KEY, "--requests", "1"], text=True, capture_output=True, timeout=300, check=False,
                           env=_cli_env(tmp_path, STRATOS_HOME=str(home), OPENAI_API_KEY=ENV_KEY))
    assert bench.returncode == 2 and "http://***@127.0.0.1" in bench.stderr, bench.stderr
    assert not [s for s in PLANTED if s in bench.stdout + bench.stderr]

    log = (session.run_dir / "agent.log").read_text()
    assert "synthesize_data failed" in log and "http://***@127.0.0.1" in log  # the failure was written down
    names = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"checkpoints.sqlite", "agent.log", "report.md", "report.html", "run.json", "ledger.jsonl",
            "deployment.json", "server.log", "synth_config.json"} <= names  # every kind of artefact is scanned
    scanned, hits = files_with(tmp_path, PLANTED)
    print(f"Keys planted: {len(PLANTED)}; found in {len(hits)} of {scanned} files scanned")
    assert hits == {}
