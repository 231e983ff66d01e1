"""Evaluate a model on a task's held-out file: exact match (Wilson 95% CI), per difficulty, parse
failures, latency p50/p95, tokens/s; plus trivial baselines and teacher-vs-student comparisons.

    from stratos_agent.tools.evaluate import evaluate
    report = evaluate("mahjong", "held_out.jsonl", model="runs/mj/model", limit=100)
    report = evaluate("mahjong", "held_out.jsonl", endpoint="http://127.0.0.1:8000/v1", model_name="student")

The data file is read by the task pack's public JSONL reader (Mahjong: the public benchmark format
with Unicode tiles, as is). Local models generate in greedy, left-padded batches with the model's own
chat template (through the teacher client of `tools/teachers`); endpoints are called through the
official `openai` client with bounded concurrency and its retries.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from stratos_agent.tools.synth_store import NATURAL_SPLIT

from stratos_agent.errors import InputError
from stratos_agent.files import write_text_atomic
from stratos_agent.records.evaluation import (
    BaselineScore,
    Comparison,
    DifficultyRow,
    EvalReport,
    Proportion,
    Sample,
)
from stratos_agent.settings import apply_thread_settings, get_settings
from stratos_agent.tasks import TaskItem, TaskPack, get_task_pack
from stratos_agent.tasks.recipes import Recipe

N_SAMPLES = 5
NATURAL_TEACHER_SKIPPED = "run time; the teacher is compared on the even mix"
Z95 = 1.959964


def wilson(successes: int, n: int, z: float = Z95) -> Proportion:
    """Rate with its Wilson score interval."""
    if n == 0:
        return Proportion(value=0.0, low=0.0, high=1.0, successes=0, n=0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Proportion(value=p, low=max(0.0, centre - half), high=min(1.0, centre + half), successes=successes, n=n)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Generation:
    text: str
    latency_s: float
    tokens: int


def _progress(console: Console, label: str) -> Progress:
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console)


def generate_local(
    model: str, prompts: list[list[dict]], *, batch_size: int, max_new_tokens: int, console: Console
) -> list[Generation]:
    """Greedy batched generation; each item's latency is its batch's wall time."""
    from stratos_agent.tools.teachers import TransformersTeacher

    teacher = TransformersTeacher(model, batch_size=batch_size)
    out: list[Generation] = []
    with _progress(console, f"eval {Path(model).name or model}") as bar:
        task = bar.add_task("gen", total=len(prompts), rate="")
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            t0 = time.perf_counter()
            texts = teacher.generate(chunk, max_new_tokens=max_new_tokens)
            dt = time.perf_counter() - t0
            for text in texts:
                # re-encoding the greedy output gives its length (+1 for the end-of-turn token)
                n_tok = len(teacher.tokenizer(text, add_special_tokens=False)["input_ids"])
                out.append(Generation(text, dt, min(n_tok + 1, max_new_tokens)))
            rate = sum(g.tokens for g in out) / max(1e-9, sum_batches(out, batch_size))
            bar.update(task, advance=len(chunk), rate=f"{rate:.0f} tok/s")
    return out


def sum_batches(gens: list[Generation], batch_size: int) -> float:
    """Total wall time of the batches behind `gens` (every item of a batch carries the batch time)."""
    return sum(g.latency_s for g in gens[::batch_size])


def generate_endpoint(
    endpoint: str, model_name: str, prompts: list[list[dict]], *, concurrency: int, max_new_tokens: int,
    api_key: str | None, console: Console, timeout_s: float = 120.0,
) -> list[Generation]:
    """One chat completion per item, `concurrency` in flight; the client retries 429/5xx/timeouts. Each
    answer is metered at the endpoint's $/token against the running stage's budget (a local endpoint: $0)."""
    import openai
    from stratos_agent.tools.teachers import EndpointError, endpoint_usd_per_mtok, metered_call

    from stratos_agent.ledger import active_meter

    client = openai.OpenAI(base_url=endpoint, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=4)
    usd_per_mtok, meter = endpoint_usd_per_mtok(model_name, endpoint), active_meter()  # read before the threads

    def call(messages: list[dict]) -> Generation:
        t0 = time.perf_counter()
        try:
            response, _, _ = metered_call(
                lambda: client.chat.completions.create(
                    model=model_name, messages=messages, max_tokens=max_new_tokens, temperature=0.0
                ),
                messages=messages, max_tokens=max_new_tokens, usd_per_mtok=usd_per_mtok, meter=meter,
                what=f"an evaluation call to {model_name} at {endpoint}",
            )
        except openai.OpenAIError as exc:
            status = getattr(exc, "status_code", None)
            raise EndpointError(
                f"endpoint {endpoint} (model {model_name!r}) failed: "
                f"{f'HTTP {status}' if status else type(exc).__name__}: {str(exc)[:200]}", status
            ) from None
        dt = time.perf_counter() - t0
        usage = response.usage
        text = response.choices[0].message.content or ""
        return Generation(text, dt, usage.completion_tokens if usage else 0)

    results: list[Generation] = []
    with _progress(console, f"eval {model_name}") as bar, ThreadPoolExecutor(max_workers=concurrency) as pool:
        task = bar.add_task("gen", total=len(prompts), rate="")
        for gen in pool.map(call, prompts):
            results.append(gen)
            bar.update(task, advance=1, rate=f"p50 {percentile([g.latency_s for g in results], 50) * 1000:.0f} ms")
    return results


def grade(
    pack: TaskPack, items: Sequence[TaskItem], texts: Sequence[str]
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Per-item scores and the same grouped by difficulty bucket."""
    scores = [pack.score(item, text) for item, text in zip(items, texts, strict=True)]
    groups: dict[str, list[dict]] = defaultdict(list)
    for item, score in zip(items, scores, strict=True):
        groups[str(pack.difficulty_bucket(item))].append(score)
    return scores, groups


