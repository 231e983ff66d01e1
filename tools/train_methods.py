"""The three ways Stratos trains, as configured TRL trainers: SFT, GRPO, logit-level KD (GKD).

Our code only chooses and configures; TRL + PEFT do the optimisation. Shared choices, once:
- CPU: bf16 off (TRL defaults it on), gradient checkpointing as the plan says, no dataloader workers;
- checkpoints every `save_steps` with optimizer state (a rerun resumes bit-for-bit), at most
  `save_total_limit` kept;
- LoRA on every linear layer (attention + MLP) when `config.lora`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.records.training import TrainConfig


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def common_args(config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by every method."""
    gpu = _on_gpu()
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup,  # a float < 1 is a fraction of the total steps
        "weight_decay": config.weight_decay,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": gpu,  # TRL turns bf16 on by default; CPU training stays fp32
        "fp16": False,
        "use_cpu": not gpu,
        "gradient_checkpointing": config.gradient_checkpointing,
        "report_to": "none",
        "disable_tqdm": True,  # our rich bar replaces tqdm
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
    }


def lora_config(config: TrainConfig):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def conversational(dataset, *, with_completion: bool = True, messages: bool = False):
    """prompt/completion strings -> chat turns, so the model trains on exactly what it will be served.

    `messages=True` gives one `messages` column (the GKD collator's format) and drops the raw prompt:
    that collator would otherwise take a `prompt` string as already chat-formatted text.
    """

    def convert(row):
        user = [{"role": "user", "content": row["prompt"]}]
        if messages:
            return {"messages": user + [{"role": "assistant", "content": row["completion"]}]}
        out = {"prompt": user}
        if with_completion:
            out["completion"] = [{"role": "assistant", "content": row["completion"]}]
        return out

    keep = {"item"} if not with_completion else set()
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.map(convert, remove_columns=drop)


def sft_trainer(config: TrainConfig, model, tokenizer, dataset, output_dir: Path, callbacks: list):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **common_args(config, output_dir),
        max_length=config.max_seq_len,
        completion_only_loss=True,  # loss on the answer, never on the question
        packing=False,  # padding-free packing needs flash-attention; CPU attention would leak across rows
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=conversational(dataset),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )


# --- GRPO: rewards from the task pack's verifier ------------------------------------------------
def _completion_text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion)
    return str(completion)


def make_rewards(task: str) -> dict[str, Any]:
    """exact (1/0), partial (set-F1 of the answer), format (1 if the answer line parses)."""
    from stratos_agent.tasks import TaskItem, get_task_pack

    pack = get_task_pack(task)

    def scores(completions, item) -> list:
        return [
            pack.score(TaskItem.model_validate_json(it), _completion_text(c))
            for c, it in zip(completions, item, strict=True)
        ]

    def exact(completions, item, **_):
        return [float(s["exact"]) for s in scores(completions, item)]

    def partial(completions, item, **_):
        return [float(s["f1"]) for s in scores(completions, item)]

    def format_ok(completions, item, **_):
        return [float(s["format_ok"]) for s in scores(completions, item)]

    exact.__name__, partial.__name__, format_ok.__name__ = "exact", "partial", "format"
    return {"exact": exact, "partial": partial, "format": format_ok}


