"""Run report: one self-contained HTML page (plots embedded as PNG data URIs) plus a Markdown twin.

Input is the run's state as plain JSON (the graph's state values): request and spec, Pareto front and
chosen plan with its reason, pair table, data card, loss curves, student vs teacher accuracy by
difficulty, latency, cost ledger vs budget, endpoint, approvals (and whether `--yes` skipped them).
A tool: it knows nothing of LangGraph and can be called from a notebook on any saved state.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_HTML = "report.html"
REPORT_MD = "report.md"


# ----------------------------------------------------------------------------- plots
def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_png(plan: Mapping[str, Any]) -> bytes | None:
    """Accuracy vs cost (or vs training hours when every plan costs the same, e.g. only this machine),
    coloured by p95; the catalog-wide front in grey when the plan was restricted to executable servers."""
    front = plan.get("front") or []
    wide = (plan.get("catalog_plan") or {}).get("front") or []
    if not front and not wide:
        return None
    points = front + wide
    by_cost = len({round(p.get("cost_usd") or 0, 6) for p in points}) > 1
    key, label = (
        ("cost_usd", "total cost ($, training + serving)")
        if by_cost
        else ("train_hours", "training hours (every plan costs the same)")
    )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if wide:
        ax.scatter(
            [p.get(key, 0) for p in wide],
            [p.get("accuracy", 0) for p in wide],
            c="lightgrey",
            s=30,
            label="whole catalog",
        )
    if front:
        sc = ax.scatter(
            [p.get(key, 0) for p in front],
            [p.get("accuracy", 0) for p in front],
            c=[p.get("p95_ms", 0) for p in front],
            cmap="viridis",
            s=40,
            label="Pareto front",
        )
        fig.colorbar(sc, ax=ax, label="p95 latency (ms)")
    point = plan.get("chosen")
    if point:
        ax.scatter(
            [point.get(key, 0)], [point.get("accuracy", 0)], marker="*", s=260, c="red", label="chosen"
        )
    ax.set_xlabel(label)
    ax.set_ylabel("expected accuracy")
    if max(p.get(key, 0) or 0 for p in points) > 10:
        ax.set_xscale("symlog", linthresh=1.0)  # costs span decades: $0 local to $10k+ clusters
    ax.set_title("Pareto front")
    ax.legend(loc="lower right")
    return _png(fig)


def _read_curve(path: str | None) -> dict[str, list[tuple[float, float]]]:
    """Columns of a metrics CSV (step + any *loss* columns) as (step, value) series."""
    if not path or not Path(path).is_file():
        return {}
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            step = row.get("step") or row.get("global_step")
            if step in (None, ""):
                continue
            for key, value in row.items():
                if key and "loss" in key and value not in (None, ""):
                    try:
                        series.setdefault(key, []).append((float(step), float(value)))
                    except ValueError:
                        continue
    return series


def loss_png(model: Mapping[str, Any]) -> bytes | None:
    series = _read_curve(model.get("metrics_csv"))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss")
    ax.legend()
    return _png(fig)


def accuracy_png(ev: Mapping[str, Any]) -> bytes | None:
    rows = difficulty_rows(ev)
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(rows))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], [r["teacher"] or 0 for r in rows], width, label="teacher")
    ax.bar([x + width / 2 for x in xs], [r["student"] or 0 for r in rows], width, label="student")
    ax.set_xticks(list(xs), [r["difficulty"] for r in rows])
    ax.set_xlabel("difficulty")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1)
    ax.set_title("Teacher vs student by difficulty")
    ax.legend()
    return _png(fig)


def ledger_png(ledger: Sequence[Mapping[str, Any]], budget: float | None) -> bytes | None:
    if not ledger:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    stages = [e.get("stage", "?") for e in ledger]
    est = [e.get("estimated_usd") or 0 for e in ledger]
    act = [e.get("actual_usd") or 0 for e in ledger]
    ys = range(len(stages))
    ax.barh([y - 0.2 for y in ys], est, 0.4, label="estimated")
    ax.barh([y + 0.2 for y in ys], act, 0.4, label="actual")
    ax.set_yticks(list(ys), stages)
    if budget:
        ax.axvline(budget, color="red", linestyle="--", label=f"budget ${budget:g}")
    ax.set_xlabel("$")
    ax.set_title("Cost ledger vs budget")
    ax.legend()
    return _png(fig)


# ----------------------------------------------------------------------------- tables
def difficulty_rows(ev: Mapping[str, Any]) -> list[dict[str, Any]]:
    """[{difficulty, student, teacher, n}] from an eval report's per-difficulty breakdowns."""
    student = ev.get("student_by_difficulty") or ev.get("by_difficulty") or {}
    teacher = ev.get("teacher_by_difficulty") or {}
    keys = sorted(set(student) | set(teacher), key=lambda k: (len(str(k)), str(k)))

    def _acc(value: Any) -> float | None:
        return value.get("exact_match") if isinstance(value, Mapping) else value

    def _n(value: Any) -> Any:
        return value.get("n") if isinstance(value, Mapping) else None

    return [
        {
            "difficulty": str(k),
            "student": _acc(student.get(k)),
            "teacher": _acc(teacher.get(k)),
            "n": _n(student.get(k)),
        }
        for k in keys
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


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
        self.md.append(f"\n## {text}\n")
        self.html.append(f"<h2>{html.escape(text)}</h2>")

    def para(self, text: str) -> None:
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
        (self.out_dir / "report_files").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "report_files" / f"{name}.png").write_bytes(png)
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
    """Write `report.html` (self-contained) and `report.md` into `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = _Doc(out)
    spec = state.get("spec") or {}
    constraints = spec.get("constraints") or {}
    plan = state.get("plan") or {}
    point = plan.get("chosen") or {}
    approvals = state.get("approvals") or {}
    ev = state.get("eval") or {}
    model = state.get("model") or {}
    dataset = state.get("dataset") or {}
    deployment = state.get("deployment") or {}
    ledger = list(state.get("ledger") or [])
    auto = bool(state.get("auto_approve"))

    title = f"Stratos run {state.get('thread_id', '')}"
    doc.para(f"Status: {state.get('status')}. Written {datetime.now(UTC).isoformat(timespec='seconds')}.")
    if auto:
        doc.para(
            "Approvals were AUTO-SKIPPED (--yes / auto_approve): "
            "no human approved the plan or the deployment."
        )

    doc.heading("Request and spec")
    doc.para(f"Request: {state.get('request') or spec.get('request') or '-'}")
    doc.table(
        _kv(
            {
                "task": spec.get("task"),
                "metric": spec.get("metric"),
                "preference": spec.get("preference"),
                **constraints,
                **(spec.get("traffic") or {}),
            }
        )
    )

    doc.heading("Plan")
    if plan:
        doc.para(
            f"Chosen: {point.get('server', '-')} ({point.get('gpu')} x{point.get('gpu_count')}), "
            f"student {point.get('student')} <- teacher {point.get('teacher')}, strategy "
            f"{point.get('strategy')}, LoRA rank {point.get('lora_rank')}, {point.get('data_size')} examples."
        )
        doc.para(f"Why: {plan.get('why', '-')}")
        doc.image("pareto", pareto_png(plan), "Pareto front")
        doc.table(
            [
                {
                    k: p.get(k)
                    for k in (
                        "server",
                        "gpu",
                        "student",
                        "teacher",
                        "strategy",
                        "lora_rank",
                        "data_size",
                        "cost_usd",
                        "p95_ms",
                        "accuracy",
                        "train_hours",
                    )
                }
                for p in (plan.get("front") or [])[:20]
            ]
        )
        wide = plan.get("catalog_plan")
        if wide:
            doc.para(f"Over the whole catalog (not executable from here): {wide.get('why', '-')}")
    else:
        doc.para("No plan was made.")
    servers = state.get("servers") or {}
    if servers:
        doc.heading("Servers")
        doc.para(
            f"Catalog of {len({p.get('server') for p in servers.get('profiles', [])})} servers, dated "
            f"{servers.get('catalog_date')} ({servers.get('catalog_age_days')} days old). "
            f"{servers.get('clouds_note') or ''}. Request shape used for latency: "
            f"{servers.get('traffic') or 'as in the spec'}."
        )
        doc.table(
            [
                {
                    k: m.get(k)
                    for k in (
                        "model",
                        "backend",
                        "prompt_tokens",
                        "output_tokens",
                        "p50_ms",
                        "p95_ms",
                        "ttft_ms",
                    )
                }
                for m in servers.get("measured", [])
            ]
        )
        doc.table(
            [
                {k: p.get(k) for k in ("server", "student", "fits", "p95_ms", "source", "serving_usd")}
                for p in sorted(servers.get("profiles", []), key=lambda p: p.get("p95_ms") or 0)[:15]
            ]
        )
    doc.heading("Teacher x student pairs")
    pairs = (state.get("pairs") or {}).get("pairs") or plan.get("pairs") or []
    doc.table(
        [
            {
                "teacher": p.get("teacher"),
                "student": p.get("student"),
                "probe_accuracy": p.get("probe_accuracy"),
                "probe": p.get("probe_source"),
                "tokenizer_match": p.get("tokenizer_match"),
                "strategy": (p.get("decision") or {}).get("strategy"),
                "expected_accuracy": p.get("expected_accuracy"),
                "score": p.get("score"),
            }
            for p in pairs
        ]
    )

    doc.heading("Approvals")
    doc.table(
        [
            {
                "gate": gate,
                "decision": a.get("decision"),
                "auto_skipped": a.get("auto"),
                "at": a.get("at"),
                "note": a.get("note"),
            }
            for gate, a in approvals.items()
        ]
    )

    doc.heading("Data card")
    card = dataset.get("card") or {}
    doc.table(
        _kv(
            {
                k: card.get(k)
                for k in (
                    "task",
                    "mode",
                    "seed",
                    "teacher",
                    "n_requested",
                    "n_accepted",
                    "attempted",
                    "rejections",
                    "split_counts",
                    "fingerprint",
                )
            }
        )
        if card
        else []
    )
    doc.heading("Training")
    config = model.get("config") or {}
    if model:
        doc.para(
            f"Trained {model.get('global_step')} steps ({model.get('method_detail')}) in "
            f"{model.get('train_seconds')} s; step limit {config.get('max_steps')}, time limit "
            f"{config.get('time_limit_s')} s on this machine (the plan's estimate for its full data: "
            f"{point.get('train_hours', 0) or 0:.3g} h on {point.get('gpu', '-')}). Peak RSS "
            f"{(model.get('peak_rss_bytes') or 0) / 2**30:.2f} GiB."
        )
    doc.table(_kv({k: v for k, v in model.items() if not isinstance(v, (dict, list))}) if model else [])
    doc.image("loss", loss_png(model), "Loss curve")

    doc.heading("Evaluation: teacher vs student")
    doc.table(
        _kv(
            {
                k: ev.get(k)
                for k in (
                    "n",
                    "student_accuracy",
                    "teacher_accuracy",
                    "student_ci95",
                    "baselines",
                    "student_parse_failure_rate",
                )
            }
        )
        if ev
        else []
    )
    doc.image("accuracy", accuracy_png(ev), "Accuracy by difficulty")
    doc.table(difficulty_rows(ev))
    doc.heading("Latency")
    doc.table(
        _kv(
            {
                k: ev.get(k)
                for k in (
                    "student_p50_ms",
                    "student_p95_ms",
                    "student_tokens_per_s",
                    "teacher_p50_ms",
                    "teacher_p95_ms",
                )
            }
            | {
                "target_p95_ms": constraints.get("p95_latency_ms"),
                "plan_p95_ms": point.get("p95_ms"),
                "smoke_latency_ms": deployment.get("smoke_latency_ms"),
            }
        )
    )

    doc.heading("Cost ledger vs budget")
    budget = constraints.get("budget_usd")
    spent = sum(e.get("actual_usd") or 0 for e in ledger)
    doc.para(
        f"Spent ${spent:.4f} of {f'${budget:g}' if budget else 'no'} budget; plan total estimate "
        f"${point.get('cost_usd', 0) or 0:.2f} (training + serving for the stated traffic)."
    )
    doc.table(ledger, ["stage", "server", "usd_per_hour", "estimated_usd", "actual_usd", "wall_s"])
    doc.image("ledger", ledger_png(ledger, budget), "Cost ledger")

    doc.heading("Endpoint")
    if deployment:
        doc.table(
            _kv(
                {
                    k: deployment.get(k)
                    for k in ("base_url", "model", "engine", "pid", "smoke_ok", "smoke_answer", "log_path")
                }
            )
        )
        doc.para(
            f"Try it: curl {deployment.get('base_url')}/chat/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{deployment.get("model")}", "messages": [{{"role": "user", '
            f'"content": "..."}}]}}\''
        )
    else:
        doc.para("Not deployed.")
    doc.heading("Events (guard refusals, retries, planner fallbacks, edits)")
    doc.table(
        [
            {
                "kind": e.get("kind"),
                "at": e.get("at"),
                "detail": {k: v for k, v in e.items() if k not in ("kind", "at")},
            }
            for e in state.get("events") or []
        ]
    )

    md_text = f"# {title}\n" + "\n".join(doc.md)
    html_text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(doc.html)
        + "</body></html>"
    )
    paths = {"html": out / REPORT_HTML, "markdown": out / REPORT_MD}
    for key, text in (("html", html_text), ("markdown", md_text)):
        tmp = paths[key].with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    return {k: str(v) for k, v in paths.items()}
