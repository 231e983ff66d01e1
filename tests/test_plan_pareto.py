"""Exact non-dominated filter vs references, NSGA-II vs a known exact front, knee/weighted choice."""

from __future__ import annotations

import numpy as np
import pytest
from stratos_agent.tools import pareto


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [2, 3, 4])
def test_exact_front_matches_naive_and_pymoo_with_ties(seed, m):
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(seed)
    F = np.round(rng.random((3000, m)), 1)  # heavy ties and exact duplicates
    mask = pareto.non_dominated_mask(F, block=256)  # small blocks: many block boundaries
    assert np.array_equal(mask, pareto.naive_non_dominated_mask(F))
    ref = NonDominatedSorting().do(F, only_non_dominated_front=True)
    assert set(np.flatnonzero(mask)) == set(ref.tolist())


def test_known_front_is_recovered_exactly():
    # Front: points on the plane x + y + z = 1; every other point is a front point shifted up.
    rng = np.random.default_rng(3)
    front = rng.dirichlet(np.ones(3), size=400)
    dominated = front[rng.integers(0, 400, 20000)] + rng.uniform(0.001, 0.5, (20000, 3))
    F = np.vstack([dominated, front])
    mask = pareto.non_dominated_mask(F)
    assert mask[-400:].all() and not mask[:-400].any()


def test_ranks_peel_fronts():
    F = np.array([[0, 2], [1, 1], [2, 0], [1, 2], [2, 1], [2, 2]], dtype=float)
    assert pareto.pareto_ranks(F).tolist() == [0, 0, 0, 1, 1, 2]


def test_nsga2_agrees_with_exact_front_on_known_problem():
    # Integer decisions x, y in [0, 40]: f1 = x, f2 = 40 - x + 3 y. The exact front is y = 0.
    grid = np.array([(x, y) for x in range(41) for y in range(41)], dtype=float)

    def evaluate(X):
        return np.column_stack([X[:, 0], 40 - X[:, 0] + 3 * X[:, 1]])

    F_all = evaluate(grid)
    exact = F_all[pareto.non_dominated_mask(F_all)]
    assert np.array_equal(np.unique(grid[pareto.non_dominated_mask(F_all), 1]), [0])
    X, F = pareto.nsga2_front(
        evaluate,
        [0, 0],
        [40, 40],
        n_obj=2,
        integer=np.array([True, True]),
        pop_size=40,
        generations=50,
        seed=1,
    )
    ref = np.array([41.0, 161.0])
    ratio = pareto.hypervolume(F, ref) / pareto.hypervolume(exact, ref)
    assert ratio >= 0.97, ratio
    assert (X[:, 1] == 0).all()  # everything NSGA-II returns is on the true front


def test_knee_and_weighted_choice():
    # Convex front: the knee is the bend at (1, 1), the extremes win under lopsided weights.
    F = np.array([[0, 10], [1, 1], [10, 0], [0.5, 5], [5, 0.5]], dtype=float)
    assert pareto.knee_index(F) == 1
    assert pareto.weighted_index(F, np.array([100, 1])) == 0
    assert pareto.weighted_index(F, np.array([1, 100])) == 2


def test_normalise_floor_ignores_immaterial_spread():
    F = np.array([[0.0, 100.0], [1.0, 100.001]])
    assert pareto.normalise(F)[1, 1] == pytest.approx(1.0)
    assert pareto.normalise(F, floor=np.array([0.0, 1.0]))[1, 1] == pytest.approx(0.001)


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="2-D"):
        pareto.non_dominated_mask(np.zeros(5))


def test_a_latency_gap_is_weighed_against_the_users_p95_target():
    """The front of the afternoon run that chose a 500-example student: (cost, p95 ms, -accuracy, hours)."""
    from stratos_agent.tools.planning.choose import MATERIAL, choose, material_spreads

    from stratos_agent.spec import Constraints, DistillationSpec

    front = np.array([[0.0, 180.0, -0.12, 0.009],   # 6.3M student, 500 examples: fast probe, learns little
                      [0.0, 505.0, -0.32, 0.11]])   # 2.4M student, 48,000 examples: a slow probe round
    assert choose(front, "balanced")[0] == 0  # the range stretched 325 ms to the full accuracy range
    spec = DistillationSpec(task="mahjong", constraints=Constraints(budget_usd=20, p95_latency_ms=2000))
    assert material_spreads(spec)[1] == 2000 and choose(front, "balanced", material_spreads(spec))[0] == 1
    # under a tight target the gap stays material: at 600 ms the 325 ms are over half the allowance, and
    # a user who asks for speed gets the fast student
    tight = spec.model_copy(update={"constraints": Constraints(budget_usd=20, p95_latency_ms=600)})
    assert choose(front, "faster", material_spreads(tight))[0] == 0
    assert (material_spreads(DistillationSpec(task="mahjong")) == MATERIAL).all()  # no target: the floors


def test_the_default_goal_keeps_the_choice_among_plans_expected_to_pass_the_gate():
    """The quoted "$50, p95 under 500 ms" front: (cost, p95 ms, -accuracy, hours)."""
    from stratos_agent.tools.goal import GateFloor
    from stratos_agent.tools.planning.choose import choose, gate_pool

    front = np.array([[0.02, 131.0, -0.067, 0.001],
                      [0.07, 131.0, -0.088, 0.005],   # the knee alone: 9% expected, under the empty answer
                      [0.26, 131.0, -0.161, 0.02],
                      [1.06, 131.0, -0.46, 0.08]])
    assert choose(front, "balanced")[0] == 1
    floor = GateFloor(baseline="empty answer", baseline_accuracy=0.12, n=100, accuracy=0.2)
    pool, how = gate_pool(front, floor)
    assert pool.tolist() == [False, False, False, True] and "only the 1 expected to pass the result gate" in how
    assert "at least 20.0% exact" in how and "empty answer at 12.0%" in how
    # nobody expected to pass: the whole front stays open, and the plan says so
    pool, how = gate_pool(front[:3], floor)
    assert pool.all() and how.startswith("; none is expected to pass")
    pool, how = gate_pool(front, None)  # a stated min_accuracy: no default goal to keep
    assert pool.all() and how == ""