def grpo_trainer(config: TrainConfig, model, tokenizer, dataset, output_dir: Path, callbacks: list):
    from trl import GRPOConfig, GRPOTrainer

    if not config.task:
        raise InputError("GRPO needs a task pack for its rewards: set `task` (e.g. 'mahjong')")
    if "item" not in dataset.column_names:
        raise InputError(
            f"{config.data}: GRPO needs an `item` column (the task item with its known answer), "
            "as written by `stratos synth`"
        )
    rewards = make_rewards(config.task)
    unknown = set(config.reward_weights) - set(rewards)
    if unknown:
        raise InputError(f"unknown reward(s) {sorted(unknown)}; known: {sorted(rewards)}")
    names = list(config.reward_weights)
    # a step's prompts x generations must fill the batch; round the batch up to a multiple
    batch = max(config.batch_size, config.grpo_num_generations)
    batch -= batch % config.grpo_num_generations
    args = GRPOConfig(
        **{**common_args(config, output_dir), "per_device_train_batch_size": batch},
        num_generations=config.grpo_num_generations,
        max_completion_length=config.grpo_max_completion_len,
        temperature=config.grpo_temperature,
        beta=config.grpo_beta,
        use_vllm=_on_gpu() and _vllm_available(),
        reward_weights=[config.reward_weights[n] for n in names],
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[rewards[n] for n in names],
        args=args,
        train_dataset=conversational(dataset, with_completion=False),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# --- logit-level KD: GKD with both loss terms logged ---------------------------------------------
def gkd_trainer(config: TrainConfig, model, teacher, tokenizer, dataset, output_dir: Path, callbacks: list):
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class LoggedGKDTrainer(GKDTrainer):
        """GKD whose loss is `kd_weight * JSD + ce_weight * CE`, logging both terms.

        Known failure in peers: the KD term is orders of magnitude smaller than the LM loss and
        silently does nothing. Logging `kd_loss` and `ce_loss` side by side makes the scales visible.
        """

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._terms: dict[str, list[float]] = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch.nn.functional as F

            student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            self.teacher_model.eval()
            import torch

            with torch.no_grad():
                teacher_out = self.teacher_model(
                    input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
                )
            s_logits = student.logits[:, :-1, :]
            labels = inputs["labels"][:, 1:]
            kd = self.generalized_jsd_loss(
                student_logits=s_logits,
                teacher_logits=teacher_out.logits[:, :-1, :],
                labels=labels,
                beta=self.beta,
                temperature=self.temperature,
            )
            ce = F.cross_entropy(s_logits.reshape(-1, s_logits.size(-1)), labels.reshape(-1), ignore_index=-100)
            self._terms["kd_loss"].append(kd.detach().item())
            self._terms["ce_loss"].append(ce.detach().item())
            loss = config.kd_weight * kd + config.ce_weight * ce
            return (loss, student) if return_outputs else loss

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if "loss" in logs:
                for key, values in self._terms.items():
                    if values:
                        logs[key] = sum(values) / len(values)
                self._terms.clear()
            super().log(logs, *args, **kwargs)

    args = GKDConfig(
        **common_args(config, output_dir),
        max_length=config.max_seq_len,
        lmbda=config.kd_lmbda,
        beta=config.kd_beta,
        temperature=config.kd_temperature,
        max_new_tokens=config.grpo_max_completion_len,
        disable_dropout=True,
    )
    return LoggedGKDTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=conversational(dataset, messages=True),
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )


def distill_decision(student: str, teacher: str | None, requested: str) -> tuple[str, str | None]:
    """('logit' | 'sequence', reason for falling back or None).

    Logit KD compares next-token distributions position by position, so it needs the very same
    vocabulary: decided by the registry's tokenizer fingerprints, never by model names.
    """
    if requested == "sequence":
        return "sequence", None
    if teacher is None:
        reason = "no teacher model given: sequence-level KD on the dataset's (verified teacher) outputs"
        if requested == "logit":
            raise InputError(f"logit-level KD needs --teacher; {reason}")
        return "sequence", reason
    from stratos_agent.models import get_registry, local_model_path

    registry = get_registry()
    if registry.kind(teacher) != "endpoint":  # materialise first: fingerprints come from the real folders
        local_model_path(student), local_model_path(teacher)
    s, t = registry.get(student), registry.get(teacher)
    if not t.white_box:
        reason = f"teacher {teacher!r} is a black box ({t.source}): no logits to match"
    elif s.same_tokenizer(t):
        return "logit", None
    else:
        reason = (
            f"tokenizers differ (student {s.tokenizer_fingerprint}, teacher {t.tokenizer_fingerprint}): "
            "next-token distributions are over different vocabularies"
        )
    if requested == "logit":
        raise InputError(f"logit-level KD is impossible: {reason}")
    return "sequence", reason + "; falling back to sequence-level KD (SFT on the teacher's verified outputs)"