def _difficulty_rows(pack: TaskPack, groups: dict[str, list[dict]]) -> list[DifficultyRow]:
    order = {str(b): i for i, b in enumerate(pack.difficulty_buckets)}
    return [
        DifficultyRow(
            difficulty=key,
            n=len(scores),
            exact_match=wilson(sum(s["exact"] for s in scores), len(scores)),
            mean_f1=sum(s["f1"] for s in scores) / len(scores),
        )
        for key, scores in sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order)))
    ]


def load_items(pack: TaskPack, data: str | Path, limit: int | None) -> list[TaskItem]:
    if limit is not None and limit <= 0:
        raise InputError(f"--limit must be positive, got {limit}")
    items = pack.read_jsonl(data)
    if not items:
        raise InputError(f"{data}: no items to evaluate")
    return items[:limit] if limit else items


def resolve_model(model: str) -> str:
    """A Stratos run folder stands for its trained model (`<run>/model`); anything else is kept."""
    run = Path(model)
    if (run / "student.json").is_file() and not (run / "config.json").is_file():
        return str(run / "model")
    return model


def evaluate(
    task: str | TaskPack,
    data: str | Path,
    *,
    model: str | None = None,
    endpoint: str | None = None,
    model_name: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    concurrency: int = 8,
    max_new_tokens: int = 256,
    api_key: str | None = None,
    threads: int | None = None,
    console: Console | None = None,
) -> EvalReport:
    """Score `model` (folder / registry id) or `endpoint` + `model_name` on the task's file `data`."""
    if (model is None) == (endpoint is None):
        raise InputError("give exactly one of --model (folder or registry id) and --endpoint URL")
    if endpoint and not model_name:
        raise InputError("--endpoint needs --model-name (the name the server serves the model under)")
    console = console or Console(stderr=True)
    pack = get_task_pack(task) if isinstance(task, str) else task
    items = load_items(pack, data, limit)
    prompts = [pack.chat_messages(item) for item in items]
    t0 = time.perf_counter()
    if endpoint:
        settings = get_settings()
        key = api_key or (settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
        gens = generate_endpoint(endpoint, model_name or "", prompts, concurrency=concurrency,
                                 max_new_tokens=max_new_tokens, api_key=key, console=console)
        gen_time = time.perf_counter() - t0
    else:
        apply_thread_settings(threads)
        model = resolve_model(str(model))
        gens = generate_local(model, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              console=console)
        gen_time = sum_batches(gens, batch_size)
    wall = time.perf_counter() - t0
    texts = [g.text for g in gens]
    scores, groups = grade(pack, items, texts)
    n = len(items)
    exact = sum(s["exact"] for s in scores)
    latencies = [g.latency_s for g in gens]
    tokens = sum(g.tokens for g in gens)
    return EvalReport(
        task=pack.name,
        model=model_name if endpoint else str(model),
        endpoint=endpoint,
        data=str(data),
        n=n,
        exact_match=exact / n,
        exact_match_ci=wilson(exact, n),
        mean_f1=sum(s["f1"] for s in scores) / n,
        parse_failure_rate=sum(not s["format_ok"] for s in scores) / n,
        by_difficulty=_difficulty_rows(pack, groups),
        latency_p50_ms=percentile(latencies, 50) * 1000,
        latency_p95_ms=percentile(latencies, 95) * 1000,
        tokens_per_s=tokens / gen_time if gen_time > 0 else 0.0,
        generated_tokens=tokens,
        wall_s=round(wall, 2),
        batch_size=None if endpoint else batch_size,
        concurrency=concurrency if endpoint else None,
        max_new_tokens=max_new_tokens,
        item_exact=[s["exact"] for s in scores],
        samples=[
            Sample(prompt=p[-1]["content"], output=g.text, gold=pack.format_answer(it.answer),
                   exact=s["exact"], parsed=s["format_ok"])
            for p, g, it, s in list(zip(prompts, gens, items, scores, strict=True))[:N_SAMPLES]
        ],
    )


def constant_answers(pack: TaskPack, items: Sequence[TaskItem]) -> dict[str, str]:
    """Trivial answers: the empty answer, and the most common answer element on these items."""
    answers: dict[str, str] = {}
    if all(isinstance(it.answer, list) for it in items):
        answers["empty answer"] = pack.format_answer([])
        counts = Counter(x for it in items for x in it.answer)
        if counts:
            top, _ = counts.most_common(1)[0]
            answers[f"most common element ({top})"] = pack.format_answer([top])
    else:
        top, _ = Counter(str(it.answer) for it in items).most_common(1)[0]
        answers[f"most common answer ({top})"] = pack.format_answer(top)
    return answers


def baselines(pack: TaskPack, items: Sequence[TaskItem]) -> list[BaselineScore]:
    """Score each constant answer on `items` (a ratio must beat these, not just a weak teacher)."""
    result = []
    for name, text in constant_answers(pack, items).items():
        scores, groups = grade(pack, items, [text] * len(items))
        result.append(BaselineScore(
            name=name,
            answer_text=text,
            exact_match=wilson(sum(s["exact"] for s in scores), len(items)),
            mean_f1=sum(s["f1"] for s in scores) / len(items),
            by_difficulty={k: sum(s["exact"] for s in v) / len(v) for k, v in groups.items()},
        ))
    return result


def report_markdown(report: EvalReport, base: Sequence[BaselineScore] = ()) -> str:
    """The report as Markdown (model cards, run reports)."""
    lines = [report.headline(), "", f"Data: `{report.data}`", "", "| difficulty | n | exact match |", "|---|---|---|"]
    lines += [f"| {r.difficulty} | {r.n} | {r.exact_match.value:.1%} |" for r in report.by_difficulty]
    lines += [""] + [f"- baseline {b.name}: {b.exact_match.value:.1%}" for b in base]
    return "\n".join(lines)


def compare(
    task: str | TaskPack, data: str | Path, student: EvalReport, teacher: EvalReport | None = None,
    *, limit: int | None = None,
) -> Comparison:
    """Student vs teacher vs trivial baselines on the same items (the ones both reports saw)."""
    pack = get_task_pack(task) if isinstance(task, str) else task
    if teacher is not None and teacher.n != student.n:
        raise InputError(f"teacher saw {teacher.n} items, student {student.n}: compare on the same items")
    items = load_items(pack, data, limit or student.n)
    base = baselines(pack, items)
    best = max((b.exact_match.value for b in base), default=0.0)
    return Comparison(
        task=pack.name,
        data=str(data),
        n=student.n,
        student=student,
        teacher=teacher,
        baselines=base,
        student_over_teacher=(student.exact_match / teacher.exact_match)
        if teacher and teacher.exact_match > 0 else None,
        student_over_best_baseline=student.exact_match / best if best > 0 else None,
    )


def natural_beside(data: str | Path) -> Path | None:
    """The natural-mix hold-out a `stratos synth` output keeps next to its test split, if there is one."""
    path = Path(data).with_name(f"{NATURAL_SPLIT}.jsonl")
    return path if path.is_file() and path != Path(data) else None


def evaluate_pair(
    task: str,
    data: str | Path,
    student_model: str | Path,
    teacher: str,
    recipe: Recipe,
    *,
    limit: int | None = None,
    endpoint: str | None = None,
    threads: int | None = None,
    teacher_cache: Path | None = None,
    natural: str | Path | None = None,
) -> Comparison:
    """Student and teacher on the same held-out items, each prompted as its recipe says, plus the trivial
    baselines. `teacher` is a registry id / folder, or `endpoint:NAME` for a model served at `endpoint`
    (default: OPENAI_BASE_URL). With `teacher_cache` (a folder), the teacher's report on these items is
    kept there and reused: a train-on round re-evaluates only the student.

    The natural-mix hold-out (`natural`; default: the `test_natural.jsonl` beside `data`) is scored too, with
    the same `limit`: the student and the baselines only (the teacher is skipped there to keep runs short,
    and the record says so). It lands in `Comparison.natural`."""
    student_pack = recipe.pack(task, "student")
    student = evaluate(student_pack, data, model=str(student_model), limit=limit,
                       max_new_tokens=recipe.student_tokens, threads=threads)
    natural_path = Path(natural) if natural is not None else natural_beside(data)
    natural_result = None
    if natural_path is not None:
        on_natural = evaluate(student_pack, natural_path, model=str(student_model), limit=limit,
                              max_new_tokens=recipe.student_tokens, threads=threads)
        natural_result = compare(student_pack, natural_path, on_natural, limit=limit).model_copy(
            update={"teacher_skipped": NATURAL_TEACHER_SKIPPED})
    key = hashlib.sha256(json.dumps([teacher, str(data), limit, recipe.teacher_tokens,
                                     recipe.teacher_pack]).encode()).hexdigest()[:16]
    cached = teacher_cache / f"teacher-{key}.json" if teacher_cache else None
    if cached is not None and cached.is_file():
        teacher_report = EvalReport.model_validate_json(cached.read_text())
    else:
        teacher_report = _evaluate_teacher(task, data, teacher, recipe, limit=limit, endpoint=endpoint,
                                           threads=threads)
        if cached is not None:
            write_text_atomic(cached, teacher_report.model_dump_json())
    result = compare(student_pack, data, student, teacher_report, limit=limit)
    return result.model_copy(update={"natural": natural_result})


def _evaluate_teacher(
    task: str, data: str | Path, teacher: str, recipe: Recipe, *, limit: int | None, endpoint: str | None,
    threads: int | None,
) -> EvalReport:
    teacher_pack = recipe.pack(task, "teacher")
    if teacher.startswith("endpoint:"):
        return evaluate(teacher_pack, data, endpoint=endpoint or get_settings().openai_base_url,
                        model_name=teacher.removeprefix("endpoint:"), limit=limit,
                        max_new_tokens=recipe.teacher_tokens)
    return evaluate(teacher_pack, data, model=teacher, limit=limit, max_new_tokens=recipe.teacher_tokens,
                    threads=threads)
