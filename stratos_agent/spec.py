"""The user's request in structured form: what to distil and under which constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Preference = Literal["balanced", "cheaper", "faster", "accurate"]


class Constraints(BaseModel):
    """Hard limits a plan must respect. `None` means "not constrained"."""

    model_config = ConfigDict(extra="forbid")

    budget_usd: float | None = Field(default=None, gt=0, description="Total $ for training + serving.")
    p95_latency_ms: float | None = Field(default=None, gt=0, description="p95 request latency target.")
    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="Task metric floor, 0..1.")
    clouds: list[str] = Field(default_factory=list, description="Allowed providers; empty = any.")
    deadline_hours: float | None = Field(default=None, gt=0, description="Wall time allowed for training.")

    @field_validator("clouds")
    @classmethod
    def _lower(cls, clouds: list[str]) -> list[str]:
        return [c.strip().lower() for c in clouds if c.strip()]


class Traffic(BaseModel):
    """Expected serving load, used to price serving and size replicas."""

    model_config = ConfigDict(extra="forbid")

    qps: float = Field(default=1.0, gt=0, description="Average requests per second.")
    duration_days: float = Field(default=30.0, gt=0, description="How long the endpoint serves.")
    prompt_tokens: int = Field(default=96, gt=0)
    output_tokens: int = Field(default=48, gt=0)
    concurrency: int = Field(default=4, gt=0, description="Concurrent requests to size KV cache for.")


class DistillationSpec(BaseModel):
    """Everything a run needs to know about the user's intent."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task pack name ('mahjong', 'gsm8k') or 'jsonl:PATH' for user data.")
    metric: str = Field(default="exact_match")
    constraints: Constraints = Field(default_factory=Constraints)
    traffic: Traffic = Field(default_factory=Traffic)
    preference: Preference = "balanced"
    teacher: str | None = Field(default=None, description="Force a teacher (registry id / HF id / endpoint).")
    student: str | None = Field(default=None, description="Force a student (registry id / HF id).")
    data_size: int | None = Field(default=None, gt=0, description="Training examples; None = plan decides.")
    request: str | None = Field(default=None, description="The original natural-language request.")


def read_spec_file(path: Path) -> dict[str, Any]:
    """A YAML/JSON file as a mapping (YAML is a superset of JSON); every problem is an InputError that
    names the file and line."""
    import yaml

    from stratos_agent.errors import InputError

    if not path.is_file():
        raise InputError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}:{where} not valid YAML/JSON ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of spec fields, got {type(data).__name__}")
    return data


def validated_spec(data: dict[str, Any], where: str) -> DistillationSpec:
    """`data` as a DistillationSpec; pydantic's errors become one InputError naming `where`."""
    from pydantic import ValidationError

    from stratos_agent.errors import InputError

    try:
        return DistillationSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(
            f"{where}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from exc
