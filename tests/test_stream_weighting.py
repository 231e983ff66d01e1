"""Adaptive difficulty weighting of the verified stream, the WSD schedule, and their place in the fingerprint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from stratos_agent.tools.stream_data import Encoder
from stratos_agent.tools.stream_train import (
    ADAPTIVE_FLOOR,
    MIN_LR_RATIO,
    adaptive_weights,
    lr_factor,
    stream_train,
)

from stratos_agent.errors import InputError
from stratos_agent.models.micro import build_micro_student
from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack
from stratos_agent.tasks.base import VerifiedStream

EASY = 5  # the stubbed validation below: buckets 0-4 always right, 5-9 always wrong


@pytest.fixture(scope="module")
def pack():
    return get_task_pack("mahjong", prompt="short")


@pytest.fixture(scope="module")
def micro(tmp_path_factory, pack) -> Path:
    return build_micro_student(pack, tmp_path_factory.mktemp("micro") / "m", layers=2, width=64, heads=1,
                               task_options={"prompt": "short"})


def test_adaptive_weights_follow_measured_errors():
    assert adaptive_weights((0, 1, 2, 3), {0: 1.0, 1: 0.0, 2: 0.5}) == pytest.approx(
        [ADAPTIVE_FLOOR, ADAPTIVE_FLOOR + 1, ADAPTIVE_FLOOR + 0.5, ADAPTIVE_FLOOR + 0.5])  # 3: unmeasured -> mean
    assert adaptive_weights((0, 1), {0: 1.0, 1: 1.0}, floor=0.1) == pytest.approx([0.1, 0.1])  # none starves
    assert adaptive_weights((0, 1), {}) == [1.0, 1.0]


def test_weighted_stream_draws_buckets_in_proportion_and_is_deterministic(pack):
    weights = [0, 0, 3, 1, 0, 0, 0, 0, 0, 0]
    stream = VerifiedStream(pack, seed=0, natural_share=0.0, exclude=set(), weights=weights)
    counts = Counter(pack.difficulty_bucket(it) for step in range(10) for it in stream.batch(step, 64))
    assert set(counts) == {2, 3} and 0.68 < counts[2] / 640 < 0.82  # 3:1 -> 75% (binomial sd 1.7 points)
    again = VerifiedStream(pack, seed=0, natural_share=0.0, exclude=set(), weights=weights)
    assert again.batch(4, 64) == stream.batch(4, 64)
    again.weights = [1, 0, 3, 1, 0, 0, 0, 0, 0, 0]
    assert again.batch(4, 64) != stream.batch(4, 64)
    even = VerifiedStream(pack, seed=0, natural_share=0.5, exclude=set())
    assert len({pack.difficulty_bucket(it) for it in even.batch(0, 64)}) > 5  # None: the even path
    for bad in ([1.0] * 9, [-1.0] + [1.0] * 9, [0.0] * 10):
        with pytest.raises(InputError, match="one non-negative weight per difficulty bucket"):
            VerifiedStream(pack, seed=0, natural_share=0.5, exclude=set(), weights=bad)


def test_fingerprint_changes_with_weighting_and_keeps_earlier_stream_runs():
    even = TrainConfig(run_name="a", base_model="b", data=Path("c"), stream=True, learning_rate=3e-3,
                       bf16_autocast=True)
    assert even.fingerprint() == "feea27e712d1925d"  # computed before `stream_weighting` existed
    adaptive = even.model_copy(update={"stream_weighting": "adaptive"})
    assert adaptive.fingerprint() != even.fingerprint()
    # the weights follow each evaluation: under adaptive weighting the eval cadence shapes the weights
    assert adaptive.model_copy(update={"eval_every": 64}).fingerprint() != adaptive.fingerprint()
    assert even.model_copy(update={"eval_every": 64}).fingerprint() == even.fingerprint()
    plain = TrainConfig(run_name="a", base_model="b", data=Path("c"))
    assert plain.model_copy(update={"stream_weighting": "adaptive"}).fingerprint() == plain.fingerprint()
    assert even.model_copy(update={"lr_scheduler": "warmup_stable_decay"}).fingerprint() != even.fingerprint()


def test_wsd_schedule_is_flat_then_decays_to_the_floor():
    assert lr_factor(10, 0.3, 0.05, "warmup_stable_decay") == 1.0
    assert lr_factor(10, 0.8, 0.05, "warmup_stable_decay") == pytest.approx(1.0)
    assert lr_factor(10, 0.9, 0.05, "warmup_stable_decay") == pytest.approx(1 - (1 - MIN_LR_RATIO) / 2)
    assert lr_factor(10, 1.0, 0.05, "warmup_stable_decay") == pytest.approx(MIN_LR_RATIO)
    assert lr_factor(0, 0.01, 0.05, "warmup_stable_decay") == pytest.approx(0.2)  # the same warm-up
    assert lr_factor(10, 0.3, 0.05) < 0.9  # the cosine is already annealing there


def adaptive_config(micro: Path, tmp_path: Path, **overrides) -> TrainConfig:
    fields = {"run_name": "w", "base_model": str(micro), "task": "mahjong", "data": tmp_path / "none",
              "stream": True, "lora": False, "learning_rate": 2e-3, "batch_size": 16, "max_steps": 12,
              "save_steps": 5, "eval_every": 32, "eval_n": 20, "logging_steps": 4, "threads": 1,
              "stream_mix": 0.0, "stream_weighting": "adaptive"}
    return TrainConfig(**(fields | overrides))


class Crash(Exception):
    pass


def test_adaptive_run_resumes_with_the_weights_in_force(pack, micro, tmp_path, monkeypatch):
    """Validation is stubbed (easy buckets right, hard ones wrong) so the weights are known; a run crashed
    between an evaluation and the next checkpoint must redraw the lost steps with the saved weights."""
    monkeypatch.setattr(Encoder, "hits", lambda self, model, items, max_new: [
        pack.difficulty_bucket(it) < EASY for it in items])
    draws: dict[str, dict[int, list[tuple[str, int]]]] = {"straight": {}, "resumed": {}}
    current = {"run": "straight"}
    original = VerifiedStream.batch

    def recording(self, step, size):
        items = original(self, step, size)
        draws[current["run"]][step] = [(pack.canonical_key(it), pack.difficulty_bucket(it)) for it in items]
        return items

    monkeypatch.setattr(VerifiedStream, "batch", recording)
    val = pack.sample(20, seed=11, distribution="even")
    config = adaptive_config(micro, tmp_path)
    straight = stream_train(config, run_dir=tmp_path / "straight", val_items=val, record=False, curve_kind="sweep")

    def crash(step: int) -> None:
        if step == 7:  # evaluations at steps 2, 4, 6; the newest checkpoint is step 5
            raise Crash

    current["run"] = "resumed"
    with pytest.raises(Crash):
        stream_train(config, run_dir=tmp_path / "resumed", val_items=val, record=False, on_step=crash)
    resumed = stream_train(config, run_dir=tmp_path / "resumed", val_items=val, record=False, curve_kind="sweep")
    assert resumed.resumed_from_step == 5
    assert draws["resumed"] == draws["straight"] and sorted(draws["straight"]) == list(range(12))

    card = json.loads((tmp_path / "resumed" / "stream_card.json").read_text())
    assert card["weighting"] == "adaptive" and card["adaptive_floor"] == ADAPTIVE_FLOOR
    history = card["weights_history"]
    assert [h["examples"] for h in history] == [32, 64, 96, 128, 160, 192]
    assert history == json.loads((tmp_path / "straight" / "stream_card.json").read_text())["weights_history"]
    hard = [ADAPTIVE_FLOOR] * EASY + [ADAPTIVE_FLOOR + 1] * EASY
    assert history[0]["weights"] == pytest.approx(hard)
    # before the first evaluation the draw is even; after it, 6 in 7 items come from the hard buckets
    before = [b for step in (0, 1) for _, b in draws["straight"][step]]
    after = [b for step in range(2, 12) for _, b in draws["straight"][step]]
    assert sum(b >= EASY for b in before) / len(before) < 0.75 < sum(b >= EASY for b in after) / len(after)
    assert straight.learning_curve.kind == "sweep" and straight.learning_curve.points[0].exact == 0.5
    assert "even over 10 difficulty buckets" in straight.learning_curve.validation


def test_stream_refuses_an_unknown_schedule(micro, tmp_path):
    with pytest.raises(InputError, match="warmup_stable_decay"):
        stream_train(adaptive_config(micro, tmp_path, lr_scheduler="constant"), run_dir=tmp_path / "x")
