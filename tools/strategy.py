"""Choose the distillation strategy for a teacher/student pair from the teacher's probe accuracy.

- knowledge alignment (the student learns the teacher's outputs: sequence-level, or token
  distributions when both share a tokenizer) when the teacher knows the task;
- knowledge injection (reverse synthesis from answers known by construction + GRPO with the task's
  verifier as reward) when the teacher does not, or when the pack has a solver and the teacher is only
  mediocre: then the labels come from the solver, and the teacher only writes the reasoning.
"""

from __future__ import annotations

import logging

from stratos_agent.records.plans import Strategy, StrategyDecision

log = logging.getLogger(__name__)

# Below 50% probe accuracy most teacher answers are wrong: alignment would copy (or, with verified
# filtering, keep less than half of) a teacher that lacks the domain: the paper's injection case.
ALIGN_THRESHOLD = 0.5
# Between 50% and 80% the teacher is usable but weak; with a solver, injection gets every label right
# (the teacher's yield no longer caps the data), so a solver-backed pack prefers injection below 0.8.
STRONG_THRESHOLD = 0.8


def allowed_strategies(has_solver: bool, logit_kd: bool) -> list[Strategy]:
    """Every strategy possible for a pair: logit KD needs a shared tokenizer and a white-box teacher;
    injection needs answers known by construction (a solver or a verified dataset)."""
    allowed: list[Strategy] = ["alignment-seq"]
    if logit_kd:
        allowed.append("alignment-logit")
    if has_solver:
        allowed.append("injection")
    return allowed


def decide_strategy(
    probe_accuracy: float,
    has_solver: bool,
    logit_kd: bool,
    *,
    teacher: str = "",
    student: str = "",
    align_threshold: float = ALIGN_THRESHOLD,
    strong_threshold: float = STRONG_THRESHOLD,
) -> StrategyDecision:
    """The recommended strategy and the numbers behind it (also logged)."""
    allowed = allowed_strategies(has_solver, logit_kd)
    alignment: Strategy = "alignment-logit" if logit_kd else "alignment-seq"
    numbers = {
        "probe_accuracy": round(probe_accuracy, 4),
        "align_threshold": align_threshold,
        "strong_threshold": strong_threshold,
        "has_solver": has_solver,
        "logit_kd": logit_kd,
    }
    how = (
        "token distributions: same tokenizer"
        if logit_kd
        else "sequence-level: tokenizers differ or black-box teacher"
    )
    if probe_accuracy >= strong_threshold or (probe_accuracy >= align_threshold and not has_solver):
        strategy = alignment
        reason = (
            f"teacher probe accuracy {probe_accuracy:.0%} >= {align_threshold:.0%}: the teacher knows the "
            f"task, so the student learns its outputs ({how})"
        )
    elif has_solver:
        strategy = "injection"
        weak = (
            f"below {align_threshold:.0%}"
            if probe_accuracy < align_threshold
            else f"under {strong_threshold:.0%}, i.e. weak,"
        )
        reason = (
            f"teacher probe accuracy {probe_accuracy:.0%} is {weak} and the task has answers known by "
            "construction: inject knowledge (reverse synthesis: the task's solver writes verified answers and "
            "their rationales, no teacher call; the student learns them by SFT)"
        )
    else:
        strategy = "alignment-seq"
        reason = (
            f"teacher probe accuracy {probe_accuracy:.0%} < {align_threshold:.0%} but the task has no solver "
            "or verified answers to inject from: sequence-level alignment keeping only verified outputs "
            "(expect a low ceiling; bring a stronger teacher or a verified dataset)"
        )
    log.info("strategy %s for %s -> %s: %s %s", strategy, teacher, student, reason, numbers)
    return StrategyDecision(strategy=strategy, allowed=allowed, reason=reason, numbers=numbers)
