"""This machine as a server: its hardware fingerprint, its measured "datasheet" and its local offer.

The datasheet (`measure_peaks`: stream-copy bandwidth and fp32 matmul FLOP/s) is measured once a day per
fingerprint (CPU model, cores, threads, torch version, GPU), with the machine's load at the time recorded
next to it. Setting `STRATOS_SERVER_PEAKS="<mem_bw_gbps>,<tflops>"` (e.g. "30,0.08") pins it instead:
every caller (`local_offer`, `server_bench.bench_model`, the planner) then uses those figures and nothing
is measured. Tests set it so that their outcome does not depend on a measurement taken under whatever
load the day had. Also owns the measurement cache (`bench_dir`, `_cache_path`) shared with
`tools/server_bench.py`: files are named by kind, cache version (`CACHE_VERSION`), fingerprint, model,
backend and date, so that files written by an older measuring method are ignored.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from stratos_agent.errors import InputError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.servers import HardwareFingerprint, ServerOffer
from stratos_agent.settings import get_settings

# Part of every cache file name. Bump it when a measuring method changes what a cached figure means:
# files of an older version are then never read. 2: peaks from a warmed-up, repeated copy/matmul (1
# timed a single copy into a freshly allocated tensor: page faults, 0.5 GB/s for ~37 GB/s).
CACHE_VERSION = 2
PEAKS_ENV = "STRATOS_SERVER_PEAKS"
PEAK_MIN_ITERATIONS = 5  # timed repetitions of the copy and of the matmul, whatever the time budget
_COPY_FLOATS = 64 * 2**20  # 256 MiB of fp32 per tensor: beyond the caches of common CPUs
_MATMUL_N = 1024


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_FEATURE_FLAGS = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")  # what decides how fast bf16/fp32 kernels run


def cpu_features() -> str:
    """The speed-relevant CPU flags present, e.g. 'avx2' or 'avx512_bf16+avx512f+avx2' ('unknown' off Linux)."""
    try:
        flags = set(re.findall(r"\S+", Path("/proc/cpuinfo").read_text()))
    except OSError:
        return "unknown"
    return "+".join(f for f in _FEATURE_FLAGS if f in flags) or "none"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def hardware_fingerprint(threads: int | None = None) -> HardwareFingerprint:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return HardwareFingerprint(
        cpu_model=_cpu_model(),
        cores=_cores(),
        threads=threads or torch.get_num_threads(),
        torch_version=torch.__version__,
        gpu=gpu,
        cpu_features=cpu_features(),
    )


def bench_dir() -> Path:
    return get_settings().cache_dir / "server-bench"


def _cache_path(
    kind: str, fp: HardwareFingerprint, model: str = "", backend: str = "", day: str = ""
) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    parts = (kind, f"v{CACHE_VERSION}", fp.key, safe, backend, day)
    return bench_dir() / ("-".join(p for p in parts if p) + ".json")


def pinned_peaks() -> tuple[float, float] | None:
    """(GB/s, TFLOP/s) from `STRATOS_SERVER_PEAKS="<mem_bw_gbps>,<tflops>"`, or None when unset."""
    raw = os.environ.get(PEAKS_ENV, "").strip()
    if not raw:
        return None
    try:
        bw, tflops = (float(part) for part in raw.split(","))
    except ValueError:
        bw = tflops = math.nan
    if not (math.isfinite(bw) and math.isfinite(tflops) and bw > 0 and tflops > 0):
        raise InputError(
            f"{PEAKS_ENV}={raw!r}: expected two positive numbers '<mem_bw_gbps>,<tflops>', e.g. '30,0.08'"
        )
    return bw, tflops


def _machine_load() -> dict:
    """How busy the machine was when it was measured (a busy machine measures slow)."""
    import psutil

    load = dict(zip(("loadavg_1m", "loadavg_5m", "loadavg_15m"), os.getloadavg(), strict=True))
    return {**load, "cpu_percent": psutil.cpu_percent(interval=0.1), "cpus": os.cpu_count()}


def _repeat(fn: Callable[[], object], seconds: float, min_iterations: int) -> list[float]:
    """Seconds of each timed call of `fn`, after one untimed warm-up call: at least `min_iterations`
    calls, more while `seconds` last."""
    fn()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_iterations or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _copy_gbps(
    seconds: float, floats: int = _COPY_FLOATS, min_iterations: int = PEAK_MIN_ITERATIONS
) -> list[float]:
    """GB/s (bytes read + written) of each timed copy between two pre-touched tensors."""
    import torch

    src = torch.ones(floats, dtype=torch.float32)  # filled: every page is touched before timing
    dst = torch.zeros_like(src)
    return [2 * floats * 4 / t / 1e9 for t in _repeat(lambda: dst.copy_(src), seconds, min_iterations)]


def _matmul_tflops(
    seconds: float, n: int = _MATMUL_N, min_iterations: int = PEAK_MIN_ITERATIONS
) -> list[float]:
    """TFLOP/s of each timed fp32 n x n matmul (into a preallocated output)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    return [2 * n**3 / t / 1e12 for t in _repeat(lambda: torch.mm(a, b, out=out), seconds, min_iterations)]


