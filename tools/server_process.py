"""One local server process: started detached in its own session, health-checked, stopped as a group.

`start_server` runs a `LaunchSpec` with its log file and pid file in a state folder (an API key only in
the server's environment, never in argv) and registers the process under `<cache>/serving/processes/`
before anyone waits for it, so a caller killed during start-up leaves a server that `registered_servers`
still finds (and `stop_group` unregisters); `wait_ready` polls `/health` and `/v1/models` until the model
is listed; `stop_group` stops the whole process group (vLLM spawns engine workers), telling a live
process from a reused pid by its create time. Plus the network side: loopback hosts, free ports, base
URLs. Knows nothing of endpoint records (`tools/serving_state.py`) or of what a deployment is
(`tools/deploy.py`).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from stratos_agent.errors import InputError, ServiceError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.deployment import LaunchSpec
from stratos_agent.settings import get_settings

PID_FILE = "server.pid"
LOG_FILE = "server.log"
_STOP_GRACE_S = 20.0
Status = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))  # a reader never sees half a record


# ----------------------------------------------------------------------------------- processes
def serving_dir() -> Path:
    return get_settings().cache_dir / "serving"


def _registry_entry(pid: int, started: float) -> Path:
    return serving_dir() / "processes" / f"{pid}-{int(started)}.json"


def registered_servers() -> list[dict[str, Any]]:
    """Every live server `start_server` started and `stop_group` has not stopped: {"pid", "started",
    "state_dir", "launch", "api_key_required", "started_at"}. Entries of servers that died are dropped."""
    folder = serving_dir() / "processes"
    entries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
            alive = _same_process(int(entry["pid"]), float(entry["started"])) is not None
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-visible or foreign: never delete what we cannot read
        if alive:
            entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return entries


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
    try:
        members = group_members(pgid, since)
        if members:
            _terminate(pgid, members, grace_s)
        return len(members)
    finally:
        _reap(pgid)
        _registry_entry(pgid, since).unlink(missing_ok=True)


def _terminate(pgid: int, members: list[psutil.Process], grace_s: float) -> None:
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


# ----------------------------------------------------------------------------------- start
def _log_tail(path: Path, api_key: str | None, lines: int = 12) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
    return text.replace(api_key, "***") if api_key else text


def start_server(launch: LaunchSpec, state_dir: Path, api_key: str | None) -> tuple[subprocess.Popen, float]:
    """Start the server in its own session (so `stop` can signal the whole group) with its log file.

    Returns the process and its create time (what later proves a pid is still ours). A server still
    registered for the same state folder is stopped first: its pid file is about to be overwritten, and
    it can only be one whose deployer was killed before recording it (a recorded one was reused or
    stopped by the caller)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for entry in registered_servers():
        if entry["state_dir"] == str(state_dir.resolve()):
            stop_group(entry["pid"], entry["started"])
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
    # registered before the caller waits for the health check: a kill -9 meanwhile must not orphan it
    _write_json(_registry_entry(proc.pid, started), {
        "pid": proc.pid, "started": started, "state_dir": str(state_dir.resolve()),
        "launch": launch.model_dump(mode="json"), "api_key_required": api_key is not None, "started_at": _now(),
    })
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
