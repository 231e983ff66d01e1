"""Shared test set-up: one torch thread (2 shared cores), and runs kept out of the work tree."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("STRATOS_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.set_num_threads(1)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs directory for the test (the model cache stays shared: converting is slow)."""
    path = tmp_path / "runs"
    monkeypatch.setenv("STRATOS_RUNS_DIR", str(path))
    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()
