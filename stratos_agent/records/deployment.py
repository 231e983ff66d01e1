"""Deployment records: how a server is launched, the live endpoint it became, and its smoke query.

Secrets never enter these records: an API key is stored only as a fingerprint (sha256 prefix), a
launch spec names the environment variables that carry secrets instead of holding their values (and
refuses an `--api-key` argument), and URLs and error texts are redacted when a record is built.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from stratos_agent.redact import redact_text, redact_url

Engine = Literal["vllm", "sglang"]
Device = Literal["cpu", "gpu"]
SafeUrl = Annotated[str, AfterValidator(redact_url)]
SafeText = Annotated[str, AfterValidator(redact_text)]


def key_fingerprint(api_key: str) -> str:
    """A stable, non-reversible name for a key: enough to tell two keys apart, useless to an attacker."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class LaunchSpec(BaseModel):
    """One server command line (vLLM or SGLang) with the settings it was derived from."""

    model_config = ConfigDict(extra="forbid")

    engine: Engine
    device: Device
    argv: list[str] = Field(description="The command, without any secret.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (no secrets).")
    secret_env: list[str] = Field(
        default_factory=list, description="Variables that must hold a secret at launch (values never stored)."
    )
    model_path: str
    served_model_name: str
    host: str
    port: int = Field(gt=0, lt=65536)
    tensor_parallel: int = Field(default=1, ge=1)
    data_parallel: int = Field(default=1, ge=1, description="Engine replicas inside one server (GPUs / TP).")
    max_model_len: int = Field(gt=0)
    memory_fraction: float | None = Field(
        default=None, description="GPU memory share (vLLM --gpu-memory-utilization, SGLang --mem-fraction-static)."
    )
    kv_cache_gb: float | None = Field(default=None, description="CPU KV-cache size (VLLM_CPU_KVCACHE_SPACE).")
    notes: list[str] = Field(default_factory=list, description="Adjustments made to fit model or hardware.")

    @field_validator("argv")
    @classmethod
    def _no_key_argument(cls, argv: list[str]) -> list[str]:
        if any(a == "--api-key" or a.startswith("--api-key=") for a in argv):
            raise ValueError("an API key never goes on the command line (argv is readable by every local user)")
        return argv

    def shell(self) -> str:
        """The command as one shell line (environment first), ready for a terminal or a SkyPilot `run`."""
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*env, shlex.join(self.argv)])


class SmokeResult(BaseModel):
    """One real task item sent through the official `openai` client, and what came back."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = Field(description="The endpoint answered with a non-empty completion.")
    task: str
    item_key: str = Field(description="Canonical key of the task item that was asked.")
    response: str = Field(default="", description="The completion (first 2000 characters).")
    exact: bool | None = Field(default=None, description="Task-pack exact match (a tiny model may miss).")
    f1: float | None = None
    format_ok: bool | None = None
    latency_s: float | None = None
    completion_tokens: int | None = None
    key_enforced: bool | None = Field(default=None, description="A request without the key was refused "
                                      "(HTTP 401/403); None = the endpoint needs no key.")
    error: SafeText | None = None


class LatencyStats(BaseModel):
    """What a load test reads (tools/load_test.py), whether of a deployed endpoint or a plan's probe."""

    requests: int = Field(description="Timed requests, all rounds together.")
    rounds: int = Field(default=1, description="Rounds of requests / rounds each; p50/p95 are their medians.")
    concurrency: int
    p50_ms: float
    p95_ms: float
    round_p95_ms: list[float] = Field(default_factory=list, description="Each round's own p95.")
    errors: int = 0
    prompt_tokens: float | None = Field(default=None, description="Mean prompt tokens the server reported.")


class LoadTest(LatencyStats):
    """Latency of a live endpoint under the spec's concurrency, with the task's real prompts."""

    output_tokens: float | None = Field(default=None, description="Mean completion tokens the server reported.")
    wall_s: float
    load_avg: float | None = Field(default=None, description="1-minute load average right after the timed requests.")


class Deployment(BaseModel):
    """A local OpenAI-compatible endpoint that Stratos started, saved as `deployment.json`."""

    # Tolerant: the agent's state slot adds summary keys (smoke_ok, ...) beside the record's fields.
    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Stable handle for `stratos stop NAME`.")
    base_url: SafeUrl = Field(description="OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Served model name to pass as `model=` to the client.")
    model_path: str
    model_fingerprint: str = Field(description="Hash of config + weight files: 'identical model' test.")
    engine: Engine
    host: str = Field(description="Address the server binds to.")
    port: int
    pid: int = Field(description="Process-group leader; `stratos stop` signals the whole group.")
    process_started: float = Field(description="psutil create_time of the leader (guards against pid reuse).")
    state_dir: str = Field(description="Holds server.pid, server.log and this record.")
    log_path: str
    api_key_required: bool
    api_key_fingerprint: str | None = Field(default=None, description="sha256 prefix of the key; never the key.")
    started_at: str
    status: Literal["running", "stopped"] = "running"
    reused: bool = Field(default=False, description="An identical live server was found and kept.")
    restarted: bool = Field(default=False, description="The previous server of this name had died.")
    launch: LaunchSpec
    smoke: SmokeResult | None = None
    load_test: LoadTest | None = Field(default=None, description="p50/p95 measured on the live endpoint.")
    # A key generated for this launch, handed to the caller once; private attributes are never dumped.
    _generated_api_key: str | None = PrivateAttr(default=None)

    @property
    def generated_api_key(self) -> str | None:
        return self._generated_api_key


class CloudSpec(BaseModel):
    """A SkyPilot task or SkyServe service written to disk, and what happened when it was launched."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["train", "serve"]
    name: str = Field(description="SkyPilot cluster name (train) or service name (serve).")
    yaml_path: str
    command: list[str] = Field(description="The exact `sky` command that launches it.")
    cloud: str | None = None
    accelerators: str = Field(description="e.g. 'H100:8'.")
    secrets: list[str] = Field(default_factory=list, description="Pass each with `--secret NAME` at launch.")
    validated_with: str = Field(description="SkyPilot version whose Task.from_yaml_config accepted the YAML.")
    launched: bool = False
    endpoint: SafeUrl | None = Field(default=None, description="Only what SkyPilot itself reported; never guessed.")
    notes: list[str] = Field(default_factory=list)
