"""Whether bf16 pays on this machine: measured once per hardware fingerprint (which
includes the CPU's bf16/vector features), cached.

A CPU without native bf16 (no AVX512-BF16 / AMX, e.g. an AVX2-only EPYC) emulates it: there a micro
student's training step under bf16 autocast measured 35x slower than in fp32 (53.6 s vs 1.5 s for a batch
of 64, 1 thread), while on a CPU with AVX512-BF16 it measured ~5x faster. So the choice is a measurement,
not a default: `use_bf16()` times the same small forward + backward both ways and says yes only when bf16
is clearly faster. `STRATOS_BF16=0|1` pins it (tests, or a user who knows).

    from stratos_agent.tools.precision import use_bf16
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16()): ...
"""

from __future__ import annotations

import functools
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from stratos_agent.files import write_text_atomic
from stratos_agent.settings import get_settings

ENV = "STRATOS_BF16"
MIN_SPEEDUP = 1.2  # policy: bf16 must beat fp32 by 20% to be worth its rounding
_WIDTH, _ROWS, _LAYERS, _REPEATS = 256, 512, 4, 3  # ~60 ms in fp32 on one busy core; bf16 emulated ~5x that


def _step_seconds(bf16: bool) -> float:
    """Median seconds of a forward + backward of a small MLP stack, with or without bf16 autocast."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(_WIDTH, _WIDTH) for _ in range(_LAYERS)])
    x = torch.randn(_ROWS, _WIDTH)
    times = []
    for _ in range(_REPEATS + 1):  # the first repetition warms up kernels and is dropped
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def measure_bf16() -> dict:
    fp32, bf16 = _step_seconds(False), _step_seconds(True)
    return {"fp32_s": round(fp32, 5), "bf16_s": round(bf16, 5), "speedup": round(fp32 / bf16, 3),
            "use_bf16": fp32 / bf16 >= MIN_SPEEDUP, "load_avg": round(os.getloadavg()[0], 2),
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}


def _cache_file() -> Path:
    from stratos_agent.tools.machine_peaks import hardware_fingerprint

    return get_settings().cache_dir / "precision" / f"bf16-{hardware_fingerprint(threads=1).key}.json"


@functools.cache
def use_bf16(device: str = "cpu") -> bool:
    """bf16 autocast on `device`: CUDA when the GPU supports it; a CPU when measured clearly faster (cached)."""
    import torch

    if (pinned := os.environ.get(ENV, "").strip()) in {"0", "1"}:
        return pinned == "1"
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    path = _cache_file()
    try:
        return bool(json.loads(path.read_text())["use_bf16"])
    except (OSError, ValueError, KeyError):
        result = measure_bf16()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(result, indent=1))
        return result["use_bf16"]
