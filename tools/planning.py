"""Plan a distillation job: candidate plans, four objectives, constraints, Pareto front, choice, why.

Candidates = server offer x (teacher, student) pair x strategy x LoRA rank x data size (the last
two only where the spec leaves them free). Every candidate is evaluated with numpy in one pass:

- serving: roofline figures of the student on the server (tools/roofline.py), replicas to carry the
  spec's qps, on-demand $/h x replicas x hours of the stated duration;
- training: FLOPs (6 P T, LoRA 4 P T, + teacher forward for logit KD, + GRPO rollouts for injection)
  over the server's achievable FLOP/s; on-demand $/h x hours; memory for weights + optimiser states;
- synthesis: teacher tokens needed for the data (1 / yield attempts) x teacher $/1k tokens;
- accuracy: tools/pairing.expected_accuracy.

Objectives (minimised): total $, p95 ms, -accuracy, training hours. Constraints from the spec drop
candidates (each drop is counted by reason); the exact non-dominated filter gives the front; the
user's preference (weighted) or the knee picks a point; `explain` says what was traded for what.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from stratos_agent.tools import pareto, roofline
from stratos_agent.tools.pairing import (
    STRATEGY_CODES,
    TaskProfile,
    capacity,
    endpoint_usd_per_1k,
    expected_accuracy,
    model_shape,
    score_pairs,
    task_profile,
)
from stratos_agent.tools.roofline import Efficiency, ModelShape

from stratos_agent.catalog import Catalog, canonical_gpu, load_catalog
from stratos_agent.errors import InputError
from stratos_agent.models.candidate import ModelCandidate
from stratos_agent.records.plans import PairScore, Plan, PlanPoint
from stratos_agent.records.servers import BenchResult, Figure, ServerOffer, ServerProfile
from stratos_agent.spec import DistillationSpec

EPOCHS = 3  # TRL SFTConfig default num_train_epochs
RATIONALE_TOKENS = 256  # one synthesised completion (tools/synth.py default max_new_tokens)
GRPO_GENERATIONS = 8  # TRL GRPOConfig default num_generations
GRPO_PROMPT_FRACTION = 0.5  # injection runs GRPO on half as many prompts as SFT examples (assumption)
# Training memory per parameter: mixed-precision Adam keeps bf16 weights + grads and fp32 master +
# two moments = 16 bytes (ZeRO paper, Rajbhandari et al. 2020); LoRA keeps a frozen bf16 base (2 B)
# and adapter states (~2% of params x 16 B).
TRAIN_BYTES_FULL = 16.0
TRAIN_BYTES_LORA = 2.0 + 0.02 * 16.0
TP_EFFICIENCY = 0.8  # tensor parallel across NVLink loses ~20% to all-reduce (assumption, Megatron-LM)
# Reverse synthesis hands the teacher the answer, so at least half its rationales verify (assumption);
# forward synthesis keeps a fraction = probe accuracy.
REVERSE_MIN_YIELD = 0.5
DEFAULT_LORA_RANKS = (0, 8, 16, 64)
DEFAULT_DATA_SIZES = (500, 2000, 8000)
OBJECTIVES = ("cost_usd", "p95_ms", "accuracy", "train_hours")
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
MAX_FRONT_RECORDS = 300


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


# ---------------------------------------------------------------- inputs


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


def gather_inputs(
    spec: DistillationSpec,
    *,
    catalog: Catalog | None = None,
    gpus: list[str] | None = None,
    include_local: bool = True,
    local: ServerOffer | None = None,
) -> PlanningInputs:
    """Catalog + this machine, calibrated efficiencies, registry candidates and their shapes."""
    from stratos_agent.tools import server_bench

    from stratos_agent.models import get_registry

    task = task_profile(spec.task)
    catalog = catalog or load_catalog()
    offers = filter_offers(catalog.offers, spec, gpus)
    results = server_bench.cached_results()
    effs = [_gpu_efficiency(o, results) for o in offers]
    measured: dict[tuple[str, str], BenchResult] = {}
    if (
        include_local
        and (not spec.constraints.clouds or "local" in spec.constraints.clouds)
        and (not gpus or any(g.upper() == "CPU" for g in gpus))
    ):
        local = local or server_bench.local_offer()
        mine = server_bench.cached_results(server_bench.hardware_fingerprint())
        mine = [r for r in mine if r.backend == "transformers"]
        eff = (
            roofline.calibrate(mine, local.mem_bw_gbps, local.bf16_tflops, base=CPU_DEFAULT)
            if mine
            else CPU_DEFAULT
        )
        offers, effs = [local, *offers], [eff, *effs]
        measured = {(local.id, r.model): r for r in mine}
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
        else [c for c in pool if "student" in _roles(registry, c)]
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


# ---------------------------------------------------------------- serving table (offer x student)


def _offer_arrays(offers: list[ServerOffer], effs: list[Efficiency]) -> dict[str, np.ndarray]:
    def col(f) -> np.ndarray:
        return np.array([f(o) for o in offers], dtype=float)

    def eff_col(name: str) -> np.ndarray:
        return np.array([getattr(e, name) for e in effs], dtype=float)

    return {
        "price": col(lambda o: o.on_demand_usd_h),
        "bw": col(lambda o: o.mem_bw_gbps),
        "tflops": col(lambda o: o.bf16_tflops),
        "mem": col(lambda o: o.gpu_memory_gb),
        "count": col(lambda o: o.gpu_count),
        "is_gpu": np.array([not o.is_local for o in offers]),
        "local": np.array([o.is_local for o in offers]),
        **{f"eff_{k}": eff_col(k) for k in EFF_FIELDS},
    }


EFF_FIELDS = (
    "bw",
    "flops",
    "step_overhead_s",
    "request_overhead_s",
    "tail",
    "train_mfu",
    "batched_read",
    "layer_overhead_s",
    "overlap",
)


def _eff_from(a: dict[str, np.ndarray], idx=slice(None)) -> Efficiency:
    """An Efficiency whose fields are arrays (one per offer, or gathered per candidate)."""
    return Efficiency(source="arrays", **{k: a[f"eff_{k}"][idx] for k in EFF_FIELDS})


@dataclass
class ServingTable:
    """Per (offer, student): modelled p95, sustainable qps per instance, replicas, $ and fit."""

    p95_ms: np.ndarray
    capacity_qps: np.ndarray
    instances: np.ndarray
    cost_usd: np.ndarray
    usd_per_1m_tokens: np.ndarray
    mem_needed_gb: np.ndarray
    fits: np.ndarray
    carries: np.ndarray  # False: this machine alone cannot carry the qps
    source: np.ndarray  # "measured" / "modelled"


def serving_table(spec: DistillationSpec, inputs: PlanningInputs) -> ServingTable:
    a = _offer_arrays(inputs.offers, inputs.efficiencies)
    tr = spec.traffic
    ctx = tr.prompt_tokens + tr.output_tokens
    shapes = [inputs.shapes[s.id] for s in inputs.students]
    dtype = np.where(a["is_gpu"], 2.0, 4.0)[:, None]  # bf16 on GPUs, fp32 on CPU (as measured)
    params = np.array([s.params for s in shapes])[None, :]
    layers = np.array([s.layers for s in shapes])[None, :]
    w = params * dtype
    kv = np.array([s.kv_bytes_per_token_bf16 for s in shapes])[None, :] * dtype / 2
    need = roofline.memory_needed_gb(w, kv, ctx, tr.concurrency, a["is_gpu"][:, None])
    avail_one = roofline.memory_available_gb(a["mem"], a["is_gpu"])[:, None]
    one_gpu = need <= avail_one
    tp = ~one_gpu & (need <= avail_one * a["count"][:, None])  # shard across the instance's GPUs
    fits = one_gpu | tp
    # One replica per GPU when the model fits one GPU; else one tensor-parallel replica per instance.
    replicas = np.where(one_gpu, a["count"][:, None], 1.0)
    scale = np.where(tp, a["count"][:, None] * TP_EFFICIENCY, 1.0)
    eff = _eff_from({k: v[:, None] for k, v in a.items()})
    fig = roofline.serving_figures(
        w,
        kv,
        params,
        layers,
        a["bw"][:, None] * scale,
        a["tflops"][:, None] * scale,
        eff,
        tr.prompt_tokens,
        tr.output_tokens,
        tr.concurrency,
        batches=(),
    )
    cap = fig.capacity_qps * replicas
    instances = np.maximum(1.0, np.ceil(tr.qps / cap))
    carries = ~(a["local"][:, None] & (instances > 1))
    hours = tr.duration_days * 24
    cost = instances * a["price"][:, None] * hours
    usd_1m = a["price"][:, None] / (cap * 3600 * tr.output_tokens) * 1e6
    source = np.full(cost.shape, "modelled", dtype=object)
    for i, offer in enumerate(inputs.offers):
        for j, s in enumerate(inputs.students):
            m = inputs.measured.get((offer.id, s.id))
            if (
                m
                and (m.prompt_tokens, m.output_tokens) == (tr.prompt_tokens, tr.output_tokens)
                and tr.concurrency == 1
            ):
                fig.p95_s[i, j] = m.p95_ms / 1e3  # same request shape, no batching: the measurement itself
                source[i, j] = "measured"
    return ServingTable(
        p95_ms=fig.p95_s * 1e3,
        capacity_qps=cap,
        instances=instances,
        cost_usd=cost,
        usd_per_1m_tokens=usd_1m,
        mem_needed_gb=need,
        fits=fits,
        carries=carries,
        source=source,
    )


def server_profiles(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    table: ServingTable | None = None,
    batches: tuple[int, ...] = (1, 4, 8),
) -> list[ServerProfile]:
    """One ServerProfile per (offer, student): measured figures where this machine timed the model with
    the spec's request shape, roofline-modelled ones elsewhere, each labelled."""
    table = table or serving_table(spec, inputs)
    tr = spec.traffic
    out = []
    for i, (offer, eff) in enumerate(zip(inputs.offers, inputs.efficiencies, strict=True)):
        dtype = 4.0 if offer.is_local else 2.0
        for j, student in enumerate(inputs.students):
            shape = inputs.shapes[student.id]
            m = inputs.measured.get((offer.id, student.id))
            if m and (m.prompt_tokens, m.output_tokens) != (tr.prompt_tokens, tr.output_tokens):
                m = None  # another request shape: not this spec's figure
            fig = roofline.serving_figures(
                shape.weight_bytes(dtype),
                shape.kv_bytes(dtype),
                shape.params,
                shape.layers,
                offer.mem_bw_gbps,
                offer.bf16_tflops,
                eff,
                tr.prompt_tokens,
                tr.output_tokens,
                tr.concurrency,
                batches,
            )

            def pick(measured: float | None, modelled: float, unit: str) -> Figure:
                src = "measured" if measured is not None else "modelled"
                return Figure(
                    value=float(measured if measured is not None else modelled), unit=unit, source=src
                )

            need, fits = float(table.mem_needed_gb[i, j]), bool(table.fits[i, j])
            avail = offer.gpu_memory_gb * offer.gpu_count
            out.append(
                ServerProfile(
                    offer=offer,
                    model=student.id,
                    fits=fits,
                    memory_needed_gb=need,
                    fit_reason=f"needs {need:.1f} GB (weights + KV cache for {tr.concurrency} x "
                    f"{tr.prompt_tokens + tr.output_tokens} tokens + runtime) of {avail:g} GB",
                    prefill_tok_s=pick(m and m.prefill_tok_s, float(fig.prefill_tok_s), "tok/s"),
                    decode_tok_s={
                        b: pick(m.decode_tok_s.get(b) if m else None, float(fig.decode_tok_s[b]), "tok/s")
                        for b in batches
                    },
                    ttft_ms=pick(m and m.ttft_ms, float(fig.ttft_s) * 1e3, "ms"),
                    p50_ms=pick(m and m.p50_ms, float(fig.p50_s) * 1e3, "ms"),
                    p95_ms=Figure(value=float(table.p95_ms[i, j]), unit="ms", source=table.source[i, j]),
                    capacity_qps=Figure(
                        value=float(table.capacity_qps[i, j]), unit="req/s", source="modelled"
                    ),
                )
            )
    return out


