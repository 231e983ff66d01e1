"""Streaming training for solver-backed packs: every step a fresh batch of verified examples.

A closed task with a solver has free, unlimited, correct data, so a run is bounded by time or examples,
not by a dataset: each step draws `batch_size` new solver-labelled items (`VerifiedStream`), renders them
with the chat template and trains on the answer tokens only. Items whose canonical key is held out (the
dataset's val/test splits, plus keys the caller adds) are dropped: splits stay disjoint by canonical key.

    train(TrainConfig(run_name="mj", base_model="mahjong-micro-6m", task="mahjong", data=Path("runs/data/mj"),
                      stream=True, lora=False, learning_rate=2e-3, batch_size=64, time_limit_s=480))

The data side (hold-out keys, answer-masked batches) is tools/stream_data.py. Plain PyTorch: AdamW and a
schedule sized to the budget -- warm-up + cosine (`lr_scheduler="cosine"`, the default) or warm-up, stable,
decay over the last WSD_DECAY of the budget (`"warmup_stable_decay"`) -- where progress = the larger of
steps/step budget and seconds/time limit, so a time-bounded run still anneals; `batch_size` examples per step.
With `stream_weighting="adaptive"` the stream's non-natural share draws difficulty buckets with weight
ADAPTIVE_FLOOR + (1 - validation exact of that bucket), re-weighed at every learning-curve evaluation (even
until the first); the weights in force are saved with the progress, so a resumed run draws the same batches.
A run folder holds `checkpoints/step-N/state.pt` (model, optimizer, RNG, step, counters) every `save_steps`
steps -- a rerun resumes from the newest -- `metrics.csv` (loss and validation exact match),
`curve.json` (the LearningCurve: greedy exact match on a fixed held-out set every `eval_every`
examples), `stream_card.json` (what was seen), `model/` and `student.json` (written last).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from stratos_agent.tools.calibration import record_curve
from stratos_agent.tools.curve_conditions import recipe_of
from stratos_agent.tools.micro_student import save_folder, trained_card
from stratos_agent.tools.precision import use_bf16
from stratos_agent.tools.stream_data import Encoder, heldout_from_data, weighted_exact, yardstick_mix
from stratos_agent.tools.train_callbacks import MetricsCallback, peak_rss_bytes
from stratos_agent.tools.train_card import write_model_card
from stratos_agent.tools.train_memory import check_fits, estimate_memory

from stratos_agent.errors import InputError
from stratos_agent.files import open_atomic, write_text_atomic
from stratos_agent.models.candidate import TASK_FILE
from stratos_agent.models.micro import pack_for_model
from stratos_agent.records.calibration import CurvePoint, LearningCurve, ValidationMix
from stratos_agent.records.training import StudentModel, TrainConfig
from stratos_agent.settings import apply_thread_settings
from stratos_agent.tasks import TaskItem
from stratos_agent.tasks.base import VerifiedStream
from stratos_agent.tasks.recipes import recipe_for

STATE_FILE = "state.pt"
CURVE_FILE = "curve.json"
STREAM_CARD = "stream_card.json"
METHOD_KEY = "stream-full"
MIN_LR_RATIO = 0.1  # the cosine ends at 10% of the peak rate, not 0: the last minutes still learn
SCHEDULES = ("cosine", "warmup_stable_decay")
WSD_DECAY = 0.2  # policy (common WSD choice; the sweep measured no gain over cosine): the last 20% of the budget decays linearly to MIN_LR_RATIO
# Policy (evals/recipe_sweep.py measured adaptive weighting within seed noise of even): a bucket the student has mastered keeps ADAPTIVE_FLOOR / (ADAPTIVE_FLOOR + 1) of the
# weight of one it always misses, so it is still rehearsed (forgetting) and a noisy 100% does not starve it.
ADAPTIVE_FLOOR = 0.2
_VALIDATION_SEED = 7_777  # used only when the dataset has no val split


# ----------------------------------------------------------------------------------- schedule
def lr_factor(step: int, progress: float, warmup: float, schedule: str = "cosine") -> float:
    """Warm-up (a step count when >= 1, else a share of the budget), then cosine to MIN_LR_RATIO, or (WSD)
    the peak rate until the last WSD_DECAY of the budget and a linear decay to MIN_LR_RATIO."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup >= 1 and step < warmup:
        return (step + 1) / warmup
    share = warmup if warmup < 1 else 0.0
    if share and progress < share:
        return max(progress / share, 1e-3)
    if schedule == "warmup_stable_decay":
        decayed = max(progress - (1 - WSD_DECAY), 0.0) / WSD_DECAY
        return 1 - (1 - MIN_LR_RATIO) * decayed
    t = (progress - share) / (1 - share) if share < 1 else 1.0
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * t))


