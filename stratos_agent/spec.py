"""The user's request in structured form: what to distil and under which constraints.

Validation happens here, once, for every way a spec arrives (a request, a YAML file, an edit at a gate,
a chat edit): numbers must be finite and within the bounds below, the task a registered pack or an
existing JSONL file. Checks that look outside the spec (the cloud list, the model registry, the file
system) run only when the data is user input, i.e. validated with `INPUT_CONTEXT` (`validated_spec`):
a checkpointed spec is revived with plain validation, so a run stays readable after its data file moved.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

Preference = Literal["balanced", "cheaper", "faster", "accurate"]

# Sane bounds: a value beyond them is a typo or an attempt to switch a guard off, never a real plan.
MAX_BUDGET_USD = 1_000_000.0
MAX_LATENCY_MS = 3_600_000.0  # an hour
MAX_DEADLINE_HOURS = 24.0 * 365
MAX_QPS = 100_000.0
MAX_SERVE_DAYS = 3650.0
MAX_TOKENS = 131_072
MAX_CONCURRENCY = 10_000
MAX_DATA_SIZE = 10_000_000
INPUT_CONTEXT = {"user_input": True}  # validation context: also run the checks that look outside the spec
TASK_FILE_SUFFIX = ".jsonl"


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is exactly `message` (pydantic prefixes a ValueError's)."""
    return PydanticCustomError("invalid_spec", message.replace("{", "(").replace("}", ")"))


def _is_input(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("user_input"))


class Constraints(BaseModel):
    """Hard limits a plan must respect. `None` means "not constrained"."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    budget_usd: float | None = Field(
        default=None, gt=0, le=MAX_BUDGET_USD, description="Total $ for training + serving."
    )
    p95_latency_ms: float | None = Field(
        default=None, gt=0, le=MAX_LATENCY_MS, description="p95 request latency target."
    )
    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="Task metric floor, 0..1.")
    clouds: list[str] = Field(default_factory=list, description="Allowed providers; empty = any.")
    deadline_hours: float | None = Field(
        default=None, gt=0, le=MAX_DEADLINE_HOURS, description="Wall time allowed for training."
    )

    @field_validator("clouds")
    @classmethod
    def _known_clouds(cls, clouds: list[str], info: ValidationInfo) -> list[str]:
        names = [c.strip().lower() for c in clouds if c.strip()]
        if _is_input(info):
            from stratos_agent.catalog import SKY_CLOUDS

            known = {*SKY_CLOUDS, "local"}
            unknown = [c for c in names if c not in known]
            if unknown:
                raise _invalid(f"unknown cloud(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return names


class Traffic(BaseModel):
    """Expected serving load, used to price serving and size replicas."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    qps: float = Field(default=1.0, gt=0, le=MAX_QPS, description="Average requests per second.")
    duration_days: float = Field(default=30.0, gt=0, le=MAX_SERVE_DAYS, description="How long the endpoint serves.")
    prompt_tokens: int = Field(default=96, gt=0, le=MAX_TOKENS)
    output_tokens: int = Field(default=48, gt=0, le=MAX_TOKENS)
    concurrency: int = Field(default=4, gt=0, le=MAX_CONCURRENCY, description="Concurrent requests to size KV cache for.")


