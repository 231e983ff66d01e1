"""When two learning curves are comparable, and how far repeated runs land apart (tools/calibration.py).

`Conditions`: where a curve's validation items came from and its recipe; `comparable` picks the curves a
prediction reads; `run_spread` measures the run-to-run spread beyond binomial noise on repeated runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from stratos_agent.records.calibration import CurveMatch, LearningCurve, ValidationMix

if TYPE_CHECKING:
    from stratos_agent.records.training import TrainConfig

MIN_POINTS = 3  # points (examples > 0) a curve needs before it counts for a fit


Recipe = tuple[tuple[str, str | float], ...]


@dataclass(frozen=True)
class Conditions:
    """What makes two curves of one (task, student, method) comparable: where the validation items came
    from, and the recipe (learning rate, examples per step, and `recipe_of`'s knobs), as sorted pairs."""

    validation_mix: ValidationMix
    recipe: Recipe

    def mismatch(self, other: Conditions) -> tuple[bool, bool]:
        """(validation mix differs, recipe differs); 'unknown' matches nothing, not even itself."""
        return (self.validation_mix != other.validation_mix or "unknown" in (self.validation_mix, other.validation_mix),
                self.recipe != other.recipe)


def _recipe(learning_rate: float, batch_size: int, knobs: dict[str, str | float]) -> Recipe:
    return tuple(sorted({"learning_rate": float(learning_rate), "batch_size": int(batch_size), **knobs}.items()))


def recipe_of(config: TrainConfig) -> dict[str, str | float]:
    """The knobs (beyond learning rate and batch) a run of `config` records as `LearningCurve.recipe`: the
    schedule, and for a stream the natural share and the difficulty weighting. Warm-up length is left out
    on purpose: it moves the first points, not the level a budget reaches."""
    knobs: dict[str, str | float] = {"schedule": config.lr_scheduler}
    if config.stream:
        knobs |= {"stream_mix": float(config.stream_mix), "weighting": config.stream_weighting}
    return knobs


def planned(validation_mix: ValidationMix, config: TrainConfig) -> Conditions:
    """The conditions a run of `config` will record, validated on `validation_mix`."""
    return Conditions(validation_mix, _recipe(config.learning_rate, config.batch_size * config.grad_accum,
                                              recipe_of(config)))


def conditions_of(curve: LearningCurve) -> Conditions:
    return Conditions(curve.validation_mix, _recipe(curve.learning_rate, curve.batch_size, curve.recipe))


MATCHES: dict[tuple[bool, bool], CurveMatch] = {
    (False, False): "same", (False, True): "other recipe", (True, False): "other validation mix",
    (True, True): "other validation mix and recipe",
}


def comparable(found: list[LearningCurve], target: Conditions | None) -> tuple[list[LearningCurve], CurveMatch]:
    """The curves a prediction for `target` reads, and how they match it: those with the same conditions;
    else the closest tier (the validation mix weighs more than the recipe: MATCHES' order) that has a
    curve long enough to fit, else the closest tier. No target: every curve ('any')."""
    if target is None or not found:
        return found, "any"
    tiers: dict[tuple[bool, bool], list[LearningCurve]] = {}
    for c in found:
        tiers.setdefault(target.mismatch(conditions_of(c)), []).append(c)
    order = sorted(tiers)
    best = next((t for t in order if any(fittable(c) for c in tiers[t])), order[0])
    return tiers[best], MATCHES[best]


Series = tuple[np.ndarray, np.ndarray, np.ndarray]  # examples, exact, items scored; sorted by examples


def series_of(c: LearningCurve) -> Series:
    pts = sorted(c.points, key=lambda p: p.examples)
    return tuple(np.array([getattr(p, f) for p in pts], dtype=float) for f in ("examples", "exact", "n"))  # type: ignore[return-value]


def fittable(c: LearningCurve) -> bool:
    return sum(p.examples > 0 for p in c.points) >= MIN_POINTS


def same_trajectory(a: LearningCurve, b: LearningCurve) -> bool:
    """Two runs of one seed, data and rate are one trajectory cut at two lengths (CPU training is
    deterministic): every shared point (>= 2 after the start) has the same score. Such a run is not
    an independent witness for the other."""
    pa, pb = ({p.examples: p.exact for p in c.points if p.examples} for c in (a, b))
    shared = set(pa) & set(pb)
    return len(shared) >= 2 and all(pa[x] == pb[x] for x in shared)


@dataclass(frozen=True)
class RunSpread:
    """How far one run lands from other runs of the same (task, student, method, conditions) beyond
    binomial noise: a variance `share` x p(1-p) (it vanishes at 0% and 100%, as the binomial does),
    measured on `comparisons` points of `groups` repeated groups; share 0 when nothing was repeated."""

    share: float = 0.0
    groups: int = 0
    comparisons: int = 0

    def variance(self, p) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        return self.share * p * (1 - p)


def run_spread(found: list[LearningCurve]) -> RunSpread:
    """Moment estimate of the run-to-run spread: every point (examples > 0) of every curve against the
    mean of the m independent runs of its group that reach it (interpolated, as a `measured` figure reads
    them): E[d^2] = share p(1-p) (1 + 1/m), p the pooled level. Nothing is subtracted for validation
    sampling: the repeated runs of a group score the same validation items (a benchmark's fixed val
    split), so their differences carry none; where items differ, the estimate holds it too and errs wide."""
    groups: dict[tuple, list[LearningCurve]] = {}
    for c in found:
        if c.points:
            groups.setdefault((c.task, c.student, c.method, conditions_of(c)), []).append(c)
    squares = scale = 0.0
    used, comparisons = set(), 0
    for key, members in groups.items():
        for c in members:
            others = [series_of(o) for o in members if o is not c and o.run != c.run and not same_trajectory(o, c)]
            for p in c.points:
                reach = [s for s in others if s[0][0] <= p.examples <= s[0][-1]] if p.examples > 0 else []
                if not reach:
                    continue
                mean = float(np.mean([np.interp(p.examples, xs, ys) for xs, ys, _ in reach]))
                m = len(reach)
                level = (p.exact + m * mean) / (m + 1)
                squares += (p.exact - mean) ** 2
                scale += level * (1 - level) * (1 + 1 / m)
                used.add(key)
                comparisons += 1
    return RunSpread(squares / scale if scale > 0 else 0.0, len(used), comparisons)
