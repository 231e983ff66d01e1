"""Trainer callbacks every Stratos run gets: rich progress, metrics CSV + loss PNG, time limit, peak RSS,
and the learning curve (validation exact match vs examples seen) that feeds the calibration store."""

from __future__ import annotations

import csv
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from stratos_agent.tools.stream_data import weighted_exact, yardstick_mix
from stratos_agent.tools.synth_store import dataset_folder
from transformers import TrainerCallback

from stratos_agent.files import open_atomic

# Columns that come first in metrics.csv; any other logged number follows in order of appearance.
BASE_COLUMNS = ("step", "epoch", "time_s", "tokens_seen", "tokens_per_s", "rss_mib", "loss")
# Curves drawn in loss.png when present (KD runs show both terms so their scales can be compared).
PLOTTED = ("loss", "kd_loss", "ce_loss", "reward", "eval_loss")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far. On Linux this is `VmHWM`, the high-water mark of
    this process's own address space: `ru_maxrss` survives exec, so a trainer spawned by a large process
    (a 6.5 GiB pytest run was seen) would report its parent's peak instead of its own."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is the best there is (macOS reports bytes)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
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
        with open_atomic(self.csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

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


class CurveCallback(TrainerCallback):
    """Learning curve of the run: every `every_steps` optimizer steps (and at the first step of a fresh
    run, and at the end) greedy-decode the fixed validation `items` with the model being trained, score
    them with the pack's verifier (`pack.score(...)["exact"]`) and append a CurvePoint; at the end of
    training, write the LearningCurve to the calibration store (tools/calibration.py).

    `batch_size` = examples per optimizer step (batch x grad accumulation x devices); `method` a
    canonical key (`calibration.method_key`). Validation time is excluded from `seconds` and from the
    recorded throughput. `path` holds the stored file after the run (None when nothing was recorded).
    """

    def __init__(
        self,
        pack,
        items: Sequence,
        *,
        every_steps: int,
        max_new_tokens: int,
        task: str,
        student: str,
        method: str,
        batch_size: int,
        lr: float,
        run: str,
        eval_batch_size: int = 32,
        at_start: bool = True,
        kind: str = "run",
        record: bool = True,
        examples_before: int = 0,
        validation_mix: str = "unknown",
        recipe: dict | None = None,
        mix: dict[str, float] | None = None,
    ) -> None:
        if every_steps <= 0 or not items:
            raise ValueError("CurveCallback needs every_steps > 0 and at least one validation item")
        self.pack, self.items = pack, list(items)
        self.every_steps, self.max_new_tokens = every_steps, max_new_tokens
        self.task, self.student, self.method, self.run = task, student, method, run
        self.batch_size, self.lr, self.kind = batch_size, lr, kind
        self.eval_batch_size, self.at_start, self.record = eval_batch_size, at_start, record
        self.examples_before = examples_before  # a train-on round: what the weights saw before this run
        self.validation_mix, self.recipe = validation_mix, recipe or {}  # what makes curves comparable
        self.mix = mix  # the yardstick's difficulty mix the items are weighted to (stream_data.weighted_exact)
        self.points: list = []
        self.path: Path | None = None
        self._t0 = 0.0
        self._val_s = 0.0
        self._start_examples = 0
        self._load0 = 0.0
        self._hardware = ""

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        from stratos_agent.tools.machine_peaks import hardware_fingerprint

        self._hardware = hardware_fingerprint().key
        self._start_examples = self.examples_before + state.global_step * self.batch_size
        self._load0 = os.getloadavg()[0]
        self._t0, self._val_s = time.monotonic(), 0.0
        if self.at_start and state.global_step == 0:
            self._point(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every_steps == 0:
            self._point(state, model, processing_class)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not self.points or self.points[-1].examples != self._examples(state):
            self._point(state, model, processing_class)
        curve = self.curve()
        if curve is not None and self.record:
            from stratos_agent.tools.calibration import record_curve

            self.path = record_curve(curve)

    def curve(self):
        """The LearningCurve so far; None before any training step was timed."""
        from stratos_agent.records.calibration import LearningCurve

        trained = [p for p in self.points if p.seconds > 0 and p.examples > self._start_examples]
        if not trained:
            return None
        last = trained[-1]
        return LearningCurve(
            task=self.task, student=self.student, method=self.method, hardware=self._hardware,
            examples_per_s=(last.examples - self._start_examples) / last.seconds, points=list(self.points),
            batch_size=self.batch_size, learning_rate=self.lr, kind=self.kind, run=self.run,
            created=datetime.now(UTC).isoformat(timespec="seconds"), start_examples=self._start_examples,
            validation=f"{len(self.items)} items, greedy, {self.max_new_tokens} new tokens"
            + (", weighted to the test split's difficulty mix" if self.mix else ""),
            validation_mix=self.validation_mix, recipe=self.recipe,
            load_avg=round((self._load0 + os.getloadavg()[0]) / 2, 2),
        )

    def _examples(self, state) -> int:
        return self.examples_before + state.global_step * self.batch_size

    def _point(self, state, model, tokenizer) -> None:
        from stratos_agent.records.calibration import CurvePoint

        trained_s = time.monotonic() - self._t0 - self._val_s
        v0 = time.monotonic()
        exact = self.exact_match(model, tokenizer)
        self._val_s += time.monotonic() - v0
        self.points.append(CurvePoint(examples=self._examples(state), exact=exact,
                                      n=len(self.items), seconds=round(max(0.0, trained_s), 3)))

    def exact_match(self, model, tokenizer) -> float:
        """Greedy exact match of `model` on the validation items (left-padded batches, chat template)."""
        import torch

        texts = [tokenizer.apply_chat_template(self.pack.chat_messages(it), tokenize=False,
                                               add_generation_prompt=True) for it in self.items]
        was_training, side = model.training, tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"
        outputs: list[str] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), self.eval_batch_size):
                    batch = tokenizer(texts[start:start + self.eval_batch_size], return_tensors="pt",
                                      padding=True, add_special_tokens=False).to(model.device)
                    out = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         use_cache=True, pad_token_id=tokenizer.pad_token_id,
                                         top_p=None, top_k=None, temperature=None)
                    outputs += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                      skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        hits = [bool(self.pack.score(it, text)["exact"]) for it, text in zip(self.items, outputs, strict=True)]
        return weighted_exact(self.pack, self.items, hits, self.mix)


