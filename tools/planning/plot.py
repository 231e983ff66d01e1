"""The one Pareto-front plot: total cost vs p95 latency, colour = expected accuracy, star = the chosen plan.

`stratos plan` saves it as pareto.png (`save_front_png`); the run report embeds it (`front_png`).
Built on a bare matplotlib Figure (no pyplot state, no backend switch), so it is safe from any thread.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from stratos_agent.records.plans import Plan, PlanPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DECADES = 20  # an axis goes logarithmic when its values span more than this factor
DPI = 120


def _log_if_spanning(values: list[float]) -> tuple[str, dict[str, float]]:
    """Axis scale for `values`: log when they span decades, symlog when they also hold $0 (this
    machine costs nothing), else linear."""
    positive = [v for v in values if v > 0]
    if not positive or max(positive) / min(positive) <= DECADES:
        return "linear", {}
    if len(positive) < len(values):  # zeros: linear up to the smallest non-zero value, log beyond
        return "symlog", {"linthresh": min(positive)}
    return "log", {}


def _x_axis(points: list[PlanPoint]) -> tuple[str, str]:
    """Cost on x, or training hours when every plan costs the same (e.g. only this machine, at $0)."""
    if len({round(p.cost_usd, 6) for p in points}) > 1:
        return "cost_usd", "total cost: training + serving + teacher data ($)"
    return "train_hours", "training hours (every plan costs the same)"


def _label_gpus(ax: Axes, front: list[PlanPoint], x: str) -> None:
    """Name each GPU once, at its cheapest point on the front."""
    for p in {p.gpu: p for p in sorted(front, key=lambda p: -p.cost_usd)}.values():
        ax.annotate(p.gpu, (getattr(p, x), p.p95_ms), fontsize=7, xytext=(3, 3), textcoords="offset points")


def front_figure(plan: Plan) -> Figure:
    """The plan's Pareto front as a matplotlib Figure: cost (or training hours when every plan costs the
    same) vs p95, colour = expected accuracy, red star = the chosen plan, log axes when values span
    decades. A plan restricted to the servers executable from here also shows its `catalog_plan`'s
    front (the whole catalog) in grey behind it."""
    from matplotlib.figure import Figure

    front = list(plan.front)
    wide = list(plan.catalog_plan.front) if plan.catalog_plan else []
    points = front + wide + ([plan.chosen] if plan.chosen else [])
    x, x_label = _x_axis(points)
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    if wide:
        ax.scatter(
            [getattr(p, x) for p in wide],
            [p.p95_ms for p in wide],
            c="lightgrey",
            s=24,
            label="whole catalog (not executable from here)",
        )
    if front:
        pts = ax.scatter(
            [getattr(p, x) for p in front],
            [p.p95_ms for p in front],
            c=[100 * p.accuracy for p in front],
            cmap="viridis",
            s=28,
            edgecolors="k",
            linewidths=0.3,
            label="Pareto front",
        )
        fig.colorbar(pts, ax=ax, label="expected accuracy (%)")
        _label_gpus(ax, front, x)
    if plan.chosen:
        ax.scatter(
            [getattr(plan.chosen, x)],
            [plan.chosen.p95_ms],
            marker="*",
            s=320,
            c="red",
            edgecolors="k",
            label=f"chosen: {plan.chosen.gpu} {plan.chosen.strategy}",
            zorder=5,
        )
    if points:
        ax.legend(loc="best", fontsize=8)
        scale, kwargs = _log_if_spanning([getattr(p, x) for p in points])
        ax.set_xscale(scale, **kwargs)
        scale, kwargs = _log_if_spanning([p.p95_ms for p in points])
        ax.set_yscale(scale, **kwargs)
    ax.set_xlabel(x_label)
    ax.set_ylabel("p95 request latency (ms)")
    ax.set_title(
        f"Stratos plan for {plan.task}: Pareto front ({len(front)} plans, catalog {plan.catalog_date})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def front_png(plan: Plan) -> bytes | None:
    """`front_figure` as PNG bytes; None when there is nothing to draw (no front, no choice, no
    catalog-wide front)."""
    if not plan.front and not plan.chosen and not (plan.catalog_plan and plan.catalog_plan.front):
        return None
    buf = io.BytesIO()
    front_figure(plan).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save_front_png(plan: Plan, path) -> None:
    """Write `front_figure` to `path` as PNG (an empty frame when the plan has no front)."""
    front_figure(plan).savefig(path, format="png", dpi=DPI)