class DistillationSpec(BaseModel):
    """Everything a run needs to know about the user's intent."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    task: str = Field(description="Task pack name ('mahjong', 'gsm8k') or 'jsonl:PATH' for user data.")
    metric: Literal["exact_match"] = Field(default="exact_match", description="The only metric evaluated.")
    constraints: Constraints = Field(default_factory=Constraints)
    traffic: Traffic = Field(default_factory=Traffic)
    preference: Preference = "balanced"
    teacher: str | None = Field(default=None, description="Force a teacher (registry id / HF id / endpoint).")
    student: str | None = Field(default=None, description="Force a student (registry id / HF id).")
    data_size: int | None = Field(
        default=None, gt=0, le=MAX_DATA_SIZE, description="Training examples; None = plan decides."
    )
    request: str | None = Field(default=None, description="The original natural-language request.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str, info: ValidationInfo) -> str:
        from stratos_agent.tasks import TASK_PACKS

        name = task.strip()
        prefix, sep, path = name.partition(":")
        if not sep:
            if name.lower() not in TASK_PACKS or name.lower() == "jsonl":
                known = ", ".join(sorted(set(TASK_PACKS) - {"jsonl"}))
                raise _invalid(f"unknown task {task!r}; known: {known}, or jsonl:PATH (your own {TASK_FILE_SUFFIX})")
            return name.lower()
        if prefix.lower() != "jsonl":
            raise _invalid(f"unknown task {task!r}; a file task is written jsonl:PATH")
        _check_task_file(path.strip(), check_exists=_is_input(info))
        return f"jsonl:{path.strip()}"

    @field_validator("teacher", "student")
    @classmethod
    def _known_model(cls, ref: str | None, info: ValidationInfo) -> str | None:
        if ref is None or not _is_input(info):
            return ref
        _check_model_ref(ref.strip(), str(info.field_name))
        return ref.strip()

    @model_validator(mode="after")
    def _student_serves_task(self, info: ValidationInfo) -> DistillationSpec:
        if _is_input(info) and self.student:
            from stratos_agent.models.registry import BUILTINS

            builtin = next((m for m in BUILTINS if m.id == self.student), None)
            if builtin is not None and builtin.task is not None and builtin.task != self.task:
                raise _invalid(f"student {self.student} only serves task {builtin.task}, not {self.task}")
        return self


def _check_task_file(path: str, check_exists: bool) -> None:
    """A user's JSONL: a .jsonl file; a relative path stays below the working folder (no `..`)."""
    if not path:
        raise _invalid("jsonl: needs a path, e.g. jsonl:data/train.jsonl")
    pure = PurePath(path)
    if not pure.name.endswith(TASK_FILE_SUFFIX):
        raise _invalid(f"task file {path!r} must be a {TASK_FILE_SUFFIX} file")
    if not pure.is_absolute() and not path.startswith("~") and ".." in pure.parts:
        raise _invalid(f"task file {path!r} climbs out of the working folder with '..'; give an absolute path")
    if check_exists and not Path(path).expanduser().is_file():
        raise _invalid(f"task file {path} does not exist")


def _check_model_ref(ref: str, role: str) -> None:
    """A built-in id (in a role it can play), `endpoint:MODEL`, an `org/name` HF id, or an existing local
    folder / .gguf file. A bare unknown name is refused: it would only fail later, at download time."""
    from stratos_agent.errors import InputError
    from stratos_agent.models.hub import HF_ID
    from stratos_agent.models.registry import ENDPOINT_PREFIX, get_registry

    registry = get_registry()
    builtin = registry.builtins.get(ref)
    if builtin is not None:
        if role not in builtin.roles:
            raise _invalid(f"{ref} cannot be a {role} (it can be: {', '.join(builtin.roles)})")
        return
    if ref.startswith(ENDPOINT_PREFIX):
        if role == "student":
            raise _invalid("an endpoint has no weights to train; it can only be a teacher")
        if not HF_ID.fullmatch(ref.removeprefix(ENDPOINT_PREFIX)):
            raise _invalid(f"{ref!r} is not endpoint:MODEL (a model name at the OpenAI-compatible endpoint)")
        return
    path_like = ref.startswith(("/", ".", "~")) or ref.endswith(".gguf")
    if not path_like and not ("/" in ref and HF_ID.fullmatch(ref)):
        known = ", ".join(registry.builtins)
        raise _invalid(f"unknown model {ref!r}: not a built-in ({known}), an org/name HF id, "
                         "endpoint:MODEL or a local folder")
    try:
        registry.kind(ref)  # a path-like reference must exist
    except InputError as exc:
        raise _invalid(str(exc)) from exc


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


def validated_spec(data: dict[str, Any] | DistillationSpec, where: str, *, lookups: bool = True) -> DistillationSpec:
    """`data` checked as user input (`INPUT_CONTEXT`: clouds, models and files looked up too; `lookups=False`:
    values and shape only); pydantic's errors become one InputError naming `where` and each field."""
    from pydantic import ValidationError

    from stratos_agent.errors import InputError

    if isinstance(data, DistillationSpec):
        data = data.model_dump()
    try:
        return DistillationSpec.model_validate(data, context=INPUT_CONTEXT if lookups else None)
    except ValidationError as exc:
        raise InputError(f"{where}: {validation_message(exc)}") from exc


def validation_message(exc: Any) -> str:
    """A pydantic ValidationError as one line: `field.path: what is wrong; ...`."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors()
    )
