"""Reverse synthesis: verified training data from answers that are correct by construction.

Three modes share one loop (draw a chunk of items with known answers, write a completion for each,
verify it, keep the verified ones):
- `solver`:  the task pack writes the rationale from its own decomposition (the injected knowledge;
             fast, always correct -- and still verified, so a pack bug cannot slip through);
- `teacher`: the teacher sees the question AND the correct answer and writes the reasoning; the answer
             parsed from its text must equal the known answer, else the row is rejected with a reason;
- `forward`: the teacher answers cold; only verified answers are kept. Its yield is the teacher's
             probe accuracy (`probe_teacher`), which the pairing tool uses.

A remote teacher's failures are per item: a prompt whose retries were spent is rejected as a teacher
error and the run goes on (the client's circuit breaker stops it when the endpoint is down). A teacher
whose measured yield cannot reach `n` rows within the attempt budget (95% Wilson upper bound below the
rate still needed) stops the run early with `LowYield`, naming the yield, instead of spending the budget.

Determinism and resume: chunk k draws `pack.sample(size, seed=hash(seed, k), distribution)`, so a
chunk is the same on every run; committed chunks are replayed from `partial.jsonl` and teacher calls
come from the content-addressed cache, so a killed run continues without paying twice.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratos_agent.prompts import load_prompt
from stratos_agent.tools.evaluate import wilson
from stratos_agent.tools.synth_mix import MIN_DRAWS_TO_CLOSE, Quota, chunk_seed, dataset_row, natural_holdout
from stratos_agent.tools.synth_store import (
    DEFAULT_SPLIT_FRACTIONS,
    PartialLog,
    check_config,
    finalize,
    split_of,
)
from stratos_agent.tools.teachers import CachedTeacher, EndpointError, Teacher, make_teacher

from stratos_agent.errors import InputError, StratosError
from stratos_agent.records.data import DatasetRef, ProbeResult, SynthMode
from stratos_agent.tasks import TaskItem, TaskPack, get_task_pack
from stratos_agent.tasks.base import EVEN

MODES: tuple[SynthMode, ...] = ("solver", "teacher", "forward")
REVERSE_PROMPT = "synth_reverse"  # prompts/synth_reverse.txt: question + known answer -> reasoning
REJECT_UNPARSABLE = "unparsable answer"
REJECT_WRONG = "wrong answer"
REJECT_DUPLICATE = "duplicate"
REJECT_QUOTA = "difficulty bucket full"  # in the draw's split
REJECT_SURPLUS = "surplus (target reached)"
REJECT_TEACHER_ERROR = "teacher error"  # the teacher gave up on the item (its retries were spent)
MIN_YIELD_SAMPLE = 32  # judged answers before a low yield may stop a run (a tiny attempt budget is cheap anyway)


class LowYield(StratosError):
    """The teacher's verified yield is too low to make the data within the attempt budget."""

    tool_error_kind = "low_yield"  # the planner switches the data mode instead of retrying


@dataclass
class SynthProgress:
    """Handed to the `progress` callback after every committed chunk."""

    attempted: int
    accepted: int
    rejected: int
    target: int
    elapsed_s: float


Distribution = Mapping[Hashable, float] | str | None


TEACHER_MODE_MIN_PROBE = 0.5  # an endpoint teacher that answers at least half its probe writes rationales


def choose_mode(strategy: str, teacher: str, probe_accuracy: float | None) -> SynthMode:
    """How a plan's data is made: the task's solver writes it for knowledge injection; otherwise the plan's
    teacher does, as verified rationales for known answers ('teacher', reverse synthesis) when it is an
    endpoint that passed its probe, else as verified forward answers ('forward')."""
    if strategy == "injection":
        return "solver"
    passes = probe_accuracy is not None and probe_accuracy >= TEACHER_MODE_MIN_PROBE
    return "teacher" if teacher.startswith("endpoint:") and passes else "forward"


