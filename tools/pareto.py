"""Pareto machinery: exact non-dominated filtering (numpy), NSGA-II (pymoo), knee and weighted choice.

All objectives are MINIMISED (negate accuracy before calling). The exact filter sorts points
lexicographically: a point can then only be dominated by a point before it, so one sweep in blocks
compares each block with the front found so far plus the earlier points of its own block, all with
numpy broadcasting. Cost is O(n log n + n x |front| x m); plan sets have fronts of hundreds, so
100k points take a fraction of a second and 1M a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BLOCK = 1024
KILLERS = 32


def _dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix D[i, j] = a[i] dominates b[j] (<= everywhere and < somewhere)."""
    # One 2-D comparison per objective: numpy reduces a trailing axis of length 4 far slower.
    le = a[:, None, 0] <= b[None, :, 0]
    lt = a[:, None, 0] < b[None, :, 0]
    for k in range(1, a.shape[1]):
        le &= a[:, None, k] <= b[None, :, k]
        lt |= a[:, None, k] < b[None, :, k]
    return le & lt


def non_dominated_mask(objectives: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Boolean mask of the exact first front of `objectives` (n x m, minimised). Duplicates all stay."""
    F = np.asarray(objectives, dtype=float)
    if F.ndim != 2:
        raise ValueError(f"objectives must be 2-D (points x objectives), got shape {F.shape}")
    n = len(F)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort(F.T[::-1])  # primary key: first objective
    S = F[order]
    scale = np.where(np.ptp(S, 0) > 0, np.ptp(S, 0), 1.0)
    front = np.empty((0, F.shape[1]))
    keep = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        chunk = S[start : start + block]
        alive = np.ones(len(chunk), dtype=bool)
        if len(front) > KILLERS:
            # Cheap first pass: the front points with the best normalised sums dominate most
            # dominated points; only the survivors meet the whole front.
            killers = front[np.argpartition((front / scale).sum(1), KILLERS)[:KILLERS]]
            alive = ~_dominates(killers, chunk).any(0)
        if len(front) and alive.any():
            alive[np.flatnonzero(alive)] = ~_dominated_by_front(front, chunk[alive])
        if alive.any():
            idx = np.flatnonzero(alive)
            cand = chunk[idx]
            inner = _dominates(cand, cand)  # only earlier points can dominate (sorted), the test is exact
            alive[idx] = ~inner.any(0)
        keep[start : start + block] = alive
        front = np.vstack([front, chunk[alive]])
    mask[order] = keep
    return mask


def _dominated_by_front(front: np.ndarray, pts: np.ndarray, sub: int = 64) -> np.ndarray:
    """pts dominated by any front point. Only front points with f1 <= p1 can dominate p, so with the
    front sorted on the second objective each sub-block of pts (sorted the same way) meets a prefix."""
    if front.shape[1] < 2 or len(pts) <= sub:
        return _dominates(front, pts).any(0)
    front = front[np.argsort(front[:, 1], kind="stable")]
    order = np.argsort(pts[:, 1], kind="stable")
    out = np.zeros(len(pts), dtype=bool)
    for start in range(0, len(pts), sub):
        idx = order[start : start + sub]
        cut = np.searchsorted(front[:, 1], pts[idx, 1].max(), side="right")
        near = front[:cut]
        near = near[(near <= pts[idx].max(0)).all(1)]  # outside the sub-block's bounding box: cannot dominate
        if len(near):
            out[idx] = _dominates(near, pts[idx]).any(0)
    return out


def pareto_ranks(objectives: np.ndarray, max_rank: int | None = None) -> np.ndarray:
    """Non-dominated sorting: rank 0 = first front, 1 = the front once rank 0 is removed, ...
    Points beyond `max_rank` get rank `max_rank + 1`."""
    F = np.asarray(objectives, dtype=float)
    ranks = np.full(len(F), -1)
    remaining = np.arange(len(F))
    rank = 0
    while len(remaining) and (max_rank is None or rank <= max_rank):
        m = non_dominated_mask(F[remaining])
        ranks[remaining[m]] = rank
        remaining = remaining[~m]
        rank += 1
    ranks[ranks < 0] = rank
    return ranks


def naive_non_dominated_mask(objectives: np.ndarray) -> np.ndarray:
    """O(n^2) reference (one row of the dominance matrix at a time): the baseline the benchmark beats."""
    F = np.asarray(objectives, dtype=float)
    return np.array([not _dominates(F, F[i : i + 1])[:, 0].any() for i in range(len(F))], dtype=bool)


# ---------------------------------------------------------------- quality of a front


def normalise(
    F: np.ndarray,
    ideal: np.ndarray | None = None,
    nadir: np.ndarray | None = None,
    floor: np.ndarray | None = None,
) -> np.ndarray:
    """Map each objective to [0, 1] over [ideal, nadir]. `floor` = the smallest spread that matters per
    objective: a spread below it is not a real trade-off, so it does not get stretched to [0, 1]."""
    ideal = F.min(0) if ideal is None else ideal
    nadir = F.max(0) if nadir is None else nadir
    span = np.maximum(nadir - ideal, 0.0 if floor is None else np.asarray(floor, dtype=float))
    return (F - ideal) / np.where(span > 0, span, 1.0)


def hypervolume(F: np.ndarray, ref_point: np.ndarray) -> float:
    """Hypervolume (pymoo's HV indicator) of points F w.r.t. `ref_point` (all minimised)."""
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=np.asarray(ref_point, dtype=float))(np.asarray(F, dtype=float)))


