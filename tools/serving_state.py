"""What a local endpoint serves and what it leaves on disk.

`resolve_target` turns a `RUN_OR_MODEL` argument (run folder or name, HF model folder, registry / hub id)
into a `ServeTarget`: the folder to serve, a default endpoint name, where its state goes. State per
endpoint lives in its state dir (`<run>/serve/<name>/` for a run, `<cache>/serving/<name>/` otherwise):
`server.pid`, `server.log` (`tools/server_process.py`) and `deployment.json`, the `Deployment` record.
`<cache>/serving/index/<name>.json` points at each live one so `list_deployments()` finds them all.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from stratos_agent.tools.server_process import _write_json

from stratos_agent.errors import InputError
from stratos_agent.records.deployment import Deployment
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


def serving_dir() -> Path:
    return get_settings().cache_dir / "serving"


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


def load_deployment(name: str) -> Deployment | None:
    index = _index_path(name)
    if not index.is_file():
        return None
    record = Path(json.loads(index.read_text())["record"])
    if not record.is_file():
        index.unlink(missing_ok=True)
        return None
    return Deployment.model_validate_json(record.read_text())


def list_deployments() -> list[Deployment]:
    """Every endpoint Stratos started and has not stopped (alive or dead)."""
    folder = serving_dir() / "index"
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [dep for name in names if (dep := load_deployment(name)) is not None]
