"""What a local endpoint serves and what it leaves on disk.

`resolve_target` turns a `RUN_OR_MODEL` argument (run folder or name, HF model folder, registry / hub id)
into a `ServeTarget`: the folder to serve, a default endpoint name, where its state goes. State per
endpoint lives in its state dir (`<run>/serve/<name>/` for a run, `<cache>/serving/<name>/` otherwise):
`server.pid`, `server.log` (`tools/server_process.py`) and `deployment.json`, the `Deployment` record.
`<cache>/serving/index/<name>.json` points at each live one so `list_deployments()` finds them all, together
with any server started but never recorded (its deployer was killed while waiting for the health check:
`server_process.registered_servers`), so `stratos stop --all` and `stratos endpoints` reach it too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from stratos_agent.tools.server_process import (
    LOG_FILE,
    _same_process,
    _write_json,
    base_url,
    registered_servers,
    serving_dir,
)

from stratos_agent.errors import InputError
from stratos_agent.records.deployment import Deployment, LaunchSpec
from stratos_agent.settings import get_settings

RECORD_FILE = "deployment.json"
STUDENT_FILE = "student.json"  # tools/train.py writes the StudentModel record last: training finished


# ----------------------------------------------------------------------------------- what to serve
@dataclass(frozen=True)
class ServeTarget:
    """A resolved `RUN_OR_MODEL`: the HF folder to serve, a default name, where state goes, the task."""

    model_path: Path
    name: str
    state_root: Path  # each endpoint keeps its files in state_root/<name>/
    task: str | None
    source: str  # "run" | "folder" | "registry"


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:48]
    if not out:
        raise InputError(f"cannot make an endpoint name from {text!r}; pass --name")
    return out


def _student_in_run(run_dir: Path) -> tuple[Path, str | None] | None:
    """(merged student folder, task) of a run: the StudentModel record (`student.json`), or a `model/` folder.

    Only the two fields used here are read, so the record may grow without breaking serving."""
    record = run_dir / STUDENT_FILE
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            folder = Path(data["model_dir"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{record}: not a StudentModel record (no model_dir)") from exc
        folder = folder if folder.is_absolute() else run_dir / folder
        if not (folder / "config.json").is_file():
            raise InputError(f"{record} names {folder} as the student, but it has no config.json")
        return folder, (data.get("config") or {}).get("task")
    folder = run_dir / "model"
    return (folder, None) if (folder / "config.json").is_file() else None


def resolve_target(target: str | Path) -> ServeTarget:
    """A run folder (or run name under the runs dir), an HF model folder, or a registry / hub id."""
    path = Path(target).expanduser()
    if not path.exists() and (get_settings().runs_dir / str(target)).is_dir():
        path = get_settings().runs_dir / str(target)
    if path.is_dir():
        path = path.resolve()
        if (path / "config.json").is_file():
            return ServeTarget(path, slug(path.name), serving_dir(), None, "folder")
        found = _student_in_run(path)
        if found is None:
            raise InputError(
                f"{path} is neither a model folder (no config.json) nor a run with a trained student "
                f"(no {STUDENT_FILE}, no model/ folder); train first or pass a model folder"
            )
        return ServeTarget(found[0], slug(path.name), path / "serve", found[1], "run")
    if path.suffix == ".json" or os.sep in str(target):
        raise InputError(f"{target}: no such run or model folder")
    from stratos_agent.models import local_model_path

    folder = local_model_path(str(target))  # InputError / OfflineError name the problem
    return ServeTarget(Path(folder), slug(str(target)), serving_dir(), None, "registry")


def model_fingerprint(folder: Path) -> str:
    """Hash of config.json and the name/size/mtime of every weight and tokenizer file: cheap, no reading."""
    import hashlib

    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in {".safetensors", ".bin", ".json", ".jinja", ".model"}:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------- records on disk
def _index_path(name: str) -> Path:
    return serving_dir() / "index" / f"{name}.json"


def save_deployment(dep: Deployment) -> None:
    _write_json(Path(dep.state_dir) / RECORD_FILE, dep.model_dump(mode="json"))
    if dep.status == "stopped":
        _index_path(dep.name).unlink(missing_ok=True)
    else:
        _write_json(_index_path(dep.name), {"record": str(Path(dep.state_dir) / RECORD_FILE)})


def _recorded(name: str) -> Deployment | None:
    index = _index_path(name)
    if not index.is_file():
        return None
    record = Path(json.loads(index.read_text())["record"])
    if not record.is_file():
        index.unlink(missing_ok=True)
        return None
    return Deployment.model_validate_json(record.read_text())


def _recorded_names() -> list[str]:
    folder = serving_dir() / "index"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def unrecorded_servers(recorded: list[Deployment]) -> list[Deployment]:
    """Live servers Stratos started that no record in `recorded` describes: their deployer died (kill -9)
    or gave up before saving the endpoint. Described from the launch, as endpoints to stop or replace."""
    known = {(dep.pid, int(dep.process_started)) for dep in recorded}
    found = []
    for entry in registered_servers():
        if (entry["pid"], int(entry["started"])) in known:
            continue
        launch = LaunchSpec.model_validate(entry["launch"])
        found.append(Deployment(
            name=launch.served_model_name, base_url=base_url(launch.host, launch.port),
            model=launch.served_model_name, model_path=launch.model_path, model_fingerprint="unrecorded",
            engine=launch.engine, host=launch.host, port=launch.port, pid=entry["pid"],
            process_started=entry["started"], state_dir=entry["state_dir"],
            log_path=str(Path(entry["state_dir"]) / LOG_FILE), api_key_required=entry["api_key_required"],
            started_at=entry["started_at"], launch=launch,
        ))
    return found


def load_deployment(name: str) -> Deployment | None:
    """The endpoint `name`: its record, unless that server is gone and an unrecorded live one has the name."""
    recorded = _recorded(name)
    if recorded is not None and _same_process(recorded.pid, recorded.process_started) is not None:
        return recorded
    everyone = [dep for other in _recorded_names() if (dep := _recorded(other)) is not None]
    return next((dep for dep in unrecorded_servers(everyone) if dep.name == name), recorded)


def list_deployments() -> list[Deployment]:
    """Every endpoint Stratos started and has not stopped (alive or dead), recorded or not."""
    recorded = [dep for name in _recorded_names() if (dep := _recorded(name)) is not None]
    return recorded + unrecorded_servers(recorded)
