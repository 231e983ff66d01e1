"""Calibration records: what training runs measured, so that plans predict from measurements.

Every training run (and every pilot before a plan) records a `LearningCurve`: validation exact match
against examples seen, and the run's throughput, on a hardware fingerprint. The planner fits these
(tools/calibration.py) to predict a candidate's accuracy for a budget of examples and its training time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# Where a curve's validation items came from: a run's exact match moves with the mix it is scored on (the
# micro-6m run of evals/mahjong_quality.py: 46% on an even hold-out, 28% on a natural one), so curves
# scored on different mixes are not interchangeable.
ValidationMix = Literal["even", "natural", "dataset", "unknown"]
# How the curves behind a prediction compare with the run predicted (tools/calibration.comparable).
CurveMatch = Literal["same", "other recipe", "other validation mix", "other validation mix and recipe", "any"]


class CurvePoint(BaseModel):
    """One validation measurement during a run."""

    examples: int = Field(ge=0, description="Training examples seen so far (steps x batch).")
    exact: float = Field(ge=0, le=1, description="Validation exact match at that point.")
    n: int = Field(gt=0, description="Validation items scored.")
    seconds: float = Field(ge=0, description="Training wall time so far (validation time excluded).")


class LearningCurve(BaseModel):
    """A run's learning curve and throughput: the unit the calibration store keeps."""

    task: str = Field(description="Task pack name, e.g. 'mahjong'.")
    student: str = Field(description="Registry id of the student as trained.")
    method: str = Field(description="Training method key, e.g. 'sft-lora16', 'sft-full', 'stream-full'.")
    hardware: str = Field(description="HardwareFingerprint.key of the machine it ran on.")
    examples_per_s: float = Field(gt=0, description="Measured training throughput (examples/s).")
    points: list[CurvePoint] = Field(default_factory=list)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    kind: Literal["run", "pilot", "sweep"] = "run"
    run: str = Field(description="Where it came from: a run folder or benchmark name.")
    created: str = Field(description="UTC ISO time.")
    start_examples: int = Field(
        default=0, ge=0, description="Examples already seen when this process began (a resumed run): "
        "`seconds` counts from there, so throughput = (examples - start_examples) / seconds."
    )
    validation: str = Field(default="", description="What the points were scored on (items, seed, tokens).")
    validation_mix: ValidationMix = Field(
        default="unknown", description="Where the validation items came from: 'even' = drawn even over the "
        "pack's difficulty buckets, 'natural' = the pack's own generator, 'dataset' = the val split of the run's "
        "data (the agent's runs), 'unknown' = not recorded (curves written before this field).",
    )
    recipe: dict[str, str | float] = Field(
        default_factory=dict, description="Training knobs beyond learning_rate and batch_size that move the "
        "curve (tools/curve_conditions.recipe_of): 'schedule', and for a stream 'stream_mix' (natural share) and "
        "'weighting'. {} = not recorded.",
    )
    load_avg: float | None = Field(
        default=None, description="1-minute load average over the run (shared CPUs: throughput varies with it)."
    )
    pooled: str = Field(
        default="", description="The evaluation of the final model pooled into the last point (e.g. 'test split, "
        "n=100'); '' = the last point is validation only."
    )

    @property
    def final(self) -> CurvePoint | None:
        return self.points[-1] if self.points else None


class Prediction(BaseModel):
    """A predicted figure with its interval and where it comes from."""

    value: float
    low: float
    high: float
    source: Literal["fitted", "measured", "prior"] = Field(
        description="fitted = a curve fitted on measured runs; measured = read off a run at that budget; "
        "prior = no measurement applies (the plan says so)."
    )
    curves: int = Field(default=0, description="How many recorded curves the figure rests on.")
    match: CurveMatch = Field(
        default="any", description="How the curves behind the figure compare with the run predicted: 'same' "
        "validation mix and recipe, 'other ...' (a fallback, with a wider interval), or 'any' (the caller named "
        "no conditions).",
    )
    note: str = ""

    @property
    def label(self) -> str:
        """'fitted', 'measured (other validation mix)', ...: the source, qualified when the curves differ."""
        return self.source if self.match in ("same", "any") else f"{self.source} ({self.match})"
