"""Calibration store: the learning curves and throughput training runs measured, and what plans predict.

Every training run (tools/train_callbacks.CurveCallback, tools/stream_train.py) and every pilot records a
`LearningCurve`: validation exact match against examples seen, and examples/s on a hardware fingerprint.
The store is one JSON file per curve under `<cache_dir>/calibration` (`STRATOS_CALIBRATION_DIR` overrides
it; tests point it at an empty folder), written atomically under a unique name and never rewritten; once,
after the run's evaluation, a run's own file is replaced by one whose last point also counts the test split
(`pool_evaluation`).

    from stratos_agent.tools import calibration
    calibration.record_curve(curve)
    p = calibration.predict_accuracy("mahjong", "smollm2-135m", calibration.method_key(16), 6000, prior=0.06,
                                     conditions=planned("dataset", train_config))  # tools/curve_conditions
    p.value, p.low, p.high, p.label     # label: measured | fitted | prior, qualified "(other validation mix)"

Comparable curves. Curves are keyed by (task, student, method); within a key, a curve also records its
`Conditions`: where its validation items came from (`validation_mix`: a run scores 46% on an even hold-out
and 28% on a natural one, evals/results/mahjong_quality_micro-6m.json) and its recipe (learning rate, batch,
schedule, stream mix and weighting: `curve_conditions.recipe_of`). A prediction for given conditions reads only the curves
that match them; when none does, the closest tier (same validation mix first, then same recipe, then
neither), labelled so (`Prediction.match`) and widened by `MISMATCH_SHIFT`. Old files load as 'unknown',
which matches nothing: they are a fallback.

The accuracy model and its fit: tools/curve_fit.py. Conditions and run-to-run spread:
tools/curve_conditions.py.

Intervals are 95% prediction intervals for the next run's measured figure, not for the mean curve, so
three variances add: the mean's (delta method on the fit's covariance, or the binomial error of the
readings averaged), the run-to-run spread (`RunSpread`: measured on the store's repeated runs, the excess
of their disagreement at comparable examples over binomial noise, as a share of p(1-p)), and the next
run's own validation sampling (binomial at the curves' validation size). Beyond `FAR` x the last measured
point the half-width grows by 1 + log2(x / (FAR x last)) and the note says so.

- `measured`: some comparable curve reaches the budget: the curves that do are interpolated and averaged;
- `fitted`: extrapolated from >= 1 curve with >= `MIN_POINTS` points (examples > 0). Not blended with
  the prior: on the recorded Mahjong runs the pairing prior is ~12 points low, and blending raised the
  error of the extrapolated runs from 4.2 to 5.6 points (evals/results/plan_calibration.json);
- `prior`: nothing applies; the caller's prior is carried, with the whole [0, 1] as its interval.

Throughput for plans: tools/throughput.py. `calibration_check.leave_one_out` checks the predictions on the
store: each run's final point predicted from the others.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import numpy as np
from stratos_agent.tools.curve_conditions import (
    MIN_POINTS,
    Conditions,
    RunSpread,
    Series,
    comparable,
    fittable,
    run_spread,
    series_of,
)
from stratos_agent.tools.curve_fit import CURVE_MODEL, Fit, fit_points, sigma
from stratos_agent.tools.evaluate import Z95

from stratos_agent.files import write_text_new
from stratos_agent.records.calibration import CurveMatch, LearningCurve, Prediction
from stratos_agent.settings import get_settings

log = logging.getLogger(__name__)

STORE_ENV = "STRATOS_CALIBRATION_DIR"
FAR = 4.0  # extrapolating beyond FAR x the last measured point widens the interval
SOURCES = ("measured", "fitted", "prior")
# Policy, from measurements: a figure read off curves of another validation mix or recipe can be off by as
# much as those knobs move a run. Measured: one micro-6m model scored 46% on an even hold-out and 28% on a
# natural one (evals/results/mahjong_quality_micro-6m.json); micro-6m probes at lr 1e-3 and 3e-3 reached
# 29.5% and 13% (tools/train.py, MICRO_LR). The fallback's half-width gains that shift in quadrature.
MISMATCH_SHIFT = 0.18


# --------------------------------------------------------------------------------- method keys
def method_key(lora_rank: int, stream: bool = False) -> str:
    """The canonical method key: 'sft-full', 'sft-lora16', 'stream-full', ..."""
    if lora_rank < 0:
        raise ValueError(f"LoRA rank must be >= 0 (0 = full fine-tuning), got {lora_rank}")
    return f"{'stream' if stream else 'sft'}-{'full' if lora_rank == 0 else f'lora{lora_rank}'}"


# --------------------------------------------------------------------------------- the store
def store_dir() -> Path:
    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else get_settings().cache_dir / "calibration"


SEEDS_ENV = "STRATOS_CALIBRATION_SEEDS"  # "0": ignore the shipped curves (the tests plan from their own)


def seed_dir() -> Path:
    """Curves shipped with Stratos (stratos_agent/data/calibration): real runs on the reference machine (2
    cores, 1 thread, no GPU; their hardware key says so), so a fresh install plans from measurements. They
    join a user's own curves; throughput from them applies only where the hardware key matches. Found
    through the package, not this file's folder (tools/ is stratos_agent/tools only once installed)."""
    return Path(str(resources.files("stratos_agent.data").joinpath("calibration")))


