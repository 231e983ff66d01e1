"""Slow training tests: kill -9 mid-run and resume; real SmolLM2-135M memory within the stated goals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stratos_agent.tools.train import last_checkpoint
from test_train_fast import mahjong_data  # noqa: F401  (fixture)

STRATOS = str(Path(sys.executable).parent / "stratos")


def train_cmd(base: str, data: Path, run: str, *extra: str) -> list[str]:
    return [STRATOS, "train", "--data", str(data), "--run-name", run, "--base", base, "--batch-size", "4",
            "--max-seq-len", "48", "--threads", "1", *extra]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tiny_llama, mahjong_data, tmp_path):  # noqa: F811
    env = os.environ | {"STRATOS_RUNS_DIR": str(tmp_path / "runs")}
    cmd = train_cmd(str(tiny_llama), mahjong_data, "killed", "--max-steps", "30", "--save-steps", "2", "--full")
    run = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while (ckpt := last_checkpoint(run / "checkpoints")) is None:
        assert proc.poll() is None, "training ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "student.json").exists(), "the run finished before it could be killed"
    killed_at = json.loads((last_checkpoint(run / "checkpoints") / "trainer_state.json").read_text())["global_step"]
    assert killed_at >= int(ckpt.name.split("-")[1]) >= 2

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    student = json.loads((run / "student.json").read_text())
    assert student["resumed_from_step"] == killed_at and student["global_step"] == 30
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == sorted(steps) and steps[-1] == 30  # one curve across both processes, no repeats


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "goal_gib"), [("lora", 3.0), ("full", 6.0)])
def test_real_smollm2_training_memory(mahjong_data, tmp_path, mode, goal_gib):  # noqa: F811
    """The issue's goals on this machine: full FT of the 135M model <= 6 GiB RSS, LoRA <= 3 GiB."""
    from stratos_agent.models import local_model_path

    local_model_path("smollm2-135m")  # convert here if the cache is cold: the child's peak RSS is training only
    env = os.environ | {"STRATOS_RUNS_DIR": str(tmp_path / "runs")}
    extra = ["--max-steps", "2", "--save-steps", "2", *(["--full"] if mode == "full" else [])]
    done = subprocess.run(train_cmd("smollm2-135m", mahjong_data, mode, *extra), env=env,
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    student = json.loads((tmp_path / "runs" / mode / "student.json").read_text())
    peak = student["peak_rss_bytes"] / 2**30
    estimate = student["memory_estimate"]["total_bytes"] / 2**30
    assert peak <= goal_gib, f"{mode}: peak RSS {peak:.2f} GiB over the {goal_gib} GiB goal"
    # The peak RSS also counts allocator slack the estimate does not model (seen: 0.63x under load).
    assert estimate >= 0.6 * peak, f"estimate {estimate:.2f} GiB undershoots the measured {peak:.2f} GiB"