VALIDATION_SEED = 7_777  # validation items when the data has no val split: a stream of their own


def dataset_val_items(pack, data, n_items: int) -> list:
    """The first `n_items` of the dataset's `val` split (a `stratos synth` folder: disjoint from train by
    canonical key); [] when `data` has none."""
    from stratos_agent.tasks import TaskItem

    try:
        from datasets import DatasetDict, load_from_disk

        folder = dataset_folder(data)
        splits = load_from_disk(str(folder)) if folder.is_dir() else None
        if isinstance(splits, DatasetDict) and "val" in splits and "item" in splits["val"].column_names:
            items = [TaskItem.model_validate_json(r) for r in splits["val"]["item"][:n_items]]
            return [it for it in items if it.task == pack.name]
    except (FileNotFoundError, ValueError):
        pass
    return []


def validation_items(pack, data, n_items: int) -> list:
    """The dataset's val items (`dataset_val_items`), else `n_items` fresh items even over the pack's
    difficulty buckets."""
    return dataset_val_items(pack, data, n_items) or pack.sample(
        n_items, seed=VALIDATION_SEED, distribution="even" if pack.difficulty_buckets else None)


def curve_callback_for(config, *, n_items: int = 48, every_steps: int | None = None,
                       run: str | None = None) -> CurveCallback | None:
    """The CurveCallback for a TrainConfig: its task pack as the student sees it (the task's recipe),
    `n_items` validation items (`validation_items`), a point every ~1/8 of the run (>= 10 steps) when
    the step count is known, else every 25 steps. None when the config names no task pack."""
    from stratos_agent.tools.calibration import method_key
    from stratos_agent.tools.curve_conditions import recipe_of

    from stratos_agent.tasks.recipes import recipe_for

    if not config.task or config.task.startswith("jsonl"):
        return None
    recipe = recipe_for(config.task)
    pack = recipe.pack(config.task, "student")
    rank = config.lora_r if config.lora else 0
    method = method_key(rank).replace("sft", config.method, 1)  # 'sft-lora16'; 'distill-full', 'grpo-lora16', ...
    steps = every_steps or max(10, config.max_steps // 8 if config.max_steps > 0 else 25)
    items = dataset_val_items(pack, config.data, n_items)
    mix = "dataset" if items else ("even" if pack.difficulty_buckets else "natural")
    return CurveCallback(
        pack, items or validation_items(pack, config.data, n_items), every_steps=steps,
        max_new_tokens=recipe.student_tokens, task=config.task.split(":")[0], student=config.curve_student,
        method=method, batch_size=config.batch_size * config.grad_accum, lr=config.learning_rate,
        run=run or config.run_name, examples_before=config.examples_before, validation_mix=mix,
        recipe=recipe_of(config), mix=yardstick_mix(config.data, pack) if items else None,
    )
