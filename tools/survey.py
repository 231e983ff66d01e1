"""Servers and plans as seen from where this agent runs: measure the candidate students here, profile
every catalog server, and plan within the clouds this agent can actually execute on.

`stratos run` (through the graph's adapters) calls these; `stratos plan` calls `planning.plan_for`,
which shares `planning.prepare` and `planning.make_plan` with them.
"""

from __future__ import annotations

import logging

from stratos_agent.tools import latency_probe, launch_specs, pilot, planning, server_bench
from stratos_agent.tools.planning.serving import shape_of
from stratos_agent.tools.request_shape import task_shape

from stratos_agent.errors import StratosError
from stratos_agent.records.plans import PairTable, Plan, PlanPoint
from stratos_agent.records.servers import LatencyProbe, RequestShape, ServerSurvey
from stratos_agent.spec import DistillationSpec, Traffic

log = logging.getLogger(__name__)

# Two batch sizes and four requests: enough decode points to calibrate the roofline, in half the time.
BENCH_BATCHES = (1, 4)
BENCH_REQUESTS = 4
CATALOG_FRONT = 40  # catalog-wide plan points kept beside a restricted plan (for the report)


def survey_servers(spec: DistillationSpec, *, refresh: bool = False) -> ServerSurvey:
    """Measure each candidate student here at the task's request shape (cached per day), calibrate the
    roofline on it, and profile every server the user allows (the plan later keeps executable ones)."""
    default = Traffic()
    user_shape = (spec.traffic.prompt_tokens, spec.traffic.output_tokens) != (
        default.prompt_tokens,
        default.output_tokens,
    )
    shape = None if user_shape else task_shape(spec.task)
    clouds, clouds_note = launch_specs.executable_clouds()
    survey = ServerSurvey(shape=shape, executable_clouds=clouds, clouds_note=clouds_note)
    spec = planned_spec(spec, survey)
    inputs = planning.gather_inputs(spec)
    if not user_shape:
        survey.student_shapes = {s.id: task_shape(spec.task, tokenizer_model=s.id) for s in inputs.students}
        inputs.request_shapes = survey.student_shapes
    local = next((o for o in inputs.offers if o.is_local), None)
    measured = []
    if local is not None:
        for student in inputs.students:
            prompt, output = shape_of(spec, inputs, student.id)
            measured.append(server_bench.bench_model(student.id, prompt_tokens=prompt, output_tokens=output,
                                                     force=refresh, batches=BENCH_BATCHES, requests=BENCH_REQUESTS))
        # now calibrated on the fresh measurements
        inputs = planning.gather_inputs(spec, local=local, request_shapes=survey.student_shapes)
    return survey.model_copy(
        update={
            "profiles": planning.server_profiles(spec, inputs),
            "measured": measured,
            "local": local,
            "catalog_date": inputs.catalog_date,
            "catalog_age_days": inputs.catalog_age_days,
        }
    )


def planned_spec(spec: DistillationSpec, survey: ServerSurvey | None) -> DistillationSpec:
    """The spec as planned: the user's, with the measured request shape where the user left it open."""
    if survey is None or survey.shape is None:
        return spec
    traffic = spec.traffic.model_copy(
        update={"prompt_tokens": survey.shape.prompt_tokens, "output_tokens": survey.shape.output_tokens}
    )
    return spec.model_copy(update={"traffic": traffic})


def restricted(spec: DistillationSpec, survey: ServerSurvey | None) -> bool:
    """True when the plan must keep to the clouds this agent can execute (the user named none)."""
    return survey is not None and survey.executable_clouds is not None and not spec.constraints.clouds


def executable_scope(spec: DistillationSpec, survey: ServerSurvey | None) -> tuple[DistillationSpec, list[str] | None]:
    """(spec, gpus) for `planning`: restricted to where this agent can execute unless the user named
    clouds. The catalog knows no 'local' provider, so "this machine only" is asked as gpus=['CPU']."""
    if not restricted(spec, survey):
        return spec, None
    clouds = [c for c in survey.executable_clouds or [] if c != "local"]  # type: ignore[union-attr]
    if not clouds:
        return spec, ["CPU"]
    return spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": clouds})}), None


