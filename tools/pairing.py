"""Teacher x student pairing: probe accuracy, capacity vs task difficulty, tokenizer match, costs.

The expected-accuracy model (used by the pair table AND the planner's accuracy objective):

    capacity(P, d)  = 1 / (1 + exp(-(log10 P - (7 + 2.5 d)) / 0.6))
        student accuracy ceiling after narrow fine-tuning; d in [0, 1] is task difficulty. A logistic
        in log-parameters is the shape of scaling-law accuracy curves (Kaplan et al. 2020, Wei et al.
        2022 emergent abilities); the midpoint 10^(7 + 2.5 d) puts a 50% ceiling at ~30M params for a
        trivial task and ~3B for the hardest, the slope 0.6 spreads it over ~1.5 decades. A PRIOR,
        not a measurement: an eval of the trained student (tools/evaluate.py) is the real number, and
        the planner replaces this prior by the calibration store's prediction (a learning curve
        fitted on recorded runs, tools/calibration.py via tools/planning/measured.py) wherever a run
        of that (task, student, method) was recorded; the pair table below stays on the prior.
    data(n, d, s)   = 1 - exp(-n / n0),  n0 = 400 (1 + 4 d), halved for logit KD
        saturating learning curve; logit KD gives a dense per-token signal and is more sample
        efficient (Hinton et al. 2015; Agarwal et al. 2024, GKD).
    lora(r)         = 0.94 / 0.96 / 0.98 / 1.0 for r = 8 / 16 / 64 / full
        LoRA (Hu et al. 2021) matches full fine-tuning within 1-2 points at r = 8..64 on its
        benchmarks; reasoning tasks lose a little more at small ranks (Biderman et al. 2024).
    alignment:  acc = min(capacity, probe) x data x lora         (the student copies the teacher)
    injection:  acc = capacity x data x lora x (0.8 + 0.2 probe)  (labels from the solver are right;
        the teacher only writes the reasoning, whose quality still matters a little: the paper's
        stated limit "synthetic data is only as good as the teacher's reasoning steps")

Pair score (ranking aid for the table; the planner uses the full Pareto search):
    score = E[acc] - 0.05 log10(1 + serving $/1M tok) - 0.05 log10(1 + teacher $/1M tok) + 0.02 [logit KD]
i.e. a tenfold price increase costs 5 accuracy points, a shared tokenizer is worth 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stratos_agent.tools.roofline import ModelShape
from stratos_agent.tools.strategy import decide_strategy

from stratos_agent.errors import InputError
from stratos_agent.models.candidate import ModelCandidate
from stratos_agent.records.data import ProbeResult
from stratos_agent.records.plans import PairScore, Strategy

# Task difficulty priors in [0, 1] (used when a pack does not state `difficulty_score`).
# mahjong 0.85: frontier chat models do poorly on winning-tile listing (REFERENCE.md; the paper's
# GPT-4o baseline is a quarter of its distilled student). gsm8k 0.7: multi-step arithmetic; sub-1B
# models stay under ~30% even fine-tuned (SmolLM2 report). User tasks default to the middle.
DIFFICULTY_PRIORS = {"mahjong": 0.85, "gsm8k": 0.7}
DEFAULT_DIFFICULTY = 0.5
LORA_FACTOR = {8: 0.94, 16: 0.96, 64: 0.98, 0: 1.0}
# Endpoint teachers: $ per 1k OUTPUT tokens from the providers' price pages (2025-08); unknown
# endpoints get the gpt-4o-mini price (an assumption, shown as such in the table notes).
ENDPOINT_USD_PER_1K = {"gpt-4o": 0.010, "gpt-4o-mini": 0.0006, "gpt-4.1": 0.008, "gpt-4.1-mini": 0.0016}
DEFAULT_ENDPOINT_USD_PER_1K = 0.0006


@dataclass(frozen=True)
class TaskProfile:
    name: str
    difficulty: float
    has_solver: bool  # answers known by construction (solver / verified dataset): injection possible


def task_profile(task: str) -> TaskProfile:
    """Difficulty and solver availability of a task pack (`jsonl:PATH` = user data with verified answers)."""
    from stratos_agent.tasks import get_task_pack

    if task.startswith("jsonl:"):
        path = Path(task.removeprefix("jsonl:"))
        if not path.exists():
            raise InputError(f"task data file {path} does not exist")
        return TaskProfile(task, DEFAULT_DIFFICULTY, True)  # a verified dataset is reverse-synthesisable
    pack = get_task_pack(task)
    difficulty = getattr(pack, "difficulty_score", None) or DIFFICULTY_PRIORS.get(
        pack.name, DEFAULT_DIFFICULTY
    )
    # Every registered pack samples items whose answer is known by construction (tasks/base.py).
    return TaskProfile(pack.name, float(difficulty), bool(getattr(pack, "has_solver", True)))


def capacity(params, difficulty):
    return 1.0 / (1.0 + np.exp(-(np.log10(params) - (7.0 + 2.5 * difficulty)) / 0.6))


def data_factor(n, difficulty, logit_kd):
    n0 = 400.0 * (1.0 + 4.0 * difficulty) * np.where(logit_kd, 0.5, 1.0)
    return 1.0 - np.exp(-np.asarray(n, dtype=float) / n0)


def lora_factor(rank):
    ranks = np.asarray(rank)
    out = np.ones(ranks.shape)
    for r, f in LORA_FACTOR.items():
        out = np.where(ranks == r, f, out)
    return out


STRATEGY_CODES: dict[Strategy, int] = {"alignment-seq": 0, "alignment-logit": 1, "injection": 2}


def expected_accuracy(strategy_code, probe, cap, n, rank, difficulty):
    """Vectorised expected task accuracy (see the module docstring)."""
    code = np.asarray(strategy_code)
    data = data_factor(n, difficulty, code == 1)
    lora = lora_factor(rank)
    align = np.minimum(cap, probe) * data * lora
    inject = cap * data * lora * (0.8 + 0.2 * probe)
    return np.clip(np.where(code == 2, inject, align), 0.0, 1.0)


def model_shape(cand: ModelCandidate) -> ModelShape | None:
    """Roofline shape of a candidate; None for endpoints (no local weights)."""
    if cand.parameters is None:
        return None
    kv = cand.kv_cache_bytes_per_token(2)
    if kv is None:
        raise InputError(f"model {cand.id!r} lacks layer/head metadata needed for its KV-cache size")
    return ModelShape(cand.id, float(cand.parameters), float(kv), int(cand.layers or 0))


def prior_probe(cand: ModelCandidate, difficulty: float) -> float:
    """Probe accuracy to assume until a probe runs: half the fine-tuned ceiling for a local model
    (cold prompting reaches far less than fine-tuning), 1 - difficulty for an unmeasured endpoint."""
    if cand.parameters is None:
        return 1.0 - difficulty
    return float(0.5 * capacity(cand.parameters, difficulty))


def endpoint_usd_per_1k(cand: ModelCandidate) -> float:
    name = (cand.endpoint_model or cand.id).removeprefix("endpoint:")
    return ENDPOINT_USD_PER_1K.get(name, DEFAULT_ENDPOINT_USD_PER_1K)


def probe_results(task: str, teachers: list[str], n: int = 16, seed: int = 0) -> dict[str, ProbeResult]:
    """Each teacher's forward-synthesis probe on `n` fresh items (tools/synth.probe_teacher, cached there):
    correct, unparsable and accuracy, i.e. the counts a decision on the accuracy can be checked against."""
    from stratos_agent.tools.synth import probe_teacher
    from stratos_agent.tools.teachers import make_teacher

    out = {}
    for teacher in teachers:
        endpoint = teacher.startswith("endpoint:")
        client = make_teacher(
            None if endpoint else teacher,
            endpoint=_endpoint_url() if endpoint else None,
            model_name=teacher.removeprefix("endpoint:") if endpoint else None,
        )
        out[teacher] = probe_teacher(task, client, n=n, seed=seed)
    return out


def run_probes(task: str, teachers: list[str], n: int = 16, seed: int = 0) -> dict[str, float]:
    """Measured probe accuracy per teacher (`probe_results`), as `score_pairs` takes it."""
    return {teacher: result.accuracy for teacher, result in probe_results(task, teachers, n, seed).items()}


def _endpoint_url() -> str:
    from stratos_agent.settings import get_settings

    url = get_settings().openai_base_url
    if not url:
        raise InputError("an endpoint teacher needs OPENAI_BASE_URL")
    return url


def score_pairs(
    task: TaskProfile,
    teachers: list[ModelCandidate],
    students: list[ModelCandidate],
    probes: dict[str, float],
    teacher_usd_per_1k: dict[str, float],
    student_serving: dict[str, tuple[float, float]],
    reference_data_size: int = 2000,
) -> list[PairScore]:
    """Score every teacher x student pair (student smaller than or equal to the teacher, or any
    student for an endpoint teacher). `probes` holds measured accuracies; missing ones use the prior.
    `student_serving[id] = (best p95 ms, cheapest $ per 1M tokens)` over the Pareto servers."""
    rows = []
    for t in teachers:
        probe = probes.get(t.id)
        source = "measured" if probe is not None else "prior"
        probe = prior_probe(t, task.difficulty) if probe is None else probe
        for s in students:
            if s.parameters is None:
                continue
            if t.parameters is not None and s.parameters > t.parameters:
                continue  # distillation goes from big to small
            same = t.same_tokenizer(s)
            logit = bool(same) and t.white_box
            decision = decide_strategy(probe, task.has_solver, logit, teacher=t.id, student=s.id)
            cap = float(capacity(s.parameters, task.difficulty))
            acc = float(
                expected_accuracy(
                    STRATEGY_CODES[decision.strategy], probe, cap, reference_data_size, 0, task.difficulty
                )
            )
            p95, usd_1m = student_serving.get(s.id, (None, None))
            t_1m = teacher_usd_per_1k.get(t.id, 0.0) * 1000
            score = acc - 0.05 * np.log10(1 + (usd_1m or 0.0)) - 0.05 * np.log10(1 + t_1m) + 0.02 * logit
            rows.append(
                PairScore(
                    teacher=t.id,
                    student=s.id,
                    probe_accuracy=probe,
                    probe_source=source,
                    teacher_usd_per_1k_tokens=teacher_usd_per_1k.get(t.id, 0.0),
                    student_params=s.parameters,
                    capacity=cap,
                    tokenizer_match=bool(same),
                    logit_kd=logit,
                    decision=decision,
                    expected_accuracy=acc,
                    serving_p95_ms=p95,
                    serving_usd_per_1m_tokens=usd_1m,
                    score=float(score),
                )
            )
    return sorted(rows, key=lambda r: -r.score)
