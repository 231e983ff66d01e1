"""`stratos doctor`: runs, reports the bundled model, masks keys, fails on a broken essential."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import stratos_agent.cli.doctor  # noqa: F401 - registers the command on the app
from stratos_agent.cli.app import app
from stratos_agent.settings import get_settings

SECRET = "sk-test-0123456789abcdef0123456789"


@pytest.fixture
def doctor(monkeypatch, tmp_path):
    """Invoke `stratos doctor ARGS` with extra environment; returns (exit code, stdout)."""
    monkeypatch.setenv("STRATOS_RUNS_DIR", str(tmp_path / "runs"))

    def run(*args: str, **env: str) -> tuple[int, str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["doctor", *args])
        return result.exit_code, result.stdout

    yield run
    get_settings.cache_clear()


def _checks(stdout: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_doctor_json_loads_the_bundled_model(doctor):
    code, out = doctor("--json")
    assert code == 0 and json.loads(out)["ok"] is True
    checks = _checks(out)
    assert checks["bundled model (HF folder)"]["data"]["converted"] is True
    loads = checks["bundled model (loads)"]
    assert loads["status"] == "ok" and loads["data"]["next_token"].strip() == "Paris"
    assert checks["torch"]["data"]["device"] in {"cpu", "cuda"}
    assert {"vLLM", "SGLang", "SkyPilot", "cache dir", "runs dir", "endpoints", "model cache"} <= set(checks)
    ids = [c["id"] for c in checks["model candidates"]["data"]["candidates"]]
    assert {"smollm2-135m", "smollm2-135m-half", "gemma3-270m"} <= set(ids)


def test_doctor_masks_keys_and_lists_the_endpoint(doctor):
    code, out = doctor("--no-load", "--json", OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_KEY=SECRET,
                       STRATOS_TEACHER_MODEL="gpt-4o-mini")
    assert code == 0 and SECRET not in out
    endpoints = _checks(out)["endpoints"]
    assert endpoints["data"]["openai_api_key"] == "sk-t...89 (len 34)"
    ids = [c["id"] for c in _checks(out)["model candidates"]["data"]["candidates"]]
    assert "endpoint:gpt-4o-mini" in ids


def test_doctor_table_output(doctor):
    code, out = doctor("--no-load")
    assert code == 0
    assert "stratos doctor" in out and "model candidates" in out and "essentials ok" in out


def test_doctor_fails_when_the_runs_dir_cannot_be_created(doctor, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out = doctor("--no-load", "--json", STRATOS_RUNS_DIR=str(blocker / "runs"))
    assert code == 1 and json.loads(out)["ok"] is False
    runs = _checks(out)["runs dir"]
    assert runs["status"] == "fail" and "is a file" in runs["detail"]


def test_doctor_shows_each_candidates_measured_training_throughput(doctor, tmp_path):
    from stratos_agent.tools import calibration
    from stratos_agent.tools.machine_peaks import hardware_fingerprint

    from stratos_agent.records.calibration import CurvePoint, LearningCurve

    store = tmp_path / "calibration"
    _code, out = doctor("--json", **{calibration.STORE_ENV: str(store), "STRATOS_THREADS": "1"})
    micro = next(c for c in _checks(out)["model candidates"]["data"]["candidates"] if c["id"] == "mahjong-micro-2m")
    assert micro["task"] == "mahjong" and micro["train_examples_per_s"] == {}  # nothing recorded here yet
    here = hardware_fingerprint(1).key
    for eps in (200.0, 240.0, 260.0):
        calibration.record_curve(LearningCurve(
            task="mahjong", student="mahjong-micro-2m", method="stream-full", hardware=here, examples_per_s=eps,
            points=[CurvePoint(examples=64, exact=0.0, n=10, seconds=0.3)], batch_size=64, learning_rate=1e-3,
            run=f"r{eps}", created="2026-01-01T00:00:00"))
    _code, out = doctor("--json")
    micro = next(c for c in _checks(out)["model candidates"]["data"]["candidates"] if c["id"] == "mahjong-micro-2m")
    assert micro["train_examples_per_s"] == {"mahjong/stream-full": 240.0}  # the median of what was recorded
