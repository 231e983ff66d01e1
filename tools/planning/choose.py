"""Choosing on the front and making the plan: exact Pareto front, knee or preference, `Plan` records.

`make_plan` screens the candidate grid (grid.py), keeps the exact non-dominated set, picks a point by
the user's preference (weighted) or the knee, and has explain.py say what was traded for what;
`prepare` / `plan_for` run the whole way from a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from stratos_agent.tools import pareto
from stratos_agent.tools.calibration import SOURCES
from stratos_agent.tools.goal import GateFloor
from stratos_agent.tools.pairing import STRATEGY_CODES, score_pairs
from stratos_agent.tools.planning.explain import explain, why_infeasible
from stratos_agent.tools.planning.grid import (
    DEFAULT_DATA_SIZES,
    DEFAULT_LORA_RANKS,
    EPOCHS,
    Candidates,
    screen,
)
from stratos_agent.tools.planning.inputs import PlanningInputs, gather_inputs
from stratos_agent.tools.planning.measured import accuracy_note
from stratos_agent.tools.planning.serving import ServingTable, serving_table, student_serving_summary

from stratos_agent.catalog import Catalog
from stratos_agent.errors import InputError
from stratos_agent.records.plans import PairScore, Plan, PlanPoint
from stratos_agent.spec import DistillationSpec

OBJECTIVES = ("cost_usd", "p95_ms", "accuracy", "train_hours")  # columns of Candidates.F (accuracy negated)
# Smallest spread per objective that counts as a trade-off when choosing on the front: $1, 10 ms,
# 1 accuracy point, 1 hour of training. Without it, minutes of training on a front where every
# plan trains in minutes would weigh as much as the whole accuracy range.
MATERIAL = np.array([1.0, 10.0, 0.01, 1.0])
# Preference -> weights on normalised (cost, p95, -accuracy, train hours); None = knee point.
PREFERENCE_WEIGHTS = {
    "balanced": None,
    "cheaper": (4, 1, 1, 1),
    "faster": (1, 4, 1, 1),
    "accurate": (1, 1, 4, 1),
}
MAX_FRONT_RECORDS = 300  # front points kept in the Plan: the cheapest ones, plus the chosen one


def point_record(
    i: int, cands: Candidates, inputs: PlanningInputs, pairs: list[PairScore], table: ServingTable
) -> PlanPoint:
    """Candidate `i` as a PlanPoint record."""
    offer = inputs.offers[cands.offer[i]]
    pair = pairs[cands.pair[i]]
    codes = {v: k for k, v in STRATEGY_CODES.items()}
    j = [s.id for s in inputs.students].index(pair.student)
    acc = cands.acc
    measured = acc is not None and acc.source[i] != SOURCES.index("prior")
    return PlanPoint(
        server=offer.id,
        gpu=offer.gpu,
        gpu_count=offer.gpu_count,
        teacher=pair.teacher,
        student=pair.student,
        strategy=codes[int(cands.strategy[i])],
        lora_rank=int(cands.rank[i]),
        data_size=int(cands.data_size[i]),
        replicas=int(cands.replicas[i]),
        cost_usd=float(cands.F[i, 0]),
        cost_training_usd=float(cands.cost_training[i]),
        cost_serving_usd=float(cands.cost_serving[i]),
        cost_synthesis_usd=float(cands.cost_synthesis[i]),
        p95_ms=float(cands.F[i, 1]),
        accuracy=float(-cands.F[i, 2]),
        train_hours=float(cands.F[i, 3]),
        train_examples=int(cands.data_size[i] * EPOCHS),
        latency_source=table.source[cands.offer[i], j],
        accuracy_low=float(acc.low[i]) if measured else None,
        accuracy_high=float(acc.high[i]) if measured else None,
        accuracy_source=SOURCES[int(acc.source[i])] if measured else "prior",
        accuracy_runs=int(acc.curves[i]) if measured else 0,
        accuracy_note=accuracy_note(inputs.task.name, inputs.students[j], int(cands.strategy[i]), int(cands.rank[i]),
                                    float(cands.data_size[i] * EPOCHS)) if measured else "",
        train_hours_source="measured" if cands.hours_measured is not None and cands.hours_measured[i]
        else "modelled",
    )


def material_spreads(spec: DistillationSpec) -> np.ndarray:
    """MATERIAL, with the p95 spread raised to the user's p95 target when the spec states one: a latency
    gap is weighed as a share of the user's allowance. Under "p95 under 2 s" the probes' 180 vs 505 ms
    (a sixth of the allowance), stretched to [0, 1], outweighed 20 accuracy points and the knee chose a
    500-example student that scored 0%; and probes of one server here spread 250-750 ms, so such a gap
    can be the machine's noise. Prices and training hours keep their floors: they are not noisy, and a
    saving under the budget or the deadline is still worth something."""
    material, p95 = MATERIAL.copy(), OBJECTIVES.index("p95_ms")
    material[p95] = max(material[p95], spec.constraints.p95_latency_ms or 0.0)
    return material


def choose(F_front: np.ndarray, preference: str, material: np.ndarray = MATERIAL) -> tuple[int, str]:
    """Index of the chosen front point and how it was chosen (knee, or the user's preference weights);
    `material`: the smallest spread per objective that counts as a trade-off (`material_spreads`)."""
    weights = PREFERENCE_WEIGHTS[preference]
    if weights is None:
        return pareto.knee_index(F_front, material), "knee point: no stated priority"
    return pareto.weighted_index(F_front, np.array(weights), material), f"preference '{preference}'"


def gate_pool(F_front: np.ndarray, floor: GateFloor | None) -> tuple[np.ndarray, str]:
    """(mask of the front points the knee or the preference may choose, what that adds to the plan's 'how').
    Under the default goal only points expected to pass the result gate, when any is: a plan expected below
    it would be trained, then stopped before deploying (the quoted "$50, p95 under 500 ms" request once
    chose a 2,000-example student expected at 9%, under the empty answer's 12%)."""
    everyone = np.ones(len(F_front), dtype=bool)
    if floor is None:
        return everyone, ""
    passing = -F_front[:, OBJECTIVES.index("accuracy")] >= floor.accuracy
    if not passing.any():
        return everyone, f"; none is expected to pass the result gate ({floor.text()})"
    return passing, f"; only the {int(passing.sum())} expected to pass the result gate ({floor.text()})"


def make_plan(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    pairs: list[PairScore],
    *,
    table: ServingTable | None = None,
    lora_ranks=DEFAULT_LORA_RANKS,
    data_sizes=DEFAULT_DATA_SIZES,
) -> Plan:
    """The Pareto plan for `spec` (see the package docstring). Never raises for an infeasible spec:
    `Plan.feasible` is False and `binding_constraints` / `nearest_feasible` say why."""
    table = table or serving_table(spec, inputs)
    sc = screen(spec, inputs, pairs, table, lora_ranks, data_sizes)
    cands = sc.cands
    now = datetime.now(UTC).isoformat(timespec="seconds")
    common = {
        "task": inputs.task.name,
        "preference": spec.preference,
        "candidates": len(cands),
        "excluded": sc.excluded,
        "pairs": pairs,
        "catalog_date": inputs.catalog_date,
        "catalog_age_days": inputs.catalog_age_days,
        "created": now,
    }
    if not sc.ok.any():
        binding, hints = why_infeasible(sc.spec_mask, sc.hw_ok, cands, inputs)
        why = (
            "No candidate plan satisfies every constraint. "
            + (f"Binding: {'; '.join(binding)}. " if binding else "")
            + " ".join(hints)
        )
        return Plan(
            chosen=None,
            front=[],
            why=why,
            feasible=False,
            binding_constraints=binding,
            nearest_feasible=hints,
            **common,
        )
    front_idx = front_indices(cands.F, sc.ok)
    pool, gate_how = gate_pool(cands.F[front_idx], inputs.gate_floor)
    sub, how = choose(cands.F[front_idx[pool]], spec.preference, material_spreads(spec))
    k, how = int(np.flatnonzero(pool)[sub]), how + gate_how
    order = np.argsort(cands.F[front_idx, 0])[:MAX_FRONT_RECORDS]
    if k not in order:
        order = np.append(order, k)
    front = [point_record(int(front_idx[i]), cands, inputs, pairs, table) for i in order]
    chosen = front[list(order).index(k)]
    return Plan(chosen=chosen, front=front, why=explain(chosen, front, how), feasible=True, **common)


def front_indices(F: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Indices of the exact Pareto front among the `ok` candidates; equal objective vectors (two
    regions at one price) count once."""
    idx = np.flatnonzero(ok)
    front_idx = idx[pareto.non_dominated_mask(F[idx])]
    _, first = np.unique(np.round(F[front_idx], 9), axis=0, return_index=True)
    return front_idx[np.sort(first)]


@dataclass
class PlanContext:
    """Inputs, scored pairs and the serving table: everything before the candidate grid."""

    inputs: PlanningInputs
    pairs: list[PairScore]
    table: ServingTable


def prepare(
    spec: DistillationSpec,
    *,
    gpus: list[str] | None = None,
    probes: dict[str, float] | None = None,
    run_probe: bool = False,
    probe_n: int = 16,
    include_local: bool = True,
    catalog: Catalog | None = None,
) -> PlanContext:
    """Gather inputs, (optionally) probe teachers through tools/synth.probe_teacher, score the pairs."""
    from stratos_agent.tools import pairing

    inputs = gather_inputs(spec, catalog=catalog, gpus=gpus, include_local=include_local)
    probes = dict(probes or {})
    if run_probe:
        missing = [t.id for t in inputs.teachers if t.id not in probes]
        probes |= pairing.run_probes(spec.task, missing, n=probe_n)
    table = serving_table(spec, inputs)
    pairs = score_pairs(
        inputs.task,
        inputs.teachers,
        inputs.students,
        probes,
        inputs.teacher_usd_per_1k,
        student_serving_summary(table, inputs),
    )
    if not pairs:
        raise InputError("no teacher/student pair: every student is larger than every teacher")
    return PlanContext(inputs, pairs, table)


def plan_for(spec: DistillationSpec, **options) -> Plan:
    """`prepare` (options: gpus, probes, run_probe, probe_n, include_local, catalog) then `make_plan`."""
    ctx = prepare(spec, **options)
    return make_plan(spec, ctx.inputs, ctx.pairs, table=ctx.table)
