"""The calibration store's own check: each recorded run's final point predicted as a plan would, without
it (leave one run out), and the summary evals/plan_calibration.py reports."""

from __future__ import annotations

import numpy as np
from stratos_agent.tools.calibration import SOURCES, build_curve_set
from stratos_agent.tools.curve_conditions import comparable, conditions_of, run_spread, same_trajectory
from stratos_agent.tools.curve_fit import CURVE_MODEL

from stratos_agent.records.calibration import LearningCurve


def leave_one_out(found: list[LearningCurve], model: str = CURVE_MODEL) -> list[dict]:
    """Each curve's final point predicted as a plan would, without it: from the independent runs of its
    (task, student, method) comparable with its conditions, with the run-to-run spread measured on the
    rest of `found`. One row per curve with a final point after training started."""
    rows = []
    for c in found:
        final = c.final
        if final is None or final.examples == 0:
            continue
        rest = [o for o in found if o is not c]
        others = [o for o in rest if (o.task, o.student, o.method) == (c.task, c.student, c.method) and o.points
                  and o.run != c.run and not same_trajectory(o, c)]
        chosen, match = comparable(others, conditions_of(c))
        out = build_curve_set(c.task, c.student, c.method, chosen, model, match=match,
                              spread=run_spread(rest)).predict([final.examples])
        rows.append({"run": c.run, "task": c.task, "student": c.student, "method": c.method,
                     "examples": final.examples, "measured": final.exact, "n": final.n, "other_runs": len(others),
                     "source": SOURCES[int(out["source"][0])], "match": match,
                     **{k: float(out[k][0]) for k in ("value", "low", "high")}})
    return rows


def loo_summary(rows: list[dict]) -> dict:
    """Median absolute error (points), 95%-interval coverage and median width (points) of the rows that
    got a prediction (not a prior)."""
    hit = [r for r in rows if r["source"] != "prior"]
    if not hit:
        return {"curves": len(rows), "predicted": 0}
    return {
        "curves": len(rows), "predicted": len(hit),
        "median_abs_error_points": round(float(np.median([100 * abs(r["value"] - r["measured"]) for r in hit])), 2),
        "coverage": round(sum(r["low"] <= r["measured"] <= r["high"] for r in hit) / len(hit), 3),
        "median_interval_width_points": round(float(np.median([100 * (r["high"] - r["low"]) for r in hit])), 1),
    }
