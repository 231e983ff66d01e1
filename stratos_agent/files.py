"""Writing files and folders so that a kill at any moment leaves the old version or the new one, never half
of one; and names that are safe to use as one folder under a root.

Temporary siblings carry the writer's pid in their name (`.NAME.tmp-PID-HEX`), so two writers never
clobber each other's half-written copy and a later writer can tell a dead writer's leftovers (removable)
from a live one's (not its to touch).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from stratos_agent.errors import InputError

_ASIDE = "old"  # the previous version of a folder while a new one is swapped in: `.NAME.old-PID-HEX`
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def check_name(name: str, what: str = "name") -> str:
    """`name` if it is safe as one folder name under a root (no separators, no `..`, no leading dot or dash);
    an InputError naming the rule otherwise."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise InputError(
            f"{what} {name!r} is not allowed: use 1-80 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, and no '..'"
        )
    return name


def temp_sibling(path: Path, kind: str = "tmp") -> Path:
    """A unique hidden sibling of `path` that names this process (see `sweep_leftovers`)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (the directory entry, not only the file's bytes)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def open_atomic(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """A handle on a uniquely named sibling of `path`; on a clean exit it is fsynced and renamed over `path`
    (parents created), on an error it is removed and `path` keeps its old version. For writers that stream
    (rows, CSV, torch.save); the unique name lets two writers race without clobbering each other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a uniquely named sibling, fsync it, and rename it over `path` (creating parents)."""
    with open_atomic(path) as fh:
        fh.write(text)
    return Path(path)


def write_text_new(path: Path, text: str) -> Path:
    """Write `text` as a new file `path`, never overwriting one that exists (FileExistsError then): a
    complete, fsynced temp is hard-linked to the name, so a reader never sees half of it."""
    path = Path(path)
    tmp = write_text_atomic(temp_sibling(path), text)  # complete and fsynced before it gets its name
    try:
        os.link(tmp, path)  # fails rather than overwrite an existing file
    except FileExistsError:
        raise
    except OSError:  # a filesystem without hard links: only a create-if-absent rename is left
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def build_folder(target: Path, fill: Callable[[Path], None]) -> Path:
    """Put a folder at `target` that `fill(tmp)` writes into a uniquely named empty sibling first: the old
    version stays in place until the new one is complete (`replace_folder`); a failing `fill` leaves it
    untouched and its half-written sibling removed."""
    target = Path(target)
    recover_folder(target)  # leftovers of a killed writer (an old version aside goes back first)
    tmp = temp_sibling(target)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        return replace_folder(tmp, target, restore_on_error=True)
    finally:
        _remove(tmp)  # gone already after a successful swap


def replace_folder(new: Path, target: Path, *, restore_on_error: bool = False) -> Path:
    """Put the complete folder `new` at `target`, never deleting the old version before the new one is in.

    Rename the old one aside, rename the new one in, then delete the old one: a kill between the two
    renames leaves the old version aside, and `recover_folder` puts it back. With `restore_on_error`, a
    second rename that raises (rather than a kill) puts the old one back at once: `recover_folder` leaves a
    live process's aside alone, so otherwise `target` would stay missing while this process runs."""
    aside = temp_sibling(target, _ASIDE) if target.exists() else None
    if aside is not None:
        os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        if restore_on_error and aside is not None:
            os.replace(aside, target)
        raise
    fsync_dir(target.parent)
    if aside is not None:
        _remove(aside)
    return target


def recover_folder(target: Path) -> None:
    """Undo what a killed writer left next to `target`: its old version aside while `target` is missing
    goes back in place; other leftovers of dead writers (temp folders and files, stale asides) go."""
    if not target.parent.is_dir():
        return
    for path in sweep_leftovers(target):
        if _LEFTOVER.match(path.name)["kind"] == _ASIDE and not target.exists():
            os.replace(path, target)  # the last complete version (a crash leaves at most one aside)
        else:
            _remove(path)


def sweep_leftovers(target: Path) -> list[Path]:
    """Temporary siblings of `target` whose writer process is gone (never a live writer's)."""
    found = []
    for path in target.parent.glob(f".{glob_escape(target.name)}.*"):
        match = _LEFTOVER.match(path.name)
        if match and match["name"] == target.name and not pid_alive(int(match["pid"])):
            found.append(path)
    return found


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
