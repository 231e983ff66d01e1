"""evals/recipe_sweep.py: one change per arm, the paired comparison with the baseline, and a real smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest
from support.evals import EVALS, eval_module


@pytest.fixture(scope="module")
def sweep():
    with eval_module("recipe_sweep") as module:
        yield module


def test_every_arm_changes_only_its_own_fields(sweep):
    args = Namespace(points=4, val_n=200, threads=1)
    base = sweep.stream_config(sweep.BASELINE, 8192, args).model_dump()
    assert base["learning_rate"] == 1e-3 and base["batch_size"] == 64 and base["stream_mix"] == 0.5
    assert base["eval_every"] == 2048 and base["examples_budget"] == 8192
    fingerprints = set()
    for arm, change in sweep.ARMS.items():
        config = sweep.stream_config(arm, 8192, args)
        differs = {k for k, v in config.model_dump().items() if base[k] != v} - {"run_name"}
        assert differs == set(change), arm
        fingerprints.add(config.model_copy(update={"run_name": "x"}).fingerprint())
    assert len(fingerprints) == len(sweep.ARMS) - 1  # sft-then-grpo's SFT part is the baseline recipe


def test_paired_difference_and_the_both_hold_outs_rule(sweep):
    base = [True] * 10 + [False] * 90
    better = [True] * 30 + [False] * 70  # 20 gained, none lost
    assert sweep.paired(better, base) == {"diff": 0.2, "gained": 20, "lost": 0, "p": pytest.approx(0.0, abs=1e-5)}
    assert sweep.paired(base, base)["p"] == 1.0
    shuffled = [False] * 10 + [True] * 10 + [False] * 80  # as many gained as lost: no evidence
    assert sweep.paired(shuffled, base)["diff"] == 0 and sweep.paired(shuffled, base)["p"] == 1.0
    results = [{"arm": "baseline"}, {"arm": "a"}, {"arm": "b"}]
    sweep.compare(results, {"even": [base, better, better], "natural": [base, better, shuffled]})
    assert results[1]["beats_baseline"] and not results[2]["beats_baseline"]  # b: only one hold-out
    lucky = [True] * 35 + [False] * 65  # another seed of the baseline itself, 25 points up
    results = [{"arm": "baseline"}, {"arm": sweep.SEED_ARM}, {"arm": "a"}]
    sweep.compare(results, {"even": [base, lucky, better], "natural": [base, base, better]})
    assert not results[2]["beats_baseline"] and "beats_baseline" not in results[1]  # a: within the seed spread


@pytest.mark.slow
def test_smoke_run_scores_both_arms_and_records_sweep_curves(tmp_path):
    store = tmp_path / "calibration"
    out = tmp_path / "sweep.json"
    env = os.environ | {"STRATOS_CALIBRATION_DIR": str(store)}
    subprocess.run([sys.executable, str(EVALS / "recipe_sweep.py"), "--smoke", "--out", str(out),
                    "--work-dir", str(tmp_path / "work")], check=True, env=env, timeout=900)
    result = json.loads(out.read_text())
    arms = {a["arm"]: a for a in result["arms"]}
    assert list(arms) == ["baseline", "sft-then-grpo"] and result["budget"]["examples"] == 256
    for arm in arms.values():
        assert arm["examples"] == 256 and arm["examples_per_s"] > 0 and arm["train_seconds"] > 0
        assert arm["even"]["n"] == 40 and arm["natural"]["n"] == 40 and 0 <= arm["even"]["exact"] <= 1
    grpo = arms["sft-then-grpo"]
    assert grpo["sft_examples"] == 192 and grpo["grpo_completions"] == 64
    assert set(grpo["vs_baseline"]) == {"even", "natural"} and 0 <= grpo["vs_baseline"]["even"]["p"] <= 1
    curves = [json.loads(p.read_text()) for p in store.glob("*.json")]
    assert sorted((c["method"], c["kind"]) for c in curves) == [
        ("grpo-full", "sweep"), ("stream-full", "sweep"), ("stream-full", "sweep")]  # baseline, SFT part, GRPO part
    assert all(c["student"] == "mahjong-micro-6m" for c in curves)
    # hold-out hands are never trained on: the stream dropped the ones it drew
    card = json.loads(next((tmp_path / "work").glob("baseline-*/stream_card.json")).read_text())
    assert card["held_out_keys"] >= 80
