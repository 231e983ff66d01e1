"""Why the bundled GGUF is converted once: load time from the GGUF vs from the converted HF folder.

    .venv/bin/python evals/bench_models_load.py [--repeats 3] [--threads 1]

A: `from_pretrained(<package dir>, gguf_file=...)` (de-quantises Q4_1 -> fp32 on every load);
B: `load_model_and_tokenizer("smollm2-135m")` from the converted folder (safetensors, fp32);
C: the same for the half-depth student `smollm2-135m-half`. Same process, same thread count;
B and C take the median of --repeats loads. Also the bytes on disk of each form.
Prints and saves evals/results/bench_models_load.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stratos_agent.models import load_model_and_tokenizer, local_model_path
from stratos_agent.models.bundled import SMOLLM2_GGUF

RESULTS = Path(__file__).parent / "results" / "bench_models_load.json"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir, student_dir = local_model_path("smollm2-135m"), local_model_path("smollm2-135m-half")
    gguf = SMOLLM2_GGUF.locate()
    load_model_and_tokenizer("smollm2-135m")  # warm the file cache and imports for every variant

    def from_gguf() -> None:
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    gguf_s = timed(from_gguf)
    folder_s = statistics.median(timed(lambda: load_model_and_tokenizer("smollm2-135m")) for _ in range(args.repeats))
    half_s = statistics.median(
        timed(lambda: load_model_and_tokenizer("smollm2-135m-half")) for _ in range(args.repeats)
    )
    results = {
        "threads": args.threads,
        "gguf_load_s": round(gguf_s, 2),
        "folder_load_s": round(folder_s, 2),
        "half_folder_load_s": round(half_s, 2),
        "speedup_folder_vs_gguf": round(gguf_s / folder_s, 1),
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
        "folder_mb": folder_mb(teacher_dir),
        "half_folder_mb": folder_mb(student_dir),
    }
    print(f"A  load from GGUF (de-quantise)      {gguf_s:6.2f} s   ({results['gguf_mb']} MB Q4_1)")
    print(f"B  load converted folder (median)    {folder_s:6.2f} s   ({results['folder_mb']} MB fp32)")
    print(f"C  load half student folder (median) {half_s:6.2f} s   ({results['half_folder_mb']} MB fp32)")
    print(f"A/B speed-up: {results['speedup_folder_vs_gguf']}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