def store_files() -> list[Path]:
    folders = [store_dir()] + ([] if os.environ.get(SEEDS_ENV) == "0" else [seed_dir()])
    return [path for folder in folders if folder.is_dir() for path in folder.glob("*.json")]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


def record_curve(curve: LearningCurve) -> Path:
    """Append `curve` to the store as a new file (unique name; never overwrites; old files untouched)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{stamp}-{_safe(curve.task)}-{_safe(curve.student)}-{_safe(curve.method)}-{uuid.uuid4().hex[:10]}"
    return write_text_new(store_dir() / f"{name}.json", curve.model_dump_json(indent=1))


def pool_evaluation(curve: LearningCurve, successes: int, n: int, yardstick: str) -> Path | None:
    """Pool the run's evaluation of its final model (`successes` of `n` on `yardstick`, the split the result
    gate judges) into the last point of its stored curve: the stored file of (run, created) is replaced by
    one whose last point counts both (validation weighted to the test mix + the test split are two samples
    of the same figure). Once per curve: a curve already pooled, or not in the user's store, is left as it
    is (None). Measured why: a demo's curve ended at 28.9% (val, n=200) where its test split read 40.0%
    (n=100); the next plan read the curve alone and refused the demo's 30% floor."""
    if n <= 0:
        return None
    mine = [(path, c) for path in sorted(store_dir().glob("*.json"))
            if (c := _read(path)) is not None and (c.run, c.created) == (curve.run, curve.created) and c.points]
    if not mine:
        return None
    if any(c.pooled for _, c in mine):  # done before; a crash after writing it may have left the original
        for path, c in mine:
            if not c.pooled:
                path.unlink(missing_ok=True)
        return None
    path, stored = mine[0]
    last = stored.points[-1]
    point = last.model_copy(update={"exact": (last.exact * last.n + successes) / (last.n + n), "n": last.n + n})
    pooled = record_curve(stored.model_copy(update={"points": [*stored.points[:-1], point], "pooled": yardstick}))
    path.unlink()  # after the pooled file is in: a crash between leaves both (mended above), never neither
    return pooled


_CACHE: dict[tuple[str, int, int], LearningCurve | None] = {}


