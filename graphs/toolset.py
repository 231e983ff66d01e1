"""The tools the planner may call: argument schemas, what each needs first, what it produces.

Each tool is a `ToolSpec`: a pydantic argument schema (bound to the chat model as its tool schema and
used to validate every call), the state slot it fills, the slots it requires (the order guard), whether
it spends money (the plan-approval gate comes before the first one), and the adapter that runs it.
Adapters live in `graphs.adapters`; tests swap in their own `Toolset` to drive the graph fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field

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
    """What an adapter sees: the state (read-only), the run folder, and whether to be small."""

    state: AgentState
    run_dir: Path

    @property
    def spec(self) -> dict[str, Any]:
        return self.state.get("spec") or {}


@dataclass
class ToolOutcome:
    """What an adapter returns: the state slot value and a short summary for the planner."""

    value: dict[str, Any]
    summary: dict[str, Any]
    note: str = ""


Adapter = Callable[[ToolContext, Any], ToolOutcome]
Estimator = Callable[[ToolContext, Any], "CostEstimate"]


@dataclass(frozen=True)
class CostEstimate:
    usd: float
    server: str
    usd_per_hour: float


def _no_cost(ctx: ToolContext, args: Any) -> CostEstimate:
    return CostEstimate(0.0, "this machine", 0.0)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    args: type[_Args]
    produces: str  # the state slot it fills
    requires: tuple[str, ...]  # slots that must be filled first
    run: Adapter
    estimate: Estimator = _no_cost
    spends: bool = False  # needs the approved plan first
    needs_deploy_approval: bool = False
    clears: tuple[str, ...] = ()  # later slots made stale when this one is redone
    # The arguments the rule planner proposes (from the spec/plan); shown to LLM planners too.
    suggest: Callable[[ToolContext], dict[str, Any]] | None = None
    # What in the state decides the result besides the arguments (the idempotency key); default: `requires`.
    key_inputs: Callable[[Any], Any] | None = None

    @property
    def description(self) -> str:
        return (self.args.__doc__ or self.name).strip()


@dataclass
class Toolset:
    specs: dict[str, ToolSpec] = field(default_factory=dict)

    def __getitem__(self, name: str) -> ToolSpec:
        return self.specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def names(self) -> list[str]:
        return list(self.specs)

    def openai_tools(self) -> list[dict[str, Any]]:
        """Tool schemas as OpenAI function definitions (what `bind_tools` sends to the model)."""
        out = []
        for spec in self.specs.values():
            tool = convert_to_openai_tool(spec.args)
            tool["function"]["name"] = spec.name
            tool["function"]["description"] = spec.description
            out.append(tool)
        return out
