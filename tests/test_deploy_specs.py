"""Launch specs (vLLM, SGLang) and SkyPilot YAML validated by SkyPilot itself in its own venv."""

from __future__ import annotations

import json

import pytest
import yaml
from stratos_agent.tools import engine_launch as el
from stratos_agent.tools import launch_specs as ls
from stratos_agent.tools import precision

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


@pytest.fixture
def pin_bf16(monkeypatch):
    """Pin tools/precision's measured choice (its answer is memoised per process: cleared around the test)."""
    def pin(value: str) -> None:
        monkeypatch.setenv(precision.ENV, value)
        precision.use_bf16.cache_clear()

    yield pin
    precision.use_bf16.cache_clear()


@pytest.mark.parametrize(("bf16", "dtype"), [("1", "bfloat16"), ("0", "float32")])
def test_vllm_cpu_serves_bf16_only_where_measured_faster(pin_bf16, bf16, dtype):
    pin_bf16(bf16)
    spec = el.vllm_launch("/m", served_model_name="student", port=8123, device="cpu", python="/venv/python")
    assert spec.argv[spec.argv.index("--dtype") + 1] == dtype


def test_vllm_cpu_command_is_small_and_keyless(pin_bf16):
    pin_bf16("1")
    spec = el.vllm_launch("/m", served_model_name="student", port=8123, device="cpu", python="/venv/python",
                          max_model_len=1024, kv_cache_gb=2, max_num_seqs=4)
    assert spec.argv[:5] == ["/venv/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"]
    for flag, value in [("--dtype", "bfloat16"), ("--max-model-len", "1024"), ("--max-num-seqs", "4"),
                        ("--port", "8123"), ("--served-model-name", "student")]:
        assert spec.argv[spec.argv.index(flag) + 1] == value
    assert "--enforce-eager" in spec.argv and "--api-key" not in spec.argv
    # the model runs in the engine-core process, on every core but the one left to the API server
    assert spec.argv[spec.argv.index("--distributed-executor-backend") + 1] == "uni"
    assert spec.env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                        "OMP_NUM_THREADS": str(el.cpu_compute_threads())}


@pytest.mark.parametrize(("cores", "threads"), [({0}, 1), ({0, 1}, 1), ({0, 1, 2, 3}, 3)])
def test_the_in_process_model_leaves_one_core_to_the_api_server(monkeypatch, cores, threads):
    monkeypatch.setattr(el.os, "sched_getaffinity", lambda pid: cores)
    assert el.cpu_compute_threads() == threads
    with pytest.raises(ResourceError, match="needs GPUs"):
        el.vllm_launch("/m", served_model_name="s", device="cpu", tensor_parallel=2)


def test_vllm_cpu_can_keep_vllms_own_worker_process(pin_bf16):
    pin_bf16("1")
    spec = el.vllm_launch("/m", served_model_name="s", device="cpu", kv_cache_gb=1, cpu_executor="multiprocess")
    assert "--distributed-executor-backend" not in spec.argv and spec.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    gpu = el.vllm_launch("/m", served_model_name="s", device="gpu")  # GPUs keep vLLM's own executor
    assert "--distributed-executor-backend" not in gpu.argv and gpu.env == {}


def test_parallel_layout_respects_attention_heads(tmp_path):
    assert el.parallel_layout(8, {"num_attention_heads": 32}) == (8, 1, [])
    tp, dp, notes = el.parallel_layout(8, {"num_attention_heads": 9})  # SmolLM2-135M
    assert (tp, dp) == (1, 8) and "9 attention heads" in notes[0]
    assert el.parallel_layout(6, {"num_attention_heads": 9})[:2] == (3, 2)
    spec = el.gpu_launch("vllm", model_folder(tmp_path / "m"), served_model_name="s", gpus=8, max_model_len=4096)
    assert spec.argv[:2] == ["vllm", "serve"]
    assert spec.argv[spec.argv.index("--tensor-parallel-size") + 1] == "1"
    assert spec.argv[spec.argv.index("--data-parallel-size") + 1] == "8"


def test_sglang_command_from_plan(tmp_path):
    model = model_folder(tmp_path / "m", heads=32, context=4096)
    spec = DistillationSpec(task="mahjong", traffic=Traffic(prompt_tokens=900, output_tokens=300))
    launch = el.launch_from_plan(plan_for(gpus=4), model, engine="sglang", spec=spec, served_model_name="s")
    argv = launch.argv
    assert argv[:3] == ["python", "-m", "sglang.launch_server"]
    assert argv[argv.index("--tp") + 1] == "4"
    assert argv[argv.index("--context-length") + 1] == "4096"  # 2 x 1200 -> 4096, capped by the model
    assert argv[argv.index("--mem-fraction-static") + 1] == "0.85"
    assert el.context_length(96, 48) == 2048


