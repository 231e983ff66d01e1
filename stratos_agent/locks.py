"""One process at a time: an exclusive lock file that names its holder.

The lock is an `flock` on the file, so the kernel releases it when the holder dies, kill -9 included.
The file also records the holder (pid and process start time) for two reasons: the refusal can say who
holds it, and a lock still held after its holder died (a forked child inherited the descriptor and
outlived it) is recognised as stale by that pid and taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from stratos_agent.errors import InputError


class LockedError(InputError):
    """Another live process holds the lock."""


def _me() -> dict[str, float]:
    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def read_holder(path: Path) -> dict[str, float] | None:
    """Who the file says holds the lock ({"pid", "started"}), or None (free or unreadable)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and "pid" in holder else None
    except (OSError, ValueError):
        return None


def is_live(holder: dict[str, float] | None) -> bool:
    """The holder's process still runs (same pid and start time: a reused pid is not the holder)."""
    if holder is None:
        return False
    try:
        return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder.get("started", 0))) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def live_holder(path: Path) -> int | None:
    """The pid of the live process holding `path`, if any (reads the file only: never disturbs a holder)."""
    holder = read_holder(path)
    return int(holder["pid"]) if is_live(holder) else None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _refuse_unless_stale(path: Path, what: str) -> None:
    """Called while the flock is held by someone: raise LockedError unless the file names a dead holder.
    A file naming nobody belongs to a holder between taking the flock and writing its name (or releasing)."""
    holder = read_holder(path)
    if holder is None or is_live(holder):
        who = f"pid {int(holder['pid'])}" if holder else "a process starting or finishing"
        raise LockedError(f"{what} is in use by another process ({who}); wait for it to finish or stop it, "
                          "then try again")


def _open_locked(path: Path, what: str) -> int:
    """A descriptor holding the exclusive lock on `path`; LockedError if a live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if _try_flock(fd):
        return fd
    os.close(fd)
    _refuse_unless_stale(path, what)
    # Stale: held through a descriptor that outlived its holder. A fresh file (new inode) replaces it,
    # under a guard lock so that two processes cannot both take it over.
    guard = os.open(path.with_name(path.name + ".guard"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if _try_flock(fd):  # released meanwhile, or taken over and released by another process
            return fd
        os.close(fd)
        _refuse_unless_stale(path, what)  # another process took it over first
        fresh = path.with_name(f".{path.name}.{os.getpid()}.new")
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(fresh, path)
        return fd
    finally:
        os.close(guard)


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock `path` for the block, or raise LockedError naming the live holder.
    `what` names the locked thing in the message (e.g. "run r1")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path, what)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a free lock names nobody
    finally:
        os.close(fd)  # closing the descriptor releases the flock
