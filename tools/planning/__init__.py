"""Plan a distillation job: candidate plans, four objectives, constraints, Pareto front, choice, why.

Candidates = server offer x (teacher, student) pair x strategy x LoRA rank x data size (the spec's
`data_size` when it sets one). Every candidate is evaluated with numpy in one pass.
Objectives (minimised): total $, p95 ms, -accuracy, training hours. Constraints from the spec drop
candidates (each drop is counted by reason); the exact non-dominated filter gives the front; the
user's preference (weighted) or the knee picks a point; `explain` says what was traded for what.

Modules, in the order data flows through them:

- inputs:  catalog offers + this machine, calibrated efficiencies, teacher/student candidates;
- serving: the serving table (p95, capacity, replicas, $ and memory fit per offer x student);
- grid:    the candidate grid, its objectives (serving, training, synthesis, accuracy), constraints;
- choose:  the exact front, the choice, the `Plan` record; `prepare` / `plan_for` from a spec;
- explain: the chosen point against the front's extremes, or why nothing fits, in words;
- plot:    the one Pareto-front figure (pareto.png, and the run report's plot).
"""

from __future__ import annotations

from stratos_agent.tools.planning.choose import (
    PlanContext,
    choose,
    front_indices,
    make_plan,
    plan_for,
    prepare,
)
from stratos_agent.tools.planning.explain import explain
from stratos_agent.tools.planning.grid import (
    DEFAULT_DATA_SIZES,
    DEFAULT_LORA_RANKS,
    Candidates,
    Screened,
    allowed_matrix,
    build_candidates,
    evaluate_candidates,
    grid_indices,
    screen,
    spec_constraints,
)
from stratos_agent.tools.planning.inputs import (
    CPU_DEFAULT,
    PlanningInputs,
    filter_offers,
    gather_inputs,
    teacher_usd_per_1k,
)
from stratos_agent.tools.planning.plot import front_figure, front_png, save_front_png
from stratos_agent.tools.planning.serving import (
    ServingTable,
    server_profiles,
    serving_table,
    student_serving_summary,
)

__all__ = [
    "CPU_DEFAULT",
    "DEFAULT_DATA_SIZES",
    "DEFAULT_LORA_RANKS",
    "Candidates",
    "PlanContext",
    "PlanningInputs",
    "Screened",
    "ServingTable",
    "allowed_matrix",
    "build_candidates",
    "choose",
    "evaluate_candidates",
    "explain",
    "filter_offers",
    "front_figure",
    "front_indices",
    "front_png",
    "gather_inputs",
    "grid_indices",
    "make_plan",
    "plan_for",
    "prepare",
    "save_front_png",
    "screen",
    "server_profiles",
    "serving_table",
    "spec_constraints",
    "student_serving_summary",
    "teacher_usd_per_1k",
]
