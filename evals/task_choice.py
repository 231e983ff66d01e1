"""Task choice: the same candidates planned for two tasks (Mahjong, gsm8k) on this machine, and why they differ.

    .venv/bin/python evals/task_choice.py --threads 1
    .venv/bin/python evals/task_choice.py --cases gsm8k --probe-n 32

Each case is a plain request planned as `stratos run` plans it, on this machine only (clouds = local):
measure every candidate student here at its own request shape (tools/survey.survey_servers), probe the
teacher on the task (forward synthesis, cached; tools/pairing.probe_results) and score every pair, then
plan, measure what the chosen point rests on (a pilot for an accuracy without a curve, the vLLM latency
probe for its p95) and plan again (tools/survey.plan_measured). The baseline in the same run is
`stratos plan` as it stands (`planning.plan_for`: the teacher's PRIOR probe accuracy, no pilot, no latency
probe, the spec's default request shape; it does read the calibration store's curves), so the result
shows which measurement moved which choice.

Saved per case: the candidates (and those made for another task), the teacher probe (correct / n, 95%
Wilson interval, unparsable answers) and each pair's alignment-vs-injection decision, the chosen
student, strategy, LoRA rank or full, data size, predicted accuracy / p95 / training time with their
labels (measured, fitted, modelled, prior), the learning curves and latency probes the figures rest on
(pilots included), or the binding constraints when nothing fits. Prints a table; saves
evals/results/task_choice.json.
"""

from __future__ import annotations

import os
import time
from typing import Any

from _common import add_out, add_threads, machine_info, make_parser, save_json

ANSWER_SAMPLE = 400  # sampled items behind the answer-length figures

# The README demo request; the gsm8k request with the demo's traffic (0.1 qps: at the spec default
# of 1 qps this machine cannot carry any student, which would hide every other reason); and gsm8k with the
# targets this machine can meet (a worked solution is ~170 tokens at p95: a 81-135M student on 2 cores
# answers in 10-40 s, and trains on well under one example per second), to see which student it picks.
CASES = {
    "mahjong": "a model that lists Mahjong winning tiles, at least 30% exact match, under $20, p95 under 2 s, "
    "0.1 qps, done in 10 minutes",
    "gsm8k": "distill a model that solves grade-school math word problems (gsm8k), under $20, p95 under 5 s, "
    "0.1 qps, done in 30 minutes",
    "gsm8k-local": "distill a model that solves grade-school math word problems (gsm8k), under $20, p95 under "
    "60 s, 0.1 qps, done in 8 hours",
}


def local_spec(request: str):
    """The request as a spec planned for this machine only (the catalog's clouds are not executable here)."""
    from stratos_agent.request_parser import parse_request

    spec = parse_request(request)
    return spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": ["local"]})})


def point_summary(point) -> dict[str, Any] | None:
    """The chosen plan point as the table and JSON show it (None when nothing fits)."""
    if point is None:
        return None
    return {
        "student": point.student,
        "teacher": point.teacher,
        "strategy": point.strategy,
        "lora": "full" if point.lora_rank == 0 else f"r{point.lora_rank}",
        "data_size": point.data_size,
        "train_examples": point.train_examples,
        "accuracy": round(point.accuracy, 4),
        "accuracy_interval": None if point.accuracy_low is None else [round(point.accuracy_low, 4),
                                                                       round(point.accuracy_high, 4)],
        "accuracy_source": point.accuracy_source,
        "accuracy_note": point.accuracy_note,
        "p95_ms": round(point.p95_ms, 1),
        "p95_source": point.latency_source,
        "train_hours": round(point.train_hours, 4),
        "train_hours_source": point.train_hours_source,
        "cost_usd": round(point.cost_usd, 4),
        "server": point.server,
    }


def plan_summary(plan) -> dict[str, Any]:
    return {
        "feasible": plan.feasible,
        "chosen": point_summary(plan.chosen),
        "binding_constraints": plan.binding_constraints,
        "nearest_feasible": plan.nearest_feasible,
        "excluded": plan.excluded,
        "why": plan.why,
    }


def candidates(spec) -> dict[str, Any]:
    """The students planned for the task, and the ones left out because they were made for another task."""
    from stratos_agent.tools import planning

    from stratos_agent.models import get_registry

    inputs = planning.gather_inputs(spec)
    task = inputs.task
    planned = {s.id for s in inputs.students}
    other = {c.id: c.task for c in get_registry().candidates()
             if c.available and c.id not in planned and getattr(c, "task", None) not in (None, task.name)}
    return {"task": task.name, "difficulty_prior": task.difficulty, "has_solver": task.has_solver,
            "students": sorted(planned), "teachers": [t.id for t in inputs.teachers],
            "made_for_another_task": other}


