"""The local p95 of a plan, measured: serve the candidate student with the engine that will serve it and
load-test it with the task's prompts at the spec's concurrency, before anything is trained.

The roofline models a request as prefill + decode; a served request also pays HTTP, scheduling and
detokenisation, which on 2 CPU cores is most of a micro student's latency (the roofline said 36 ms, the
deployed endpoint answered at 123 ms). So the plan times the engine itself: the untrained student (same
architecture, tokenizer and chat template as the trained one: latency does not depend on weight values)
answers `requests` real prompts with its answer length forced to the student's request shape. Cached per
hardware fingerprint + model + output length + concurrency + engine; the machine's load is recorded.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from stratos_agent.tools.load_test import load_test
from stratos_agent.tools.machine_peaks import hardware_fingerprint
from stratos_agent.tools.request_shape import task_shape

from stratos_agent.errors import ServiceError
from stratos_agent.files import write_text_atomic
from stratos_agent.models import local_model_path
from stratos_agent.models.micro import pack_for_model
from stratos_agent.records.deployment import Deployment, LoadTest
from stratos_agent.records.servers import LatencyProbe
from stratos_agent.settings import get_settings
from stratos_agent.tasks.base import TaskPack
from stratos_agent.tasks.recipes import recipe_for

PROBE_REQUESTS = 128  # policy: as many as the load test after deploy (its default), so both p95s read alike
WARMUP_REQUESTS = 32  # with fewer (4 tried) the engine's first batches set p95: 322 ms vs 141 ms deployed
ENGINE = "vllm"
ENV_SWITCH = "STRATOS_LATENCY_PROBE"  # "0": plan with the roofline only (fast tests, no engine here)


def enabled() -> bool:
    """Whether plans may start the serving engine to time a student (off: the figure stays modelled)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    from importlib.util import find_spec

    return find_spec("vllm") is not None


def _probe_path(model: str, output_tokens: int, concurrency: int, hardware: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    name = f"{safe}-o{output_tokens}-c{concurrency}-{ENGINE}-{hardware}.json"
    return get_settings().cache_dir / "latency-probe" / name


def cached_probe(model: str, output_tokens: int, concurrency: int) -> LatencyProbe | None:
    path = _probe_path(model, output_tokens, concurrency, hardware_fingerprint(_threads()).key)
    return LatencyProbe.model_validate_json(path.read_text()) if path.is_file() else None


def _threads() -> int | None:
    return get_settings().threads


def probe_pack(task: str, folder: Path) -> TaskPack:
    """The prompts a student folder reads: a micro student's own pack, else the recipe's student prompt."""
    return pack_for_model(folder) or recipe_for(task).pack(task, "student")


def forced_load_test(dep: Deployment, pack: TaskPack, *, concurrency: int, output_tokens: int,
                     requests: int) -> LoadTest:
    """The probe's measurement of a served model: the task's prompts, every answer exactly `output_tokens`
    long (an untrained stand-in's own answers mean nothing)."""
    return load_test(dep.base_url, dep.model, pack, requests=requests, concurrency=concurrency,
                     max_tokens=output_tokens, exact_tokens=True)


def probe_student(task: str, model: str, *, concurrency: int, output_tokens: int | None = None,
                  requests: int = PROBE_REQUESTS, refresh: bool = False) -> LatencyProbe:
    """The student's p50/p95 from the engine itself (cached); `output_tokens` defaults to the answer p95 of
    the student's own request shape (tools/request_shape.task_shape)."""
    from stratos_agent.tools import deploy

    output_tokens = output_tokens or task_shape(task, tokenizer_model=model).output_tokens
    if not refresh and (hit := cached_probe(model, output_tokens, concurrency)) is not None:
        return hit
    folder = local_model_path(model)
    pack = probe_pack(task, folder)
    fp = hardware_fingerprint(_threads())
    state = get_settings().cache_dir / "latency-probe" / "server"
    dep = deploy.deploy_local(folder, name=f"latency-probe-{re.sub(r'[^a-z0-9-]+', '-', model.lower())}",
                              engine=ENGINE, task=task.split(":")[0], smoke=False, state_dir=state)
    try:  # a first round warms the fresh engine: its first batches of each size are slow to set up
        for n in (WARMUP_REQUESTS, requests):
            test = forced_load_test(dep, pack, concurrency=concurrency, output_tokens=output_tokens, requests=n)
    finally:
        deploy.stop_deployment(dep)
    if test.errors == requests:
        raise ServiceError(f"every request of the latency probe of {model} failed (server log: {dep.log_path})")
    probe = LatencyProbe(
        model=model, engine=ENGINE, hardware=fp.key, concurrency=concurrency, output_tokens=output_tokens,
        prompt_tokens=test.prompt_tokens, requests=requests, errors=test.errors, p50_ms=test.p50_ms,
        p95_ms=test.p95_ms, load_avg=round(os.getloadavg()[0], 2),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_text_atomic(_probe_path(model, output_tokens, concurrency, fp.key), json.dumps(probe.model_dump(), indent=1))
    return probe
