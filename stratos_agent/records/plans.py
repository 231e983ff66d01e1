"""Plan records: teacher/student pair scores, strategy decisions and the Pareto plan itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from stratos_agent.records.servers import LatencyProbe

Strategy = Literal["alignment-seq", "alignment-logit", "injection"]


class StrategyDecision(BaseModel):
    """Which distillation strategy a pair should use, and the numbers behind the decision."""

    strategy: Strategy
    allowed: list[Strategy] = Field(description="Every strategy that is possible for this pair.")
    reason: str
    numbers: dict[str, Any] = Field(default_factory=dict)


class PairScore(BaseModel):
    """One teacher x student candidate, scored for the task (tools/pairing.py explains the formula)."""

    teacher: str
    student: str
    probe_accuracy: float = Field(ge=0, le=1)
    probe_source: Literal["measured", "prior"] = Field(
        description="'measured' = forward-synthesis probe run; 'prior' = documented heuristic, no probe ran."
    )
    teacher_usd_per_1k_tokens: float
    student_params: int
    capacity: float = Field(ge=0, le=1, description="Student accuracy ceiling for the task difficulty.")
    tokenizer_match: bool
    logit_kd: bool = Field(description="Logit-level KD possible (same tokenizer fingerprint).")
    decision: StrategyDecision
    expected_accuracy: float = Field(ge=0, le=1)
    serving_p95_ms: float | None = None
    serving_usd_per_1m_tokens: float | None = None
    score: float


class PlanPoint(BaseModel):
    """One candidate plan: where to train+serve, which pair, which strategy, and its four objectives."""

    server: str = Field(description="ServerOffer.id")
    gpu: str
    gpu_count: int
    teacher: str
    student: str
    strategy: Strategy
    lora_rank: int = Field(description="0 = full fine-tuning.")
    data_size: int
    replicas: int = Field(description="Server instances needed to carry the traffic.")
    cost_usd: float
    cost_training_usd: float
    cost_serving_usd: float
    cost_synthesis_usd: float
    p95_ms: float
    accuracy: float
    train_hours: float
    train_examples: int = Field(default=0, description="Examples the training sees (data size x epochs, or "
                                "the stream budget): what the run is sized to.")
    latency_source: Literal["measured", "modelled"]
    accuracy_low: float | None = Field(default=None, description="95% interval of `accuracy`; None for a prior.")
    accuracy_high: float | None = None
    accuracy_source: Literal["fitted", "measured", "prior"] = Field(
        default="prior", description="measured = read off recorded runs at that budget; fitted = a learning "
        "curve fitted on recorded runs (tools/calibration.py); prior = no measurement (tools/pairing.py)."
    )
    accuracy_runs: int = Field(default=0, description="Recorded runs the accuracy rests on.")
    accuracy_note: str = ""
    train_hours_source: Literal["measured", "modelled"] = Field(
        default="modelled", description="measured = this machine's recorded throughput for the student and "
        "method; modelled = roofline (rescaled by that throughput when there is one)."
    )

    @property
    def is_local(self) -> bool:
        return self.server.startswith("local:")

    def label(self) -> str:
        """The one way a plan point is named (gates, reports, CLI)."""
        rank = "full" if self.lora_rank == 0 else f"LoRA r{self.lora_rank}"
        return (
            f"{self.gpu} x{self.gpu_count} ({self.server}): {self.student} <- {self.teacher}, "
            f"{self.strategy}, {rank}, n={self.data_size}"
        )


class Plan(BaseModel):
    """The Pareto front over candidate plans, the chosen point and why."""

    task: str
    preference: str
    chosen: PlanPoint | None = Field(description="None when no candidate satisfies the constraints.")
    front: list[PlanPoint]
    why: str = Field(description="One paragraph: what the choice traded for what (or why nothing fits).")
    feasible: bool
    binding_constraints: list[str] = Field(default_factory=list)
    nearest_feasible: list[str] = Field(default_factory=list, description="Hints when infeasible.")
    candidates: int
    excluded: dict[str, int] = Field(default_factory=dict, description="Reason -> number of plans dropped.")
    pairs: list[PairScore] = Field(default_factory=list)
    catalog_date: str
    catalog_age_days: int
    created: str
    catalog_plan: Plan | None = Field(
        default=None, description="The same spec planned over the whole catalog, when this plan was "
        "restricted to where this agent can execute (shows what a cloud run would trade)."
    )
    latency_probes: list[LatencyProbe] = Field(
        default_factory=list, description="Students timed through the serving engine on this machine before "
        "the plan was chosen (their p95 replaces the roofline's in this plan)."
    )


class PairTable(BaseModel):
    """What `score_pairs` found: every teacher x student pair scored, best first, and the probes."""

    pairs: list[PairScore]
    probes: dict[str, float] = Field(default_factory=dict, description="Teacher -> probe accuracy.")
    probe_n: int = 0