def measure_peaks(threads: int, seconds: float = 1.0, force: bool = False) -> tuple[float, float]:
    """Stream bandwidth (GB/s: bytes read + written by a large copy) and fp32 matmul TFLOP/s with
    `threads` torch threads: the 'datasheet' of this machine, measured once a day per fingerprint
    (`force`: again). Each is the best of several timed repetitions after a warm-up, half of `seconds`
    each (at least `PEAK_MIN_ITERATIONS` repetitions). `STRATOS_SERVER_PEAKS` pins both instead."""
    pinned = pinned_peaks()
    if pinned is not None:
        return pinned
    import torch

    torch.set_num_threads(threads)
    fp = hardware_fingerprint(threads)
    path = _cache_path("peaks", fp, day=date.today().isoformat())
    if path.exists() and not force:
        try:
            data = json.loads(path.read_text())
            return float(data["mem_bw_gbps"]), float(data["tflops"])
        except (ValueError, KeyError, TypeError):
            pass  # half-written or foreign: measure again
    load = _machine_load()
    copies = _copy_gbps(seconds / 2)
    matmuls = _matmul_tflops(seconds / 2)
    record = {
        "mem_bw_gbps": max(copies),
        "tflops": max(matmuls),
        "mem_bw_gbps_median": statistics.median(copies),
        "tflops_median": statistics.median(matmuls),
        "copy_iterations": len(copies),
        "matmul_iterations": len(matmuls),
        "method": f"best of timed repetitions after a warm-up: copy of {_COPY_FLOATS * 4 // 2**20} MiB "
        f"fp32 between pre-touched tensors; fp32 {_MATMUL_N}x{_MATMUL_N} matmul",
        "measured_at": datetime.now().isoformat(timespec="seconds"),
        "load": load,
        "cache_version": CACHE_VERSION,
        "fingerprint": fp.model_dump(),
    }
    write_text_atomic(path, json.dumps(record, indent=1))
    return record["mem_bw_gbps"], record["tflops"]


def local_offer(threads: int | None = None) -> ServerOffer:
    """This machine as a server: measured peaks, RAM as memory, $0/h (already paid for)."""
    import psutil
    import torch

    threads = threads or get_settings().threads or torch.get_num_threads()
    pinned = pinned_peaks() is not None
    bw, tflops = measure_peaks(threads)
    ram = psutil.virtual_memory().total / 1e9
    return ServerOffer(
        provider="local",
        instance_type=f"this-machine-{threads}t",
        gpu="CPU",
        gpu_count=1,
        gpu_memory_gb=ram,
        region="local",
        on_demand_usd_h=0.0,
        spot_usd_h=None,
        mem_bw_gbps=bw,
        bf16_tflops=tflops,
        interconnect=f"{_cpu_model()}, {_cores()} cores, {threads} torch threads (fp32)",
        vcpus=_cores(),
        ram_gb=ram,
        source=f"pinned ({PEAKS_ENV})" if pinned else "measured (stream copy + fp32 matmul)",
        date=date.today().isoformat(),
    )
