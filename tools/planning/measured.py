"""Figures from measurements in the candidate grid: accuracy from recorded learning curves, training time
from measured throughput (tools/calibration.py is the store both read; tools/throughput.py).

- accuracy: each (student, method) of the grid is looked up once (`calibration.curve_set`, memoised on
  the store's files) and predicted once per distinct example budget, vectorised; candidates without a
  recorded curve keep the pairing prior (tools/pairing.expected_accuracy), labelled `prior`.
  Method keys: `calibration.method_key(rank)` for the strategies whose run is SFT on verified rows
  (injection: solver rows; alignment-seq: the teacher's verified answers, capped at the teacher's probe
  accuracy as the prior assumes: the student learns the share of the task its teacher gets right);
  logit KD reads 'distill-<full|loraR>' (the key the CurveCallback gives a distillation run); a micro
  student (a candidate made for one task, built from scratch) trains on a stream: 'stream-full'.
  Within a key, the curves read are those comparable with the planned run (`planned_conditions`: its
  recipe, validated on its data's val split); others only as a labelled, wider fallback.
- training time: where this machine has a measured examples/s for the student and method, the roofline
  is rescaled by rho = measured hours / roofline hours of the same SFT examples on this machine; the
  local figure of an SFT-only plan is then the measurement itself (`measured`); every other figure
  (GPU offers, the GRPO or teacher-forward parts) is the roofline times rho (`modelled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stratos_agent.tools import calibration, roofline, throughput
from stratos_agent.tools.curve_conditions import planned
from stratos_agent.tools.pairing import STRATEGY_CODES
from stratos_agent.tools.planning.inputs import PlanningInputs

from stratos_agent.records.training import TrainConfig

PRIOR = calibration.SOURCES.index("prior")
MEASURED = calibration.SOURCES.index("measured")
PLAN_VALIDATION = "dataset"  # the agent's runs validate on their synthesised data's val split
# tools/train.config_from_plan's learning rates and stream batch, repeated here because importing tools/train
# costs seconds (transformers); tests/test_calibration.py checks that both agree.
MICRO_LR, STREAM_BATCH, LORA_LR, FULL_LR = 1e-3, 64, 1e-3, 1e-4


def streams(student) -> bool:
    """Micro students (one task, from scratch) train on a stream of fresh verified items (tools/stream_train)."""
    return bool(getattr(student, "trains_on_a_stream", False))


def method_for(strategy_code: int, rank: int, stream: bool = False) -> str:
    """The calibration method key a candidate's run records under (a stream run is always a full fine-tune:
    tools/train.config_from_plan trains a micro student that way whatever rank the point names)."""
    key = calibration.method_key(0 if stream else int(rank), stream=stream)
    return key.replace("sft", "distill", 1) if strategy_code == STRATEGY_CODES["alignment-logit"] else key


def planned_conditions(student, rank: int) -> calibration.Conditions:
    """The conditions the plan's run of `student` at LoRA `rank` will record its curve under."""
    stream = streams(student)
    config = TrainConfig(
        run_name="plan", base_model=student.id, data=Path("."), stream=stream, lora=not stream and rank > 0,
        learning_rate=MICRO_LR if stream else (LORA_LR if rank else FULL_LR),
        **({"batch_size": STREAM_BATCH} if stream else {"lr_scheduler": "constant_with_warmup"}),
    )
    return planned(PLAN_VALIDATION, config)