def student_serving_summary(table: ServingTable, inputs: PlanningInputs) -> dict[str, tuple[float, float]]:
    """Per student: best p95 and cheapest $/1M tokens over the servers where it fits (the extremes of
    its (p95, $/1M) Pareto front)."""
    out = {}
    for j, s in enumerate(inputs.students):
        ok = table.fits[:, j] & table.carries[:, j]
        if ok.any():
            out[s.id] = (float(table.p95_ms[ok, j].min()), float(table.usd_per_1m_tokens[ok, j].min()))
    return out


# ---------------------------------------------------------------- candidate grid


@dataclass
class Candidates:
    """Column arrays, one entry per candidate plan."""

    offer: np.ndarray
    pair: np.ndarray
    strategy: np.ndarray
    rank: np.ndarray
    data_size: np.ndarray
    F: np.ndarray  # n x 4 minimised objectives (cost, p95, -acc, hours)
    cost_training: np.ndarray
    cost_serving: np.ndarray
    cost_synthesis: np.ndarray
    replicas: np.ndarray
    hw_reasons: dict[str, np.ndarray]  # reason -> mask of candidates it excludes (hardware)

    def __len__(self) -> int:
        return len(self.offer)


def grid_indices(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    pairs: list[PairScore],
    lora_ranks=DEFAULT_LORA_RANKS,
    data_sizes=DEFAULT_DATA_SIZES,
) -> tuple[np.ndarray, ...]:
    """Every (offer, pair, strategy code, LoRA rank, data size) combination with an allowed strategy."""
    sizes = (spec.data_size,) if spec.data_size else tuple(data_sizes)
    codes = np.arange(len(STRATEGY_CODES))
    o, p, s, r, n = (
        x.ravel()
        for x in np.meshgrid(
            np.arange(len(inputs.offers)),
            np.arange(len(pairs)),
            codes,
            np.asarray(lora_ranks),
            np.asarray(sizes),
            indexing="ij",
        )
    )
    keep = allowed_matrix(pairs)[p, s]
    return o[keep], p[keep], s[keep], r[keep], n[keep]


