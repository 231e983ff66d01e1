"""Why the bundled GGUF is converted once: load time from the GGUF vs from the converted HF folder.

    .venv/bin/python evals/bench_models_load.py [--repeats 3] [--threads 1] [--out PATH]

A: `from_pretrained(<package dir>, gguf_file=...)` (de-quantises Q4_1 -> fp32 on every load);
B: `load_model_and_tokenizer("smollm2-135m")` from the converted folder (safetensors, fp32);
C: the same for the half-depth student `smollm2-135m-half`. Same process, same thread count;
B and C take the median of --repeats loads. Also the bytes on disk of each form.
Prints and saves evals/results/bench_models_load.json.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from _common import add_out, add_threads, machine_info, make_parser, save_json, timed

from stratos_agent.models import load_model_and_tokenizer, local_model_path
from stratos_agent.models.bundled import SMOLLM2_GGUF


def folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6, 1)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    add_threads(parser)
    add_out(parser, "bench_models_load.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir, student_dir = local_model_path("smollm2-135m"), local_model_path("smollm2-135m-half")
    gguf = SMOLLM2_GGUF.locate()
    load_model_and_tokenizer("smollm2-135m")  # warm the file cache and imports for every variant

    def from_gguf() -> None:
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def median_load_s(model: str) -> float:
        return statistics.median(timed(load_model_and_tokenizer, model)[0] for _ in range(args.repeats))

    gguf_s, _ = timed(from_gguf)
    folder_s = median_load_s("smollm2-135m")
    half_s = median_load_s("smollm2-135m-half")
    results = {
        "threads": args.threads,
        "gguf_load_s": round(gguf_s, 2),
        "folder_load_s": round(folder_s, 2),
        "half_folder_load_s": round(half_s, 2),
        "speedup_folder_vs_gguf": round(gguf_s / folder_s, 1),
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
        "folder_mb": folder_mb(teacher_dir),
        "half_folder_mb": folder_mb(student_dir),
        "machine": machine_info(),
    }
    print(f"A  load from GGUF (de-quantise)      {gguf_s:6.2f} s   ({results['gguf_mb']} MB Q4_1)")
    print(f"B  load converted folder (median)    {folder_s:6.2f} s   ({results['folder_mb']} MB fp32)")
    print(f"C  load half student folder (median) {half_s:6.2f} s   ({results['half_folder_mb']} MB fp32)")
    print(f"A/B speed-up: {results['speedup_folder_vs_gguf']}x")
    save_json(results, args.out)


if __name__ == "__main__":
    main()
