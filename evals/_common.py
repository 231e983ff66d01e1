"""What every benchmark in evals/ repeats: its command line, the machine it ran on, timing, saving.

The benchmarks run as scripts (`python evals/<name>.py`), so this folder is on `sys.path` and they
import this module as `_common`. Each benchmark keeps the JSON keys it has always written (one that
wrote `"cpus"` still does); `machine_info` adds the same machine facts beside them in every result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from stratos_agent.files import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"


# --- command line ----------------------------------------------------------------------------------
def make_parser(doc: str | None, *, full: bool = False) -> argparse.ArgumentParser:
    """A parser described by the module docstring: its first line, or all of it with `full`."""
    if full:
        return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=doc.strip().splitlines()[0] if doc else None)


def add_out(parser: argparse.ArgumentParser, filename: str) -> None:
    """`--out PATH`: where the result JSON goes (default `evals/results/<filename>`)."""
    parser.add_argument("--out", type=Path, default=RESULTS / filename,
                        help=f"result JSON (default: evals/results/{filename})")


def add_served_model(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--task`, `--concurrency`: a model served and load-tested the way a run tests its endpoint."""
    parser.add_argument("--model", required=True, help="A model folder (runs/<run>/train/model) or a registry id.")
    parser.add_argument("--task", default="mahjong")
    parser.add_argument("--concurrency", type=int, default=4)


def served_model(args: argparse.Namespace) -> tuple[Path, Any, Any]:
    """(`--model`'s folder, the task pack whose prompts it reads, the task's recipe)."""
    from stratos_agent.tools.latency_probe import probe_pack
    from stratos_agent.tools.serving_state import resolve_target

    from stratos_agent.tasks.recipes import recipe_for

    folder = Path(resolve_target(args.model).model_path)
    return folder, probe_pack(args.task, folder), recipe_for(args.task)


def add_threads(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """`--threads N`: torch threads for the benchmark (the caller applies them)."""
    parser.add_argument("--threads", type=int, default=default,
                        help="torch threads (1: more threads than free cores spin and run ~6x slower)")


# --- machine facts ---------------------------------------------------------------------------------
def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (the architecture where that file is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg_1m() -> float:
    return os.getloadavg()[0]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def torch_threads() -> int | None:
    """torch's intra-op thread count, or None when this benchmark never imported torch."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU model, cores, torch version and threads, 1-minute load, Python, date; then `extra` keys."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch_version(),
        "torch_threads": torch_threads(),
        "loadavg_1m": loadavg_1m(),
        "python": platform.python_version(),
        "date": now(),
        **extra,
    }


# --- timing ----------------------------------------------------------------------------------------
def timed(fn: Callable[..., Any], *args: Any, repeat: int = 1) -> tuple[float, Any]:
    """(best wall seconds over `repeat` calls, the last call's result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def run_rounds(tests: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[dict]]:
    """`rounds` load tests of each role (a `LoadTest` each), the order rotated every round so that drift in
    the background load hits all alike; each result with the 1-minute load before it."""
    results: dict[str, list[dict]] = {role: [] for role in tests}
    roles = list(tests)
    for i in range(rounds):
        for role in roles[i % len(roles):] + roles[:i % len(roles)]:
            load = round(loadavg_1m(), 2)
            result = tests[role]()
            results[role].append({**result.model_dump(), "loadavg_1m": load})
            print(f"round {i + 1} {role}: p50 {result.p50_ms} ms, p95 {result.p95_ms} ms, "
                  f"{result.output_tokens:.2f} tokens, {result.wall_s} s, load {load}", flush=True)
    return results


def p95_spread(tests: list[dict]) -> dict[str, Any]:
    """How a role's load tests (`run_rounds` results) read p95: their median, range and max/min (how far two
    tests of one server disagree: the plan-vs-deployed goal is 25%)."""
    p95s = [r["p95_ms"] for r in tests]
    return {"median_p95_ms": round(statistics.median(p95s), 1), "test_p95_range_ms": [min(p95s), max(p95s)],
            "test_p95_max_over_min": round(max(p95s) / min(p95s), 2)}


# --- saving ----------------------------------------------------------------------------------------
def save_json(result: Any, path: Path, *, indent: int = 1, echo: bool = False, **dumps: Any) -> Path:
    """Write `result` as JSON to `path` atomically (a reader never sees half a file) and say where.

    `echo` also prints the whole JSON first; `dumps` go to `json.dumps` (e.g. `ensure_ascii=False`).
    """
    text = json.dumps(result, indent=indent, **dumps)
    if echo:
        print(text)
    path = write_text_atomic(Path(path), text + "\n")
    print(f"saved {path}")
    return path


def copy_beside(src: str | Path, out: Path, suffix: str) -> str:
    """Copy `src` (a plot, say) next to the result JSON `out` as `<out stem><suffix>`; its path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy(src, out.with_name(out.stem + suffix)))
