"""Concurrency and durability: safe thread ids, one process per run, disk full mid-stage, folder swaps that
survive a kill, and servers that outlive a killed deployer. Real processes and a real SQLite checkpoint;
only the tools' bodies are stand-ins (tests/support/doubles.py)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from langgraph.types import RetryPolicy
from stratos_agent.graphs import execution
from stratos_agent.graphs.adapters import default_toolset
from stratos_agent.graphs.session import LOCK_FILE, RUN_INFO, AgentSession, new_thread_id, storage_problem
from stratos_agent.tools import deploy, server_process, serving_state
from support.doubles import StageDouble, doubles
from support.env import private_settings

from stratos_agent import files
from stratos_agent.errors import InputError, ResourceError
from stratos_agent.locks import LockedError, exclusive, read_holder
from stratos_agent.models.atomic import is_complete, materialise
from stratos_agent.records.deployment import LaunchSpec

REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms"
STRATOS = str(Path(sys.executable).with_name("stratos"))


def session(runs_dir: Path, runners: dict[str, StageDouble], thread: str = "t") -> AgentSession:
    fast = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=execution.is_transient)
    return AgentSession(thread, runs_dir=runs_dir,
                        graph_kwargs={"toolset": default_toolset(runners), "tool_retry": fast})


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def python(code: str) -> subprocess.Popen:
    """A second Python process running `code`, its stdout a pipe (it prints when it is ready)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])


# ----------------------------------------------------------------------------------- thread ids
@pytest.mark.parametrize("bad", ["../outside", "a/b", "..", "a..b", ".hidden", "-rf", "", "x" * 81, "a b", "é"])
def test_unsafe_thread_ids_are_refused_before_anything_is_created(runs_dir: Path, bad: str) -> None:
    with pytest.raises(InputError, match="thread id .* is not allowed"):
        AgentSession(bad, runs_dir=runs_dir)
    assert not runs_dir.parent.joinpath("outside").exists() and not runs_dir.exists()


def test_safe_thread_ids_and_generated_ones_are_accepted(runs_dir: Path) -> None:
    for good in ("kill9", "r1.v2_x-y", "A" * 80, new_thread_id("Mahjong tiles!")):
        assert AgentSession(good, runs_dir=runs_dir).thread_id == good


def test_cli_refuses_a_thread_id_outside_the_runs_dir_in_one_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = subprocess.run([STRATOS, "approve", "../outside"], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "STRATOS_RUNS_DIR": str(runs)}, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert "thread id '../outside' is not allowed" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "outside").exists() and not runs.exists()


# ----------------------------------------------------------------------------------- one process per run
def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(runs_dir: Path) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    assert s.start(REQUEST).interrupt["gate"] == "plan"
    lock = s.run_dir / LOCK_FILE
    holder = python(f"""
        from pathlib import Path
        import time
        from stratos_agent.locks import exclusive
        with exclusive(Path({str(lock)!r}), "run t"):
            print("held", flush=True)
            time.sleep(120)
    """)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=rf"run t is in use by another process \(pid {holder.pid}\)"):
            s.resume("approve")
        with pytest.raises(LockedError):
            session(runs_dir, doubles()).send("continue")
        assert runners["synthesize_data"].calls == 0  # the refused process ran nothing
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up
        holder.wait()
    assert read_holder(lock)["pid"] == holder.pid  # the file still names the dead holder: stale
    out = s.resume("approve")
    assert out.interrupt["gate"] == "deploy" and runners["synthesize_data"].calls == 1
    assert read_holder(lock) is None  # released: the file names nobody


