"""Learning-curve models and their weighted fit (scipy), for the calibration store (tools/calibration.py).

Accuracy model, per (task, student, method) and conditions, fitted on every recorded point with examples > 0:

    acc(x) = a - b * exp(-x / k)      a in [0, 1] (the ceiling), b >= 0, k > 0 examples

a saturating curve. The inverse power law a - b x^-c (Figueroa et al. 2012) is the other usual choice;
evals/plan_calibration.py fits both on 14 real Mahjong runs (SmolLM2-135M full/LoRA-16, its half-depth
student, the micro students) and `CURVE_MODEL` is the one with the lower median absolute error where
the models differ, on extrapolated finals (4 leave-one-run-out up to 1.5x + 4 from the run's own first
half, 2x): exp 4.2 points, power 5.0 (evals/results/plan_calibration.json). Neither was tested beyond
2x: the recorded runs are short.
Points are weighted by their binomial standard error ((k+1)/(n+2) so 0% is not infinitely sure); the
fit's covariance is inflated by the reduced chi-square when runs disagree more than sampling explains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


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

    def variance(self, x) -> np.ndarray:
        """Variance of the fitted mean at x (delta method, numerical gradient)."""
        x = np.asarray(x, dtype=float)
        grads = []
        for i, p in enumerate(self.params):
            h = 1e-6 * max(abs(p), 1e-3)
            up, dn = self.params.copy(), self.params.copy()
            up[i] += h
            dn[i] -= h
            grads.append((MODELS[self.model][0](x, *up) - MODELS[self.model][0](x, *dn)) / (2 * h))
        g = np.stack(grads, axis=-1)
        return np.clip(np.einsum("...i,ij,...j->...", g, self.cov, g), 0.0, None)


def sigma(y: np.ndarray, n: np.ndarray) -> np.ndarray:
    p = (y * n + 1) / (n + 2)
    return np.sqrt(p * (1 - p) / n)


def fit_points(x, y, n, model: str = CURVE_MODEL) -> Fit | None:
    """Weighted least-squares fit of `model` on points (examples, exact, items scored); None if it fails."""
    from scipy.optimize import curve_fit

    x, y, n = (np.asarray(v, dtype=float) for v in (x, y, n))
    fn, p0, bounds = MODELS[model]
    start = np.clip(p0(x, y), np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
    try:
        params, cov = curve_fit(fn, x, y, p0=start, sigma=sigma(y, n), absolute_sigma=True,
                                bounds=bounds, maxfev=20_000)
    except (RuntimeError, ValueError) as exc:
        log.info("calibration fit (%s) failed: %s", model, exc)
        return None
    dof = len(x) - len(params)
    chi2 = float(np.sum(((fn(x, *params) - y) / sigma(y, n)) ** 2))
    chi2_dof = chi2 / dof if dof > 0 else None
    if chi2_dof is not None and chi2_dof > 1:
        cov = cov * chi2_dof  # runs disagree more than sampling noise explains
    cov = np.where(np.isfinite(cov), cov, 1e6)
    return Fit(model, params, cov, len(x), chi2_dof)