def score_pairs_here(spec: DistillationSpec, survey: ServerSurvey | None, probe_n: int) -> PairTable:
    """Probe each executable teacher on the task (forward synthesis, cached) and score every pair."""
    scoped, gpus = executable_scope(planned_spec(spec, survey), survey)
    prepared = planning.prepare(scoped, gpus=gpus, run_probe=True, probe_n=probe_n)
    probes = {p.teacher: p.probe_accuracy for p in prepared.pairs if p.probe_source == "measured"}
    return PairTable(pairs=prepared.pairs, probes=probes, probe_n=probe_n)


def plan_measured(spec: DistillationSpec, gpus: list[str] | None, pairs: PairTable,
                  shapes: dict[str, RequestShape] | None = None) -> Plan:
    """The plan, then a measurement of what its choice rests on, then the plan again, until the chosen point
    stands on measurements (or nothing more can be measured here):
    - accuracy: a chosen candidate without a recorded curve gets a pilot run (tools/pilot.py, ~1 minute);
    - local p95: the chosen local student is timed through the serving engine (tools/latency_probe.py).
    Each measurement happens at most once per student and is cached; a choice that moves is measured too.
    `shapes`: each student's own request shape (else the spec's traffic)."""
    shapes = shapes or {}
    timed: dict[str, LatencyProbe] = {}
    done: set[tuple[str, str]] = set()
    while True:
        inputs = planning.gather_inputs(spec, gpus=gpus, latency_probes=timed, request_shapes=shapes)
        plan = planning.make_plan(spec, inputs, pairs.pairs)
        point = plan.chosen or _nearest(spec, inputs, pairs)
        todo = _next_measurement(point, done)
        if todo is None:
            return plan.model_copy(update={"latency_probes": list(timed.values())})
        done.add(todo)
        try:
            if todo[0] == "pilot":
                pilot.run_pilot(plan, point)  # type: ignore[arg-type]
            else:
                timed[todo[1]] = latency_probe.probe_student(
                    spec.task, todo[1], concurrency=spec.traffic.concurrency,
                    output_tokens=None if todo[1] in shapes else spec.traffic.output_tokens)
        except (StratosError, RuntimeError) as exc:  # the figure stays a prior/model, and says so
            log.warning("%s of %s failed; its figure stays unmeasured: %s", todo[0], todo[1], exc)


def _nearest(spec: DistillationSpec, inputs, pairs: PairTable) -> PlanPoint | None:
    """For an infeasible plan: the point it would choose without the constraints that unmeasured figures
    can bind (accuracy floor, p95, deadline). Measuring that point is what can make the plan feasible: on a
    machine with no recorded throughput, the modelled training hours alone can refuse a feasible request."""
    relaxed = spec.constraints.model_copy(update={"min_accuracy": None, "p95_latency_ms": None,
                                                  "deadline_hours": None})
    return planning.make_plan(spec.model_copy(update={"constraints": relaxed}), inputs, pairs.pairs).chosen


def _next_measurement(point: PlanPoint | None, done: set[tuple[str, str]]) -> tuple[str, str] | None:
    """("pilot" | "latency", student) still to measure for the chosen point, or None. A pilot measures
    both the start of the learning curve and this machine's training throughput."""
    if point is None:
        return None
    wanted = []
    unmeasured_here = point.is_local and point.train_hours_source != "measured"
    if (point.accuracy_source == "prior" or unmeasured_here) and pilot.enabled():
        wanted.append(("pilot", f"{point.student}/{point.strategy}/{point.lora_rank}"))
    if point.is_local and point.latency_source != "measured" and latency_probe.enabled():
        wanted.append(("latency", point.student))
    return next((w for w in wanted if w not in done), None)


def plan_here(spec: DistillationSpec, survey: ServerSurvey | None, pairs: PairTable) -> Plan:
    """The Pareto plan over the executable servers; when restricted, the catalog-wide plan rides along
    so the report can show what a cloud run would trade."""
    spec = planned_spec(spec, survey)
    scoped, gpus = executable_scope(spec, survey)
    plan = plan_measured(scoped, gpus, pairs, survey.student_shapes if survey else None)
    if not restricted(spec, survey):
        return plan
    wide = planning.make_plan(spec, planning.gather_inputs(spec, request_shapes=survey.student_shapes), pairs.pairs)  # type: ignore[union-attr]
    return plan.model_copy(
        update={
            "catalog_plan": wide.model_copy(update={"front": wide.front[:CATALOG_FRONT], "pairs": []}),
            "why": f"{plan.why} [{survey.clouds_note}.]",  # type: ignore[union-attr]
        }
    )
