"""Kill `stratos synth` mid-run (SIGKILL), run the same command again: it continues, no duplicates,
and the result is the very dataset an uninterrupted run makes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from stratos_agent.tools.synth import synthesize
from stratos_agent.tools.synth_store import PARTIAL_FILE, load_dataset_ref

from stratos_agent.records.data import SPLITS

STRATOS = [sys.executable, "-c", "from stratos_agent.cli import main; main()"]


def _committed_chunks(out) -> int:
    try:
        return (out / PARTIAL_FILE).read_bytes().count(b'"done": true')
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_and_rerun_continues_without_duplicates(tmp_path):
    out = tmp_path / "mj"
    cmd = [*STRATOS, "synth", "--task", "mahjong", "--n", "20000", "--seed", "3", "--even", "--out", str(out)]
    env = {**os.environ, "STRATOS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _committed_chunks(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "data_card.json").exists()
    done_before = _committed_chunks(out)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr
    ref = load_dataset_ref(out)
    assert ref.card.sessions == 2 and ref.card.n_accepted == 20000
    assert _committed_chunks(out) > done_before
    keys = [k for name, split in ref.load().items() if name in SPLITS for k in split["key"]]
    assert len(keys) == len(set(keys)) == 20000

    straight = synthesize("mahjong", 20000, tmp_path / "straight", seed=3, distribution="even")
    assert straight.card.fingerprint == ref.card.fingerprint
    assert straight.card.difficulty_counts == ref.card.difficulty_counts
