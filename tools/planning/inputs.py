"""What planning starts from: allowed server offers with calibrated efficiencies, candidate models, shapes.

`gather_inputs` reads the catalog, this machine and the model registry once into `PlanningInputs`;
`teacher_usd_per_1k` prices a teacher's tokens (endpoint price, or local weights priced as rented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stratos_agent.tools import roofline
from stratos_agent.tools.goal import GateFloor, gate_floor
from stratos_agent.tools.pairing import TaskProfile, endpoint_usd_per_1k, model_shape, task_profile
from stratos_agent.tools.roofline import Efficiency, ModelShape

from stratos_agent.catalog import Catalog, canonical_gpu, load_catalog
from stratos_agent.errors import InputError
from stratos_agent.models.candidate import ModelCandidate
from stratos_agent.records.servers import BenchResult, LatencyProbe, RequestShape, ServerOffer
from stratos_agent.spec import DistillationSpec
from stratos_agent.tasks.recipes import local_sizes

# CPU defaults before `stratos bench-servers` has measured this machine (then `calibrate` replaces them).
CPU_DEFAULT = Efficiency(
    bw=0.5,
    flops=0.5,
    step_overhead_s=0.0,
    request_overhead_s=0.005,
    tail=1.1,
    train_mfu=0.3,
    batched_read=2.0,
    layer_overhead_s=0.001,
    overlap=False,
    source="default:cpu, not measured yet (run `stratos bench-servers`)",
)


@dataclass
class PlanningInputs:
    """Everything `make_plan` needs, gathered once (offers aligned with efficiencies)."""

    task: TaskProfile
    offers: list[ServerOffer]
    efficiencies: list[Efficiency]
    teachers: list[ModelCandidate]
    students: list[ModelCandidate]
    shapes: dict[str, ModelShape]
    catalog_date: str
    catalog_age_days: int
    teacher_usd_per_1k: dict[str, float] = field(default_factory=dict)
    measured: dict[tuple[str, str], BenchResult] = field(default_factory=dict)  # (offer id, model)
    local_hardware: str | None = None  # HardwareFingerprint.key of this machine (calibration store lookups)
    latency_probes: dict[str, LatencyProbe] = field(default_factory=dict)  # student id -> served p95 here
    request_shapes: dict[str, RequestShape] = field(default_factory=dict)  # student id -> its own shape
    gate_floor: GateFloor | None = None  # the default goal's floor (tools/goal.py); None under min_accuracy


def _gpu_efficiency(offer: ServerOffer, results: list[BenchResult]) -> Efficiency:
    if offer.is_local:
        return CPU_DEFAULT
    mine = [
        r
        for r in results
        if r.fingerprint.gpu
        and offer.gpu.split("-")[0].upper() in r.fingerprint.gpu.upper()
        and r.backend == "vllm"
    ]
    if not mine:
        return roofline.GPU_DEFAULT
    return roofline.calibrate(mine, offer.mem_bw_gbps, offer.bf16_tflops, base=roofline.GPU_DEFAULT)


def filter_offers(
    offers: list[ServerOffer], spec: DistillationSpec, gpus: list[str] | None
) -> list[ServerOffer]:
    """Offers allowed by the spec's clouds and the user's GPU list (unknown names are InputErrors)."""
    clouds = spec.constraints.clouds
    known = {o.provider for o in offers} | {"local"}  # 'local' = this machine, added by gather_inputs
    unknown = [c for c in clouds if c not in known]
    if unknown:
        raise InputError(f"unknown cloud(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    wanted = {canonical_gpu(g) for g in gpus} if gpus else None
    return [o for o in offers if (not clouds or o.provider in clouds) and (wanted is None or o.gpu in wanted)]


def _roles(registry, cand: ModelCandidate) -> tuple[str, ...]:
    builtin = registry.builtins.get(cand.id)
    return (
        builtin.roles if builtin else (("teacher",) if cand.source == "endpoint" else ("teacher", "student"))
    )


def _for_task(cand: ModelCandidate, task: str) -> bool:
    """A student made for one task (a micro student: `task` set on its candidate) only serves that task."""
    own = getattr(cand, "task", None)
    return own is None or own == task or own == task.split(":")[0]


def _local_threads() -> int:
    """The torch threads this machine's offer is measured at (as machine_peaks.local_offer counts them)."""
    import torch

    from stratos_agent.settings import get_settings

    return get_settings().threads or torch.get_num_threads()


