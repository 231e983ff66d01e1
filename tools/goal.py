"""The result gate: check a measured result against the user's goal, and decide how to adapt.

`check_goal` compares the evaluation (student vs teacher vs trivial baselines on held-out items) and the
plan's p95 with the spec; the even-mix hold-out decides. The natural-mix hold-out, when there is one, adds a
reported check (does the student beat its own trivial baselines on the task's natural mix?), shown but never
deciding: the user's goal does not name it. `next_adaptation` says what a missed goal leads to: train on
(from the last round's weights, for another round of the same size) while rounds, budget and deadline allow
and the last round helped; otherwise stop before deploying, with the reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stratos_agent.tools.outcome import fmt_ms, fmt_pct

from stratos_agent.records.evaluation import Adaptation, BaselineScore, Comparison, GoalCheck
from stratos_agent.records.plans import PlanPoint
from stratos_agent.spec import DistillationSpec

# items the plan scores the trivial baselines on, in the even mix the run's hold-out has (constant answers:
# scoring 1,000 Mahjong hands takes milliseconds)
BASELINE_SAMPLE = 1000
MAX_ROUNDS = 2  # adaptation rounds after the planned training: each costs as much as the first
MIN_GAIN = 0.01  # a round that moved exact match by less than a point is not worth repeating


def best_baseline(baselines: Sequence[BaselineScore]) -> BaselineScore | None:
    return max(baselines, key=lambda b: b.exact_match.value, default=None)


@dataclass(frozen=True)
class GateFloor:
    """What the default goal asks of a plan before anything is trained: the lowest exact match whose 95%
    lower bound on `n` hold-out items is above the best trivial baseline (the test `check_goal` applies)."""

    baseline: str
    baseline_accuracy: float
    n: int
    accuracy: float

    def text(self) -> str:
        return (f"at least {fmt_pct(self.accuracy)} exact, so that the 95% lower bound on {self.n} hold-out items "
                f"clears the best trivial baseline, {self.baseline} at {fmt_pct(self.baseline_accuracy)}")


@lru_cache(maxsize=16)  # a plan gathers its inputs up to four times
def gate_floor(task: str, holdout_n: int) -> GateFloor | None:
    """The default goal's floor for `task`, its baselines scored on BASELINE_SAMPLE fresh items of the run's
    hold-out mix (even over the difficulty buckets where the pack has them); None where the task cannot
    be sampled or has no trivial answer."""
    from stratos_agent.tools.evaluate import baselines, wilson

    from stratos_agent.errors import InputError
    from stratos_agent.tasks import get_task_pack
    from stratos_agent.tasks.base import EVEN

    try:
        pack = get_task_pack(task)
        items = pack.sample(BASELINE_SAMPLE, seed=1, distribution=EVEN if pack.difficulty_buckets else None)
    except InputError:
        return None
    best = best_baseline(baselines(pack, items))
    if best is None:
        return None
    value = best.exact_match.value
    k = next((k for k in range(holdout_n + 1) if wilson(k, holdout_n).low > value), holdout_n)
    return GateFloor(baseline=best.name, baseline_accuracy=value, n=holdout_n, accuracy=k / holdout_n)


def natural_check(result: Comparison) -> dict[str, Any]:
    """The reported natural-mix check as GoalCheck fields (none without a natural-mix hold-out)."""
    natural = result.natural
    if natural is None:
        return {}
    ci = natural.student.exact_match_ci
    best = best_baseline(natural.baselines)
    best_value = best.exact_match.value if best else 0.0
    beats = ci.low > best_value
    reason = (f"natural mix: exact match {fmt_pct(ci.value)} (95% {fmt_pct(ci.low)}-{fmt_pct(ci.high)}, n={ci.n}), "
              f"95% lower bound {'above' if beats else 'not above'} its best baseline "
              f"({best.name if best else 'none'}: {fmt_pct(best_value)}); reported, does not decide the goal")
    return {"natural": ci, "natural_best_baseline": best.name if best else None,
            "natural_best_baseline_accuracy": best_value if best else None, "natural_beats_baselines": beats,
            "reported": [reason]}


def check_goal(spec: DistillationSpec, result: Comparison, point: PlanPoint | None) -> GoalCheck:
    student = result.student
    ci = student.exact_match_ci
    best = best_baseline(result.baselines)
    best_value = best.exact_match.value if best else 0.0
    teacher = result.teacher.exact_match if result.teacher else None
    reasons: list[str] = []
    floor = spec.constraints.min_accuracy
    if floor is not None:
        goal, target = f"exact match >= {fmt_pct(floor)}", floor
        accuracy_ok = student.exact_match >= floor
        reasons.append(f"exact match {fmt_pct(student.exact_match)} (95% {fmt_pct(ci.low)}-{fmt_pct(ci.high)}, n={student.n}) "
                       f"{'meets' if accuracy_ok else 'misses'} the goal of {fmt_pct(floor)}")
    else:
        goal, target = "beat every trivial baseline and the teacher (95% lower bound above the best baseline)", best_value
        above_baseline = ci.low > best_value
        reasons.append(f"95% lower bound {fmt_pct(ci.low)} is {'above' if above_baseline else 'not above'} the best "
                       f"baseline ({best.name if best else 'none'}: {fmt_pct(best_value)})")
        beats_teacher = teacher is None or student.exact_match > teacher
        if teacher is not None:
            reasons.append(f"student {fmt_pct(student.exact_match)} {'beats' if beats_teacher else 'does not beat'} "
                           f"the teacher ({fmt_pct(teacher)})")
        accuracy_ok = above_baseline and beats_teacher
    p95_target = spec.constraints.p95_latency_ms
    latency_ok = True
    if p95_target is not None and point is not None:
        latency_ok = point.p95_ms <= p95_target
        reasons.append(f"p95 {fmt_ms(point.p95_ms)} ({point.latency_source}) {'within' if latency_ok else 'over'} "
                       f"the target of {fmt_ms(p95_target)}")
    return GoalCheck(
        met=accuracy_ok and latency_ok, accuracy=student.exact_match, accuracy_low=ci.low, accuracy_high=ci.high,
        n=student.n, goal=goal, target=target, best_baseline=best.name if best else None,
        best_baseline_accuracy=best_value if best else None, teacher_accuracy=teacher,
        p95_ms=point.p95_ms if point else None, p95_source=point.latency_source if point else None,
        p95_target_ms=p95_target, reasons=reasons, **natural_check(result),
    )


def next_adaptation(
    check: GoalCheck, history: list[Adaptation], *, model_dir: str, train_seconds: float,
    deadline_s: float | None, budget_left_usd: float | None, round_cost_usd: float,
) -> Adaptation:
    """Train on while it can help and is allowed; otherwise stop (the caller keeps the model undeployed).
    `train_seconds` is the judged round's training time: the next round is assumed to take as long."""
    n = len(history) + 1
    spent_train_seconds = sum(a.train_seconds for a in history) + train_seconds
    why_not = []
    if len(history) >= MAX_ROUNDS:
        why_not.append(f"{MAX_ROUNDS} adaptation rounds done")
    if history and check.accuracy - history[-1].accuracy < MIN_GAIN:
        why_not.append(f"the last round moved exact match by {fmt_pct(check.accuracy - history[-1].accuracy)} "
                       f"(< {fmt_pct(MIN_GAIN)})")
    if deadline_s is not None and spent_train_seconds + train_seconds > deadline_s:
        why_not.append(f"another round (~{train_seconds / 60:.0f} min) would pass the deadline "
                       f"({deadline_s / 60:.0f} min of training, {spent_train_seconds / 60:.0f} used)")
    if budget_left_usd is not None and round_cost_usd > budget_left_usd:
        why_not.append(f"another round costs ${round_cost_usd:.2f}, ${budget_left_usd:.2f} is left")
    missed = "; ".join(r for r in check.reasons)
    if why_not:
        return Adaptation(round=n, decision="stop", reason=f"goal missed ({missed}); not adapting: "
                          + "; ".join(why_not), accuracy=check.accuracy, train_seconds=train_seconds)
    return Adaptation(round=n, decision="train on", reason=f"goal missed ({missed}); training on from the last "
                      "round's weights for another round of the same size", model_dir=model_dir,
                      accuracy=check.accuracy, train_seconds=train_seconds)