def adaptive_weights(buckets: Sequence[Hashable], exact: Mapping[Hashable, float],
                     floor: float = ADAPTIVE_FLOOR) -> list[float]:
    """Stream weight per bucket (in `buckets` order): floor + measured error (1 - exact); a bucket the
    validation set does not cover gets the mean weight of the measured ones (nothing says it is easier)."""
    measured = {b: floor + 1 - exact[b] for b in buckets if b in exact}
    if not measured:
        return [1.0] * len(buckets)
    mean = sum(measured.values()) / len(measured)
    return [round(measured.get(b, mean), 6) for b in buckets]


def step_budget(config: TrainConfig) -> int | None:
    if config.max_steps > 0:
        return config.max_steps
    return math.ceil(config.examples_budget / config.batch_size) if config.examples_budget else None


# ----------------------------------------------------------------------------------- checkpoints
def last_state(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob(f"step-*/{STATE_FILE}"), key=lambda p: int(p.parent.name.split("-")[1]))
    return found[-1] if found else None


def save_state(ckpt_dir: Path, step: int, state: dict, keep: int | None) -> None:
    import torch

    folder = ckpt_dir / f"step-{step}"
    folder.mkdir(parents=True, exist_ok=True)
    with open_atomic(folder / STATE_FILE, "wb") as fh:  # a kill mid-save leaves no state.pt: folder skipped
        torch.save(state, fh)
    done = sorted((p.parent for p in ckpt_dir.glob(f"step-*/{STATE_FILE}")), key=lambda p: int(p.name[5:]))
    for old in done[: -keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------- the run
def stream_train(
    config: TrainConfig,
    *,
    run_dir: Path,
    console: Console | None = None,
    exclude_keys: Iterable[str] = (),
    val_items: Sequence[TaskItem] | None = None,
    val_mix: ValidationMix = "unknown",
    on_step: Callable[[int], None] | None = None,
    record: bool = True,
    curve_kind: str = "run",
) -> StudentModel:
    """Train `config` (with `stream=True`) in `run_dir`, resuming from its newest checkpoint.

    `exclude_keys` adds held-out canonical keys to the dataset's val/test keys; `val_items` replaces the
    dataset's val split as the learning-curve set (`val_mix` says what they are: "even", "natural"; the
    curve records it, so that only comparable curves are fitted together); `on_step(step)` runs after every step (tests use it
    to crash a run); `record=False` keeps the curve out of the calibration store (throughput probes);
    `curve_kind` is the LearningCurve kind it is recorded as ("sweep" for evals/recipe_sweep.py).
    Called by `tools/train.py:train` when `config.stream` is set.
    """
    if config.lora or config.method != "sft":
        raise InputError("stream training is a full fine-tune (SFT on verified items): set lora=False, method=sft")
    if step_budget(config) is None and not config.time_limit_s:
        raise InputError("a stream run needs a bound: max_steps, examples_budget or time_limit_s")
    if config.lr_scheduler not in SCHEDULES:
        raise InputError(f"stream training schedules: {', '.join(SCHEDULES)} (got {config.lr_scheduler!r})")
    return StreamRun(config, Path(run_dir), console or Console(stderr=True), set(exclude_keys),
                     val_items, val_mix).run(on_step, record, curve_kind)


class StreamRun:
    """One stream run: model, optimizer, stream and the progress dict `s` that a checkpoint stores."""

    def __init__(self, config: TrainConfig, run_dir: Path, console: Console, exclude: set[str],
                 val_items: Sequence[TaskItem] | None, val_mix: ValidationMix = "unknown") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from stratos_agent.models import local_model_path

        self.config, self.run_dir, self.console = config, run_dir, console
        apply_thread_settings(config.threads)
        self.base_dir = local_model_path(config.base_model)
        pack = pack_for_model(self.base_dir) or (recipe_for(config.task).pack(config.task, "student")
                                                 if config.task else None)  # a micro student's file wins
        if pack is None:
            raise InputError("stream training needs a task pack: set config.task or train a micro student")
        if config.task and pack.name != config.task.split(":")[0]:
            raise InputError(f"{config.base_model} serves task {pack.name!r}, not {config.task!r}")
        self.pack = pack
        self.estimate = estimate_memory(self.base_dir, config)
        check_fits(self.estimate, config)
        run_dir.mkdir(parents=True, exist_ok=True)
        held, val = heldout_from_data(config.data, pack)
        self.val_source: ValidationMix = val_mix if val_items is not None else ("dataset" if val else "natural")
        val = list(val_items) if val_items is not None else val
        if not val:  # no dataset val split: a fixed fresh sample (the natural generator), held out like the rest
            val = pack.sample(config.eval_n, seed=_VALIDATION_SEED)
        self.val = val[: config.eval_n]
        # The dataset's val split is scored as its test split's mix would weigh it (the gate's yardstick).
        self.mix = yardstick_mix(config.data, pack) if self.val_source == "dataset" else None
        self.held = held | exclude | {pack.canonical_key(it) for it in self.val}

        tok = AutoTokenizer.from_pretrained(self.base_dir)
        if config.chat_template:
            tok.chat_template = config.chat_template
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        torch.manual_seed(config.seed)
        self.tok = tok
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bf16 = config.bf16_autocast if config.bf16_autocast is not None else use_bf16(self.device)
        self.model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=torch.float32).to(self.device)
        self.model.generation_config.eos_token_id = tok.eos_token_id
        self.model.generation_config.pad_token_id = tok.pad_token_id
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95),
                                           weight_decay=config.weight_decay)
        self.enc = Encoder(tok, pack)
        self.stream = VerifiedStream(pack, seed=config.seed, natural_share=config.stream_mix, exclude=self.held)
        self.max_new = self.enc.answer_tokens(self.val) + 4
        self.ckpt_dir = run_dir / "checkpoints"
        self.s: dict = {"step": 0, "examples": 0, "tokens": 0, "seconds": 0.0, "rows": [], "curve": [],
                        "buckets": {}, "dropped": 0, "loss": None, "weights": None, "weights_history": []}
        self.resumed_from: int | None = None
        if (path := last_state(self.ckpt_dir)) is not None:
            saved = torch.load(path, map_location=self.device, weights_only=False)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"]["torch"].cpu())
            random.setstate(saved["rng"]["python"])
            self.s = {"weights": None, "weights_history": []} | saved["progress"]  # saved before weighting
            self.resumed_from = self.s["step"]
            console.print(f"resuming from {path.parent} (step {self.resumed_from}, {self.s['examples']} examples)")
        self.stream.dropped = self.s["dropped"]
        self.stream.weights = self.s["weights"]  # None (even) until an adaptive run's first evaluation
        self.buckets = Counter(self.s["buckets"])
        self.metrics = MetricsCallback(run_dir / "metrics.csv", run_dir / "loss.png", f"{config.run_name} (stream)")
        self.metrics.rows = self.s["rows"]
        self.points = [CurvePoint(**p) for p in self.s["curve"]]
        self.load0 = os.getloadavg()[0]

    def progress(self) -> float:
        budget, limit, s = step_budget(self.config), self.config.time_limit_s, self.s
        return max(s["step"] / budget if budget else 0.0, s["seconds"] / limit if limit else 0.0)

    def train_step(self) -> tuple[float, float]:
        """(loss, lr) of one step on a fresh batch."""
        import torch

        s, cfg = self.s, self.config
        lr = cfg.learning_rate * lr_factor(s["step"], self.progress(), cfg.warmup, cfg.lr_scheduler)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        items = self.stream.batch(s["step"], cfg.batch_size)
        ids, mask, labels = (t.to(self.device) for t in self.enc.train_batch(items))
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.buckets.update(str(self.pack.difficulty_bucket(it)) for it in items)
        s["step"] += 1
        s["examples"] += len(items)
        s["tokens"] += int(mask.sum())
        return loss.item(), lr

    def run(self, on_step: Callable[[int], None] | None, record: bool, curve_kind: str) -> StudentModel:
        s, cfg = self.s, self.config
        self.model.train()
        window: list[float] = []
        last_print = time.monotonic()
        while self.progress() < 1.0:
            t0 = time.perf_counter()
            loss, lr = self.train_step()
            window.append(loss)
            if s["step"] % cfg.logging_steps == 0:
                s["loss"], window = sum(window) / len(window), []
                self.metrics.rows.append({
                    "step": s["step"], "time_s": round(s["seconds"], 2), "examples": s["examples"],
                    "tokens_seen": s["tokens"], "loss": round(s["loss"], 5), "learning_rate": lr,
                    "examples_per_s": round(s["examples"] / max(s["seconds"], 1e-9), 1)})
            s["seconds"] += time.perf_counter() - t0  # training time: validation and checkpoints excluded
            if s["examples"] // cfg.eval_every > (s["examples"] - cfg.batch_size) // cfg.eval_every:
                self.evaluate()
            if s["step"] % cfg.save_steps == 0:
                self.checkpoint()
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                self.console.print(f"step {s['step']}: loss {loss:.4f}, lr {lr:.2e}, "
                                   f"{s['examples'] / max(s['seconds'], 1e-9):.0f} examples/s")
            if on_step is not None:
                on_step(s["step"])
        if not self.points or self.points[-1].examples != s["examples"]:
            self.evaluate()
        s["loss"] = sum(window) / len(window) if window else s["loss"]
        self.checkpoint()
        return self.finish(record, curve_kind)

    def evaluate(self) -> None:
        import torch

        s = self.s
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            hits = self.enc.hits(self.model, self.val, self.max_new)  # as trained
        if self.config.stream_weighting == "adaptive":
            self.reweigh(hits)
        exact = weighted_exact(self.pack, self.val, hits, self.mix)
        self.points.append(CurvePoint(examples=s["examples"], exact=exact, n=len(self.val),
                                      seconds=round(s["seconds"], 2)))
        self.metrics.rows.append({"step": s["step"], "time_s": round(s["seconds"], 2), "examples": s["examples"],
                                  "val_exact": round(exact, 4), "val_n": len(self.val)})
        self.console.print(f"step {s['step']}: {s['examples']} examples, {s['seconds']:.0f} s training, "
                           f"validation exact {exact:.1%} (n={len(self.val)})")

    def validation_spread(self) -> str:
        """'even over 10 difficulty buckets', or the validation items per bucket."""
        counts = Counter(self.pack.difficulty_bucket(it) for it in self.val)
        buckets = self.pack.difficulty_buckets
        if len(counts) == len(buckets) and len(set(counts.values())) == 1:
            return f"even over {len(buckets)} difficulty buckets"
        return "per bucket " + " ".join(f"{b}:{counts[b]}" for b in buckets if b in counts)

    def reweigh(self, hits: Sequence[bool]) -> None:
        """Validation exact per difficulty bucket -> the stream's new weights (recorded)."""
        by_bucket: dict[Hashable, list[bool]] = {}
        for item, hit in zip(self.val, hits, strict=True):
            by_bucket.setdefault(self.pack.difficulty_bucket(item), []).append(hit)
        exact = {b: sum(by_bucket[b]) / len(by_bucket[b]) for b in self.pack.difficulty_buckets if b in by_bucket}
        self.stream.weights = self.s["weights"] = adaptive_weights(self.pack.difficulty_buckets, exact)
        self.s["weights_history"].append({"step": self.s["step"], "examples": self.s["examples"],
                                          "exact": {str(b): round(e, 4) for b, e in exact.items()},
                                          "weights": self.s["weights"]})

    def checkpoint(self) -> None:
        import torch

        self.s.update(buckets=dict(self.buckets), dropped=self.stream.dropped, rows=self.metrics.rows,
                      curve=[p.model_dump() for p in self.points])
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "progress": self.s,
                 "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}
        save_state(self.ckpt_dir, self.s["step"], state, self.config.save_total_limit)
        self.metrics._write()

    def finish(self, record: bool, curve_kind: str) -> StudentModel:
        from stratos_agent.tools.machine_peaks import hardware_fingerprint

        s, cfg, run_dir = self.s, self.config, self.run_dir
        model_dir = save_folder(run_dir / "model", self.model, self.tok, self.base_dir)
        before = cfg.examples_before  # a train-on round: the curve continues its lineage's
        curve = LearningCurve(
            task=self.pack.name, student=cfg.curve_student, method=METHOD_KEY, hardware=hardware_fingerprint().key,
            examples_per_s=max(s["examples"] / max(s["seconds"], 1e-9), 1e-9), start_examples=before,
            points=[p.model_copy(update={"examples": p.examples + before}) for p in self.points],
            batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, kind=curve_kind, run=str(run_dir),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            validation=f"{len(self.val)} held-out items ({self.validation_spread()}), greedy, {self.max_new} new tokens"
            + (", weighted to the test split's difficulty mix" if self.mix else ""),
            load_avg=round((self.load0 + os.getloadavg()[0]) / 2, 2),
            validation_mix=self.val_source, recipe=recipe_of(cfg),
        )
        write_text_atomic(run_dir / CURVE_FILE, curve.model_dump_json(indent=1))
        card = {"task": self.pack.name, "stream": True, "examples_seen": s["examples"], "steps": s["step"],
                "natural_share": cfg.stream_mix, "seed": cfg.seed, "bf16_autocast": self.bf16, "difficulty_counts": dict(self.buckets),
                "weighting": cfg.stream_weighting, "lr_scheduler": cfg.lr_scheduler,
                "buckets": [str(b) for b in self.pack.difficulty_buckets], "weights_history": s["weights_history"],
                "adaptive_floor": ADAPTIVE_FLOOR if cfg.stream_weighting == "adaptive" else None,
                "held_out_keys": len(self.held), "draws_dropped_as_held_out": self.stream.dropped,
                "validation_items": len(self.val)}
        write_text_atomic(run_dir / STREAM_CARD, json.dumps(card, indent=1))
        student = StudentModel(
            run_dir=run_dir, model_dir=model_dir, base_model=cfg.base_model, method=cfg.method,
            method_detail="stream-sft+full", config_fingerprint=cfg.fingerprint(), global_step=s["step"],
            resumed_from_step=self.resumed_from, train_loss=s["loss"], train_seconds=round(s["seconds"], 2),
            tokens_seen=s["tokens"], peak_rss_bytes=peak_rss_bytes(), memory_estimate=self.estimate,
            metrics_csv=self.metrics.csv_path, loss_png=self.metrics.plot(), streamed_examples=s["examples"],
            learning_curve=curve, config=cfg,
        )
        _write_card(student, self.base_dir, card)
        write_text_atomic(run_dir / "student.json", student.model_dump_json(indent=2))
        if record:
            _record(curve, self.console)
        self.console.print(f"[green]stream-trained {s['step']} steps / {s['examples']} examples -> {model_dir}")
        return student


def _write_card(student: StudentModel, base_dir: Path, card: dict) -> None:
    """Micro students keep their prompt card (what the endpoint expects), with the training added."""
    if not (base_dir / TASK_FILE).is_file():
        write_model_card(student, data_card=None)
        return
    cfg = student.config
    trained_card(student.model_dir, cfg.run_name, (
        f"trained by Stratos on {card['examples_seen']} streamed, solver-verified examples ({student.global_step} "
        f"steps of {cfg.batch_size}, {student.train_seconds:.0f} s, lr {cfg.learning_rate:g}; "
        f"{card['held_out_keys']} held-out keys never trained on)"))


def _record(curve: LearningCurve, console: Console) -> None:
    """Hand the curve to the calibration store (tools/calibration.py)."""
    try:
        console.print(f"learning curve recorded: {record_curve(curve)}")
    except (OSError, ValueError) as exc:  # the model is saved already: a store problem must not lose it
        console.print(f"[yellow]could not record the learning curve: {exc}")