def teacher_probes(task: str, teachers: list[str], n: int, pairs) -> list[dict[str, Any]]:
    """Each teacher's probe (the cached result score_pairs_here measured), with its Wilson interval and the
    pairing decision it drove for each student."""
    from stratos_agent.tools import pairing
    from stratos_agent.tools.evaluate import wilson
    from stratos_agent.tools.strategy import ALIGN_THRESHOLD

    from stratos_agent.models import get_registry

    profile = pairing.task_profile(task)
    out = []
    for teacher, result in pairing.probe_results(task, teachers, n=n).items():
        ci = wilson(result.correct, result.n)
        out.append({
            "teacher": teacher, "n": result.n, "correct": result.correct, "unparsable": result.unparsable,
            "accuracy": result.accuracy, "wilson95": [round(ci.low, 4), round(ci.high, 4)],
            "prior_it_replaced": round(pairing.prior_probe(get_registry().get(teacher), profile.difficulty), 4),
            # Is the decision the same anywhere in the interval? (an upper bound under the alignment threshold
            # means even a lucky-low sample could not have hidden a competent teacher)
            "upper_bound_below_align_threshold": ci.high < ALIGN_THRESHOLD,
            "decisions": {p.student: {"strategy": p.decision.strategy, "reason": p.decision.reason}
                          for p in pairs.pairs if p.teacher == teacher},
        })
    return out


def answer_tokens(task: str, n: int = ANSWER_SAMPLE) -> dict[str, Any]:
    """How long the solver's answers are in SmolLM2's tokenizer (end token included) against the recipe's cap
    on a student answer: the share of correct answers a student could not finish within it."""
    import numpy as np
    from stratos_agent.tools.request_shape import answer_lengths

    from stratos_agent.tasks.recipes import recipe_for

    lengths = np.array(answer_lengths(task, n))
    cap = recipe_for(task).student_tokens
    return {"n": n, "mean": round(float(lengths.mean()), 1), "p95": float(np.percentile(lengths, 95)),
            "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max()), "recipe_cap": cap,
            "share_over_cap": float((lengths > cap).mean())}


def curves_behind(task: str, point) -> list[dict[str, Any]]:
    """The recorded learning curves of the chosen (task, student, method): pilots and full runs."""
    from stratos_agent.tools import calibration, pilot

    if point is None:
        return []
    method = pilot.pilot_method(point)
    return [{"kind": c.kind, "student": c.student, "method": c.method, "hardware": c.hardware,
             "examples_per_s": round(c.examples_per_s, 3), "run": c.run,
             "points": [[p.examples, round(p.exact, 4), p.n] for p in c.points]}
            for c in calibration.curves(task, point.student, method)]


