"""`stratos synth`: make a verified training set by reverse synthesis (or forward, for comparison)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from stratos_agent.cli.app import app, console
from stratos_agent.errors import InputError


@app.command(
    epilog=(
        "Examples:\n\n"
        "    stratos synth --task mahjong --n 20000 --mode solver --out runs/data/mahjong --even\n\n"
        "    stratos synth --task mahjong --n 64 --mode teacher --out runs/data/mj-teacher\n\n"
        "    stratos synth --task jsonl:qa.jsonl --n 500 --out runs/data/qa --on-bad-line skip\n\n"
        "    stratos synth --task mahjong --n 200 --mode forward --endpoint http://127.0.0.1:8000/v1 "
        "--out runs/data/fwd"
    )
)
def synth(
    out: Annotated[Path, typer.Option(
        "--out", help="Output folder (HF dataset, JSONL preview, public JSONL, data card). "
        "Rerunning the same command into it resumes.")],
    task: Annotated[str, typer.Option(
        help="Task pack: mahjong, gsm8k, or jsonl:PATH (your question/answer file).")] = "mahjong",
    n: Annotated[int, typer.Option("--n", help="Verified examples to keep (after dedupe and rejections).")] = 20000,
    mode: Annotated[str, typer.Option(
        help="solver: the task's own step-by-step rationale (fast, always correct); teacher: the teacher is "
        "given the answer and writes the reasoning, kept only if it ends at that answer; forward: the "
        "teacher answers cold, kept only if right (its yield = probe accuracy).")] = "solver",
    seed: Annotated[int, typer.Option(help="Seed of the item stream; same seed + settings = same dataset.")] = 0,
    teacher: Annotated[str | None, typer.Option(
        help="Local teacher for teacher/forward modes: registry id, HF id or folder "
        "[default: smollm2-135m].")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL (vLLM, SGLang, llama.cpp, Ollama, OpenAI) as the teacher; "
        "key from OPENAI_API_KEY.")] = None,
    model_name: Annotated[str | None, typer.Option(
        help="Model name at --endpoint; omitted = ask the server (GET /models).")] = None,
    even: Annotated[bool, typer.Option(
        "--even", help="Even mix over the task's difficulty buckets (Mahjong: 0-9 winning tiles); "
        "default = the task's natural mix.")] = False,
    curriculum: Annotated[bool, typer.Option("--curriculum", help="Order each split easy -> hard.")] = False,
    style: Annotated[str | None, typer.Option(
        help="Solver rationale style (mahjong: steps, answer, search).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Token budget per teacher answer.", min=1)] = 256,
    temperature: Annotated[float, typer.Option(help="Teacher sampling temperature (0 = greedy).", min=0.0)] = 0.0,
    max_attempts: Annotated[int | None, typer.Option(
        help="Stop after this many candidates [default: 20 n + 1000].", min=1)] = None,
    on_bad_line: Annotated[str | None, typer.Option(
        help="jsonl tasks: fail on a malformed line, or skip and count it [default: fail].")] = None,
    checker: Annotated[str | None, typer.Option(
        help="jsonl tasks: exact, numeric, regex, or module:function (your Python checker, imported only "
        "when named here, never from a .pack.json) [default: the .pack.json's, else exact].")] = None,
    threads: Annotated[int | None, typer.Option(
        help="torch threads for a local teacher [default: STRATOS_THREADS].", min=1)] = None,
) -> None:
    """Make verified training data for a task by **reverse synthesis**: answers known first, reasoning second.

    Every row is checked by the task's verifier; duplicates are dropped; train/val/test splits come from
    a hash of each item's canonical form (no leakage). Killing the command and running it again
    continues where it stopped; teacher calls are cached on disk and never paid twice.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stratos_agent.settings import apply_thread_settings
    from stratos_agent.tasks import get_task_pack
    from stratos_agent.tools.synth import EVEN, MODES, SynthProgress, synthesize
    from stratos_agent.tools.teachers import make_teacher

    if not math.isfinite(temperature):
        raise InputError(f"--temperature must be a finite number, got {temperature}")
    writable_folder(out, "--out")
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "solver" and (teacher or endpoint or model_name):
        raise InputError("--teacher/--endpoint/--model-name are for --mode teacher or forward; solver mode needs none")
    jsonl_options = {k: v for k, v in (("on_bad_line", on_bad_line), ("checker", checker)) if v is not None}
    if jsonl_options and not task.strip().lower().startswith("jsonl:"):
        raise InputError(f"--{'/--'.join(k.replace('_', '-') for k in jsonl_options)} apply to jsonl:PATH tasks only")
    pack = get_task_pack(task, **jsonl_options)
    if getattr(pack, "skipped", 0):
        console.print(f"[yellow]skipped {pack.skipped} malformed line(s)[/]: " + "; ".join(pack.bad_lines[:3]))
    llm = None
    if mode != "solver":
        apply_thread_settings(threads)
        with console.status("loading the teacher..."):
            llm = make_teacher(teacher, endpoint=endpoint, model_name=model_name)
        console.print(f"teacher: {llm.identity}")

    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("accepted"), MofNCompleteColumn(),
        TextColumn("rejected {task.fields[rejected]}  {task.fields[rate]} items/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        job = bar.add_task(f"synth {pack.name} ({mode})", total=n, rate="-", rejected=0)

        def show(p: SynthProgress) -> None:
            rate = p.attempted / max(p.elapsed_s, 1e-9)  # attempted items/s (LLM modes: well under 1)
            bar.update(job, completed=p.accepted, rejected=p.rejected, rate=f"{rate:.2f}" if rate < 10 else f"{rate:.0f}")

        ref = synthesize(
            pack, n, out, mode=mode, seed=seed, teacher=llm, distribution=EVEN if even else None,
            curriculum=curriculum, style=style, max_new_tokens=max_new_tokens, temperature=temperature,
            max_attempts=max_attempts, progress=show,
        )
    card = ref.card
    console.print(
        f"[green]kept {card.n_accepted}[/] of {card.attempted} attempted (yield {card.yield_rate:.1%}) in "
        f"{card.elapsed_s:.1f} s; splits " + ", ".join(f"{k} {v}" for k, v in card.split_counts.items())
    )
    if card.rejections:
        console.print("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(card.rejections.items())))
    for note in card.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"dataset: {ref.hf_path}\ncard:    {ref.path / 'data_card.md'}\npublic:  {ref.path / 'public'}")


def writable_folder(folder: Path, flag: str) -> Path:
    """`folder`, created; a file in the way or a folder that cannot be made is an InputError naming `flag`."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{flag} {folder}: cannot create it ({exc.strerror})") from None
    return folder