@dataclass
class AccuracyColumns:
    """Per candidate: expected accuracy, its 95% interval (NaN for a prior), source code, curves used."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    source: np.ndarray  # index into calibration.SOURCES
    curves: np.ndarray


def accuracy_columns(inputs: PlanningInputs, stud, rank, strategy, examples, probe, prior) -> AccuracyColumns:
    """Accuracy columns for candidates given as arrays (student index, LoRA rank, strategy code,
    examples trained, the pair's probe accuracy, the prior); one prediction per distinct
    (student, method, examples), never per server."""
    prior = np.asarray(prior, dtype=float)
    out = AccuracyColumns(prior.copy(), np.full(prior.shape, np.nan), np.full(prior.shape, np.nan),
                          np.full(prior.shape, PRIOR), np.zeros(prior.shape, dtype=int))
    if not calibration.curves(inputs.task.name):
        return out
    align_seq = strategy == STRATEGY_CODES["alignment-seq"]
    logit = (strategy == STRATEGY_CODES["alignment-logit"]).astype(int)
    key = (stud * 1_000_003 + rank) * 2 + logit  # one code per (student, rank, logit KD)
    for code in np.unique(key):
        j, r, lg = int(code // 2 // 1_000_003), int(code // 2 % 1_000_003), int(code % 2)
        student = inputs.students[j]
        method = method_for(STRATEGY_CODES["alignment-logit"] if lg else 0, r, streams(student))
        cs = calibration.curve_set(inputs.task.name, student.id, method, conditions=planned_conditions(student, r))
        if not cs.series:
            continue
        mask = key == code
        budgets, inv = np.unique(examples[mask], return_inverse=True)
        pred = cs.predict(budgets)  # once per (student, method, budget), never per server
        src = pred["source"][inv]
        found = src != PRIOR
        idx = np.flatnonzero(mask)[found]
        cap = np.where(align_seq[idx], probe[idx], 1.0)
        for name in ("value", "low", "high"):
            getattr(out, name)[idx] = np.minimum(pred[name][inv][found], cap)
        out.source[idx] = src[found]
        out.curves[idx] = np.where(src[found] == MEASURED, cs.reaching(budgets)[inv][found], cs.fit_curves)
    return out


def hours_scale(inputs: PlanningInputs, stud, rank, tokens_per_example):
    """(rho per candidate, True where this machine measured the throughput behind it): measured hours /
    roofline hours of SFT on this machine, for each (student, method); rho = 1 where nothing was measured."""
    rho = np.ones(len(stud))
    measured = np.zeros(len(stud), dtype=bool)
    local = next((i for i, o in enumerate(inputs.offers) if o.is_local), None)
    if local is None or not inputs.local_hardware or not calibration.curves(inputs.task.name):
        return rho, measured
    offer, eff = inputs.offers[local], inputs.efficiencies[local]
    key = stud * 1_000_003 + rank  # SFT throughput calibrates every strategy (KD's teacher forward and
    for code in np.unique(key):  # GRPO's rollouts stay modelled on top of it)
        j, r = int(code // 1_000_003), int(code % 1_000_003)
        student = inputs.students[j]
        eps = throughput.examples_per_second(
            inputs.task.name, student.id, method_for(0, r, streams(student)), inputs.local_hardware
        )
        if not eps:
            continue
        params = inputs.shapes[student.id].params
        modelled = roofline.training_hours(roofline.training_flops(params, tokens_per_example, lora=r > 0),
                                           offer.bf16_tflops, offer.gpu_count, eff)
        mask = key == code
        rho[mask] = (1.0 / eps / 3600.0) / float(modelled)
        measured[mask] = True
    return rho, measured


def accuracy_note(task: str, student, strategy_code: int, rank: int, examples: float) -> str:
    """The words behind one candidate's accuracy figure (what it rests on, extrapolation), '' for a prior."""
    cs = calibration.curve_set(task, student.id, method_for(strategy_code, rank, streams(student)),
                               conditions=planned_conditions(student, rank))
    pred = cs.predict([examples])
    source = int(pred["source"][0])
    if source == PRIOR:
        return ""
    note = calibration.describe(cs, calibration.SOURCES[source], examples, float(pred["widen"][0]))
    if strategy_code == STRATEGY_CODES["alignment-seq"]:
        note += "; capped at the teacher's probe accuracy"
    return note
