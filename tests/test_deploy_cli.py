"""The `stratos serve/stop/endpoints/deploy-spec` commands as a user runs them (clean one-line errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stratos_agent.tools.launch_specs import cloud_python

STRATOS = [sys.executable, "-c", "from stratos_agent.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*STRATOS, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    # A private HOME: SkyPilot keeps its state (and would find credentials) under ~/.sky.
    return {**os.environ, "HOME": str(tmp_path / "home"), "STRATOS_HOME": str(tmp_path / "stratos"),
            "STRATOS_RUNS_DIR": str(tmp_path / "runs"), "COLUMNS": "500"}  # no wrapping inside the command


def test_stop_and_endpoints_without_servers(env):
    out = run_cli("endpoints", "--json", env=env)
    assert out.returncode == 0 and out.stdout == ""
    out = run_cli("stop", env=env)
    assert out.returncode == 2 and "error: name one endpoint to stop, or use --all" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_unknown_target_is_one_clean_line(env, tmp_path):
    (tmp_path / "not-a-run").mkdir()
    out = run_cli("serve", str(tmp_path / "not-a-run"), env=env)
    assert out.returncode == 2 and "neither a model folder" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""  # no JSON line unless an endpoint is ready


def test_deploy_spec_launch_without_credentials_prints_the_exact_command(env, tmp_path):
    """--launch checks SkyPilot credentials; with none it stops with the command to run, and no URL."""
    if cloud_python() is None:
        print("SKIP reason: SkyPilot venv (.venv-cloud) missing; `make cloud` creates it")
        pytest.skip("SkyPilot venv (.venv-cloud) missing")
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_attention_heads": 9, "max_position_embeddings": 8192}))
    out_dir = tmp_path / "cloud"
    out = run_cli("deploy-spec", str(model), "--gpu", "L4", "--cloud", "aws", "--qps", "4", "--replicas", "2",
                  "--out", str(out_dir), "--launch", env=env)
    if out.returncode == 0:
        pytest.skip("this machine has SkyPilot credentials for aws: not launching real clusters in a test")
    message = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stderr
    assert "SkyPilot has no credentials for aws" in message
    assert f"/bin/sky serve up -n stratos-tiny {out_dir / 'serve.sky.yaml'} --secret STRATOS_API_KEY -y" in message
    assert "http" not in out.stdout + out.stderr  # never a made-up endpoint
    spec = json.loads((out_dir / "serve.cloudspec.json").read_text())
    assert spec["launched"] is False and spec["endpoint"] is None and spec["accelerators"] == "L4:1"
    assert Path(spec["yaml_path"]).is_file()
