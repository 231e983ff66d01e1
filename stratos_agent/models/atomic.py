"""Build a folder once, atomically, safely across processes.

The folder is built in a temporary sibling, a completion marker (the recipe as JSON) is written
last, and the sibling is swapped into place (`files.replace_folder`: the old version is renamed aside,
never deleted before the new one is in). Readers only trust a folder whose marker matches the recipe,
so a half-written or outdated folder is rebuilt, never used. An exclusive `fcntl` lock serialises
builders (two processes asking at once build it once).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stratos_agent.files import recover_folder, replace_folder, temp_sibling, write_text_atomic

MARKER = ".stratos-complete.json"


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, recipe: dict[str, Any]) -> bool:
    marker = read_marker(folder)
    return marker is not None and marker.get("recipe") == recipe


@contextmanager
def folder_lock(target: Path) -> Iterator[None]:
    """Exclusive inter-process lock for building `target` (a sibling `.lock` file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def materialise(
    target: Path,
    recipe: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | None],
) -> Path:
    """Return `target`, building it with `build(tmp_dir)` first unless a complete copy exists.

    `build` fills the empty folder it is given and may return extra facts (e.g. a tokenizer
    fingerprint) to store in the marker next to the recipe.
    """
    if is_complete(target, recipe):
        return target
    with folder_lock(target):
        recover_folder(target)  # a builder killed mid-swap left the old version aside: put it back
        if is_complete(target, recipe):  # another process built it while we waited
            return target
        tmp = temp_sibling(target)
        tmp.mkdir(parents=True)
        try:
            facts = build(tmp) or {}
            marker = {"recipe": recipe, "facts": facts, "built_at": time.time()}
            write_text_atomic(tmp / MARKER, json.dumps(marker, indent=1))
            replace_folder(tmp, target)  # an incomplete or outdated folder is replaced as a whole
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
