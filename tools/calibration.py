"""Calibration store: the learning curves and throughput training runs measured, and what plans predict.

Every training run (tools/train_callbacks.CurveCallback) and every pilot records a `LearningCurve`:
validation exact match against examples seen, and examples/s on a hardware fingerprint. The store is
one JSON file per curve under `<cache_dir>/calibration` (`STRATOS_CALIBRATION_DIR` overrides it; tests
point it at an empty folder), written atomically under a unique name and never rewritten.

    from stratos_agent.tools import calibration
    calibration.record_curve(curve)
    p = calibration.predict_accuracy("mahjong", "smollm2-135m", calibration.method_key(16), 6000, prior=0.06)
    p.value, p.low, p.high, p.source     # source: measured | fitted | prior

Accuracy model, per (task, student, method), fitted on every recorded point with examples > 0:

    acc(x) = a - b * exp(-x / k)      a in [0, 1] (the ceiling), b >= 0, k > 0 examples

a saturating curve. The inverse power law a - b x^-c (Figueroa et al. 2012) is the other usual choice;
evals/plan_calibration.py fits both on 14 real Mahjong runs (SmolLM2-135M full/LoRA-16, its half-depth
student, the micro students) and `CURVE_MODEL` is the one with the lower median absolute error where
the models differ, on extrapolated finals (4 leave-one-run-out up to 1.5x + 4 from the run's own first
half, 2x): exp 4.2 points, power 5.0 (evals/results/plan_calibration.json). Neither was tested beyond
2x: the recorded runs are short.
Points are weighted by their binomial standard error ((k+1)/(n+2) so 0% is not infinitely sure); the
fit's covariance is inflated by the reduced chi-square when runs disagree more than sampling explains
(run-to-run variation). The 95% interval is the delta method on that covariance; beyond
`FAR` x the last measured point its half-width grows by 1 + log2(x / (FAR x last)) and the note says so.

- `measured`: some recorded curve reaches the budget: the curves that do are interpolated and averaged;
- `fitted`: extrapolated from >= 1 curve with >= `MIN_POINTS` points (examples > 0). Not blended with
  the prior: on the recorded Mahjong runs the pairing prior is ~12 points low, and blending raised the
  error of the extrapolated runs from 4.2 to 5.6 points (evals/results/plan_calibration.json);
- `prior`: nothing applies; the caller's prior is carried, with the whole [0, 1] as its interval.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from stratos_agent.tools.evaluate import Z95

from stratos_agent.files import write_text_new
from stratos_agent.records.calibration import LearningCurve, Prediction
from stratos_agent.settings import get_settings

log = logging.getLogger(__name__)

STORE_ENV = "STRATOS_CALIBRATION_DIR"
MIN_POINTS = 3  # points (examples > 0) a curve needs before it counts for a fit
FAR = 4.0  # extrapolating beyond FAR x the last measured point widens the interval
SOURCES = ("measured", "fitted", "prior")


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
    """Curves shipped with Stratos: real runs on the reference machine (2 cores, 1 thread, no GPU; their
    hardware key says so), so a fresh install plans from measurements. They join a user's own curves;
    throughput from them applies only where the hardware key matches."""
    return Path(__file__).resolve().parents[1] / "data" / "calibration"


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


def curves(
    task: str, student: str | None = None, method: str | None = None, hardware: str | None = None
) -> list[LearningCurve]:
    """Recorded curves of `task` (oldest first), filtered by whichever of student/method/hardware is given."""
    out = []
    for path in sorted(store_files()):
        c = _read(path)
        if c is None or c.task != task:
            continue
        if (student is None or c.student == student) and (method is None or c.method == method) and (
            hardware is None or c.hardware == hardware
        ):
            out.append(c)
    return out


def measured_throughput(hardware: str) -> dict[str, dict[str, float]]:
    """Per student: the median examples/s recorded on `hardware`, per 'task/method' ('mahjong/stream-full')."""
    rates: dict[str, dict[str, list[float]]] = {}
    for path in store_files():
        c = _read(path)
        if c is not None and c.hardware == hardware:
            rates.setdefault(c.student, {}).setdefault(f"{c.task}/{c.method}", []).append(c.examples_per_s)
    return {student: {key: float(np.median(v)) for key, v in by.items()} for student, by in rates.items()}


def examples_per_second(task: str, student: str, method: str, hardware: str) -> float | None:
    """Median measured training throughput of (task, student, method) on `hardware`; None if never measured."""
    rates = [c.examples_per_s for c in curves(task, student, method, hardware)]
    return float(np.median(rates)) if rates else None


# --------------------------------------------------------------------------------- curve models
def _exp(x, a, b, k):
    return a - b * np.exp(-np.asarray(x, dtype=float) / k)


def _power(x, a, b, c):
    return a - b * np.power(np.asarray(x, dtype=float), -c)


def _p0_exp(x, y):
    a = min(1.0, float(y.max()) + 0.05)
    k = float(np.median(x))
    return [a, max(1e-3, (a - float(y.min())) * np.exp(float(x.min()) / k)), k]


def _p0_power(x, y):
    a = min(1.0, float(y.max()) + 0.05)
    return [a, max(1e-3, (a - float(y.min())) * float(x.min()) ** 0.5), 0.5]


MODELS = {
    "exp": (_exp, _p0_exp, ([0.0, 0.0, 1.0], [1.0, 10.0, 1e7])),
    "power": (_power, _p0_power, ([0.0, 0.0, 0.05], [1.0, 1e6, 3.0])),
}
CURVE_MODEL = "exp"


@dataclass
class Fit:
    """A curve model fitted on pooled points: parameters, covariance, the data it rests on."""

    model: str
    params: np.ndarray
    cov: np.ndarray
    points: int
    chi2_dof: float | None

    def __call__(self, x) -> np.ndarray:
        return MODELS[self.model][0](x, *self.params)

    def half_width(self, x) -> np.ndarray:
        """95% half-width of the fitted mean at x (delta method, numerical gradient)."""
        x = np.asarray(x, dtype=float)
        grads = []
        for i, p in enumerate(self.params):
            h = 1e-6 * max(abs(p), 1e-3)
            up, dn = self.params.copy(), self.params.copy()
            up[i] += h
            dn[i] -= h
            grads.append((MODELS[self.model][0](x, *up) - MODELS[self.model][0](x, *dn)) / (2 * h))
        g = np.stack(grads, axis=-1)
        var = np.einsum("...i,ij,...j->...", g, self.cov, g)
        return Z95 * np.sqrt(np.clip(var, 0.0, None))


def _sigma(y: np.ndarray, n: np.ndarray) -> np.ndarray:
    p = (y * n + 1) / (n + 2)
    return np.sqrt(p * (1 - p) / n)


def fit_points(x, y, n, model: str = CURVE_MODEL) -> Fit | None:
    """Weighted least-squares fit of `model` on points (examples, exact, items scored); None if it fails."""
    from scipy.optimize import curve_fit

    x, y, n = (np.asarray(v, dtype=float) for v in (x, y, n))
    fn, p0, bounds = MODELS[model]
    start = np.clip(p0(x, y), np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    try:
        params, cov = curve_fit(fn, x, y, p0=start, sigma=_sigma(y, n), absolute_sigma=True,
                                bounds=bounds, maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        log.info("calibration fit (%s) failed: %s", model, exc)
        return None
    dof = len(x) - len(params)
    chi2 = float(np.sum(((fn(x, *params) - y) / _sigma(y, n)) ** 2))
    chi2_dof = chi2 / dof if dof > 0 else None
    if chi2_dof is not None and chi2_dof > 1:
        cov = cov * chi2_dof  # runs disagree more than sampling noise explains
    cov = np.where(np.isfinite(cov), cov, 1e6)
    return Fit(model, params, cov, len(x), chi2_dof)


# --------------------------------------------------------------------------------- prediction
@dataclass
class CurveSet:
    """The recorded curves of one (task, student, method), with their fit: what predictions read."""

    task: str
    student: str
    method: str
    series: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # x, y, n
    fit: Fit | None = None
    fit_curves: int = 0

    @property
    def last(self) -> float:
        return max((float(s[0].max()) for s in self.series), default=0.0)

    def predict(self, examples) -> dict[str, np.ndarray]:
        """Vectorised over budgets: value, low, high, source (index into SOURCES), widen (interval factor)."""
        x = np.atleast_1d(np.asarray(examples, dtype=float))
        value, low, high = np.zeros_like(x), np.zeros_like(x), np.ones_like(x)
        source = np.full(x.shape, SOURCES.index("prior"))
        widen = np.ones_like(x)
        if self.fit is not None:
            widen = np.where(x > FAR * self.last, 1.0 + np.log2(np.maximum(x / (FAR * self.last), 1.0)), 1.0)
            value = self.fit(np.maximum(x, 1.0))
            half = self.fit.half_width(np.maximum(x, 1.0)) * widen
            low, high = value - half, value + half
            source[:] = SOURCES.index("fitted")
        measured = self._measured(x)
        if measured is not None:
            m_value, m_half, reached = measured
            value, low, high = (np.where(reached, m, f) for m, f in
                                ((m_value, value), (m_value - m_half, low), (m_value + m_half, high)))
            source = np.where(reached, SOURCES.index("measured"), source)
            widen = np.where(reached, 1.0, widen)
        value, low, high = (np.clip(v, 0.0, 1.0) for v in (value, low, high))
        return {"value": value, "low": low, "high": high, "source": source, "widen": widen}

    def _measured(self, x: np.ndarray):
        """Mean of the curves that reach each budget, interpolated, with a 95% half-width (binomial
        within runs + spread between runs); None when no curve has a point."""
        vals, vars_, reach = [], [], []
        for xs, ys, ns in self.series:
            vals.append(np.interp(x, xs, ys))
            p = np.interp(x, xs, ys)
            n_at = np.interp(x, xs, ns)
            vars_.append(_sigma(p, n_at) ** 2)
            reach.append(x <= xs.max())
        if not vals:
            return None
        vals, vars_, reach = np.array(vals), np.array(vars_), np.array(reach)
        m = reach.sum(axis=0)
        safe = np.maximum(m, 1)
        mean = np.where(reach, vals, 0.0).sum(axis=0) / safe
        within = np.where(reach, vars_, 0.0).sum(axis=0) / safe**2
        spread = np.where(reach, (vals - mean) ** 2, 0.0).sum(axis=0) / np.maximum(m - 1, 1)
        between = np.where(m > 1, spread / safe, 0.0)
        return mean, Z95 * np.sqrt(within + between), m > 0


_FITS: dict[tuple, CurveSet] = {}


def curve_set(task: str, student: str, method: str, model: str = CURVE_MODEL,
              exclude_run: str | None = None) -> CurveSet:
    """The stored curves of (task, student, method) and their fit (memoised on the store's files)."""
    found = [c for c in curves(task, student, method) if c.points and c.run != exclude_run]
    key = (task, student, method, model, tuple((c.run, c.created, len(c.points)) for c in found))
    if key not in _FITS:
        if len(_FITS) > 256:
            _FITS.clear()
        _FITS[key] = build_curve_set(task, student, method, found, model)
    return _FITS[key]


def build_curve_set(task: str, student: str, method: str, found: list[LearningCurve],
                    model: str = CURVE_MODEL) -> CurveSet:
    """A CurveSet from given curves: every curve for interpolation, those with >= MIN_POINTS points
    (examples > 0) pooled for the fit."""
    cs = CurveSet(task, student, method)
    fit_x: list[float] = []
    fit_y: list[float] = []
    fit_n: list[float] = []
    for c in found:
        if not c.points:
            continue
        pts = sorted(c.points, key=lambda p: p.examples)
        xs, ys, ns = (np.array([getattr(p, f) for p in pts], dtype=float) for f in ("examples", "exact", "n"))
        cs.series.append((xs, ys, ns))
        if int((xs > 0).sum()) >= MIN_POINTS:
            cs.fit_curves += 1
            fit_x += list(xs[xs > 0])
            fit_y += list(ys[xs > 0])
            fit_n += list(ns[xs > 0])
    if cs.fit_curves:
        cs.fit = fit_points(fit_x, fit_y, fit_n, model)
    return cs


def describe(cs: CurveSet, source: str, examples: float, widen: float) -> str:
    """The note of one prediction: what it rests on, and extrapolation when far."""
    runs = len(cs.series) if source == "measured" else cs.fit_curves
    what = (f"read off {runs} recorded run(s) that reached {examples:,.0f} examples" if source == "measured"
            else f"{cs.fit.model} curve fitted on {cs.fit_curves} run(s), {cs.fit.points} points")
    if widen > 1:
        what += (f"; extrapolated {examples / cs.last:,.0f}x beyond the last measured point "
                 f"({cs.last:,.0f} examples): interval widened x{widen:.1f}")
    return what


def predict_accuracy(
    task: str, student: str, method: str, examples: int, prior: float | None = None
) -> Prediction:
    """Expected accuracy of `student` trained with `method` on `examples` examples (see the module doc);
    `prior` is what a caller gets back, labelled, when nothing was measured."""
    cs = curve_set(task, student, method)
    out = cs.predict([examples])
    source = SOURCES[int(out["source"][0])]
    if source == "prior":
        value = 0.0 if prior is None else float(np.clip(prior, 0.0, 1.0))
        return Prediction(value=value, low=0.0, high=1.0, source="prior", curves=0,
                          note=f"prior: no recorded learning curve for {task}/{student}/{method} "
                          f"with >= {MIN_POINTS} points")
    return Prediction(
        value=float(out["value"][0]), low=float(out["low"][0]), high=float(out["high"][0]), source=source,
        curves=len(cs.series) if source == "measured" else cs.fit_curves,
        note=describe(cs, source, examples, float(out["widen"][0])),
    )
