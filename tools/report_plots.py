"""The run report's plots as PNG bytes (embedded in the HTML as data URIs, saved beside the Markdown)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


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


def _read_curve(path: str | Path | None) -> dict[str, list[tuple[float, float]]]:
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


def loss_png(metrics_csv: str | Path | None) -> bytes | None:
    series = _read_curve(metrics_csv)
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


def accuracy_png(rows: Sequence[Mapping[str, Any]]) -> bytes | None:
    """Teacher vs student exact match per difficulty ({difficulty, student, teacher} rows)."""
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


