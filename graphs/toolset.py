"""The tools the planner may call: argument schemas, result records, what each needs first.

Each tool is a `ToolSpec`: a pydantic argument schema (bound to the chat model as its tool schema and
used to validate every call), the record class of its result and the state slot it fills, the slots it
requires (the order guard), whether it spends money (the plan-approval gate comes before the first one),
and the adapter that runs it. The table of specs (graphs/adapters.py) is the one statement of the
lifecycle: the stage order, what a redone stage makes stale, and the planner prompt's tool list derive
from it. Tests swap in their own runners to drive the graph fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field

from stratos_agent.errors import InputError
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.spec import DistillationSpec
from stratos_agent.state import AgentState


class _Args(BaseModel):
    # Unknown keys are refused: a hallucinated argument is a planner error, not something to ignore.
    model_config = ConfigDict(extra="forbid")


class BenchmarkServersArgs(_Args):
    """Measure this machine and model the catalog servers (throughput, latency, memory fit)."""

    refresh: bool = Field(default=False, description="Re-measure even if a cached measurement exists.")


class ScorePairsArgs(_Args):
    """Score teacher x student candidate pairs (probe accuracy, capacity, tokenizer match)."""

    probe_n: int | None = Field(default=None, gt=0, le=2000, description="Probe items per teacher.")


class MakePlanArgs(_Args):
    """Pareto front over (server, pair, strategy) and the chosen plan with its reason."""

    preference: Literal["balanced", "cheaper", "faster", "accurate"] | None = Field(
        default=None, description="Override the spec's preference for choosing on the front."
    )


class SynthesizeDataArgs(_Args):
    """Generate verified training data by reverse synthesis (answers first)."""

    n: int | None = Field(default=None, gt=0, le=200_000, description="Examples; default from the plan.")
    mode: Literal["solver", "teacher", "forward"] | None = Field(
        default=None, description="solver = the task pack writes the rationale; default from the plan."
    )
    seed: int = 0


class TrainStudentArgs(_Args):
    """Train the student on the dataset with the plan's strategy (SFT / LoRA / KD / GRPO)."""

    max_steps: int | None = Field(default=None, gt=0, le=1_000_000, description="Default from the plan.")
    learning_rate: float | None = Field(default=None, gt=0, lt=1)


class EvaluateStudentArgs(_Args):
    """Evaluate student and teacher side by side on held-out items."""

    n: int | None = Field(
        default=None, gt=0, le=100_000, description="Hold-out items; default from the plan."
    )


class DeployStudentArgs(_Args):
    """Serve the evaluated student as an OpenAI-compatible endpoint and smoke-query it."""

    port: int | None = Field(default=None, gt=0, lt=65536)


@dataclass(frozen=True)
class ToolContext:
    """What an adapter sees: the state (read-only) and the run folder, with typed views of the records."""

    state: AgentState
    run_dir: Path

    @property
    def spec(self) -> DistillationSpec:
        spec = self.state.get("spec")
        if spec is None:
            raise InputError("the run has no spec yet")
        return spec

    @property
    def plan(self) -> Plan | None:
        return self.state.get("plan")

    @property
    def chosen(self) -> PlanPoint | None:
        plan = self.plan
        return plan.chosen if plan else None

    @property
    def runs_locally(self) -> bool:
        return self.chosen is None or self.chosen.is_local

    def need(self, slot: str) -> Any:
        """A stage record the guard has already checked is there."""
        value = self.state.get(slot)  # type: ignore[misc]
        if value is None:
            raise InputError(f"the run has no {slot} yet")
        return value


@dataclass
class ToolOutcome:
    """What an adapter returns: the stage record and a short summary for the planner."""

    record: BaseModel
    summary: dict[str, Any]
    note: str = ""


Adapter = Callable[[ToolContext, Any], ToolOutcome]
Estimator = Callable[[ToolContext, Any], "CostEstimate"]


@dataclass(frozen=True)
class CostEstimate:
    usd: float
    server: str
    usd_per_hour: float


def no_cost(ctx: ToolContext, args: Any) -> CostEstimate:
    return CostEstimate(0.0, "this machine", 0.0)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    args: type[_Args]
    record: type[BaseModel]  # the class every result is validated into
    produces: str  # the state slot it fills
    requires: tuple[str, ...]  # slots that must be filled first
    run: Adapter
    estimate: Estimator = no_cost
    spends: bool = False  # needs the approved plan first
    needs_deploy_approval: bool = False
    # The arguments the planner is offered (from the spec/plan); unset arguments of a call get them too.
    suggest: Callable[[ToolContext], dict[str, Any]] | None = None
    # What in the state decides the result besides the arguments (the idempotency key); default: `requires`.
    key_inputs: Callable[[AgentState], Any] | None = None

    @property
    def description(self) -> str:
        return (self.args.__doc__ or self.name).strip()

    def resolve_args(self, ctx: ToolContext, given: dict[str, Any]) -> _Args:
        """The call's arguments validated, with the suggested value for every one the caller left unset."""
        args = self.args.model_validate(given)
        if self.suggest is None:
            return args
        unset = {k: v for k, v in self.suggest(ctx).items() if getattr(args, k, None) is None}
        return args.model_copy(update=unset)


@dataclass
class Toolset:
    specs: dict[str, ToolSpec] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ToolSpec:
        return self.specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def names(self) -> list[str]:
        return list(self.specs)

    def stages(self) -> tuple[str, ...]:
        """The state slots in lifecycle order."""
        return tuple(spec.produces for spec in self.specs.values())

    def later(self, slot: str) -> tuple[str, ...]:
        """The slots after `slot`: stale once it is redone."""
        stages = self.stages()
        return stages[stages.index(slot) + 1 :]

    def producers(self, slots: list[str]) -> list[str]:
        return [spec.name for spec in self.specs.values() if spec.produces in slots]

    def lifecycle_text(self) -> str:
        """The numbered tool list the planner prompt shows."""
        width = max(len(name) for name in self.specs)
        return "\n".join(
            f"{i}. {spec.name:<{width}} - {spec.description.rstrip('.')}"
            for i, spec in enumerate(self.specs.values(), 1)
        )

    def openai_tools(self) -> list[dict[str, Any]]:
        """Tool schemas as OpenAI function definitions (what `bind_tools` sends to the model)."""
        out = []
        for spec in self.specs.values():
            tool = convert_to_openai_tool(spec.args)
            tool["function"]["name"] = spec.name
            tool["function"]["description"] = spec.description
            out.append(tool)
        return out
