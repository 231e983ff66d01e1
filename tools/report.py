"""Run report: one self-contained HTML page (plots embedded as PNG data URIs) plus a Markdown twin.

Input is the run's records by slot name (the graph's state values): request and spec, Pareto front and
chosen plan with its reason, pair table, data card, loss curves, student vs teacher accuracy by
difficulty, latency, cost ledger vs budget, endpoint, approvals (and whether `--yes` skipped them).
A tool: it knows nothing of LangGraph and can be called from a notebook on any saved state.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratos_agent.tools.outcome import baselines_text, fmt_pct, outcome_lines, teacher_text
from stratos_agent.tools.planning import front_png
from stratos_agent.tools.report_plots import accuracy_png, ledger_png, loss_png

from stratos_agent.files import open_atomic, write_text_atomic
from stratos_agent.records.data import DatasetRef
from stratos_agent.records.deployment import Deployment
from stratos_agent.records.evaluation import Comparison
from stratos_agent.records.plans import PairTable, Plan, PlanPoint
from stratos_agent.records.servers import ServerProfile, ServerSurvey
from stratos_agent.records.training import StudentModel
from stratos_agent.redact import redact_text
from stratos_agent.spec import DistillationSpec

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FRONT_COLUMNS = ("server", "gpu", "student", "teacher", "strategy", "lora_rank", "data_size", "cost_usd", "p95_ms",
                 "accuracy", "train_hours")
MEASURED_COLUMNS = ("model", "backend", "prompt_tokens", "output_tokens", "p50_ms", "p95_ms", "ttft_ms")
CARD_FIELDS = ("task", "mode", "seed", "teacher", "n_requested", "n_accepted", "attempted", "rejections",
               "split_counts", "fingerprint")


# ----------------------------------------------------------------------------- tables
def difficulty_rows(result: Comparison | None) -> list[dict[str, Any]]:
    """[{difficulty, student, teacher, n, student_natural, n_natural}] from an evaluation's per-difficulty
    breakdowns (the natural-mix columns empty without a natural-mix hold-out)."""
    if result is None:
        return []
    student = {r.difficulty: r for r in result.student.by_difficulty}
    teacher = {r.difficulty: r for r in result.teacher.by_difficulty} if result.teacher else {}
    natural = {r.difficulty: r for r in result.natural.student.by_difficulty} if result.natural else {}
    keys = sorted(set(student) | set(teacher) | set(natural), key=lambda k: (len(k), k))
    return [
        {
            "difficulty": k,
            "student": student[k].exact_match.value if k in student else None,
            "teacher": teacher[k].exact_match.value if k in teacher else None,
            "n": student[k].n if k in student else None,
            "student_natural": natural[k].exact_match.value if k in natural else None,
            "n_natural": natural[k].n if k in natural else None,
        }
        for k in keys
    ]


def holdout_rows(result: Comparison | None) -> list[dict[str, Any]]:
    """One row per hold-out (the even mix; the natural mix when evaluated), each with its own baselines."""
    if result is None:
        return []
    held = [("natural mix", result.natural)] if result.natural else []
    return [
        {"hold_out": name, "n": r.n, "student": fmt_pct(r.student.exact_match),
         "ci95": f"{fmt_pct(r.student.exact_match_ci.low)}-{fmt_pct(r.student.exact_match_ci.high)}",
         "teacher": teacher_text(r), "baselines": baselines_text(r)}
        for name, r in [("even mix" if result.natural else "test", result), *held]
    ]


def _fmt(value: Any) -> str:
    """A table cell, credentials redacted (events and errors quote endpoint URLs)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return redact_text(json.dumps(value, default=str))
    return redact_text(str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> tuple[str, str]:
    """(markdown, html) tables of the rows."""
    if not rows:
        return "_none_\n", "<p><em>none</em></p>"
    columns = list(columns or rows[0].keys())
    md = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    md += "".join("| " + " | ".join(_fmt(r.get(c)).replace("|", "/") for c in columns) + " |\n" for r in rows)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return md, f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(mapping: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"field": k, "value": v} for k, v in mapping.items()]