def gather_inputs(
    spec: DistillationSpec,
    *,
    catalog: Catalog | None = None,
    gpus: list[str] | None = None,
    include_local: bool = True,
    local: ServerOffer | None = None,
    latency_probes: dict[str, LatencyProbe] | None = None,
    request_shapes: dict[str, RequestShape] | None = None,
) -> PlanningInputs:
    """Catalog + this machine, calibrated efficiencies, registry candidates and their shapes; `latency_probes`:
    students timed through the serving engine on this machine (tools/latency_probe.py); `request_shapes`:
    each student's own request shape (tools/request_shape.py; missing ones use the spec's traffic)."""
    from stratos_agent.tools import machine_peaks, server_bench

    from stratos_agent.models import get_registry

    task = task_profile(spec.task)
    catalog = catalog or load_catalog()
    offers = filter_offers(catalog.offers, spec, gpus)
    results = server_bench.cached_results()
    effs = [_gpu_efficiency(o, results) for o in offers]
    measured: dict[tuple[str, str], BenchResult] = {}
    local_hardware = None
    if (
        include_local
        and (not spec.constraints.clouds or "local" in spec.constraints.clouds)
        and (not gpus or any(g.upper() == "CPU" for g in gpus))
    ):
        local = local or machine_peaks.local_offer()
        mine = server_bench.cached_results(machine_peaks.hardware_fingerprint())
        mine = [r for r in mine if r.backend == "transformers"]
        eff = (
            roofline.calibrate(mine, local.mem_bw_gbps, local.bf16_tflops, base=CPU_DEFAULT)
            if mine
            else CPU_DEFAULT
        )
        offers, effs = [local, *offers], [eff, *effs]
        measured = {(local.id, r.model): r for r in mine}
        local_hardware = machine_peaks.hardware_fingerprint(_local_threads()).key
    if not offers:
        raise InputError("no server left after the cloud/GPU filters; widen --gpu or the spec's clouds")

    registry = get_registry()
    pool = [c for c in registry.candidates() if c.available]
    teachers = (
        [registry.get(spec.teacher)]
        if spec.teacher
        else [c for c in pool if "teacher" in _roles(registry, c)]
    )
    students = (
        [registry.get(spec.student)]
        if spec.student
        else [c for c in pool if "student" in _roles(registry, c) and _for_task(c, task.name)]
    )
    shapes = {c.id: s for c in [*teachers, *students] if (s := model_shape(c)) is not None}
    students = [s for s in students if s.id in shapes]
    if not teachers or not students:
        raise InputError("no usable teacher/student candidates (see `stratos doctor` for the model registry)")
    inputs = PlanningInputs(
        task=task,
        offers=offers,
        efficiencies=effs,
        teachers=teachers,
        students=students,
        shapes=shapes,
        catalog_date=catalog.date,
        catalog_age_days=catalog.age_days,
        measured=measured,
        local_hardware=local_hardware,
        latency_probes=dict(latency_probes or {}) if local_hardware else {},
        request_shapes=dict(request_shapes or {}),
        gate_floor=None if spec.constraints.min_accuracy is not None else gate_floor(spec.task, local_sizes().eval_n),
    )
    inputs.teacher_usd_per_1k = {t.id: teacher_usd_per_1k(t, inputs) for t in teachers}
    return inputs


def teacher_usd_per_1k(teacher: ModelCandidate, inputs: PlanningInputs) -> float:
    """Endpoints: the provider's price. Local weights: priced as if rented: the cheapest cloud offer's
    $/h over its modelled batch-8 decode rate (this machine's $0/h would hide the cost of its time)."""
    if teacher.source == "endpoint":
        return endpoint_usd_per_1k(teacher)
    shape = inputs.shapes[teacher.id]
    best = math.inf
    for offer, eff in zip(inputs.offers, inputs.efficiencies, strict=True):
        if (
            offer.is_local
            or shape.weight_bytes(2) / 1e9 > offer.gpu_memory_gb * roofline.GPU_MEMORY_UTILISATION
        ):
            continue
        step = roofline.decode_step_s(
            shape.weight_bytes(2),
            shape.kv_bytes(2),
            shape.params,
            shape.layers,
            8,
            512,
            offer.mem_bw_gbps,
            offer.bf16_tflops,
            eff,
        )
        tok_s = 8 / float(step) * offer.gpu_count
        best = min(best, offer.on_demand_usd_h / (tok_s * 3600) * 1000)
    return 0.0 if best == math.inf else best
