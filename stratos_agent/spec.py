"""The user's request in structured form: what to distil and under which constraints."""

from __future__ import annotations

from typing import Literal

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
