"""Test environment helpers shared by conftest.py and the tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def private_settings(monkeypatch: pytest.MonkeyPatch, **folders: Path) -> Iterator[None]:
    """Point STRATOS_<NAME> settings at private folders for one test (settings are re-read after)."""
    from stratos_agent.settings import get_settings

    for name, path in folders.items():
        monkeypatch.setenv(f"STRATOS_{name.upper()}", str(path))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
