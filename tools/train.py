"""Train a student: SFT, GRPO or distillation, resumable, measured, shipped as a plain HF folder.

    from stratos_agent.tools.train import train
    from stratos_agent.records.training import TrainConfig
    student = train(TrainConfig(run_name="mj-sft", base_model="smollm2-135m", data=Path("data/mj")))

A run lives in `<runs_dir>/<run_name>/`:
    train_config.json      the config (a rerun with another config under the same name is refused)
    checkpoints/           checkpoint-N every `save_steps` (with optimizer state) -> a rerun resumes
    metrics.csv, loss.png  every logged step; curves
    adapter/               the LoRA adapter alone (LoRA runs)
    model/                 plain HF folder (LoRA merged), tokenizer, chat template, README.md card
    student.json           the StudentModel record, written last: its presence means "finished"
With `config.stream` the run is a stream of fresh verified items instead (tools/stream_train.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from stratos_agent.tools.synth_store import dataset_folder
from stratos_agent.tools.train_callbacks import (
    CurveCallback,
    MetricsCallback,
    ProgressCallback,
    TimeLimitCallback,
    curve_callback_for,
    peak_rss_bytes,
)
from stratos_agent.tools.train_card import write_model_card
from stratos_agent.tools.train_memory import check_fits, estimate_memory
from transformers import PrinterCallback

from stratos_agent.errors import InputError
from stratos_agent.files import build_folder, write_text_atomic
from stratos_agent.records.data import DatasetRef
from stratos_agent.records.plans import Plan, PlanPoint
from stratos_agent.records.training import StudentModel, TrainConfig
from stratos_agent.settings import apply_thread_settings, get_settings
from stratos_agent.tasks.recipes import Recipe

# SmolLM2's ChatML without the default system prompt (~20 tokens saved on every training row and
# request; the fine-tuned student does not need to be told it is a helpful assistant).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Micro students, stream training (batch 64, 6.3M parameters): 2-minute probes gave 28% even exact at 5e-4,
# 29.5% at 1e-3 and 13% at 3e-3 (n=200; evals/mahjong_quality.py records the longer runs).
MICRO_LR = 1e-3
STREAM_BATCH = 64  # a micro student sees fresh solver-labelled items 64 at a time (evals/mahjong_quality.py)
STUDENT_FILE = "student.json"
CONFIG_FILE = "train_config.json"


def config_from_plan(
    plan: Plan,
    dataset: DatasetRef,
    recipe: Recipe,
    *,
    run_name: str,
    max_steps: int,
    learning_rate: float | None = None,
    save_steps: int = 50,
    time_limit_s: float | None = None,
) -> TrainConfig:
    """The TrainConfig that carries out the plan's chosen point: its student, strategy (logit KD from the
    teacher, or SFT on verified data) and LoRA rank (0 = full fine-tuning), on `dataset`."""
    point = plan.chosen
    if point is None:
        raise InputError(f"the plan has no chosen point to train ({plan.why})")
    if serves_one_task(point.student):  # a micro student: full training on a stream of verified items
        return TrainConfig(
            run_name=run_name, base_model=point.student, method="sft", data=dataset.path,
            data_card=str(dataset.path / "data_card.md"), task=plan.task.split(":")[0], stream=True, lora=False,
            learning_rate=learning_rate or MICRO_LR, warmup=0.05, batch_size=STREAM_BATCH, max_steps=max_steps,
            save_steps=max(save_steps, 100), save_total_limit=1, logging_steps=20, time_limit_s=time_limit_s,
            threads=get_settings().threads,
        )
    rank = point.lora_rank
    logit = point.strategy == "alignment-logit"
    return TrainConfig(
        run_name=run_name,
        base_model=point.student,
        method="distill" if logit else "sft",
        data=dataset.hf_path,
        data_card=str(dataset.path / "data_card.md"),
        task=plan.task.split(":")[0],
        lora=rank > 0,
        lora_r=rank or 16,
        lora_alpha=2 * (rank or 16),
        # LoRA tolerates (and on a few minutes of CPU needs) a 10x higher rate than full fine-tuning.
        learning_rate=learning_rate or (1e-3 if rank else 1e-4),
        lr_scheduler="constant_with_warmup",
        max_steps=max_steps,
        max_seq_len=recipe.max_seq_len,
        save_steps=save_steps,
        logging_steps=5,
        chat_template=CHATML,
        time_limit_s=time_limit_s,
        threads=get_settings().threads,
        teacher_model=point.teacher if logit else None,
        distill_mode="logit" if logit else "auto",
    )


def trained_lineage(model_dir: str | Path) -> tuple[str | None, int]:
    """(registry student it descends from, examples its weights have seen in all) of a folder this module
    trained, read from its run's student.json; (None, 0) for any other folder."""
    record = Path(model_dir).parent / STUDENT_FILE
    if not record.is_file():
        return None, 0
    last = StudentModel.model_validate_json(record.read_text())
    seen = last.streamed_examples or last.global_step * last.config.batch_size * last.config.grad_accum
    return last.config.curve_student, last.config.examples_before + seen


