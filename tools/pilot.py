"""Pilot runs: about a minute of the planned training for a candidate the calibration store has never
seen, so the plan's accuracy starts from a measured curve instead of a prior.

A pilot trains the candidate exactly as the plan would (tools/train.config_from_plan: same student,
method, LoRA rank, learning rate and batch) on verified items of the task (solver mode: the pack's own
labels, no paid teacher), stopped after `PILOT_SECONDS`. Its curve enters the store as kind `pilot`
under the usual (task, student, method) key, with the throughput it measured. Pilots are cached per
(task, student, method, hardware): a second plan reuses the finished one.

Its points cover the first minute only, so the store's fit extrapolates from them with a wide interval;
and a pilot's time box sets its own warm-up and decay, so its first points run a little ahead of the same
examples inside a long run. The plan labels the figure `fitted`, never `measured`, at the full budget.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rich.console import Console
from stratos_agent.tools import calibration
from stratos_agent.tools.machine_peaks import hardware_fingerprint
from stratos_agent.tools.pairing import STRATEGY_CODES
from stratos_agent.tools.planning.measured import method_for, streams

from stratos_agent.files import write_text_atomic
from stratos_agent.models import get_registry
from stratos_agent.records.calibration import LearningCurve
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.settings import get_settings
from stratos_agent.tasks.recipes import recipe_for

# Policy, not measurements: the "about a minute per candidate"; rows a minute of CPU SFT cannot exhaust
# (a 135M student sees ~1-4 examples/s here; a micro student streams and ignores them).
PILOT_SECONDS = 60.0
PILOT_ROWS = 600
PILOT_VALIDATION = 16  # items per curve point of a TRL pilot (a 135M model decodes ~15 tok/s here)
PILOT_EVAL_STEPS = 16  # a stream pilot's curve point cadence, in steps
ENV_SWITCH = "STRATOS_PILOTS"  # "0": plan from the store and priors only (tests, no CPU to spare)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def pilot_method(point: PlanPoint) -> str:
    """The calibration key the candidate's full run would record under (what the pilot must feed)."""
    student = get_registry().get(point.student)
    return method_for(STRATEGY_CODES[point.strategy], point.lora_rank, streams(student))


def _folder(task: str, student: str, method: str) -> str:
    raw = f"{task}-{student}-{method}-{hardware_fingerprint(get_settings().threads).key}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw)


def pilots_dir() -> Path:
    """Where finished pilots are kept (a rerun on this machine reuses them)."""
    return get_settings().cache_dir / "pilots"


def run_pilot(plan: Plan, point: PlanPoint, *, seconds: float | None = None,
              console: Console | None = None) -> LearningCurve:
    """Train `point` as the plan would for `seconds` (default PILOT_SECONDS; less when the planned run is
    shorter), record its curve (kind `pilot`) and return it."""
    from stratos_agent.tools import stream_train, synth, train
    from stratos_agent.tools.train_callbacks import curve_callback_for

    console = console or Console(stderr=True)
    seconds = seconds or PILOT_SECONDS
    task = plan.task
    method = pilot_method(point)
    root = pilots_dir() / _folder(task, point.student, method)
    saved = root / "curve.json"  # a finished pilot: its curve, put back in the store if the store lost it
    if saved.is_file():
        curve = LearningCurve.model_validate_json(saved.read_text())
        stored = calibration.curves(curve.task, point.student, method)
        if not any(c.run == curve.run and c.created == curve.created for c in stored):
            calibration.record_curve(curve)
        return curve
    console.print(f"pilot: {point.student} ({method}) for {seconds:.0f} s, to start its learning curve")
    data = synth.synthesize(task, PILOT_ROWS, root / "data", mode="solver", style=recipe_for(task).style)
    config = train.config_from_plan(plan.model_copy(update={"chosen": point}), data, recipe_for(task),
                                    run_name="pilot", max_steps=train.planned_steps(point), time_limit_s=seconds)
    if config.stream:  # a point every 16 steps (a few seconds of a micro student): the curve's start, not one dot
        config = config.model_copy(update={"eval_every": config.batch_size * PILOT_EVAL_STEPS})
        student = stream_train.stream_train(config, run_dir=root / "train", console=console, record=False)
        curve = student.learning_curve
    else:
        callback = curve_callback_for(config, n_items=PILOT_VALIDATION, every_steps=5, run=str(root))
        callback.record = False
        train.train(config, run_dir=root / "train", console=console, callbacks=[callback])
        curve = callback.curve()
    if curve is None:
        raise RuntimeError(f"the pilot of {point.student} finished no timed training step in {seconds:.0f} s")
    curve = curve.model_copy(update={"kind": "pilot", "method": method, "run": str(root)})
    calibration.record_curve(curve)
    write_text_atomic(saved, curve.model_dump_json(indent=1))
    return curve
