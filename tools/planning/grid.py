"""Candidate grid: server offer x (teacher, student) pair x strategy x LoRA rank x data size.

Every candidate is evaluated with numpy in one pass into four minimised objectives (total $, p95 ms,
-accuracy, training hours):

- serving: the serving table (serving.py): replicas to carry the spec's qps, $ over its duration;
- training: FLOPs (6 P T, LoRA 4 P T, + teacher forward for logit KD; no GRPO: the agent does not run it)
  over the server's achievable FLOP/s; on-demand $/h x hours; memory for weights + optimiser states;
- synthesis: teacher tokens needed for the data (1 / yield attempts) x teacher $/1k tokens;
- accuracy: predicted from the calibration store's learning curves at n x EPOCHS examples (measured or
  fitted, with a 95% interval) where a curve exists, else the prior tools/pairing.expected_accuracy
  (measured.py); training hours rescaled by this machine's measured throughput where there is one.

`screen` then applies hardware and spec constraints, counting each drop by reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from stratos_agent.tools import roofline
from stratos_agent.tools.pairing import STRATEGY_CODES, capacity, expected_accuracy
from stratos_agent.tools.planning.inputs import PlanningInputs
from stratos_agent.tools.planning.measured import AccuracyColumns, accuracy_columns, hours_scale, streams
from stratos_agent.tools.planning.serving import ServingTable, eff_from, offer_arrays

from stratos_agent.records.plans import PairScore
from stratos_agent.spec import DistillationSpec

EPOCHS = 3  # TRL SFTConfig default num_train_epochs
RATIONALE_TOKENS = 256  # one synthesised completion (tools/synth.py default max_new_tokens)
# Training memory per parameter: mixed-precision Adam keeps bf16 weights + grads and fp32 master +
# two moments = 16 bytes (ZeRO paper, Rajbhandari et al. 2020); LoRA keeps a frozen bf16 base (2 B)
# and adapter states (~2% of params x 16 B).
TRAIN_BYTES_FULL = 16.0
TRAIN_BYTES_LORA = 2.0 + 0.02 * 16.0
# Teacher-mode (reverse) synthesis hands the teacher the answer, so at least half its rationales verify
# (assumption); forward synthesis keeps a fraction = probe accuracy; the solver (knowledge injection) calls no
# teacher at all, so its data costs nothing.
REVERSE_MIN_YIELD = 0.5
DEFAULT_LORA_RANKS = (0, 8, 16, 64)
# Rows to synthesise (x EPOCHS examples trained). The large sizes (48,000 and 96,000 examples) are for
# students that see a hundred examples a second or more (a micro student on 2 cores: ~4-14 minutes);
# deadline and budget drop them for the rest.
DEFAULT_DATA_SIZES = (500, 2000, 8000, 16000, 32000)


def synthesis_modes(pairs: list[PairScore]) -> np.ndarray:
    """[pair, strategy code] -> how the run would make that plan's data (tools/synth.choose_mode): the same
    rule the run applies, fed the teacher's probe only where one ran (as the run's pair table has it)."""
    from stratos_agent.tools.synth import choose_mode

    strategies = sorted(STRATEGY_CODES, key=STRATEGY_CODES.__getitem__)
    return np.array([[choose_mode(name, pr.teacher, pr.probe_accuracy if pr.probe_source == "measured" else None)
                      for name in strategies] for pr in pairs])


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
    acc: AccuracyColumns | None = None  # where each accuracy comes from: interval, source, runs
    hours_measured: np.ndarray | None = None  # training time = this machine's measured throughput

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
    # A micro student trains on a stream, always as a full fine-tune: only rank 0 describes what runs.
    by_id = {c.id: c for c in inputs.students}
    streaming = np.array([streams(by_id.get(pr.student)) for pr in pairs], dtype=bool)
    keep = allowed_matrix(pairs)[p, s] & ~(streaming[p] & (r > 0))
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
    a = offer_arrays(inputs.offers, inputs.efficiencies)
    o, p, s, r, n = (np.asarray(x).astype(int) for x in (o, p, s, r, n))
    stud_index = {st.id: j for j, st in enumerate(inputs.students)}
    stud = np.array([stud_index[pr.student] for pr in pairs])[p]
    sp = np.array([inputs.shapes[pr.student].params for pr in pairs])[p]
    tshape = [inputs.shapes.get(pr.teacher) for pr in pairs]
    tp = np.array([t.params if t else 0.0 for t in tshape])[p]
    probe = np.array([pr.probe_accuracy for pr in pairs])[p]
    t_usd = np.array([inputs.teacher_usd_per_1k.get(pr.teacher, 0.0) for pr in pairs])[p]
    lora = r > 0
    logit = s == STRATEGY_CODES["alignment-logit"]

    tokens = n * EPOCHS * (spec.traffic.prompt_tokens + RATIONALE_TOKENS)
    flops = roofline.training_flops(
        sp,
        tokens,
        teacher_params=np.where(logit, tp, 0.0),
        lora=lora,
        rl_rollouts=0.0,  # the agent runs SFT only (no GRPO stage yet): a plan prices what runs
        rl_tokens=RATIONALE_TOKENS,
    )
    hours = roofline.training_hours(flops, a["tflops"][o], a["count"][o], eff_from(a, o))
    rho, rho_measured = hours_scale(inputs, stud, r, spec.traffic.prompt_tokens + RATIONALE_TOKENS)
    hours = hours * rho
    sft_only = ~logit  # no teacher forward on top
    hours_measured = rho_measured & a["local"][o] & sft_only
    train_mem = sp * np.where(lora, TRAIN_BYTES_LORA, TRAIN_BYTES_FULL) / 1e9 + np.where(
        logit, tp * 2 / 1e9, 0.0
    )
    train_fits = train_mem + 1.0 <= a["mem"][o] * np.where(
        a["is_gpu"][o], roofline.GPU_MEMORY_UTILISATION, roofline.CPU_MEMORY_UTILISATION
    )
    cost_train = hours * a["price"][o]
    # the data the run makes, priced as it is made (synth.choose_mode, which the run's synthesis calls)
    mode = synthesis_modes(pairs)[p, s]
    yield_ = np.clip(np.where(mode == "teacher", np.maximum(probe, REVERSE_MIN_YIELD), probe), 0.02, 1.0)
    cost_synth = np.where(mode == "solver", 0.0, n * RATIONALE_TOKENS / yield_ / 1000 * t_usd)
    cost_serve = table.cost_usd[o, stud]
    cap = capacity(sp, inputs.task.difficulty)
    prior = expected_accuracy(s, probe, cap, n, r, inputs.task.difficulty)
    accs = accuracy_columns(inputs, stud, r, s, n * EPOCHS, probe, prior)
    acc = accs.value
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
        acc=accs,
        hours_measured=hours_measured,
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
