"""Pairing scorer and the expected-accuracy model: documented shape, probes as input data."""

from __future__ import annotations

import numpy as np
import pytest
from stratos_agent.tools import pairing
from stratos_agent.tools.pairing import STRATEGY_CODES, TaskProfile, capacity, expected_accuracy

from stratos_agent.models import get_registry


def test_capacity_grows_with_size_and_falls_with_difficulty():
    sizes = np.array([1e8, 1e9, 1e10])
    assert np.all(np.diff(capacity(sizes, 0.5)) > 0)
    assert capacity(1e9, 0.2) > capacity(1e9, 0.9)


def test_alignment_is_capped_by_the_teacher_and_injection_is_not():
    cap = 0.6
    weak_teacher = 0.1
    align = expected_accuracy(STRATEGY_CODES["alignment-seq"], weak_teacher, cap, 100_000, 0, 0.5)
    inject = expected_accuracy(STRATEGY_CODES["injection"], weak_teacher, cap, 100_000, 0, 0.5)
    assert align == pytest.approx(weak_teacher, rel=1e-3)
    assert inject == pytest.approx(cap * (0.8 + 0.2 * weak_teacher), rel=1e-3)
    # More data helps, LoRA r8 costs a little, logit KD learns faster from the same data.
    codes = STRATEGY_CODES
    assert expected_accuracy(codes["injection"], 0.5, cap, 8000, 0, 0.5) > expected_accuracy(
        codes["injection"], 0.5, cap, 500, 0, 0.5
    )
    assert expected_accuracy(codes["injection"], 0.5, cap, 2000, 8, 0.5) < expected_accuracy(
        codes["injection"], 0.5, cap, 2000, 0, 0.5
    )
    assert expected_accuracy(codes["alignment-logit"], 0.9, cap, 500, 0, 0.5) > expected_accuracy(
        codes["alignment-seq"], 0.9, cap, 500, 0, 0.5
    )


def test_score_pairs_uses_measured_probes_and_tokenizer_match():
    reg = get_registry()
    teacher, student = reg.get("smollm2-135m"), reg.get("smollm2-135m-half")
    task = TaskProfile("mahjong", 0.85, True)
    strong = pairing.score_pairs(
        task, [teacher], [student], {teacher.id: 0.95}, {teacher.id: 0.0001}, {student.id: (120.0, 0.2)}
    )
    (row,) = strong
    assert row.probe_source == "measured" and row.probe_accuracy == 0.95
    assert row.tokenizer_match and row.logit_kd and row.decision.strategy == "alignment-logit"
    assert row.serving_p95_ms == 120.0
    weak = pairing.score_pairs(task, [teacher], [student], {}, {teacher.id: 0.0001}, {})
    assert weak[0].probe_source == "prior" and weak[0].decision.strategy == "injection"
    # the student must not be larger than the teacher
    assert pairing.score_pairs(task, [student], [teacher], {}, {}, {}) == []


def test_task_profiles():
    assert pairing.task_profile("mahjong").has_solver
    assert pairing.task_profile("mahjong").difficulty == pairing.DIFFICULTY_PRIORS["mahjong"]
    with pytest.raises(Exception, match="does not exist"):
        pairing.task_profile("jsonl:/no/such/file.jsonl")


@pytest.mark.slow
def test_run_probes_measures_the_local_teacher():
    probes = pairing.run_probes("mahjong", ["smollm2-135m"], n=2)
    assert set(probes) == {"smollm2-135m"} and 0.0 <= probes["smollm2-135m"] <= 1.0