def _format_print(pack: TaskPack, mode: SynthMode, style: str | None) -> str:
    """Hash of how one fixed item is rendered (prompt, and rationale in solver mode): a resumed run
    whose pack options or code changed the format is refused instead of mixing two formats."""
    item = pack.sample(1, seed=0)[0]
    text = pack.render_prompt(item) + ("\n" + pack.solver_rationale(item, style) if mode == "solver" else "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _resolve_pack(task: str | TaskPack) -> TaskPack:
    return get_task_pack(task) if isinstance(task, str) else task


def _cached(teacher: Teacher | None) -> CachedTeacher:
    if teacher is None:
        return make_teacher()
    return teacher if isinstance(teacher, CachedTeacher) else CachedTeacher(teacher)


def reverse_messages(pack: TaskPack, item: TaskItem) -> list[dict[str, str]]:
    """The teacher-mode request: the student's question plus the known final answer line."""
    text = load_prompt(REVERSE_PROMPT).format(
        question=pack.render_prompt(item), answer_line=pack.format_answer(item.answer)
    )
    return [{"role": "user", "content": text}]


def _completions(
    mode: SynthMode, pack: TaskPack, items: list[TaskItem], teacher: CachedTeacher | None,
    style: str | None, max_new_tokens: int, temperature: float, seed: int,
) -> list[str | None]:
    """One completion per item; None where the teacher gave up on an item."""
    if mode == "solver":
        return [pack.solver_rationale(item, style) for item in items]
    assert teacher is not None
    prompts = [reverse_messages(pack, it) if mode == "teacher" else pack.chat_messages(it) for it in items]
    return teacher.generate_each(prompts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)


def low_yield(accepted: int, judged: int, rows_needed: int, attempts_left: int) -> str | None:
    """Why the teacher cannot make `rows_needed` more rows in `attempts_left` draws (None if it still can):
    even the 95% Wilson upper bound of its measured yield (`accepted` of `judged` answers verified) is
    below the rate the rest of the run needs."""
    if rows_needed <= 0 or judged < MIN_YIELD_SAMPLE:
        return None
    need = rows_needed / max(1, attempts_left)
    ci = wilson(accepted, judged)
    if ci.high >= need:
        return None
    return (f"teacher yield {accepted}/{judged} verified ({ci.value:.1%}, 95% upper bound {ci.high:.1%}) is below "
            f"the {need:.1%} needed for {rows_needed} more rows within {attempts_left} attempts")


def _check(pack: TaskPack, item: TaskItem, completion: str) -> str | None:
    """None if the completion's final answer verifies, else the rejection reason."""
    answer = pack.parse_answer(completion)
    if answer is None:
        return REJECT_UNPARSABLE
    return None if pack.verify(item, answer) else REJECT_WRONG


def synthesize(
    task: str | TaskPack,
    n: int,
    out_dir: str | Path,
    *,
    mode: SynthMode = "solver",
    seed: int = 0,
    teacher: Teacher | None = None,
    distribution: Distribution = None,
    curriculum: bool = False,
    style: str | None = None,
    chunk_size: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    max_attempts: int | None = None,
    split_fractions: Mapping[str, float] | None = None,
    progress: Callable[[SynthProgress], None] | None = None,
) -> DatasetRef:
    """Make `n` verified, deduplicated examples of `task` in `out_dir` and return the dataset.

    `distribution` ("even" or bucket -> weight) fixes the difficulty mix of the accepted rows, in every split;
    an even test split is ordered round-robin over the buckets (every prefix is even), and a pack with
    difficulty buckets gets a natural-mix hold-out too (`natural_holdout`). `curriculum` orders each
    split easy -> hard (an even test split stays interleaved); `style` picks the pack's solver-rationale style
    (solver mode). Teacher modes default to the bundled SmolLM2 teacher, cached on disk.
    Stops after `max_attempts` candidates (default 20 n + 1000) even if fewer than `n` verified;
    the data card then says so. Rerunning with the same arguments resumes; with others it refuses.
    """
    if mode not in MODES:
        raise InputError(f"unknown synth mode {mode!r}; choose from {', '.join(MODES)}")
    if n <= 0:
        raise InputError(f"--n must be positive, got {n}")
    if style is not None and mode != "solver":
        raise InputError("--style picks the task's solver rationale; it applies to --mode solver only")
    pack = _resolve_pack(task)
    if mode == "solver":
        style = style or pack.rationale_styles[0]  # resolved, so the config names what was used
    fractions = dict(split_fractions or DEFAULT_SPLIT_FRACTIONS)
    if set(fractions) != set(DEFAULT_SPLIT_FRACTIONS) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise InputError(f"split fractions must give train, val, test summing to 1; got {fractions}")
    llm = _cached(teacher) if mode != "solver" else None
    size = chunk_size or (500 if mode == "solver" else 16)
    budget = max_attempts or 20 * n + 1000
    out = Path(out_dir)
    check_config(out, {
        "task": pack.name, "mode": mode, "seed": seed, "teacher": llm.identity if llm else None,
        "distribution": distribution if isinstance(distribution, str) or distribution is None
        else {str(k): v for k, v in distribution.items()},
        "style": style, "chunk_size": size, "max_new_tokens": max_new_tokens if llm else None,
        "temperature": temperature if llm else None, "split_fractions": fractions,
        "format": _format_print(pack, mode, style),
    })
    log = PartialLog(out)
    state = log.load()
    label = {str(b): b for b in pack.difficulty_buckets}
    rows = state.rows[:n]
    seen = {r["key"] for r in rows}
    counts = Counter((label.get(r["difficulty"], r["difficulty"]), split_of(r["key"], fractions)) for r in rows)
    closed = {label[b] for b in state.closed}
    quota = Quota(pack, n, distribution, fractions, counts, closed) if distribution is not None else None
    attempted, rejections, elapsed = state.attempted, state.rejections, state.elapsed_s
    chunk, started, exhausted = state.next_chunk, False, False

    while len(rows) < n and attempted < budget and not exhausted and (quota is None or quota.missing()):
        judged = len(rows) + rejections[REJECT_UNPARSABLE] + rejections[REJECT_WRONG]
        if llm is not None and (why := low_yield(len(rows), judged, n - len(rows), budget - attempted)):
            raise LowYield(f"{mode} synthesis stopped early: {why}; {len(rows)} rows kept in {out} (a rerun "
                           "resumes). Change the strategy: --mode teacher (the teacher is shown the answer), "
                           "--mode solver (the task's own rationale) or another teacher.")
        t0 = time.perf_counter()
        if not started:
            log.start_session()
            started = True
        room = quota.missing() if quota else None
        items = pack.sample(min(size, budget - attempted), seed=chunk_seed(seed, chunk),
                            distribution=quota.draw_mix() if quota else None)
        rejected: Counter = Counter()
        drawn: Counter = Counter()
        queued: Counter = Counter()  # cells of the items in `todo`
        todo: list[tuple[TaskItem, str, Hashable]] = []
        todo_keys: set[str] = set()
        for item in items:  # cheap filters first: no teacher call for a duplicate or a full cell
            key, bucket = pack.canonical_key(item), pack.difficulty_bucket(item)
            cell = (bucket, split_of(key, fractions))
            drawn[bucket] += 1
            if key in seen or key in todo_keys:
                rejected[REJECT_DUPLICATE] += 1
            elif room is not None and queued[cell] >= room.get(cell, 0):
                rejected[REJECT_QUOTA] += 1
            else:
                todo.append((item, key, bucket))
                todo_keys.add(key)
                queued[cell] += 1
        completions = _completions(mode, pack, [t[0] for t in todo], llm, style, max_new_tokens, temperature, seed)
        fresh: list[dict[str, Any]] = []
        for (item, key, bucket), completion in zip(todo, completions, strict=True):
            if completion is None:
                rejected[REJECT_TEACHER_ERROR] += 1
            elif len(rows) + len(fresh) >= n:
                rejected[REJECT_SURPLUS] += 1
            elif reason := _check(pack, item, completion):
                rejected[reason] += 1
            else:
                fresh.append(dataset_row(pack, item, key, bucket, completion))
                seen.add(key)
                counts[(bucket, split_of(key, fractions))] += 1
        if quota:
            quota.close_exhausted(drawn, Counter(b for _, _, b in todo))
        else:  # a finite task (a user's JSONL) runs dry: stop instead of drawing duplicates forever
            exhausted = len(items) >= MIN_DRAWS_TO_CLOSE and rejected[REJECT_DUPLICATE] == len(items)
        dt = time.perf_counter() - t0
        log.commit_chunk(chunk, fresh, len(items), rejected, dt, sorted(map(str, closed)))
        rows += fresh
        attempted += len(items)
        rejections.update(rejected)
        elapsed += dt
        chunk += 1
        if progress:
            progress(SynthProgress(attempted, len(rows), attempted - len(rows), n, elapsed))

    notes = [f"difficulty bucket {b} ran out of distinct items at {quota.bucket_count(b)} rows; its share went to "
             "the others" for b in sorted(closed, key=str)] if quota else []
    bad_lines = getattr(pack, "bad_lines", [])  # a user JSONL read with on_bad_line="skip"
    if bad_lines:
        notes.append(f"skipped {len(bad_lines)} malformed input line(s); first: {bad_lines[0]}")
    if exhausted:
        notes.append(f"the task ran out of distinct items after {len(seen)}")
    if rejections[REJECT_TEACHER_ERROR]:
        notes.append(f"the teacher gave up on {rejections[REJECT_TEACHER_ERROR]} item(s) after its retries")
    if len(rows) < n:
        notes.append(f"stopped at {len(rows)} of {n} rows after {attempted} attempts (budget {budget})")
    card_fields = {
        "task": pack.name, "mode": mode, "seed": seed, "teacher": llm.identity if llm else None,
        "style": style, "n_requested": n, "n_accepted": len(rows), "attempted": attempted,
        "rejections": dict(rejections), "sessions": state.sessions + started, "elapsed_s": round(elapsed, 3),
        "difficulty_target": None if quota is None else {str(b): w for b, w in quota.weights.items()},
        "notes": notes,
    }
    natural: list[dict[str, Any]] = []
    if pack.difficulty_buckets and distribution is not None:  # else the test split is the natural mix already
        test_rows = sum(split_of(r["key"], fractions) == "test" for r in rows)
        natural = natural_holdout(pack, {r["key"] for r in rows}, test_rows, seed, fractions)
    return finalize(out, pack, rows, card_fields, fractions, seed, curriculum,
                    even_test=distribution == EVEN and bool(pack.difficulty_buckets), natural=natural)


def probe_teacher(
    pack: str | TaskPack, teacher: Teacher | None, n: int = 32, seed: int = 0, *,
    max_new_tokens: int = 256, temperature: float = 0.0,
) -> ProbeResult:
    """The teacher's cold accuracy on `n` fresh items (= forward-synthesis yield), over the items it
    answered (one the teacher gave up on says nothing about its accuracy). Cached: probing the same
    teacher on the same items again costs nothing."""
    if n <= 0:
        raise InputError(f"a probe needs at least one item, got n={n}")
    task_pack = _resolve_pack(pack)
    llm = _cached(teacher)
    t0 = time.perf_counter()
    items = task_pack.sample(n, seed=chunk_seed(seed, -1))
    texts = _completions("forward", task_pack, items, llm, None, max_new_tokens, temperature, seed)
    reasons = [_check(task_pack, item, text) for item, text in zip(items, texts, strict=True) if text is not None]
    if not reasons:
        raise EndpointError(f"teacher {llm.identity} answered none of the {n} probe items", transient=False)
    correct = reasons.count(None)
    return ProbeResult(
        task=task_pack.name, teacher=llm.identity, n=len(reasons), seed=seed, correct=correct,
        unparsable=reasons.count(REJECT_UNPARSABLE), accuracy=correct / len(reasons),
        elapsed_s=round(time.perf_counter() - t0, 3),
    )


__all__ = ["EVEN", "MODES", "LowYield", "SynthProgress", "low_yield", "probe_teacher",
           "reverse_messages", "synthesize"]
