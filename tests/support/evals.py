"""Import a benchmark script of evals/ as a module (its helpers are tested without running it)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

EVALS = Path(__file__).resolve().parents[2] / "evals"


@contextmanager
def eval_module(name: str) -> Iterator[ModuleType]:
    """`evals/<name>.py` imported with evals/ on sys.path (its `_common` import), removed again after."""
    sys.path.insert(0, str(EVALS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(EVALS))
