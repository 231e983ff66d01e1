"""Evaluation records: one model on one held-out file (`EvalReport`), and models side by side with
trivial baselines (`Comparison`), so a ratio is never quoted against a degenerate teacher alone. A run judges
its student on two hold-outs: the even mix over the task's difficulty buckets (`Comparison` itself) and the
task's natural mix (`Comparison.natural`), each next to its own baselines."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Proportion(BaseModel):
    """A rate with its 95% Wilson score interval (sound at 0%, 100% and small n, unlike +-1.96 SE)."""

    value: float = Field(ge=0, le=1)
    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    successes: int
    n: int


class DifficultyRow(BaseModel):
    difficulty: str
    n: int
    exact_match: Proportion
    mean_f1: float


class Sample(BaseModel):
    """One graded output, kept for the first few items so a report can be read by eye."""

    prompt: str
    output: str
    gold: str
    exact: bool
    parsed: bool


class EvalReport(BaseModel):
    task: str
    model: str = Field(description="Model folder / registry id, or the endpoint's model name.")
    endpoint: str | None = None
    data: str
    n: int
    exact_match: float = Field(ge=0, le=1, description="Share of items whose parsed answer equals the gold one.")
    exact_match_ci: Proportion
    mean_f1: float = Field(description="Mean partial credit (set-F1 for Mahjong); unparsable counts 0.")
    parse_failure_rate: float
    by_difficulty: list[DifficultyRow]
    latency_p50_ms: float
    latency_p95_ms: float
    tokens_per_s: float = Field(description="Generated tokens / generation wall time.")
    generated_tokens: int
    wall_s: float
    batch_size: int | None = Field(default=None, description="Local batches: latency is the batch's wall time.")
    concurrency: int | None = None
    max_new_tokens: int
    samples: list[Sample] = Field(default_factory=list)
    item_exact: list[bool] = Field(default_factory=list, description="Per item, in file order (paired tests).")

    def headline(self) -> str:
        ci = self.exact_match_ci
        return (
            f"{self.model}: exact match {self.exact_match:.1%} (95% CI {ci.low:.1%}-{ci.high:.1%}, n={self.n}), "
            f"parse failures {self.parse_failure_rate:.1%}, p50 {self.latency_p50_ms:.0f} ms, "
            f"{self.tokens_per_s:.1f} tok/s"
        )


class BaselineScore(BaseModel):
    """A constant answer scored on the same items (e.g. always 'none'; always the most common tile)."""

    name: str
    answer_text: str
    exact_match: Proportion
    mean_f1: float
    by_difficulty: dict[str, float]


class Comparison(BaseModel):
    """Student vs teacher vs trivial baselines on the same held-out items."""

    task: str
    data: str
    n: int
    student: EvalReport
    teacher: EvalReport | None = None
    baselines: list[BaselineScore]
    student_over_teacher: float | None = Field(default=None, description="None when the teacher scored 0.")
    student_over_best_baseline: float | None = None
    teacher_skipped: str | None = Field(default=None, description="Why the teacher was not evaluated on these items.")
    natural: Comparison | None = Field(
        default=None, description="The same on the natural-mix hold-out (the task's own generator, unbalanced), "
        "when the dataset has one; None otherwise.")

    def markdown(self) -> str:
        """A table for model cards and reports."""
        rows = [("student", self.student.exact_match, self.student.exact_match_ci)]
        if self.teacher:
            rows.append(("teacher", self.teacher.exact_match, self.teacher.exact_match_ci))
        rows += [(f"baseline: {b.name}", b.exact_match.value, b.exact_match) for b in self.baselines]
        lines = [
            f"Task `{self.task}`, {self.n} held-out items (`{self.data}`).",
            "",
            "| model | exact match | 95% CI |",
            "|---|---|---|",
            *(f"| {name} | {em:.1%} | {ci.low:.1%}-{ci.high:.1%} |" for name, em, ci in rows),
        ]
        if self.student_over_teacher is not None:
            lines += ["", f"Student / teacher: {self.student_over_teacher:.2f}x"]
        if self.teacher_skipped:
            lines += ["", f"Teacher not evaluated: {self.teacher_skipped}."]
        if self.natural is not None:
            lines += ["", "Natural mix (the task's own generator, unbalanced):", "", self.natural.markdown()]
        return "\n".join(lines)


class GoalCheck(BaseModel):
    """The result gate: a measured result against the user's goal, before anything goes live.

    The goal is `min_accuracy` when the user gave one; otherwise beating every trivial baseline and the
    teacher, with the 95% interval's lower bound above the best baseline. Latency is the plan's p95
    (measured on this machine or modelled, as the plan says) against the spec's target."""

    met: bool
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    n: int
    goal: str = Field(description="The goal in words, e.g. 'exact match >= 40%'.")
    target: float = Field(description="What the accuracy (min_accuracy) or its lower bound (baselines) must pass.")
    best_baseline: str | None = None
    best_baseline_accuracy: float | None = None
    teacher_accuracy: float | None = None
    p95_ms: float | None = Field(default=None, description="The p95 the latency goal was checked with.")
    p95_source: str | None = None
    p95_target_ms: float | None = None
    reasons: list[str] = Field(default_factory=list, description="Each condition, met or missed, in words.")
    natural: Proportion | None = Field(default=None, description="Exact match on the natural-mix hold-out.")
    natural_best_baseline: str | None = None
    natural_best_baseline_accuracy: float | None = None
    natural_beats_baselines: bool | None = Field(
        default=None, description="Reported, does not decide `met`: the natural-mix 95% lower bound is above its "
        "best trivial baseline (Mahjong: the empty answer). None without a natural-mix hold-out.")
    reported: list[str] = Field(default_factory=list, description="Checks shown with the goal that do not decide it.")


class Adaptation(BaseModel):
    """One recorded decision of the result gate."""

    round: int = Field(description="1 = the first round after the planned training.")
    decision: str = Field(description="'train on' or 'stop'.")
    reason: str
    model_dir: str | None = Field(default=None, description="The weights the next round starts from.")
    accuracy: float
    train_seconds: float = Field(default=0.0, description="Training time of the round that was judged.")