def allowed_matrix(pairs: list[PairScore]) -> np.ndarray:
    """allowed[pair, strategy code]: the strategy is possible for the pair (tools/strategy.py)."""
    return np.array(
        [
            [code in {STRATEGY_CODES[x] for x in pr.decision.allowed} for code in range(len(STRATEGY_CODES))]
            for pr in pairs
        ]
    )


def build_candidates(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    pairs: list[PairScore],
    table: ServingTable,
    lora_ranks=DEFAULT_LORA_RANKS,
    data_sizes=DEFAULT_DATA_SIZES,
) -> Candidates:
    """The full grid of candidate plans, evaluated."""
    return evaluate_candidates(
        spec, inputs, pairs, table, *grid_indices(spec, inputs, pairs, lora_ranks, data_sizes)
    )


def evaluate_candidates(
    spec: DistillationSpec, inputs: PlanningInputs, pairs: list[PairScore], table: ServingTable, o, p, s, r, n
) -> Candidates:
    """Objectives of arbitrary candidates given as index arrays (the grid, or NSGA-II's population)."""
    a = _offer_arrays(inputs.offers, inputs.efficiencies)
    o, p, s, r, n = (np.asarray(x).astype(int) for x in (o, p, s, r, n))
    stud_index = {st.id: j for j, st in enumerate(inputs.students)}
    stud = np.array([stud_index[pr.student] for pr in pairs])[p]
    sp = np.array([inputs.shapes[pr.student].params for pr in pairs])[p]
    tshape = [inputs.shapes.get(pr.teacher) for pr in pairs]
    tp = np.array([t.params if t else 0.0 for t in tshape])[p]
    probe = np.array([pr.probe_accuracy for pr in pairs])[p]
    t_usd = np.array([inputs.teacher_usd_per_1k.get(pr.teacher, 0.0) for pr in pairs])[p]
    lora = r > 0
    inj = s == STRATEGY_CODES["injection"]
    logit = s == STRATEGY_CODES["alignment-logit"]

    tokens = n * EPOCHS * (spec.traffic.prompt_tokens + RATIONALE_TOKENS)
    flops = roofline.training_flops(
        sp,
        tokens,
        teacher_params=np.where(logit, tp, 0.0),
        lora=lora,
        rl_rollouts=np.where(inj, GRPO_GENERATIONS * GRPO_PROMPT_FRACTION * n, 0.0),
        rl_tokens=RATIONALE_TOKENS,
    )
    hours = roofline.training_hours(flops, a["tflops"][o], a["count"][o], _eff_from(a, o))
    train_mem = sp * np.where(lora, TRAIN_BYTES_LORA, TRAIN_BYTES_FULL) / 1e9 + np.where(
        logit, tp * 2 / 1e9, 0.0
    )
    train_fits = train_mem + 1.0 <= a["mem"][o] * np.where(
        a["is_gpu"][o], roofline.GPU_MEMORY_UTILISATION, roofline.CPU_MEMORY_UTILISATION
    )
    cost_train = hours * a["price"][o]
    yield_ = np.clip(np.where(inj, np.maximum(probe, REVERSE_MIN_YIELD), probe), 0.02, 1.0)
    cost_synth = n * RATIONALE_TOKENS / yield_ / 1000 * t_usd
    cost_serve = table.cost_usd[o, stud]
    cap = capacity(sp, inputs.task.difficulty)
    acc = expected_accuracy(s, probe, cap, n, r, inputs.task.difficulty)
    F = np.column_stack([cost_train + cost_serve + cost_synth, table.p95_ms[o, stud], -acc, hours])
    reasons = {
        "serving memory (weights + KV cache + runtime) exceeds the server": ~table.fits[o, stud],
        "training memory (weights + optimiser states) exceeds the server": ~train_fits,
        "this machine alone cannot carry the traffic": ~table.carries[o, stud],
    }
    return Candidates(
        offer=o,
        pair=p,
        strategy=s,
        rank=r,
        data_size=n,
        F=F,
        cost_training=cost_train,
        cost_serving=cost_serve,
        cost_synthesis=cost_synth,
        replicas=table.instances[o, stud],
        hw_reasons=reasons,
    )