def planned_steps(point: PlanPoint) -> int:
    """Optimizer steps that carry out the plan's example budget (`train_examples`) at the batch size its
    run uses: the plan prices exactly the examples the run sees."""
    batch = STREAM_BATCH if serves_one_task(point.student) else TrainConfig.model_fields["batch_size"].default
    examples = point.train_examples or point.data_size  # a plan saved before train_examples existed
    return max(1, -(-examples // batch))


def serves_one_task(model: str) -> bool:
    """A micro student, which trains on a stream (ModelCandidate.trains_on_a_stream)."""
    from stratos_agent.models import get_registry

    try:
        return get_registry().get(model).trains_on_a_stream
    except InputError:
        return False


def run_dir_for(config: TrainConfig) -> Path:
    return get_settings().runs_dir / config.run_name


def finished(run_dir: Path, config: TrainConfig) -> StudentModel | None:
    """The finished StudentModel in `run_dir` for this config, or None; a different config is refused."""
    path = run_dir / STUDENT_FILE
    if not path.is_file():
        return None
    student = StudentModel.model_validate_json(path.read_text())
    if student.config_fingerprint != config.fingerprint():
        raise InputError(
            f"{run_dir} already holds a model trained with a different config "
            f"({student.config_fingerprint} != {config.fingerprint()}); pick another run name"
        )
    return student


def _claim_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Record the config; refuse to resume checkpoints that came from another config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    if path.is_file():
        previous = TrainConfig.model_validate_json(path.read_text())
        if previous.fingerprint() != config.fingerprint():
            raise InputError(
                f"{run_dir} holds checkpoints of a different config (see {path}); "
                "pick another run name or delete that folder"
            )
    write_text_atomic(path, config.model_dump_json(indent=2))


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """Newest complete checkpoint (a kill can leave the newest one half-written: skip it)."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted(
        (p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for path in found:
        weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        if (path / "trainer_state.json").is_file() and (path / "optimizer.pt").is_file() and weights:
            return path
    return None


def load_training_data(data: Path):
    """A `datasets.Dataset` with prompt/completion from a synth output folder, a saved dataset or JSONL."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    data = Path(data)
    if data.is_dir():
        folder = dataset_folder(data)
        try:
            loaded = load_from_disk(str(folder))
        except FileNotFoundError:
            raise InputError(f"{data}: not a saved HF dataset nor a `stratos synth` output folder") from None
        if isinstance(loaded, DatasetDict):
            if "train" not in loaded:
                raise InputError(f"{data}: no `train` split (splits: {list(loaded)})")
            loaded = loaded["train"]
    elif data.is_file() and data.suffix == ".jsonl":
        loaded = load_dataset("json", data_files=str(data), split="train")
    else:
        raise InputError(f"{data}: expected a dataset folder or a .jsonl file with prompt/completion")
    assert isinstance(loaded, Dataset)
    missing = {"prompt", "completion"} - set(loaded.column_names)
    if missing:
        raise InputError(f"{data}: missing column(s) {sorted(missing)} (has {loaded.column_names})")
    if len(loaded) == 0:
        raise InputError(f"{data}: the training split is empty")
    return loaded


def _data_card(config: TrainConfig) -> str | None:
    if config.data_card:
        return config.data_card
    card = Path(config.data) / "data_card.md"
    return str(card) if card.is_file() else None


def _load_tokenizer(model_dir: Path, config: TrainConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if config.chat_template:
        tokenizer.chat_template = config.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_model(model_dir: Path, tokenizer, *, use_cache: bool = True):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = use_cache  # off with gradient checkpointing (recomputation and a cache clash)
    # generation stops at the chat turn's end token, so a served model answers and stops
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _save_final(trainer, tokenizer, config: TrainConfig, run_dir: Path) -> tuple[Path, Path | None]:
    """adapter/ (LoRA) and model/ (merged, plain HF), each written to a temp folder then renamed."""
    model = trainer.model
    adapter_dir = None
    if config.lora:
        adapter_dir = _atomic_save(run_dir / "adapter", model, tokenizer)
        model = model.merge_and_unload()
    return _atomic_save(run_dir / "model", model, tokenizer), adapter_dir


def _atomic_save(target: Path, model, tokenizer) -> Path:
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_folder(target, fill)


def checkpoint_model(checkpoint: Path, base_model: str, out_dir: Path) -> Path:
    """A loadable HF folder for a checkpoint: itself for a full fine-tune; base + adapter merged into
    `out_dir` for LoRA (learning curves evaluate intermediate checkpoints this way)."""
    if not (checkpoint / "adapter_config.json").is_file():
        return checkpoint
    if (out_dir / "config.json").is_file():
        return out_dir
    from peft import PeftModel
    from transformers import AutoTokenizer

    from stratos_agent.models import local_model_path

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    base = _load_model(local_model_path(base_model), tokenizer)
    merged = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    return _atomic_save(out_dir, merged, tokenizer)


def train(
    config: TrainConfig,
    *,
    run_dir: Path | None = None,
    console: Console | None = None,
    callbacks: list | None = None,
) -> StudentModel:
    """Train (or resume, or return the finished) run described by `config`.

    Raises ResourceError before loading anything when the memory estimate does not fit, InputError
    for bad data / a run folder holding another config.
    """
    from stratos_agent.tools import train_methods as methods

    from stratos_agent.models import local_model_path

    console = console or Console(stderr=True)
    run_dir = Path(run_dir) if run_dir else run_dir_for(config)
    done = finished(run_dir, config)
    if done is not None:
        console.print(f"[green]{run_dir}: already trained ({done.global_step} steps); reusing it")
        return done
    if config.stream:  # solver-backed pack: fresh verified batches; config.data gives the held-out keys
        from stratos_agent.tools.stream_train import stream_train

        _claim_run_dir(run_dir, config)
        return stream_train(config, run_dir=run_dir, console=console)
    apply_thread_settings(config.threads)
    base_dir = local_model_path(config.base_model)
    method, detail, fallback, teacher_dir = config.method, f"{config.method}", None, None
    if method == "distill":
        mode, fallback = methods.distill_decision(config.base_model, config.teacher_model, config.distill_mode)
        if fallback:
            console.print(f"[yellow]distillation: {fallback}")
        if mode == "logit":
            teacher_dir = local_model_path(config.teacher_model)
        detail = "distill:logit(gkd)" if mode == "logit" else "distill:sequence(sft)"
    detail += "+lora" if config.lora else "+full"

    estimate = estimate_memory(base_dir, config, teacher_dir=teacher_dir)
    console.print(f"memory estimate: {estimate.summary()}")
    check_fits(estimate, config)
    _claim_run_dir(run_dir, config)

    tokenizer = _load_tokenizer(base_dir, config)
    model = _load_model(base_dir, tokenizer, use_cache=not config.gradient_checkpointing)
    dataset = load_training_data(config.data)
    metrics = MetricsCallback(run_dir / "metrics.csv", run_dir / "loss.png", f"{config.run_name} ({detail})")
    callbacks = [ProgressCallback(console, description=config.run_name), metrics, *(callbacks or [])]
    if not any(isinstance(c, CurveCallback) for c in callbacks) and (curve := curve_callback_for(config)):
        callbacks.append(curve)  # learning curve -> calibration store (tools/calibration.py)
    if config.time_limit_s:
        callbacks.append(TimeLimitCallback(config.time_limit_s))
    ckpt_dir = run_dir / "checkpoints"
    if teacher_dir is not None:
        teacher = _load_model(teacher_dir, tokenizer)
        trainer = methods.gkd_trainer(config, model, teacher, tokenizer, dataset, ckpt_dir, callbacks)
    elif method == "grpo":
        trainer = methods.grpo_trainer(config, model, tokenizer, dataset, ckpt_dir, callbacks)
    else:  # sft, and sequence-level KD (SFT on verified teacher outputs)
        trainer = methods.sft_trainer(config, model, tokenizer, dataset, ckpt_dir, callbacks)

    trainer.remove_callback(PrinterCallback)  # our bar and metrics.csv replace the raw log prints
    resume = last_checkpoint(ckpt_dir)
    resumed_from = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else None
    if resume:
        console.print(f"resuming from {resume} (step {resumed_from})")
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    elapsed = time.monotonic() - t0
    model_dir, adapter_dir = _save_final(trainer, tokenizer, config, run_dir)
    losses = [r["loss"] for r in metrics.rows if "loss" in r]
    student = StudentModel(
        run_dir=run_dir,
        model_dir=model_dir,
        adapter_dir=adapter_dir,
        base_model=config.base_model,
        method=config.method,
        method_detail=detail,
        config_fingerprint=config.fingerprint(),
        global_step=trainer.state.global_step,
        resumed_from_step=resumed_from,
        train_loss=float(losses[-1]) if losses else result.training_loss,
        train_seconds=round(elapsed, 2),
        tokens_seen=trainer.state.num_input_tokens_seen or None,
        peak_rss_bytes=peak_rss_bytes(),
        memory_estimate=estimate,
        metrics_csv=metrics.csv_path,
        loss_png=metrics.plot(),
        fallback_reason=fallback,
        config=config,
    )
    write_model_card(student, data_card=_data_card(config))
    write_text_atomic(run_dir / STUDENT_FILE, student.model_dump_json(indent=2))
    console.print(f"[green]trained {detail}: {student.global_step} steps -> {model_dir}")
    return student
