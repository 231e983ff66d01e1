"""Atomic, locked folder builds: a half-written or outdated folder is never used."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from stratos_agent.models.atomic import MARKER, is_complete, materialise, read_marker

RECIPE = {"kind": "test", "version": 1}


def _write_build(log: Path, pause: float = 0.0):
    """A build that writes one file, optionally pauses, and logs each call (one line per build)."""

    def build(tmp: Path) -> dict:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        (tmp / "weights.bin").write_bytes(b"x" * 1000)
        time.sleep(pause)
        return {"pid": os.getpid()}

    return build


def test_builds_once_and_reuses(tmp_path):
    target, log = tmp_path / "model", tmp_path / "log"
    assert materialise(target, RECIPE, _write_build(log)) == target
    assert materialise(target, RECIPE, _write_build(log)) == target
    assert log.read_text().count("\n") == 1
    assert (target / "weights.bin").stat().st_size == 1000
    assert read_marker(target)["facts"]["pid"] == os.getpid()


def test_failed_build_leaves_nothing_and_next_call_builds(tmp_path):
    target = tmp_path / "model"

    def broken(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        materialise(target, RECIPE, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
    materialise(target, RECIPE, _write_build(tmp_path / "log"))  # the lock was released
    assert is_complete(target, RECIPE)


def test_folder_without_marker_is_rebuilt(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"truncated")  # e.g. copied by hand or an older tool
    assert not is_complete(target, RECIPE)
    materialise(target, RECIPE, _write_build(tmp_path / "log"))
    assert (target / "weights.bin").stat().st_size == 1000
    assert (target / MARKER).exists()


def test_outdated_recipe_is_rebuilt(tmp_path):
    target, log = tmp_path / "model", tmp_path / "log"
    materialise(target, RECIPE, _write_build(log))
    materialise(target, RECIPE | {"version": 2}, _write_build(log))
    assert log.read_text().count("\n") == 2
    assert is_complete(target, RECIPE | {"version": 2}) and not is_complete(target, RECIPE)


def _materialise_in_child(target: str, log: str, pause: float) -> None:
    materialise(Path(target), RECIPE, _write_build(Path(log), pause))


def test_two_processes_build_once(tmp_path):
    target, log = tmp_path / "model", tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_materialise_in_child, args=(str(target), str(log), 0.5)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert log.read_text().count("\n") == 1  # the second process waited on the lock, then reused
    assert is_complete(target, RECIPE)


def test_killed_builder_is_never_used(tmp_path):
    """A builder killed mid-build (SIGKILL) leaves only a temp sibling; the next caller rebuilds."""
    target, log = tmp_path / "model", tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=_materialise_in_child, args=(str(target), str(log), 60.0))
    proc.start()
    deadline = time.monotonic() + 20
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert not target.exists()
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())  # the half-written build is still there
    materialise(target, RECIPE, _write_build(log))  # the kernel released the dead builder's lock
    assert is_complete(target, RECIPE)
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())  # and the leftover was cleaned