def test_a_lock_kept_by_a_dead_holders_forked_child_is_taken_over(tmp_path: Path) -> None:
    """The flock survives its holder when a forked child inherited the descriptor: the dead pid in the
    file marks it stale, and a fresh lock file replaces it."""
    lock = tmp_path / "agent.lock"
    dying = python(f"""
        import os, signal, time
        from pathlib import Path
        from stratos_agent.locks import exclusive
        with exclusive(Path({str(lock)!r}), "run t"):
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = int(dying.stdout.readline())
    dying.wait()
    try:
        assert psutil.pid_exists(child) and read_holder(lock)["pid"] == dying.pid
        with exclusive(lock, "run t"):
            assert read_holder(lock)["pid"] == os.getpid()
            third = python(f"""
                from pathlib import Path
                from stratos_agent.locks import exclusive
                with exclusive(Path({str(lock)!r}), "run t"):
                    pass
            """)
            third.stdout.close()
            assert third.wait(timeout=60) != 0  # and it is a real lock again: a third process is refused
    finally:
        os.kill(child, signal.SIGKILL)


# ----------------------------------------------------------------------------------- disk full
def full_once(real: Callable[..., Any], skip: int = 0) -> Callable[..., Any]:
    """`real`, except that call number `skip` (0-based) raises ENOSPC: the disk is full for a moment."""
    calls = {"n": 0}

    def writer(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == skip + 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]))
        return real(*args, **kwargs)

    return writer


def test_disk_full_mid_stage_fails_the_run_cleanly_and_resume_continues(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runners = doubles()
    s = session(runs_dir, runners)
    out = s.start(REQUEST)
    stages = s.run_dir / "stages"
    before = {p.name: p.read_text() for p in stages.iterdir()}
    # the synthesis stage's file cannot be written, and neither can the failure log of the error handler
    monkeypatch.setattr(execution, "write_text_atomic", full_once(execution.write_text_atomic))
    monkeypatch.setattr(execution, "log_failure", full_once(execution.log_failure))
    with pytest.raises(ResourceError, match=r"No space left on device .*stratos resume t"):
        s.resume("approve")
    assert runners["synthesize_data"].calls == 1
    assert {p.name: p.read_text() for p in stages.iterdir()} == before  # finished stages kept, nothing torn
    assert json.loads((s.run_dir / RUN_INFO).read_text())["error"].startswith("No space left on device")

    fresh = session(runs_dir, runners)  # `stratos status` from another process
    out = fresh.outcome()
    assert out.status == "failed" and "No space left" in out.error and out.next_nodes
    assert out.summary()["error"] == out.error
    out = fresh.resume()  # space is back
    assert out.interrupt["gate"] == "deploy" and out.error is None
    assert json.loads((s.run_dir / RUN_INFO).read_text()).get("error") is None
    assert runners["make_plan"].calls == 1 and runners["synthesize_data"].calls == 2  # only that stage re-ran
    assert all(p.stat().st_size > 0 for p in stages.iterdir())
    assert fresh.resume("approve").status == "done"


def test_a_checkpoint_that_cannot_be_saved_fails_the_run_and_resume_reuses_the_stage(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up right after the synthesis stage finished: its checkpoint cannot be written."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    real, failed = SqliteSaver.put, []

    def put(self: SqliteSaver, config: Any, checkpoint: Any, *args: Any) -> Any:
        if checkpoint["channel_values"].get("dataset") is not None and not failed:
            failed.append(True)
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, config, checkpoint, *args)

    monkeypatch.setattr(SqliteSaver, "put", put)
    runners = doubles()
    s = session(runs_dir, runners)
    with pytest.raises(ResourceError, match="checkpoint database could not be written"):
        s.start(REQUEST, auto_approve=True)
    assert failed and session(runs_dir, runners).outcome().status == "failed"
    assert session(runs_dir, runners).resume().status == "done"
    assert runners["synthesize_data"].calls == 1  # its finished stage file was reused, not redone


@pytest.mark.parametrize("exc,words", [
    (OSError(errno.ENOSPC, "No space left on device", "/r/x.json"), "No space left on device writing /r/x.json"),
    (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    (__import__("sqlite3").OperationalError("database or disk is full"), "checkpoint database could not be written"),
    (FileNotFoundError(errno.ENOENT, "No such file"), None),  # a bug, not the disk: keeps its traceback
    (RuntimeError("boom"), None),
])
def test_storage_problems_are_told_apart_from_bugs(exc: BaseException, words: str | None) -> None:
    found = storage_problem(exc)
    assert (found is None) if words is None else (words in found)


def test_run_info_survives_a_full_disk_while_noting_the_error(runs_dir: Path, monkeypatch) -> None:
    s = session(runs_dir, doubles())
    s.start(REQUEST)
    before = (s.run_dir / RUN_INFO).read_text()
    monkeypatch.setattr(files.os, "fsync", full_once(files.os.fsync))
    s._note_error("No space left on device")  # best effort: cannot write, must not tear run.json
    assert (s.run_dir / RUN_INFO).read_text() == before
    assert [p.name for p in s.run_dir.iterdir() if ".tmp-" in p.name] == []


# ----------------------------------------------------------------------------------- folder swaps
def killed_between_renames(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path, Path], Path]:
    """`files.replace_folder` whose second rename (the new version in) fails, as if killed there."""
    real = files.replace_folder

    def dying(new: Path, target: Path) -> Path:
        with monkeypatch.context() as patch:
            patch.setattr(files.os, "replace", full_once(os.replace, skip=1))
            return real(new, target)

    return dying


def test_folder_swap_keeps_the_old_version_until_the_new_one_is_in(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "dataset"
    target.mkdir()
    (target / "v").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "v").write_text("new")
    with pytest.raises(OSError):
        killed_between_renames(monkeypatch)(new, target)
    assert not target.exists()
    aside = [p for p in tmp_path.iterdir() if ".dataset.old-" in p.name]
    assert [(p / "v").read_text() for p in aside] == ["old"]  # never deleted
    files.recover_folder(target)  # the writer is alive: its aside is not touched
    assert not target.exists()
    aside[0].rename(tmp_path / f".dataset.old-{dead_pid()}-0123abcd")  # now its writer is dead
    (tmp_path / f".dataset.tmp-{dead_pid()}-0123abcd").mkdir()  # a dead writer's half-built copy
    live_tmp = files.temp_sibling(target)
    live_tmp.mkdir()  # a live writer's: not ours to delete
    files.recover_folder(target)
    assert (target / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dataset", "new", live_tmp.name])
    files.replace_folder(new, target)
    assert (target / "v").read_text() == "new" and not any(".old-" in p.name for p in tmp_path.iterdir())


def test_materialise_puts_back_a_folder_left_aside_by_a_killed_builder(tmp_path: Path) -> None:
    target, recipe, builds = tmp_path / "model", {"kind": "t"}, []

    def build(folder: Path) -> None:
        builds.append(folder)
        (folder / "w.bin").write_bytes(b"x")

    materialise(target, recipe, build)
    target.rename(tmp_path / f".model.old-{dead_pid()}-0123abcd")  # killed between rename aside and in
    assert materialise(target, recipe, build) == target
    assert len(builds) == 1 and is_complete(target, recipe)  # restored, not rebuilt


def test_synth_dataset_swap_survives_a_kill_and_uses_unique_temp_names(tmp_path: Path, monkeypatch) -> None:
    import datasets
    from stratos_agent.tools import synth_store

    row = {"prompt": "p", "completion": "c", "answer": "a", "difficulty": "1", "level": 1, "key": "k", "item": "{}"}
    splits = {name: [row] for name in ("train", "val", "test")}
    target = tmp_path / "dataset"
    synth_store._save_hf(splits, target)
    monkeypatch.setattr(synth_store, "replace_folder", killed_between_renames(monkeypatch))
    with pytest.raises(OSError):
        synth_store._save_hf({name: [row, row] for name in splits}, target)
    monkeypatch.setattr(files, "pid_alive", lambda pid: False)  # as seen by the next process
    synth_store.recover_folder(target)
    assert datasets.load_from_disk(str(target))["train"].num_rows == 1  # the old version, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]
    synth_store.write_json(tmp_path / "c.json", {"a": 1})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "dataset"]


# ----------------------------------------------------------------------------------- orphaned servers
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with private_settings(monkeypatch, home=tmp_path / "home", runs_dir=tmp_path / "runs"):
        yield tmp_path / "home"


def test_a_server_whose_deployer_died_during_start_up_is_found_and_stopped(home: Path, tmp_path: Path) -> None:
    """A kill -9 while waiting for the health check leaves no endpoint record: `stratos endpoints` and
    `stratos stop --all` still find the server through the process registry."""
    child = "import time; print('starting', flush=True); time.sleep(120)"
    launch = LaunchSpec(engine="vllm", device="cpu", argv=[sys.executable, "-c", child], model_path=str(tmp_path),
                        served_model_name="orphan", host="127.0.0.1", port=1, max_model_len=16)
    proc, started = server_process.start_server(launch, tmp_path / "state", None)
    try:  # ... and here the deployer is killed: no save_deployment
        listed = deploy.endpoints()
        assert [(dep.name, dep.pid, alive) for dep, alive in listed] == [("orphan", proc.pid, False)]
        assert serving_state.load_deployment("orphan").pid == proc.pid  # `stratos stop orphan` works too
        stopped = deploy.stop(all=True)
        assert [dep.name for dep in stopped] == ["orphan"]
        assert proc.wait(timeout=30) is not None
    finally:
        server_process.stop_group(proc.pid, started, grace_s=1)
    assert deploy.endpoints() == [] and server_process.registered_servers() == []


def test_a_new_server_for_the_same_state_folder_replaces_an_unrecorded_one(home: Path, tmp_path: Path) -> None:
    """Killed twice during start-up: the second start stops the first orphan, so one server is left."""
    launch = LaunchSpec(engine="vllm", device="cpu", argv=[sys.executable, "-c", "import time; time.sleep(120)"],
                        model_path=str(tmp_path), served_model_name="twice", host="127.0.0.1", port=1,
                        max_model_len=16)
    first, first_started = server_process.start_server(launch, tmp_path / "state", None)
    second, second_started = server_process.start_server(launch, tmp_path / "state", None)
    try:
        assert first.wait(timeout=30) is not None
        assert [e["pid"] for e in server_process.registered_servers()] == [second.pid]
    finally:
        server_process.stop_group(first.pid, first_started, grace_s=1)
        server_process.stop_group(second.pid, second_started, grace_s=1)


def test_recorded_endpoints_are_not_listed_twice_and_dead_servers_drop_out(home: Path, tmp_path: Path) -> None:
    launch = LaunchSpec(engine="vllm", device="cpu", argv=[sys.executable, "-c", "import time; time.sleep(120)"],
                        model_path=str(tmp_path), served_model_name="rec", host="127.0.0.1", port=1,
                        max_model_len=16)
    proc, started = server_process.start_server(launch, tmp_path / "state", None)
    try:
        dep = serving_state.unrecorded_servers([])[0]
        serving_state.save_deployment(dep.model_copy(update={"model_fingerprint": "f"}))
        assert [d.model_fingerprint for d in serving_state.list_deployments()] == ["f"]
        proc.kill()  # died on its own, never stopped
        proc.wait()
        time.sleep(0.1)
        assert server_process.registered_servers() == []  # its registry entry is dropped
    finally:
        server_process.stop_group(proc.pid, started, grace_s=1)
