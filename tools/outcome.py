"""What a run came to, in a few sentences a person reads first: goal vs measured (on the even-mix hold-out, and
on the natural-mix one when the data has it), the gate's decision and each adaptation, money spent, then the
endpoint. The report, `stratos status` and `stratos run` lead with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stratos_agent.records.deployment import Deployment
from stratos_agent.records.evaluation import Comparison, GoalCheck
from stratos_agent.records.plans import Plan
from stratos_agent.spec import DistillationSpec


def fmt_ms(ms: float | None) -> str:
    """Latency as a person writes it: 248 ms, 9,000 ms, 30 s."""
    if ms is None:
        return "-"
    return f"{ms / 1000:,.0f} s" if ms >= 10_000 and ms % 1000 == 0 else f"{ms:,.0f} ms"


def rounds_text(round_p95_ms: list[float]) -> str:
    """How far a multi-round load test's p95s spread, e.g. 'median of 3 rounds: 267-415 ms'; '' for one
    round. On a shared machine the spread says how much a single p95 can be trusted."""
    if len(round_p95_ms) < 2:
        return ""
    return f"median of {len(round_p95_ms)} rounds: {min(round_p95_ms):,.0f}-{max(round_p95_ms):,.0f} ms"


def planned_p95_text(plan: Plan) -> str:
    """The chosen point's p95 with where it came from, e.g. '505 ms (measured; median of 3 rounds: 329-583 ms)'."""
    point = plan.chosen
    if point is None:
        return "-"
    probe = next((p for p in plan.latency_probes if p.model == point.student), None)
    how = [point.latency_source, rounds_text(probe.round_p95_ms) if probe and point.latency_source == "measured" else ""]
    return f"{fmt_ms(point.p95_ms)} ({'; '.join(filter(None, how))})"


def fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"


def not_understood(state: Mapping[str, Any]) -> list[str]:
    """Parts of the request the parser could not read ("'64 H100s': ..."), as the intake recorded them."""
    return [p for e in state.get("events") or [] if e.get("kind") == "not_understood" for p in e.get("phrases") or []]


def baselines_text(result: Comparison) -> str:
    return ", ".join(f"{b.name} {fmt_pct(b.exact_match.value)}" for b in result.baselines) or "none"


def teacher_text(result: Comparison) -> str:
    if result.teacher is not None:
        return fmt_pct(result.teacher.exact_match)
    return f"not evaluated ({result.teacher_skipped})" if result.teacher_skipped else "-"


def holdout_line(label: str, result: Comparison) -> str:
    """One hold-out's numbers: the student with its 95% interval, the teacher, the trivial baselines."""
    ci = result.student.exact_match_ci
    return (f"{label}: student {fmt_pct(result.student.exact_match)} (95% {fmt_pct(ci.low)}-{fmt_pct(ci.high)}, "
            f"n={result.n}); teacher {teacher_text(result)}; baselines: {baselines_text(result)}.")


def outcome_lines(state: Mapping[str, Any]) -> list[str]:
    spec: DistillationSpec | None = state.get("spec")
    plan: Plan | None = state.get("plan")
    result: Comparison | None = state.get("eval")
    goal: GoalCheck | None = state.get("goal")
    deployment: Deployment | None = state.get("deployment")
    lines = [f"Status: {state.get('status')}."]
    lines += [f"Not understood in the request (not planned for): {phrase}" for phrase in not_understood(state)]
    if plan is not None and not plan.feasible:
        lines.append(f"No plan meets the spec: {plan.why}")
        lines += [f"Nearest feasible: {hint}" for hint in plan.nearest_feasible[:4]]
    if goal is not None:
        verdict = "MET" if goal.met else "MISSED"
        lines.append(f"Goal ({goal.goal}): {verdict}.")
        lines += [f"- {reason}" for reason in [*goal.reasons, *goal.reported]]
    elif result is not None:
        lines.append(f"Student exact match {fmt_pct(result.student.exact_match)} on {result.n} held-out items.")
    if result is not None:
        lines.append(holdout_line("Measured, even mix" if result.natural else "Measured", result))
        if result.natural is not None:
            lines.append(holdout_line("Measured, natural mix", result.natural))
    for a in state.get("adaptations") or []:
        lines.append(f"Result gate, round {a.get('round')}: {a.get('decision')}: {a.get('reason')}")
    spent = sum(e.get("actual_usd") or 0 for e in state.get("ledger") or [])
    budget = spec.constraints.budget_usd if spec else None
    lines.append(f"Spent {fmt_usd(spent)} of {fmt_usd(budget) if budget else 'no'} budget.")
    if deployment is not None:
        measured = deployment.load_test
        point = plan.chosen if plan else None
        planned = planned_p95_text(plan) if plan else "-"
        if point and measured and point.p95_ms:
            planned += f", endpoint/plan {measured.p95_ms / point.p95_ms:.2f}x"
        spread = f" ({text})" if measured and (text := rounds_text(measured.round_p95_ms)) else ""
        lines.append(f"Endpoint: {deployment.base_url} (model {deployment.model}); p95 measured "
                     f"{fmt_ms(measured.p95_ms if measured else None)}{spread} at concurrency "
                     f"{measured.concurrency if measured else '-'}, planned {planned}, target "
                     f"{fmt_ms(spec.constraints.p95_latency_ms if spec else None)}.")
    elif goal is not None and not goal.met:
        lines.append("Not deployed: the result misses the goal. Options: `stratos approve THREAD` at the deploy "
                     "gate (interactive runs), `stratos run ... --deploy-anyway`, or edit the spec "
                     "(e.g. a longer deadline_hours, a GPU cloud) and let it plan again.")
    return lines