def _read(path: Path) -> LearningCurve | None:
    """A stored curve (memoised per file version); None, with one warning, when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        try:
            _CACHE[key] = LearningCurve.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("calibration store: skipping unreadable %s (%s)", path, str(exc).splitlines()[0][:120])
            _CACHE[key] = None
    return _CACHE[key]


def all_curves() -> list[LearningCurve]:
    """Every readable curve of the store and the seeds, in file-name order (oldest first)."""
    return [c for c in (_read(path) for path in sorted(store_files())) if c is not None]


def curves(
    task: str, student: str | None = None, method: str | None = None, hardware: str | None = None
) -> list[LearningCurve]:
    """Recorded curves of `task` (oldest first), filtered by whichever of student/method/hardware is given."""
    return [c for c in all_curves() if c.task == task and (student is None or c.student == student)
            and (method is None or c.method == method) and (hardware is None or c.hardware == hardware)]


_SPREADS: dict[tuple, RunSpread] = {}


def store_spread() -> RunSpread:
    """The run-to-run spread measured on the whole store (every task: one number is all short stores
    support), memoised on its files."""
    found = all_curves()
    key = tuple((c.run, c.created, len(c.points)) for c in found)
    if key not in _SPREADS:
        _SPREADS.clear()
        _SPREADS[key] = run_spread(found)
    return _SPREADS[key]


# --------------------------------------------------------------------------------- prediction
@dataclass
class CurveSet:
    """The comparable curves of one (task, student, method), with their fit and the run-to-run spread:
    what predictions read. `match` says how the curves compare with the run predicted."""

    task: str
    student: str
    method: str
    series: list[Series] = field(default_factory=list)
    fit: Fit | None = None
    fit_curves: int = 0
    match: CurveMatch = "any"
    spread: RunSpread = field(default_factory=RunSpread)

    @property
    def last(self) -> float:
        return max((float(s[0].max()) for s in self.series), default=0.0)

    @property
    def validation_n(self) -> float:
        """Items the next run's figure will be scored on, as far as the store knows: the curves' median."""
        return float(np.median([s[2][-1] for s in self.series])) if self.series else 1.0

    @property
    def shift(self) -> float:
        """Half-width added (in quadrature) for curves of other conditions."""
        return 0.0 if self.match in ("same", "any") else MISMATCH_SHIFT

    def reaching(self, examples) -> np.ndarray:
        """Per budget: how many curves reach it (what a `measured` figure is read off)."""
        x = np.atleast_1d(np.asarray(examples, dtype=float))
        return np.array([sum(float(xs.max()) >= b for xs, _, _ in self.series) for b in x], dtype=int)

    def predict(self, examples) -> dict[str, np.ndarray]:
        """Vectorised over budgets: value, low, high, source (index into SOURCES), widen (extrapolation factor)."""
        x = np.atleast_1d(np.asarray(examples, dtype=float))
        value, var_mean = np.zeros_like(x), np.zeros_like(x)
        source = np.full(x.shape, SOURCES.index("prior"))
        widen = np.ones_like(x)
        if self.fit is not None:
            widen = np.where(x > FAR * self.last, 1.0 + np.log2(np.maximum(x / (FAR * self.last), 1.0)), 1.0)
            value, var_mean = self.fit(np.maximum(x, 1.0)), self.fit.variance(np.maximum(x, 1.0))
            source[:] = SOURCES.index("fitted")
        measured = self._measured(x)
        if measured is not None:
            m_value, m_var, reached = measured
            value, var_mean = np.where(reached, m_value, value), np.where(reached, m_var, var_mean)
            source = np.where(reached, SOURCES.index("measured"), source)
            widen = np.where(reached, 1.0, widen)
        value = np.clip(value, 0.0, 1.0)
        next_run = self.spread.variance(value) + sigma(value, self.validation_n) ** 2
        half = np.hypot(Z95 * np.sqrt(var_mean + next_run) * widen, self.shift)
        prior = source == SOURCES.index("prior")
        low = np.where(prior, 0.0, np.clip(value - half, 0.0, 1.0))
        high = np.where(prior, 1.0, np.clip(value + half, 0.0, 1.0))
        return {"value": np.where(prior, 0.0, value), "low": low, "high": high, "source": source, "widen": widen}

    def _measured(self, x: np.ndarray):
        """Mean of the curves that reach each budget, interpolated, and the variance of that mean (binomial
        within runs + the run-to-run spread over the runs averaged); None when no curve has a point."""
        if not self.series:
            return None
        vals = np.array([np.interp(x, xs, ys) for xs, ys, _ in self.series])
        within = np.array([sigma(np.interp(x, xs, ys), np.interp(x, xs, ns)) ** 2 for xs, ys, ns in self.series])
        reach = np.array([x <= xs.max() for xs, _, _ in self.series])
        m = np.maximum(reach.sum(axis=0), 1)
        mean = np.where(reach, vals, 0.0).sum(axis=0) / m
        var = np.where(reach, within, 0.0).sum(axis=0) / m**2 + self.spread.variance(mean) / m
        return mean, var, reach.any(axis=0)


_FITS: dict[tuple, CurveSet] = {}


def curve_set(task: str, student: str, method: str, model: str = CURVE_MODEL,
              conditions: Conditions | None = None) -> CurveSet:
    """The stored curves of (task, student, method) comparable with `conditions` (`comparable`; None: all),
    their fit and the store's run-to-run spread (memoised on the store's files)."""
    found, match = comparable([c for c in curves(task, student, method) if c.points], conditions)
    spread = store_spread()
    key = (task, student, method, model, match, spread, tuple((c.run, c.created, len(c.points)) for c in found))
    if key not in _FITS:
        if len(_FITS) > 256:
            _FITS.clear()
        _FITS[key] = build_curve_set(task, student, method, found, model, match=match, spread=spread)
    return _FITS[key]


def build_curve_set(task: str, student: str, method: str, found: list[LearningCurve],
                    model: str = CURVE_MODEL, *, match: CurveMatch = "any",
                    spread: RunSpread | None = None) -> CurveSet:
    """A CurveSet from given curves: every curve for interpolation, those with >= MIN_POINTS points
    (examples > 0) pooled for the fit. `spread`: the run-to-run spread (default: none measured)."""
    cs = CurveSet(task, student, method, match=match, spread=spread or RunSpread())
    fit_x: list[float] = []
    fit_y: list[float] = []
    fit_n: list[float] = []
    for c in found:
        if not c.points:
            continue
        xs, ys, ns = series_of(c)
        cs.series.append((xs, ys, ns))
        if fittable(c):
            cs.fit_curves += 1
            fit_x += list(xs[xs > 0])
            fit_y += list(ys[xs > 0])
            fit_n += list(ns[xs > 0])
    if cs.fit_curves:
        cs.fit = fit_points(fit_x, fit_y, fit_n, model)
    return cs


def describe(cs: CurveSet, source: str, examples: float, widen: float) -> str:
    """The note of one prediction: what it rests on, how it matches, the spread, extrapolation when far."""
    runs = int(cs.reaching([examples])[0]) if source == "measured" else cs.fit_curves
    what = (f"read off {runs} recorded run(s) that reached {examples:,.0f} examples" if source == "measured"
            else f"{cs.fit.model} curve fitted on {cs.fit_curves} run(s), {cs.fit.points} points")
    if cs.shift:
        what = (f"{source} ({cs.match}): {what}; no recorded run shares this run's {cs.match.removeprefix('other ')}"
                f", interval widened by +-{100 * cs.shift:.0f} points")
    spread = cs.spread
    what += (f"; run-to-run spread measured on {spread.groups} repeated group(s)" if spread.groups
             else "; run-to-run spread not measured (no repeated runs)")
    if widen > 1:
        what += (f"; extrapolated {examples / cs.last:,.0f}x beyond the last measured point "
                 f"({cs.last:,.0f} examples): interval widened x{widen:.1f}")
    return what


def predict_accuracy(
    task: str, student: str, method: str, examples: int, prior: float | None = None,
    conditions: Conditions | None = None,
) -> Prediction:
    """Expected accuracy of `student` trained with `method` on `examples` examples, from the curves
    comparable with `conditions` (see the module doc); `prior` is what a caller gets back, labelled,
    when nothing was measured."""
    cs = curve_set(task, student, method, conditions=conditions)
    out = cs.predict([examples])
    source = SOURCES[int(out["source"][0])]
    if source == "prior":
        value = 0.0 if prior is None else float(np.clip(prior, 0.0, 1.0))
        return Prediction(value=value, low=0.0, high=1.0, source="prior", curves=0,
                          note=f"prior: no recorded learning curve for {task}/{student}/{method} "
                          f"with >= {MIN_POINTS} points")
    return Prediction(
        value=float(out["value"][0]), low=float(out["low"][0]), high=float(out["high"][0]), source=source,
        curves=int(cs.reaching([examples])[0]) if source == "measured" else cs.fit_curves, match=cs.match,
        note=describe(cs, source, examples, float(out["widen"][0])),
    )
