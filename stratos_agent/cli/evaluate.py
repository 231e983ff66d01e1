"""`stratos eval`: score a model folder, registry id or OpenAI-compatible endpoint on a held-out file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stratos_agent.cli.app import app, err_console


@app.command(
    "eval",
    epilog=(
        "Examples:\n\n"
        "    stratos eval --task mahjong --data mahjong_test.jsonl --model runs/mj-sft/model --limit 200\n\n"
        "    stratos eval --task mahjong --data mahjong_test.jsonl --model smollm2-135m --out teacher.json\n\n"
        "    stratos eval --task mahjong --data mahjong_test.jsonl --endpoint http://127.0.0.1:8000/v1 "
        "--model-name student --concurrency 16\n\n"
        "    stratos eval --data mahjong_test.jsonl --model runs/mj-sft --task-option prompt=short "
        "--teacher smollm2-135m --max-new-tokens 64"
    ),
)
def eval_command(
    data: Annotated[Path, typer.Option(
        help="Held-out JSONL in the task's public format (Mahjong: the public benchmark rows "
        '{"hand": [13 Unicode tiles], "winning_tiles": [...]}, read as is).')],
    task: Annotated[str, typer.Option(help="Task pack: mahjong, gsm8k, or jsonl:PATH.")] = "mahjong",
    task_option: Annotated[list[str] | None, typer.Option(
        help="Task pack option KEY=VALUE, repeatable; use what the student was trained with, e.g. "
        "prompt=short for a Mahjong student trained on hand-only prompts.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Local model: a trained folder (runs/RUN/model), a registry id (smollm2-135m) or an HF id.")] = None,
    endpoint: Annotated[str | None, typer.Option(
        help="OpenAI-compatible base URL instead of --model, e.g. http://127.0.0.1:8000/v1 "
        "(key from OPENAI_API_KEY).")] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name served at --endpoint.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N rows.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the JSON report here instead of stdout.")] = None,
    batch_size: Annotated[int, typer.Option(help="Local generation batch (left padded, greedy).", min=1)] = 16,
    concurrency: Annotated[int, typer.Option(help="Requests in flight against --endpoint.", min=1)] = 8,
    max_new_tokens: Annotated[int, typer.Option(
        help="Token budget per answer (rationale styles need ~300; answer-only ~16).", min=1)] = 256,
    teacher: Annotated[str | None, typer.Option(
        help="Also evaluate this local model (e.g. the untrained teacher smollm2-135m) on the same rows "
        "and report student/teacher side by side.")] = None,
    teacher_task_option: Annotated[list[str] | None, typer.Option(
        help="Task options for the teacher's prompts (default: the task's own, full instructions).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads [default: STRATOS_THREADS].", min=1)] = None,
    update_card: Annotated[bool, typer.Option(
        help="Write the results into a Stratos model folder's README.md model card.")] = True,
) -> None:
    """Exact-match accuracy with a 95% Wilson interval, per difficulty, parse failures, latency p50/p95
    and tokens/s, next to trivial baselines (empty answer, most common tile) on the same rows.

    The JSON has a top-level `exact_match` (0..1) and `n`; `baselines` lists the constant answers.
    """
    from stratos_agent.files import write_text_atomic
    from stratos_agent.request_parser import parse_key_values
    from stratos_agent.tasks import get_task_pack
    from stratos_agent.tools.evaluate import compare, evaluate, report_markdown
    from stratos_agent.tools.train_card import record_eval_in_card

    pack = get_task_pack(task, **parse_key_values(task_option or [], "--task-option", "prompt=short"))
    report = evaluate(
        pack, data, model=model, endpoint=endpoint, model_name=model_name, limit=limit,
        batch_size=batch_size, concurrency=concurrency, max_new_tokens=max_new_tokens, threads=threads,
        console=err_console,
    )
    side = None
    if teacher:
        teacher_options = parse_key_values(teacher_task_option or [], "--teacher-task-option", "prompt=short")
        side = evaluate(get_task_pack(task, **teacher_options), data, model=teacher, limit=limit,
                        batch_size=batch_size, max_new_tokens=max_new_tokens, threads=threads,
                        console=err_console)
    comparison = compare(pack, data, report, side, limit=limit)
    base = comparison.baselines
    payload = report.model_dump(mode="json") | {"baselines": [b.model_dump(mode="json") for b in base]}
    if side is not None:
        err_console.print(f"[bold]teacher {side.headline()}", highlight=False)
        payload |= {"teacher": side.model_dump(mode="json"), "student_over_teacher": comparison.student_over_teacher}
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    err_console.print(f"[bold]{report.headline()}", highlight=False)
    for b in base:
        err_console.print(f"  baseline {b.name}: {b.exact_match.value:.1%}", highlight=False)
    folder = Path(report.model)  # a run folder was resolved to its model folder
    if model and update_card and folder.is_dir() and record_eval_in_card(folder, report_markdown(report, base)):
        err_console.print(f"model card updated: {folder / 'README.md'}")
    if out:
        write_text_atomic(out, text + "\n")
        err_console.print(f"report written to {out}")
    else:
        typer.echo(text)
