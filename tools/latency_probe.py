"""The local p95 of a plan, measured: serve the candidate student with the engine that will serve it and
load-test it with the task's prompts at the spec's concurrency, before anything is trained.

The roofline models a request as prefill + decode; a served request also pays HTTP, scheduling and
detokenisation, which on 2 CPU cores is most of a micro student's latency (the roofline said 36 ms, the
deployed endpoint answered at 123 ms). So the plan times the engine itself: the untrained student (same
architecture, tokenizer and chat template as the trained one: latency does not depend on weight values)
answers real prompts through the same load test the deployed endpoint gets afterwards
(tools/load_test.py: same warm-up, request count and concurrency), each answer forced to the length of a
real answer in the student's tokenizer (the distribution of tools/request_shape.answer_lengths, not its
p95: forcing every answer to the p95 times longer answers than the trained student gives). Cached per
hardware fingerprint + model + forced length distribution + request count and rounds + concurrency +
engine and its CPU executor, for PROBE_MAX_AGE_H; the machine's load is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stratos_agent.tools.engine_launch import CPU_EXECUTOR
from stratos_agent.tools.load_test import LOAD_TEST_REQUESTS, LOAD_TEST_ROUNDS, load_test
from stratos_agent.tools.machine_peaks import hardware_fingerprint
from stratos_agent.tools.request_shape import answer_lengths, answer_p95

from stratos_agent.errors import ServiceError
from stratos_agent.files import write_text_atomic
from stratos_agent.models import local_model_path
from stratos_agent.models.micro import pack_for_model
from stratos_agent.records.deployment import Deployment, LatencyStats, LoadTest
from stratos_agent.records.servers import LatencyProbe
from stratos_agent.settings import get_settings
from stratos_agent.tasks.base import TaskPack
from stratos_agent.tasks.recipes import recipe_for

PROBE_REQUESTS = LOAD_TEST_REQUESTS  # policy: as many as the load test after deploy, so both p95s read alike
# policy: a plan waits about a minute for the timed requests, whatever the machine's load (the load test
# after deploy has twice this budget, load_test.DEPLOYED_BUDGET_S, so it runs at least as many requests)
PROBE_BUDGET_S = 60.0
# policy: a cached probe older than this is measured again. This machine's latency drifts over a day: the
# same trained micro student's p95 read 150-195 ms at 11:40 and 260-630 ms at 16:50 (2 cores shared with
# the host); a plan for a run that deploys within the hour should read the machine as it is now
PROBE_MAX_AGE_H = 1.0
ENGINE = "vllm"
ENV_SWITCH = "STRATOS_LATENCY_PROBE"  # "0": plan with the roofline only (fast tests, no engine here)


def enabled() -> bool:
    """Whether plans may start the serving engine to time a student (off: the figure stays modelled)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    from importlib.util import find_spec

    return find_spec("vllm") is not None


def _probe_path(model: str, lengths: Sequence[int], concurrency: int, requests: int, hardware: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    # the forced lengths as a multiset: another answer notation or tokenizer is another probe
    digest = hashlib.sha256(",".join(map(str, sorted(lengths))).encode()).hexdigest()[:12]
    name = f"{safe}-len{digest}-n{requests}-r{LOAD_TEST_ROUNDS}-c{concurrency}-{ENGINE}-{CPU_EXECUTOR}-{hardware}.json"
    return get_settings().cache_dir / "latency-probe" / name


def is_fresh(probe: LatencyProbe, now: datetime | None = None) -> bool:
    """Whether `probe` was measured within PROBE_MAX_AGE_H."""
    age = (now or datetime.now(UTC)) - datetime.fromisoformat(probe.measured_at)
    return age <= timedelta(hours=PROBE_MAX_AGE_H)


def cached_probe(model: str, lengths: Sequence[int], concurrency: int,
                 requests: int = PROBE_REQUESTS) -> LatencyProbe | None:
    """The cached probe of `model` at this shape, or None (never measured, or older than PROBE_MAX_AGE_H)."""
    path = _probe_path(model, lengths, concurrency, requests, hardware_fingerprint(_threads()).key)
    if not path.is_file():
        return None
    probe = LatencyProbe.model_validate_json(path.read_text())
    return probe if is_fresh(probe) else None


def _threads() -> int | None:
    return get_settings().threads


def probe_pack(task: str, folder: Path) -> TaskPack:
    """The prompts a student folder reads: a micro student's own pack, else the recipe's student prompt."""
    return pack_for_model(folder) or recipe_for(task).pack(task, "student")


def forced_lengths(task: str, model: str, output_tokens: int | None = None) -> list[int]:
    """The answer lengths a probe of `model` forces: `output_tokens` alone when the user stated the traffic
    shape, else the lengths of real answers in the student's own tokenizer and prompt variant."""
    return [output_tokens] if output_tokens else answer_lengths(task, tokenizer_model=model)


def forced_load_test(dep: Deployment, pack: TaskPack, *, concurrency: int, lengths: Sequence[int],
                     requests: int = PROBE_REQUESTS) -> LoadTest:
    """The probe's measurement of a served model: the deployed endpoint's load test with the task's prompts,
    each answer forced to one of `lengths` (an untrained stand-in's own answers mean nothing), its request
    count cut to PROBE_BUDGET_S where the machine is slow."""
    return load_test(dep.base_url, dep.model, pack, requests=requests, concurrency=concurrency,
                     forced_lengths=lengths, time_budget_s=PROBE_BUDGET_S)


def probe_student(task: str, model: str, *, concurrency: int, output_tokens: int | None = None,
                  requests: int = PROBE_REQUESTS, refresh: bool = False) -> LatencyProbe:
    """The student's p50/p95 from the engine itself (cached). `output_tokens`: every answer that long (a
    user-stated traffic shape); None: answers as long as the student's real ones (`forced_lengths`)."""
    from stratos_agent.tools import deploy

    lengths = forced_lengths(task, model, output_tokens)
    if not refresh and (hit := cached_probe(model, lengths, concurrency, requests)) is not None:
        return hit
    folder = local_model_path(model)
    fp = hardware_fingerprint(_threads())
    # one server per process: two runs probing the same student at once must neither reuse nor replace (stop)
    # each other's server, which one shared name and folder did
    name = f"latency-probe-{re.sub(r'[^a-z0-9-]+', '-', model.lower())}-{os.getpid()}"
    state = get_settings().cache_dir / "latency-probe" / "server" / name
    dep = deploy.deploy_local(folder, name=name, engine=ENGINE, task=task.split(":")[0], smoke=False,
                              state_dir=state)
    try:
        test = forced_load_test(dep, probe_pack(task, folder), concurrency=concurrency, lengths=lengths,
                                requests=requests)
    finally:
        deploy.stop_deployment(dep)
    if test.errors == test.requests:
        raise ServiceError(f"every request of the latency probe of {model} failed (server log: {dep.log_path})")
    shutil.rmtree(state, ignore_errors=True)  # a failed start or probe keeps its log for the message above
    probe = LatencyProbe(
        **test.model_dump(include=set(LatencyStats.model_fields)), model=model, engine=ENGINE, hardware=fp.key,
        output_tokens=answer_p95(lengths), load_avg=round(os.getloadavg()[0], 2),
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_text_atomic(_probe_path(model, lengths, concurrency, requests, fp.key),
                      json.dumps(probe.model_dump(), indent=1))
    return probe
