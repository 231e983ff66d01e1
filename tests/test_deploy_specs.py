"""Launch specs (vLLM, SGLang) and SkyPilot YAML validated by SkyPilot itself in its own venv."""

from __future__ import annotations

import json

import pytest
import yaml
from stratos_agent.tools import launch_specs as ls

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.spec import DistillationSpec, Traffic


def model_folder(path, heads=9, context=8192):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"num_attention_heads": heads, "max_position_embeddings": context}))
    return path


def plan_for(gpu="H100", gpus=8, replicas=3, server="aws:p5.48xlarge:us-east-1") -> Plan:
    point = PlanPoint(server=server, gpu=gpu, gpu_count=gpus, teacher="t", student="s", strategy="injection",
                      lora_rank=16, data_size=1000, replicas=replicas, cost_usd=1, cost_training_usd=0.5,
                      cost_serving_usd=0.4, cost_synthesis_usd=0.1, p95_ms=100, accuracy=0.5, train_hours=1,
                      latency_source="modelled")
    return Plan(task="mahjong", preference="balanced", chosen=point, front=[point], why="cheapest", feasible=True,
                candidates=1, catalog_date="2025-08-01", catalog_age_days=1, created="now")


def test_vllm_cpu_command_is_small_and_keyless():
    spec = ls.vllm_launch("/m", served_model_name="student", port=8123, device="cpu", python="/venv/python",
                          max_model_len=1024, kv_cache_gb=2, max_num_seqs=4)
    assert spec.argv[:5] == ["/venv/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    for flag, value in [("--dtype", "bfloat16"), ("--max-model-len", "1024"), ("--max-num-seqs", "4"),
                        ("--port", "8123"), ("--served-model-name", "student")]:
        assert spec.argv[spec.argv.index(flag) + 1] == value
    assert "--enforce-eager" in spec.argv and "--api-key" not in spec.argv
    assert spec.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    with pytest.raises(ResourceError, match="needs GPUs"):
        ls.vllm_launch("/m", served_model_name="s", device="cpu", tensor_parallel=2)


def test_parallel_layout_respects_attention_heads(tmp_path):
    assert ls.parallel_layout(8, {"num_attention_heads": 32}) == (8, 1, [])
    tp, dp, notes = ls.parallel_layout(8, {"num_attention_heads": 9})  # SmolLM2-135M
    assert (tp, dp) == (1, 8) and "9 attention heads" in notes[0]
    assert ls.parallel_layout(6, {"num_attention_heads": 9})[:2] == (3, 2)
    spec = ls.gpu_launch("vllm", model_folder(tmp_path / "m"), served_model_name="s", gpus=8, max_model_len=4096)
    assert spec.argv[:2] == ["vllm", "serve"]
    assert spec.argv[spec.argv.index("--tensor-parallel-size") + 1] == "1"
    assert spec.argv[spec.argv.index("--data-parallel-size") + 1] == "8"


def test_sglang_command_from_plan(tmp_path):
    model = model_folder(tmp_path / "m", heads=32, context=4096)
    spec = DistillationSpec(task="mahjong", traffic=Traffic(prompt_tokens=900, output_tokens=300))
    launch = ls.launch_from_plan(plan_for(gpus=4), model, engine="sglang", spec=spec, served_model_name="s")
    argv = launch.argv
    assert argv[:3] == ["python", "-m", "sglang.launch_server"]
    assert argv[argv.index("--tp") + 1] == "4"
    assert argv[argv.index("--context-length") + 1] == "4096"  # 2 x 1200 -> 4096, capped by the model
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.85"
    assert ls.context_length(96, 48) == 2048


def test_replica_policy_from_qps():
    assert ls.replica_policy(6.0, 3) == {"min_replicas": 1, "max_replicas": 6, "target_qps_per_replica": 2.0}
    with pytest.raises(InputError):
        ls.replica_policy(0, 1)
    with pytest.raises(InputError, match="stratos serve"):
        ls.sky_accelerator("CPU", 1)
    assert ls.sky_accelerator("A100-40GB", 2) == "A100:2"


def test_skypilot_yaml_round_trips_through_sky(tmp_path):
    """Both YAMLs are built by sky.Task/Resources/SkyServiceSpec and re-read by sky.Task.from_yaml_config."""
    if ls.cloud_python() is None:
        print("SKIP reason: SkyPilot venv (.venv-cloud) missing; `make cloud` creates it")
        pytest.skip("SkyPilot venv (.venv-cloud) missing; `make cloud` creates it")
    model = model_folder(tmp_path / "student")
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    data = tmp_path / "mahjong.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    (run / "train_config.json").write_text(json.dumps({"data": str(data), "base_model": "smollm2-135m-half",
                                                       "method": "sft", "lora": False, "lora_r": 8}))
    plan = plan_for(gpu="A100-40GB", gpus=2, replicas=2, server="gcp:a2-highgpu-2g:us-central1")
    spec = DistillationSpec(task="mahjong", traffic=Traffic(qps=5.0))
    serve = ls.build_skypilot_yaml(ls.service_from_plan(plan, model, spec=spec, served_model_name="s"),
                                   tmp_path / "out" / "serve.yaml")
    train = ls.build_skypilot_yaml(ls.training_from_plan(plan, run), tmp_path / "out" / "train.yaml")
    assert serve.command[0].endswith("/sky") and serve.command[1:3] == ["serve", "up"]
    assert serve.secrets == ["STRATOS_API_KEY"] and "--secret" in serve.command
    assert train.command[1] == "launch" and train.accelerators == "A100:2" and train.cloud == "gcp"

    loaded, trained = ls.load_skypilot_yamls(serve.yaml_path, train.yaml_path)
    assert loaded["has_service"] and loaded["readiness_path"] == "/v1/models"
    service = loaded["config"]["service"]
    assert service["replica_policy"] == {"min_replicas": 1, "max_replicas": 4, "target_qps_per_replica": 2.5}
    assert service["readiness_probe"]["headers"] == {"Authorization": "Bearer $STRATOS_API_KEY"}
    assert "vllm serve /stratos/model" in loaded["config"]["run"]
    assert loaded["config"]["file_mounts"] == {"/stratos/model": str(model)}

    assert not trained["has_service"] and "A100" in trained["resources"][0]
    assert "accelerate launch" in trained["config"]["run"] and "--mixed_precision bf16" in trained["config"]["run"]
    assert ('"$(which stratos)" train --data /stratos/data/mahjong.jsonl --run-name r1 --base smollm2-135m-half '
            "--method sft --lora-r 8 --full") in trained["config"]["run"]
    written = yaml.safe_load((tmp_path / "out" / "train.yaml").read_text())
    assert written["file_mounts"] == {"/stratos/data/mahjong.jsonl": str(data)}
    assert written["envs"]["STRATOS_RUNS_DIR"] == "/stratos/runs"
