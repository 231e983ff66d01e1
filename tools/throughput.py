"""Training throughput for plans, from the calibration store (tools/calibration.py): examples/s of the
least contended recorded runs of a (task, student, method) on a hardware fingerprint."""

from __future__ import annotations

import numpy as np
from stratos_agent.tools.calibration import all_curves, curves

from stratos_agent.records.calibration import LearningCurve

# Policy: a run recorded at a 1-minute load average more than this above the quietest recorded run of the
# same (task, student, method, hardware) was sharing the CPUs. Measured on one machine (2 cores): micro-2m
# trained 117 examples/s at load 2.2 and 87 at load 6.0; the demo planned from their median and its idle run
# trained in 0.74x the planned time.
CONTENDED_LOAD = 1.0


def uncontended(found: list[LearningCurve]) -> list[LearningCurve]:
    """The curves recorded at the lowest load: within `CONTENDED_LOAD` of the quietest. A plan prices a run on
    the machine as measured at its quietest; curves without a recorded load count only when none has one."""
    loads = [c.load_avg for c in found if c.load_avg is not None]
    if not loads:
        return found
    return [c for c in found if c.load_avg is not None and c.load_avg <= min(loads) + CONTENDED_LOAD]


def measured_throughput(hardware: str) -> dict[str, dict[str, float]]:
    """Per student: the median examples/s of the least contended runs on `hardware`, per 'task/method'."""
    groups: dict[str, dict[str, list[LearningCurve]]] = {}
    for c in all_curves():
        if c.hardware == hardware:
            groups.setdefault(c.student, {}).setdefault(f"{c.task}/{c.method}", []).append(c)
    return {student: {key: float(np.median([c.examples_per_s for c in uncontended(found)]))
                      for key, found in by.items()} for student, by in groups.items()}


def examples_per_second(task: str, student: str, method: str, hardware: str) -> float | None:
    """Measured training throughput of (task, student, method) on `hardware`: the median of its least
    contended runs (`uncontended`); None if never measured."""
    rates = [c.examples_per_s for c in uncontended(curves(task, student, method, hardware))]
    return float(np.median(rates)) if rates else None