def run_case(name: str, request: str, probe_n: int) -> dict[str, Any]:
    """Plan one request as `stratos plan` does (baseline) and as `stratos run` does (measured), with what both
    rest on."""
    from stratos_agent.tools import calibration, planning
    from stratos_agent.tools.survey import plan_here, score_pairs_here, survey_servers

    spec = local_spec(request)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    baseline = planning.plan_for(spec)
    timings["baseline_plan_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    survey = survey_servers(spec)
    timings["survey_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    pairs = score_pairs_here(spec, survey, probe_n)
    timings["probe_s"] = time.monotonic() - t0
    before = {(c.run, c.created) for c in calibration.curves(spec.task)}
    t0 = time.monotonic()
    plan = plan_here(spec, survey, pairs)
    timings["measured_plan_s"] = time.monotonic() - t0
    recorded = [f"{c.student}/{c.method} ({c.kind})" for c in calibration.curves(spec.task)
                if (c.run, c.created) not in before]
    return {
        "case": name,
        "request": request,
        "task": spec.task,
        "constraints": spec.constraints.model_dump(mode="json"),
        "candidates": candidates(spec),
        "request_shapes": {k: [v.prompt_tokens, v.output_tokens] for k, v in survey.student_shapes.items()},
        "answer_tokens": answer_tokens(spec.task),
        "measured_here": {m.model: round(m.p95_ms, 1) for m in survey.measured},
        "teacher_probes": teacher_probes(spec.task, list(pairs.probes), probe_n, pairs),
        "baseline_plan": plan_summary(baseline),
        "measured_plan": plan_summary(plan),
        "latency_probes": [{"model": p.model, "p95_ms": round(p.p95_ms, 1), "output_tokens": p.output_tokens,
                            "concurrency": p.concurrency, "load_avg": p.load_avg} for p in plan.latency_probes],
        "curves_behind_choice": curves_behind(spec.task, plan.chosen),
        "curves_recorded_by_this_run": recorded,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def choice_key(plan: dict[str, Any]) -> tuple[str, str] | None:
    chosen = plan["chosen"]
    return None if chosen is None else (chosen["student"], chosen["strategy"])


def moved(case: dict[str, Any]) -> dict[str, bool | None]:
    """What the measurements changed against the baseline plan (None where either plan has no choice)."""
    base, measured = choice_key(case["baseline_plan"]), choice_key(case["measured_plan"])
    if base is None or measured is None:
        return {"student": None, "strategy": None}
    return {"student": base[0] != measured[0], "strategy": base[1] != measured[1]}


def compare(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether the measured choices differ between the cases, in student and in strategy, and what moved
    each case away from its baseline (`stratos plan`) choice."""
    keys = {c["case"]: choice_key(c["measured_plan"]) for c in cases}
    chosen = [k for k in keys.values() if k is not None]
    return {
        "choices": {name: None if k is None else {"student": k[0], "strategy": k[1]} for name, k in keys.items()},
        "students_differ": len({k[0] for k in chosen}) > 1,
        "strategies_differ": len({k[1] for k in chosen}) > 1,
        "all_feasible": len(chosen) == len(keys),
        "moved_by_measurement": {c["case"]: moved(c) for c in cases},
    }


def table(cases: list[dict[str, Any]]) -> str:
    head = ("case", "probe", "decision", "chosen student", "strategy", "lora", "rows", "accuracy", "p95 ms",
            "train h", "stratos plan")
    rows = [head]
    for c in cases:
        probe = c["teacher_probes"][0] if c["teacher_probes"] else None
        decisions = {d["strategy"] for p in c["teacher_probes"] for d in p["decisions"].values()}
        base_choice = c["baseline_plan"]["chosen"]
        chosen = c["measured_plan"]["chosen"]
        base = [c["case"], f"{probe['correct']}/{probe['n']}" if probe else "-", "/".join(sorted(decisions))]
        base_text = f"{base_choice['student']} {base_choice['strategy']}" if base_choice else "infeasible"
        if chosen is None:
            binding = ", ".join(c["measured_plan"]["binding_constraints"]) or "jointly"
            rows.append((*base, f"none: {binding}", "-", "-", "-", "-", "-", "-", base_text))
            continue
        rows.append((*base, chosen["student"], chosen["strategy"], chosen["lora"], str(chosen["data_size"]),
                     f"{chosen['accuracy']:.1%} {chosen['accuracy_source']}",
                     f"{chosen['p95_ms']:,.0f} {chosen['p95_source']}",
                     f"{chosen['train_hours']:.2g} {chosen['train_hours_source']}", base_text))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def main() -> None:
    ap = make_parser(__doc__, full=True)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated cases of {sorted(CASES)}")
    ap.add_argument("--probe-n", type=int, default=16, help="teacher probe items (as `stratos plan --probe`)")
    ap.add_argument("--note", default="", help="free text saved with the result (e.g. how the store was set up)")
    add_threads(ap)
    add_out(ap, "task_choice.json")
    args = ap.parse_args()
    os.environ["STRATOS_THREADS"] = str(args.threads)  # the survey, pilots and probes read it from settings
    import torch
    from stratos_agent.tools import calibration

    from stratos_agent.settings import get_settings

    get_settings.cache_clear()
    torch.set_num_threads(args.threads)
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    t0 = time.monotonic()
    cases = [run_case(name, CASES[name], args.probe_n) for name in names]
    result = {
        "benchmark": "task_choice",
        "command": f"python evals/task_choice.py --cases {','.join(names)} --probe-n {args.probe_n} "
        f"--threads {args.threads}",
        "machine": machine_info(threads=args.threads, note="2 CPU cores shared with other jobs"),
        "switches": {k: os.environ.get(k, "1") for k in ("STRATOS_PILOTS", "STRATOS_LATENCY_PROBE",
                                                          "STRATOS_CALIBRATION_SEEDS")},
        "calibration_store": str(calibration.store_dir()),
        "note": args.note,
        "comparison": compare(cases),
        "cases": cases,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    print(table(cases))
    print(result["comparison"])
    save_json(result, args.out)


if __name__ == "__main__":
    main()
