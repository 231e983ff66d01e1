"""Trainer callbacks every Stratos run gets: rich progress, metrics CSV + loss PNG, time limit, peak RSS."""

from __future__ import annotations

import csv
import math
import resource
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

# Columns that come first in metrics.csv; any other logged number follows in order of appearance.
BASE_COLUMNS = ("step", "epoch", "time_s", "tokens_seen", "tokens_per_s", "rss_mib", "loss")
# Curves drawn in loss.png when present (KD runs show both terms so their scales can be compared).
PLOTTED = ("loss", "kd_loss", "ce_loss", "reward", "eval_loss")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ProgressCallback(TrainerCallback):
    """One rich bar: step n/N, loss, tokens/s, ETA."""

    def __init__(self, console: Console | None = None, description: str = "training") -> None:
        self.console = console or Console(stderr=True)
        self.description = description
        self.progress: Progress | None = None
        self.task = None
        self._start_time = 0.0
        self._start_tokens = 0
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start_time = time.monotonic()
        self._start_tokens = state.num_input_tokens_seen or 0
        self._start_step = state.global_step
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, loss="-", tps="-"
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, total=state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        fields = {}
        if "loss" in logs:
            fields["loss"] = f"{logs['loss']:.4f}"
        elapsed = time.monotonic() - self._start_time
        tokens = (state.num_input_tokens_seen or 0) - self._start_tokens
        if elapsed > 0 and tokens > 0:
            fields["tps"] = f"{tokens / elapsed:.0f}"
        self.progress.update(self.task, **fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class MetricsCallback(TrainerCallback):
    """Every log line to `metrics.csv`; `loss.png` redrawn at each save and at the end.

    On resume, rows logged after the checkpoint's step (work that the kill threw away) are dropped,
    so the CSV reads as one continuous run.
    """

    def __init__(self, csv_path: Path, png_path: Path, title: str) -> None:
        self.csv_path = csv_path
        self.png_path = png_path
        self.title = title
        self.rows: list[dict] = []
        self._t0 = time.monotonic()
        self._time_offset = 0.0
        self._tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()
        self._tokens_at_start = state.num_input_tokens_seen or 0
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(float(r["step"])) <= state.global_step]
            self.rows = [{k: v for k, v in r.items() if v != ""} for r in kept]
            self._time_offset = float(self.rows[-1]["time_s"]) if self.rows else 0.0
            self._write()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        elapsed = time.monotonic() - self._t0
        tokens = state.num_input_tokens_seen or 0
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time_s": round(self._time_offset + elapsed, 2),
            "tokens_seen": tokens,
            "tokens_per_s": round((tokens - self._tokens_at_start) / elapsed, 1) if elapsed > 0 else "",
            "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
        }
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        self.rows.append(row)
        self._write()

    def on_save(self, args, state, control, **kwargs):
        self.plot()

    def on_train_end(self, args, state, control, **kwargs):
        self._write()
        self.plot()

    def _write(self) -> None:
        columns = list(BASE_COLUMNS)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.csv_path)

    def plot(self) -> Path | None:
        """Draw the training curves; None when nothing was logged yet."""
        series = {
            name: [(float(r["step"]), float(r[name])) for r in self.rows if name in r and r[name] != ""]
            for name in PLOTTED
        }
        series = {k: v for k, v in series.items() if v}
        if not series:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, points in series.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=name, marker="." if len(xs) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("value")
        ax.set_title(self.title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.png_path, dpi=100)
        plt.close(fig)
        return self.png_path


class TimeLimitCallback(TrainerCallback):
    """Stop after `limit_s` seconds of this process's training, saving a checkpoint first."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._t0 = time.monotonic()
        self.stopped_early = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self._t0 >= self.limit_s:
            self.stopped_early = True
            control.should_training_stop = True
            control.should_save = True