# ----------------------------------------------------------------------------- the page
class _Doc:
    """Builds the Markdown and HTML side by side, section by section."""

    def __init__(self, out_dir: Path):
        self.md: list[str] = []
        self.html: list[str] = []
        self.out_dir = out_dir

    def heading(self, text: str) -> None:
        text = redact_text(text)
        self.md.append(f"\n## {text}\n")
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str) -> None:
        text = redact_text(text)
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        md, tag = _table(rows, columns)
        self.md.append(md)
        self.html.append(tag)

    def image(self, name: str, png: bytes | None, alt: str) -> None:
        if png is None:
            self.para(f"({alt}: no data)")
            return
        with open_atomic(self.out_dir / "report_files" / f"{name}.png", "wb") as fh:
            fh.write(png)
        self.md.append(f"![{alt}](report_files/{name}.png)\n")
        data = base64.b64encode(png).decode()
        self.html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:left}th{background:#f3f3f3}img{max-width:100%}"
    ".status{font-weight:bold}"
)


def write_report(state: Mapping[str, Any], out_dir: str | Path) -> dict[str, str]:
    """Write `report.html` (self-contained) and `report.md` into `out_dir`; return both paths.

    `state` maps slot names to the run's records (the agent's state values; a notebook can build one)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = _Doc(out)
    spec: DistillationSpec | None = state.get("spec")
    plan: Plan | None = state.get("plan")
    point: PlanPoint | None = plan.chosen if plan else None
    survey: ServerSurvey | None = state.get("servers")
    pair_table: PairTable | None = state.get("pairs")
    dataset: DatasetRef | None = state.get("dataset")
    model: StudentModel | None = state.get("model")
    result: Comparison | None = state.get("eval")
    deployment: Deployment | None = state.get("deployment")
    ledger = list(state.get("ledger") or [])
    budget = spec.constraints.budget_usd if spec else None

    title = f"Stratos run {state.get('thread_id', '')}"
    doc.para(f"Status: {state.get('status')}. Written {datetime.now(UTC).isoformat(timespec='seconds')}.")
    if state.get("auto_approve"):
        doc.para(
            "Approvals were AUTO-SKIPPED (--yes / auto_approve): "
            "no human approved the plan or the deployment."
        )

    doc.heading("Outcome")
    for line in outcome_lines(state):
        doc.para(line)

    doc.heading("Request and spec")
    doc.para(f"Request: {state.get('request') or (spec.request if spec else None) or '-'}")
    if spec:
        doc.table(_kv({"task": spec.task, "metric": spec.metric, "preference": spec.preference,
                       **spec.constraints.model_dump(), **spec.traffic.model_dump()}))

    doc.heading("Plan")
    if plan:
        doc.para(f"Chosen: {point.label() if point else 'none'}.")
        doc.para(f"Why: {plan.why}")
        doc.image("pareto", front_png(plan), "Pareto front")
        doc.table([p.model_dump(include=set(FRONT_COLUMNS)) for p in plan.front[:20]], FRONT_COLUMNS)
        if plan.catalog_plan:
            doc.para(f"Over the whole catalog (not executable from here): {plan.catalog_plan.why}")
    else:
        doc.para("No plan was made.")
    if survey:
        doc.heading("Servers")
        shape = survey.shape.model_dump() if survey.shape else "as in the spec"
        doc.para(
            f"Catalog of {len({p.server for p in survey.profiles})} servers, dated {survey.catalog_date} "
            f"({survey.catalog_age_days} days old). {survey.clouds_note}. Request shape used for latency: "
            f"{shape}."
        )
        doc.table([m.model_dump(include=set(MEASURED_COLUMNS)) for m in survey.measured], MEASURED_COLUMNS)
        by_p95 = sorted(survey.profiles, key=lambda p: p.p95_ms.value if p.p95_ms else 0.0)[:15]
        doc.table([_profile_row(p) for p in by_p95])
    doc.heading("Teacher x student pairs")
    pairs = pair_table.pairs if pair_table else (plan.pairs if plan else [])
    doc.table([{"teacher": p.teacher, "student": p.student, "probe_accuracy": p.probe_accuracy,
                "probe": p.probe_source, "tokenizer_match": p.tokenizer_match, "strategy": p.decision.strategy,
                "expected_accuracy": p.expected_accuracy, "score": p.score} for p in pairs])

    doc.heading("Approvals")
    doc.table([{"gate": gate, "decision": a.get("decision"), "auto_skipped": a.get("auto"), "at": a.get("at"),
                "note": a.get("note")} for gate, a in (state.get("approvals") or {}).items()])

    doc.heading("Data card")
    doc.table(_kv(dataset.card.model_dump(mode="json", include=set(CARD_FIELDS))) if dataset else [])
    doc.heading("Training")
    if model:
        config = model.config
        doc.para(
            f"Trained {model.global_step} steps ({model.method_detail}) in {model.train_seconds} s; step "
            f"limit {config.max_steps}, time limit {config.time_limit_s} s on this machine (the plan's "
            f"estimate for its full data: {point.train_hours if point else 0:.3g} h on "
            f"{point.gpu if point else '-'}). Peak RSS {model.peak_rss_bytes / 2**30:.2f} GiB."
        )
        scalars = model.model_dump(mode="json", exclude={"config", "memory_estimate"})
        doc.table(_kv({k: v for k, v in scalars.items() if not isinstance(v, (dict, list))}))
    else:
        doc.table([])
    doc.image("loss", loss_png(model.metrics_csv if model else None), "Loss curve")

    doc.heading("Evaluation: teacher vs student")
    if result:
        doc.table(holdout_rows(result))
        student = result.student
        doc.table(_kv({
            "n": result.n, "student_accuracy": student.exact_match,
            "teacher_accuracy": result.teacher.exact_match if result.teacher else None,
            "student_ci95": [student.exact_match_ci.low, student.exact_match_ci.high],
            "baselines": {b.name: b.exact_match.value for b in result.baselines},
            "student_parse_failure_rate": student.parse_failure_rate,
        }))
    else:
        doc.table([])
    rows = difficulty_rows(result)
    doc.image("accuracy", accuracy_png(rows), "Accuracy by difficulty")
    doc.table(rows)
    doc.heading("Latency")
    smoke = deployment.smoke if deployment else None
    teacher_report = result.teacher if result else None
    doc.table(_kv({
        "student_p50_ms": result.student.latency_p50_ms if result else None,
        "student_p95_ms": result.student.latency_p95_ms if result else None,
        "student_tokens_per_s": result.student.tokens_per_s if result else None,
        "teacher_p50_ms": teacher_report.latency_p50_ms if teacher_report else None,
        "teacher_p95_ms": teacher_report.latency_p95_ms if teacher_report else None,
        "target_p95_ms": spec.constraints.p95_latency_ms if spec else None,
        "plan_p95_ms": point.p95_ms if point else None,
        "smoke_latency_ms": round(smoke.latency_s * 1000, 1) if smoke and smoke.latency_s else None,
    }))

    doc.heading("Cost ledger vs budget")
    spent = sum(e.get("actual_usd") or 0 for e in ledger)
    doc.para(
        f"Spent ${spent:.4f} of {f'${budget:g}' if budget else 'no'} budget; plan total estimate "
        f"${point.cost_usd if point else 0:.2f} (training + serving for the stated traffic)."
    )
    doc.table(ledger, ["stage", "server", "usd_per_hour", "estimated_usd", "actual_usd", "wall_s"])
    doc.image("ledger", ledger_png(ledger, budget), "Cost ledger")

    doc.heading("Endpoint")
    if deployment:
        doc.table(_kv({"base_url": deployment.base_url, "model": deployment.model, "engine": deployment.engine,
                       "pid": deployment.pid, "smoke_ok": smoke.ok if smoke else None,
                       "smoke_answer": smoke.response[:200] if smoke else None, "log_path": deployment.log_path}))
        doc.para(
            f"Try it: curl {deployment.base_url}/chat/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{deployment.model}", "messages": [{{"role": "user", '
            f'"content": "..."}}]}}\''
        )
    else:
        doc.para("Not deployed.")
    doc.heading("Events (guard refusals, retries, planner fallbacks, edits)")
    doc.table([{"kind": e.get("kind"), "at": e.get("at"),
                "detail": {k: v for k, v in e.items() if k not in ("kind", "at")}}
               for e in state.get("events") or []])

    md_text = f"# {title}\n" + "\n".join(doc.md)
    html_text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(doc.html)
        + "</body></html>"
    )
    paths = {"html": out / REPORT_HTML, "markdown": out / REPORT_MD}
    for key, text in (("html", html_text), ("markdown", md_text)):
        write_text_atomic(paths[key], text)
    return {k: str(v) for k, v in paths.items()}


def _profile_row(profile: ServerProfile) -> dict[str, Any]:
    return {"server": profile.server, "student": profile.model, "fits": profile.fits,
            "p95_ms": profile.p95_ms.value if profile.p95_ms else None,
            "source": profile.p95_ms.source if profile.p95_ms else None, "serving_usd": profile.serving_usd}