def spec_constraints(spec: DistillationSpec, F: np.ndarray) -> dict[str, np.ndarray]:
    """Constraint name -> mask of candidates VIOLATING it (only constraints the spec sets)."""
    c = spec.constraints
    out = {}
    if c.budget_usd is not None:
        out[f"budget <= ${c.budget_usd:g}"] = F[:, 0] > c.budget_usd
    if c.p95_latency_ms is not None:
        out[f"p95 <= {c.p95_latency_ms:g} ms"] = F[:, 1] > c.p95_latency_ms
    if c.min_accuracy is not None:
        out[f"accuracy >= {c.min_accuracy:.0%}"] = -F[:, 2] < c.min_accuracy
    if c.deadline_hours is not None:
        out[f"training <= {c.deadline_hours:g} h"] = F[:, 3] > c.deadline_hours
    return out


# ---------------------------------------------------------------- plan


def _point(
    i: int, cands: Candidates, inputs: PlanningInputs, pairs: list[PairScore], table: ServingTable
) -> PlanPoint:
    offer = inputs.offers[cands.offer[i]]
    pair = pairs[cands.pair[i]]
    codes = {v: k for k, v in STRATEGY_CODES.items()}
    j = [s.id for s in inputs.students].index(pair.student)
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
        latency_source=table.source[cands.offer[i], j],
    )