# ---------------------------------------------------------------- choice on the front


def knee_index(F: np.ndarray, floor: np.ndarray | None = None) -> int:
    """The knee: in objectives normalised to [0, 1] over the front, the point farthest below the
    hyperplane through the extreme points (sum of normalised objectives = 1), i.e. the point that
    gives up the least on every objective at once (Das 1999, 'normal boundary' knee)."""
    N = normalise(np.asarray(F, dtype=float), floor=floor)
    return int(np.argmin(N.sum(1)))


def weighted_index(F: np.ndarray, weights: np.ndarray, floor: np.ndarray | None = None) -> int:
    """The front point minimising the weighted sum of normalised objectives (user priorities)."""
    N = normalise(np.asarray(F, dtype=float), floor=floor)
    return int(np.argmin(N @ (np.asarray(weights, dtype=float) / np.sum(weights))))


# ---------------------------------------------------------------- NSGA-II for large / mixed spaces


def nsga2_front(
    evaluate: Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    n_obj: int,
    integer: np.ndarray | None = None,
    pop_size: int = 100,
    generations: int = 100,
    seed: int = 0,
    constraint: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run pymoo's NSGA-II on a box of decision variables (integer ones rounded by a repair).

    `evaluate(X) -> F` maps a (pop x n_var) array to (pop x n_obj) minimised objectives; `constraint(X)`
    returns G (<= 0 feasible). Returns (X, F) of the final non-dominated set."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.core.repair import Repair
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.optimize import minimize

    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    is_int = np.zeros(len(lower), dtype=bool) if integer is None else np.asarray(integer, dtype=bool)

    class _Round(Repair):
        def _do(self, problem, X, **kwargs):
            X = X.copy()
            X[:, is_int] = np.rint(X[:, is_int])
            return np.clip(X, lower, upper)

    class _Problem(Problem):
        def __init__(self):
            super().__init__(
                n_var=len(lower), n_obj=n_obj, n_ieq_constr=1 if constraint else 0, xl=lower, xu=upper
            )

        def _evaluate(self, X, out, *args, **kwargs):
            out["F"] = evaluate(X)
            if constraint:
                out["G"] = constraint(X)

    algo = NSGA2(
        pop_size=pop_size,
        crossover=SBX(prob=0.9, eta=15),
        mutation=PM(eta=20),
        repair=_Round(),
        eliminate_duplicates=True,
    )
    res = minimize(_Problem(), algo, ("n_gen", generations), seed=seed, verbose=False)
    if res.X is None:
        return np.empty((0, len(lower))), np.empty((0, n_obj))
    return np.atleast_2d(res.X), np.atleast_2d(res.F)
