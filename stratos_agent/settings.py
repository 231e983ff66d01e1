"""Where Stratos keeps things and how it talks to the outside, from environment variables.

Every path and endpoint has one place to come from, so tests can point a whole run at a temporary
folder by setting `STRATOS_HOME` / `STRATOS_RUNS_DIR`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from stratos_agent.errors import InputError
from stratos_agent.redact import register_secret


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


class Settings(BaseModel):
    """Run-time configuration. Build it with `Settings.from_env()` or `get_settings()`."""

    cache_dir: Path = Field(description="Converted models, teacher-call cache, benchmark caches.")
    runs_dir: Path = Field(description="One folder per run: data, checkpoints, reports, logs.")
    threads: int | None = Field(default=None, description="torch intra-op threads; None = torch default.")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint (planner/teacher).")
    openai_api_key: SecretStr | None = None
    planner_model: str | None = None
    teacher_model: str | None = None
    offline: bool = Field(default=False, description="Never try the network for hub models.")

    @classmethod
    def from_env(cls) -> Settings:
        home = _env_path("STRATOS_HOME", Path.home() / ".cache" / "stratos")
        threads = os.environ.get("STRATOS_THREADS")
        key = os.environ.get("OPENAI_API_KEY")
        return cls(
            cache_dir=_env_path("STRATOS_CACHE_DIR", home),
            runs_dir=_env_path("STRATOS_RUNS_DIR", Path.cwd() / "runs"),
            threads=int(threads) if threads else None,
            openai_base_url=os.environ.get("OPENAI_BASE_URL") or None,
            openai_api_key=SecretStr(key) if key else None,
            planner_model=os.environ.get("STRATOS_PLANNER_MODEL") or None,
            teacher_model=os.environ.get("STRATOS_TEACHER_MODEL") or None,
            offline=os.environ.get("HF_HUB_OFFLINE", "") in {"1", "true", "yes"}
            or os.environ.get("STRATOS_OFFLINE", "") in {"1", "true", "yes"},
        )

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def teacher_cache_dir(self) -> Path:
        return self.cache_dir / "teacher-calls"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def apply_thread_settings(threads: int | None = None) -> None:
    """Pin torch's thread count (2 shared cores: any oversubscription slows everything 4-20x)."""
    n = threads if threads is not None else get_settings().threads
    if n:
        import torch

        torch.set_num_threads(n)


def api_key_from(value: str | None, file: Path | None) -> str | None:
    """The key given as a value (flag or environment) or kept in a file (`--api-key-file`), not both.

    A file holds the key alone; its trailing newline is dropped. The key is registered for redaction,
    so no message that echoes it can leak it."""
    if value is not None and file is not None:
        raise InputError("give the API key once: --api-key (or its environment variable) or --api-key-file")
    if file is not None:
        try:
            value = file.expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the API key file {file}: {exc}") from exc
    register_secret(value)
    return value


def mask_secret(value: str | None) -> str:
    """Show that a key is set without showing it: 'sk-a...9f (len 51)'."""
    if not value:
        return "(not set)"
    if len(value) <= 8:
        return "****"
    return f"{value[:4]}...{value[-2:]} (len {len(value)})"
