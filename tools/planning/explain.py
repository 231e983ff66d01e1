"""Plans in words: what the chosen point traded against the front's extremes, or why nothing fits."""

from __future__ import annotations

import numpy as np
from stratos_agent.tools.curve_conditions import MATCHES
from stratos_agent.tools.planning.grid import Candidates
from stratos_agent.tools.planning.inputs import PlanningInputs

from stratos_agent.records.plans import PlanPoint


def _fmt_cost(x: float) -> str:
    return f"${x:,.2f}" if x < 100 else f"${x:,.0f}"


def accuracy_words(p: PlanPoint) -> str:
    """'34% (fitted on 2 runs, 95% 28-40%)', '12% (measured (other validation mix) on 1 run, 95% 0-40%)' or
    '6% (prior: no measurement)': the figure and what it rests on."""
    if p.accuracy_source == "prior" or p.accuracy_low is None or p.accuracy_high is None:
        return f"{p.accuracy:.0%} (prior: no measurement)"
    far = "; extrapolated far beyond the runs" if "extrapolated" in p.accuracy_note else ""
    other = next((m for m in MATCHES.values() if f"{p.accuracy_source} ({m})" in p.accuracy_note), "")
    source = f"{p.accuracy_source} ({other})" if other else p.accuracy_source  # calibration.describe's label
    return (
        f"{p.accuracy:.0%} ({source} on {p.accuracy_runs} run{'s' if p.accuracy_runs != 1 else ''}, "
        f"95% {100 * p.accuracy_low:.0f}-{100 * p.accuracy_high:.0f}%{far})"
    )


def hours_words(p: PlanPoint) -> str:
    what = "measured throughput" if p.train_hours_source == "measured" else "modelled"
    return f"{p.train_hours:.2g} h of training ({what})"


def _versus(chosen: PlanPoint, other: PlanPoint, role: str) -> str | None:
    """'Against <role> (...): gains ..., gives up ...' in words, or None when it is the same point."""
    deltas = [  # (name, chosen better by, formatted magnitude)
        ("cost", other.cost_usd - chosen.cost_usd, _fmt_cost(abs(other.cost_usd - chosen.cost_usd))),
        ("p95", other.p95_ms - chosen.p95_ms, f"{abs(other.p95_ms - chosen.p95_ms):.0f} ms p95"),
        (
            "accuracy",
            chosen.accuracy - other.accuracy,
            f"{100 * abs(chosen.accuracy - other.accuracy):.1f} accuracy points",
        ),
        (
            "time",
            other.train_hours - chosen.train_hours,
            f"{abs(other.train_hours - chosen.train_hours):.2g} h of training",
        ),
    ]
    gains = [text for _, d, text in deltas if d > 1e-9]
    losses = [text for _, d, text in deltas if d < -1e-9]
    if not gains and not losses:
        return None
    head = (
        f"Against {role} ({other.gpu}, {_fmt_cost(other.cost_usd)}, p95 {other.p95_ms:.0f} ms, "
        f"{other.accuracy:.0%} {other.accuracy_source})"
    )
    if losses and gains:
        return f"{head} it gives up {', '.join(losses)} in exchange for {', '.join(gains)}."
    return (
        f"{head} it is better by {', '.join(gains)}." if gains else f"{head} it gives up {', '.join(losses)}."
    )


def explain(chosen: PlanPoint, front: list[PlanPoint], how: str) -> str:
    """One paragraph: the chosen point against the front's extremes (what was traded for what)."""
    refs = [
        ("the cheapest plan", min(front, key=lambda p: p.cost_usd)),
        ("the most accurate plan", max(front, key=lambda p: p.accuracy)),
        ("the fastest plan", min(front, key=lambda p: p.p95_ms)),
    ]
    parts = [
        (
            f"Chose {chosen.label()} ({how}, among {len(front)} Pareto-optimal plans): "
            f"{_fmt_cost(chosen.cost_usd)} total ({_fmt_cost(chosen.cost_training_usd)} training, "
            f"{_fmt_cost(chosen.cost_serving_usd)} serving on {chosen.replicas} instance(s), "
            f"{_fmt_cost(chosen.cost_synthesis_usd)} teacher data), p95 {chosen.p95_ms:.0f} ms "
            f"({chosen.latency_source}), expected accuracy {accuracy_words(chosen)}, "
            f"{hours_words(chosen)}."
        )
    ]
    parts += [text for role, other in refs if (text := _versus(chosen, other, role))]
    if len(parts) == 1:
        parts.append("It is at once the cheapest, the most accurate and the fastest plan on the front.")
    return " ".join(parts)


def why_infeasible(
    spec_mask: dict[str, np.ndarray], hw_ok: np.ndarray, cands: Candidates, inputs: PlanningInputs
) -> tuple[list[str], list[str]]:
    """Which constraints bind (dropping it alone makes plans feasible) and the nearest feasible points."""
    binding, hints = [], []
    col = {"budget": 0, "p95": 1, "accuracy": 2, "training": 3}
    for name, bad in spec_mask.items():
        others = hw_ok.copy()
        for other, bad2 in spec_mask.items():
            if other != name:
                others &= ~bad2
        k = col[name.split()[0]]
        if others.any():
            binding.append(name)
            i = np.flatnonzero(others)[np.argmin(cands.F[others, k])]
            value = {
                0: f"${cands.F[i, 0]:,.2f}",
                1: f"{cands.F[i, 1]:.0f} ms",
                2: f"{-cands.F[i, 2]:.0%}",
                3: f"{cands.F[i, 3]:.2g} h",
            }[k]
            hints.append(
                f"{name}: the best plan meeting every other constraint reaches {value} "
                f"({inputs.offers[cands.offer[i]].gpu} on {inputs.offers[cands.offer[i]].id}, "
                f"{_fmt_cost(cands.F[i, 0])})"
            )
        alone = hw_ok & ~bad
        if alone.any():
            i = np.flatnonzero(alone)[np.argmin(cands.F[alone, 0])]
            gpus = sorted({inputs.offers[j].gpu for j in np.unique(cands.offer[alone])})
            hints.append(
                f"{name} alone needs one of {', '.join(gpus)}; the cheapest such plan costs "
                f"{_fmt_cost(cands.F[i, 0])} ({inputs.offers[cands.offer[i]].id})"
            )
        else:
            hints.append(f"{name}: no server/model in the catalog can meet it")
            if name not in binding:
                binding.append(name)
    names = list(spec_mask)
    for x, name in enumerate(names):  # constraints that are each satisfiable but not together
        for other in names[x + 1 :]:
            alone_ok = (hw_ok & ~spec_mask[name]).any() and (hw_ok & ~spec_mask[other]).any()
            if alone_ok and not (hw_ok & ~spec_mask[name] & ~spec_mask[other]).any():
                hints.append(f"{name} and {other} cannot hold together")
                binding += [n for n in (name, other) if n not in binding]
    return binding, hints