def _fmt_cost(x: float) -> str:
    return f"${x:,.2f}" if x < 100 else f"${x:,.0f}"


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
        f"{other.accuracy:.0%})"
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
            f"Chose {chosen.label()} on {chosen.server} ({how}, among {len(front)} Pareto-optimal plans): "
            f"{_fmt_cost(chosen.cost_usd)} total ({_fmt_cost(chosen.cost_training_usd)} training, "
            f"{_fmt_cost(chosen.cost_serving_usd)} serving on {chosen.replicas} instance(s), "
            f"{_fmt_cost(chosen.cost_synthesis_usd)} teacher data), p95 {chosen.p95_ms:.0f} ms "
            f"({chosen.latency_source}), expected accuracy {chosen.accuracy:.0%}, "
            f"{chosen.train_hours:.2g} h of training."
        )
    ]
    parts += [text for role, other in refs if (text := _versus(chosen, other, role))]
    if len(parts) == 1:
        parts.append("It is at once the cheapest, the most accurate and the fastest plan on the front.")
    return " ".join(parts)


def _infeasible(
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


@dataclass
class Screened:
    """Candidates with their constraint masks: `ok` = fits the hardware and meets every spec constraint."""

    cands: Candidates
    hw_ok: np.ndarray
    spec_mask: dict[str, np.ndarray]
    ok: np.ndarray
    excluded: dict[str, int]


def screen(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    pairs: list[PairScore],
    table: ServingTable,
    lora_ranks=DEFAULT_LORA_RANKS,
    data_sizes=DEFAULT_DATA_SIZES,
) -> Screened:
    """Evaluate the candidate grid and apply hardware and spec constraints, counting drops by reason."""
    cands = build_candidates(spec, inputs, pairs, table, lora_ranks, data_sizes)
    hw_ok = np.ones(len(cands), dtype=bool)
    excluded: dict[str, int] = {}
    for reason, bad in cands.hw_reasons.items():
        if bad.any():
            excluded[reason] = int(bad.sum())
        hw_ok &= ~bad
    spec_mask = spec_constraints(spec, cands.F)
    ok = hw_ok.copy()
    for reason, bad in spec_mask.items():
        if (bad & hw_ok).any():
            excluded[f"violates {reason}"] = int((bad & hw_ok).sum())
        ok &= ~bad
    return Screened(cands, hw_ok, spec_mask, ok, excluded)


def choose(F_front: np.ndarray, preference: str) -> tuple[int, str]:
    """Index of the chosen front point and how it was chosen (knee, or the user's preference weights)."""
    weights = PREFERENCE_WEIGHTS[preference]
    if weights is None:
        return pareto.knee_index(F_front, MATERIAL), "knee point: no stated priority"
    return pareto.weighted_index(F_front, np.array(weights), MATERIAL), f"preference '{preference}'"


def make_plan(
    spec: DistillationSpec,
    inputs: PlanningInputs,
    pairs: list[PairScore],
    *,
    table: ServingTable | None = None,
    lora_ranks=DEFAULT_LORA_RANKS,
    data_sizes=DEFAULT_DATA_SIZES,
) -> Plan:
    """The Pareto plan for `spec` (see the module docstring). Never raises for an infeasible spec:
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
        binding, hints = _infeasible(sc.spec_mask, sc.hw_ok, cands, inputs)
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
    k, how = choose(cands.F[front_idx], spec.preference)
    order = np.argsort(cands.F[front_idx, 0])[:MAX_FRONT_RECORDS]
    if k not in order:
        order = np.append(order, k)
    front = [_point(int(front_idx[i]), cands, inputs, pairs, table) for i in order]
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


def save_front_png(plan: Plan, path) -> None:
    """Pareto front as cost vs p95 (log axes), colour = expected accuracy, star = the chosen plan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    if plan.front:
        pts = ax.scatter(
            [p.cost_usd for p in plan.front],
            [p.p95_ms for p in plan.front],
            c=[100 * p.accuracy for p in plan.front],
            cmap="viridis",
            s=28,
            edgecolors="k",
            linewidths=0.3,
        )
        fig.colorbar(pts, ax=ax, label="expected accuracy (%)")
        for p in {p.gpu: p for p in sorted(plan.front, key=lambda p: -p.cost_usd)}.values():
            ax.annotate(p.gpu, (p.cost_usd, p.p95_ms), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if plan.chosen:
        ax.scatter(
            [plan.chosen.cost_usd],
            [plan.chosen.p95_ms],
            marker="*",
            s=320,
            c="red",
            edgecolors="k",
            label=f"chosen: {plan.chosen.gpu} {plan.chosen.strategy}",
            zorder=5,
        )
        ax.legend(loc="upper right", fontsize=8)
    costs, lats = [p.cost_usd for p in plan.front], [p.p95_ms for p in plan.front]
    if costs and min(costs) > 0 and max(costs) / min(costs) > 20:  # log axes only when values span decades
        ax.set_xscale("log")
    if lats and max(lats) / min(lats) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("total cost: training + serving + teacher data ($)")
    ax.set_ylabel("p95 request latency (ms)")
    ax.set_title(
        f"Stratos plan for {plan.task}: Pareto front ({len(plan.front)} plans, catalog {plan.catalog_date})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = [
    "PlanContext",
    "PlanningInputs",
    "Screened",
    "build_candidates",
    "choose",
    "evaluate_candidates",
    "explain",
    "front_indices",
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
]