def test_replica_policy_from_qps():
    assert ls.replica_policy(6.0, 3) == {"min_replicas": 1, "max_replicas": 6, "target_qps_per_replica": 2.0}
    with pytest.raises(InputError):
        ls.replica_policy(0, 1)
    with pytest.raises(InputError, match="stratos serve"):
        ls.sky_accelerator("CPU", 1)
    assert ls.sky_accelerator("A100-40GB", 2) == "A100:2"


def test_skypilot_yaml_round_trips_through_sky(tmp_path, runs_dir):
    """Both YAMLs are built by sky.Task/Resources/SkyServiceSpec and re-read by sky.Task.from_yaml_config.
    The training YAML comes from the agent's own train_student adapter on a cloud plan, with a real
    synthesised dataset (not a hand-placed config file)."""
    if ls.cloud_python() is None:
        print("SKIP reason: SkyPilot venv (.venv-cloud) missing; `make cloud` creates it")
        pytest.skip("SkyPilot venv (.venv-cloud) missing; `make cloud` creates it")
    from stratos_agent.graphs.adapters import run_train
    from stratos_agent.graphs.toolset import ToolContext, TrainStudentArgs
    from stratos_agent.tools.synth import synthesize

    from stratos_agent.tasks.recipes import recipe_for

    model = model_folder(tmp_path / "student")
    recipe = recipe_for("mahjong")
    dataset = synthesize(recipe.pack("mahjong", "student"), 40, tmp_path / "data", mode="solver",
                         style=recipe.style, distribution="even")
    plan = plan_for(gpu="A100-40GB", gpus=2, replicas=2, server="gcp:a2-highgpu-2g:us-central1")
    spec = DistillationSpec(task="mahjong", traffic=Traffic(qps=5.0))
    serve = ls.build_skypilot_yaml(ls.service_from_plan(plan, model, spec=spec, served_model_name="s"),
                                   tmp_path / "out" / "serve.yaml")
    run = tmp_path / "runs" / "r1"
    ctx = ToolContext(state={"thread_id": "r1", "spec": spec, "plan": plan, "dataset": dataset}, run_dir=run)
    with pytest.raises(ResourceError, match="sky launch") as stopped:
        run_train(ctx, TrainStudentArgs(max_steps=30))
    assert "this agent executes on the local machine only" in str(stopped.value)
    train_yaml = run / "cloud" / "train.yaml"
    assert serve.command[0].endswith("/sky") and serve.command[1:3] == ["serve", "up"]
    assert serve.secrets == ["STRATOS_API_KEY"] and "--secret" in serve.command

    loaded, trained = ls.load_skypilot_yamls(serve.yaml_path, train_yaml)
    assert loaded["has_service"] and loaded["readiness_path"] == "/v1/models"
    service = loaded["config"]["service"]
    assert service["replica_policy"] == {"min_replicas": 1, "max_replicas": 4, "target_qps_per_replica": 2.5}
    assert service["readiness_probe"]["headers"] == {"Authorization": "Bearer $STRATOS_API_KEY"}
    assert "vllm serve /stratos/model" in loaded["config"]["run"]
    assert loaded["config"]["file_mounts"] == {"/stratos/model": str(model)}

    assert not trained["has_service"] and "A100" in trained["resources"][0]
    assert "accelerate launch" in trained["config"]["run"] and "--mixed_precision bf16" in trained["config"]["run"]
    assert '"$(which stratos)" train --config /stratos/config/train_config.json' in trained["config"]["run"]
    remote = json.loads((run / "cloud" / "train_config.json").read_text())
    assert remote["base_model"] == "s" and remote["max_steps"] == 30 and remote["lora_r"] == 16
    assert remote["data"] == f"/stratos/data/{dataset.hf_path.name}" and remote["time_limit_s"] is None
    written = yaml.safe_load(train_yaml.read_text())
    assert written["file_mounts"] == {f"/stratos/data/{dataset.hf_path.name}": str(dataset.hf_path.resolve()),
                                      "/stratos/config/train_config.json": str(run / "cloud" / "train_config.json")}
    assert written["envs"]["STRATOS_RUNS_DIR"] == "/stratos/runs"
