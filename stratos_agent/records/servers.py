"""Server records: catalog offers, hardware fingerprints, benchmark results and per-model profiles.

Every throughput/latency figure carries `source`: `measured` (timed on real hardware) or `modelled`
(predicted by the roofline model in tools/roofline.py), so a reader never mistakes a guess for data.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stratos_agent.records.deployment import LatencyStats

Source = Literal["measured", "modelled"]


class Figure(BaseModel):
    """One number with its unit and where it comes from."""

    model_config = ConfigDict(frozen=True)

    value: float
    unit: str
    source: Source

    def __str__(self) -> str:
        return f"{self.value:.4g} {self.unit} ({self.source})"


class ServerOffer(BaseModel):
    """One rentable (or local) machine: a catalog row joined with its GPU datasheet."""

    provider: str = Field(description="aws, gcp, azure, lambda, runpod, ... or 'local' for this machine.")
    instance_type: str
    gpu: str = Field(description="GPU name as in gpu_datasheets.json; 'CPU' for a CPU-only machine.")
    gpu_count: int = Field(ge=1, description="GPUs (or 1 for a CPU machine).")
    gpu_memory_gb: float = Field(gt=0, description="Memory per GPU (or RAM usable by the CPU machine).")
    region: str
    on_demand_usd_h: float = Field(ge=0)
    spot_usd_h: float | None = Field(default=None, ge=0)
    mem_bw_gbps: float = Field(gt=0, description="Per-GPU peak memory bandwidth, GB/s.")
    bf16_tflops: float = Field(gt=0, description="Per-GPU dense bf16 (fp32 on CPU) peak, TFLOP/s.")
    interconnect: str = ""
    vcpus: float | None = None
    ram_gb: float | None = None
    source: str = Field(description="Where the price/figures came from (URL, 'skypilot:<file>', 'measured').")
    date: str = Field(description="ISO date the row was observed.")

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.instance_type}:{self.region}"

    @property
    def is_local(self) -> bool:
        return self.provider == "local"


class HardwareFingerprint(BaseModel):
    """What makes two benchmark results comparable: same CPU/GPU, its vector/bf16 features, cores, threads
    and torch. Two machines both named "AMD EPYC" measured 2.5x apart in training throughput: one had
    AVX512-BF16, the other AVX2 only; the features tell them apart."""

    model_config = ConfigDict(frozen=True)

    cpu_model: str
    cores: int
    threads: int
    torch_version: str
    gpu: str | None = None
    cpu_features: str = Field(default="", description="bf16-relevant CPU flags, e.g. 'avx2' ('' = not recorded).")

    @property
    def key(self) -> str:
        raw = f"{self.cpu_model}|{self.cores}|{self.threads}|{self.torch_version}|{self.gpu}"
        raw += f"|{self.cpu_features}" if self.cpu_features else ""  # keys recorded before features stay valid
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


class BenchResult(BaseModel):
    """Measured serving figures of one model on one machine (tools/server_bench.py)."""

    model: str
    backend: Literal["transformers", "vllm"]
    fingerprint: HardwareFingerprint
    date: str
    params: int = Field(description="Parameter count of the model that was timed.")
    weight_bytes: int = Field(description="Bytes of weights read per decode step (dtype as served).")
    kv_bytes_per_token: int
    layers: int = Field(description="Decoder layers (per-layer dispatch overhead dominates tiny models).")
    prompt_tokens: int
    output_tokens: int
    prefill_tok_s: float
    decode_tok_s: dict[int, float] = Field(description="Batch size -> aggregate decode tokens/s.")
    ttft_ms: float
    p50_ms: float
    p95_ms: float
    requests: int
    peak_mem_bw_gbps: float | None = Field(default=None, description="Measured stream bandwidth (CPU).")
    peak_tflops: float | None = Field(default=None, description="Measured matmul peak (CPU).")
    seconds: float = Field(description="Wall time the measurement took.")


class ServerProfile(BaseModel):
    """Serving figures of one model on one server offer, each labelled measured or modelled."""

    offer: ServerOffer
    model: str
    fits: bool
    fit_reason: str = Field(description="Why it fits or not: memory needed vs available.")
    memory_needed_gb: float
    prefill_tok_s: Figure | None = None
    decode_tok_s: dict[int, Figure] = Field(default_factory=dict)
    ttft_ms: Figure | None = None
    p50_ms: Figure | None = None
    p95_ms: Figure | None = None
    capacity_qps: Figure | None = Field(default=None, description="Requests/s one instance sustains.")
    instances: int | None = Field(default=None, description="Instances needed to carry the spec's traffic.")
    serving_usd: float | None = Field(default=None, description="Serving cost for the spec's duration.")

    @property
    def server(self) -> str:
        return self.offer.id


class RequestShape(BaseModel):
    """Tokens of one request as the student sees it: what latency is modelled (or measured) at."""

    prompt_tokens: int = Field(gt=0)
    output_tokens: int = Field(gt=0)
    source: str = Field(description="'task pack sample (n=64)', 'user spec', ...")


class LatencyProbe(LatencyStats):
    """The serving engine's own latency for a student on this machine: a short load test of the (untrained)
    student served as it will be deployed, with the task's real prompts and its answer length forced, at the
    spec's concurrency. Latency does not depend on the weights' values, so the untrained copy stands in."""

    model: str
    engine: str
    hardware: str = Field(description="Hardware fingerprint key (cores, threads, torch).")
    output_tokens: int = Field(description="Completion tokens forced per request (the student's answer p95).")
    load_avg: float = Field(description="1-minute load average when measured (2 cores: > 1 means contention).")
    measured_at: str


class ServerSurvey(BaseModel):
    """What `benchmark_servers` found: measurements on this machine, a profile per (server, student),
    and where this agent can execute a plan."""

    profiles: list[ServerProfile] = Field(default_factory=list)
    measured: list[BenchResult] = Field(default_factory=list)
    local: ServerOffer | None = None
    shape: RequestShape | None = Field(default=None, description="None: the spec's own traffic shape.")
    student_shapes: dict[str, RequestShape] = Field(
        default_factory=dict, description="Each candidate student's own shape (its prompt variant and tokenizer); "
        "empty when the user stated the traffic shape."
    )
    executable_clouds: list[str] | None = Field(
        default=None, description="Clouds with credentials, plus 'local'; None = no restriction."
    )
    clouds_note: str = ""
    catalog_date: str = ""
    catalog_age_days: int = 0
