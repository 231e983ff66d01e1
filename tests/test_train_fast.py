"""Training tool on a tiny random Llama (real SmolLM2 tokenizer): SFT/LoRA, KD, GRPO, resume, memory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from stratos_agent.tools.train import CHATML, last_checkpoint, train
from stratos_agent.tools.train_memory import check_fits, count_parameters, estimate_memory
from transformers import TrainerCallback

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack


@pytest.fixture(scope="module")
def mahjong_data(tmp_path_factory) -> Path:
    """A saved HF dataset of 16 verified Mahjong rows (short prompt, answer-only completion)."""
    from datasets import Dataset

    pack = get_task_pack("mahjong", prompt="short")
    items = pack.sample(16, seed=3, distribution="even")
    rows = [{"prompt": pack.render_prompt(it), "completion": pack.solver_rationale(it, "answer"),
             "item": it.model_dump_json()} for it in items]
    folder = tmp_path_factory.mktemp("data") / "mahjong"
    Dataset.from_list(rows).save_to_disk(str(folder))
    return folder


def config(model: Path, data: Path, **overrides) -> TrainConfig:
    fields = {"run_name": "t", "base_model": str(model), "data": data, "max_steps": 2, "save_steps": 1,
              "batch_size": 4, "max_seq_len": 48, "logging_steps": 1, "chat_template": CHATML, "threads": 1}
    return TrainConfig(**(fields | overrides))


def test_sft_lora_writes_a_servable_folder_and_is_idempotent(tiny_llama, mahjong_data, tmp_path):
    run = tmp_path / "run"
    student = train(config(tiny_llama, mahjong_data), run_dir=run)
    assert student.global_step == 2 and student.method_detail == "sft+lora"
    model_dir = student.model_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (model_dir / name).is_file(), name
    assert (student.adapter_dir / "adapter_config.json").is_file()
    card = (model_dir / "README.md").read_text()
    assert f"base_model: {tiny_llama}" in card and "learning_rate" in card and "sft+lora" in card
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(model_dir)  # plain HF folder: no PEFT needed
    assert not any("lora" in n for n, _ in merged.named_parameters())
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows if r.get("loss")] == [1, 2]
    assert float(rows[0]["tokens_per_s"]) > 0 and (run / "loss.png").stat().st_size > 1000
    assert student.peak_rss_bytes > 100 * 2**20
    # the same config again: the finished model comes back, nothing is retrained
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    again = train(config(tiny_llama, mahjong_data), run_dir=run)
    assert again == student and (model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_other_config_under_the_same_run_is_refused(tiny_llama, mahjong_data, tmp_path):
    train(config(tiny_llama, mahjong_data, max_steps=1), run_dir=tmp_path / "run")
    with pytest.raises(InputError, match="different config"):
        train(config(tiny_llama, mahjong_data, max_steps=1, learning_rate=1e-3), run_dir=tmp_path / "run")


class Crash(TrainerCallback):
    """Simulates a crash right after the checkpoint of `step` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


def test_rerun_resumes_from_the_last_checkpoint(tiny_llama, mahjong_data, tmp_path):
    run = tmp_path / "run"
    cfg = config(tiny_llama, mahjong_data, max_steps=4, lora=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir=run, callbacks=[Crash(2)])
    assert last_checkpoint(run / "checkpoints").name == "checkpoint-2"
    student = train(cfg, run_dir=run)
    assert student.resumed_from_step == 2 and student.global_step == 4
    steps = [int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("loss")]
    assert steps == [1, 2, 3, 4]  # one continuous curve, no duplicated steps


def test_last_checkpoint_skips_a_half_written_one(tmp_path):
    for step, complete in ((2, True), (4, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "optimizer.pt").write_bytes(b"x")
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path).name == "checkpoint-2"
    assert last_checkpoint(tmp_path / "missing") is None


def test_memory_estimate_counts_and_refuses(tiny_llama, mahjong_data):
    import torch
    from peft import get_peft_model
    from stratos_agent.tools.train_methods import lora_config
    from transformers import AutoModelForCausalLM

    cfg = config(tiny_llama, mahjong_data)
    total, trainable, _ = count_parameters(tiny_llama, lora_r=cfg.lora_r)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    assert total == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, lora_config(cfg))
    assert trainable == sum(p.numel() for p in peft.parameters() if p.requires_grad)
    lora = estimate_memory(tiny_llama, cfg, available_bytes=64 * 2**30)
    full = estimate_memory(tiny_llama, cfg.model_copy(update={"lora": False}), available_bytes=64 * 2**30)
    assert lora.fits and full.optimizer_bytes > lora.optimizer_bytes
    ckpt = estimate_memory(tiny_llama, cfg.model_copy(update={"gradient_checkpointing": True}),
                           available_bytes=64 * 2**30)
    assert ckpt.activations_bytes < lora.activations_bytes
    tight = estimate_memory(tiny_llama, cfg, available_bytes=2**20)
    with pytest.raises(ResourceError, match="will not fit in memory.*GiB available.*smaller batch"):
        check_fits(tight, cfg)


def test_train_refuses_before_loading_when_memory_is_short(tiny_llama, mahjong_data, tmp_path, monkeypatch):
    import psutil

    class Tiny:
        available = 2**20

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny)
    with pytest.raises(ResourceError, match="will not fit"):
        train(config(tiny_llama, mahjong_data), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_logit_kd_logs_both_loss_terms(tiny_llama, mahjong_data, tmp_path):
    from conftest import build_tiny_llama

    teacher = build_tiny_llama(tmp_path / "teacher", seed=1)  # other weights, same tokenizer
    cfg = config(tiny_llama, mahjong_data, method="distill", teacher_model=str(teacher), ce_weight=0.5)
    student = train(cfg, run_dir=tmp_path / "run")
    assert student.method_detail == "distill:logit(gkd)+lora" and student.fallback_reason is None
    rows = [r for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open()) if r.get("loss")]
    kd, ce, loss = (float(rows[0][k]) for k in ("kd_loss", "ce_loss", "loss"))
    assert kd > 0 and ce > 0 and loss == pytest.approx(kd + 0.5 * ce, rel=1e-3)


def test_kd_falls_back_to_sequence_level_when_tokenizers_differ(tiny_llama, tmp_path):
    from stratos_agent.tools.train_methods import distill_decision
    from transformers import AutoTokenizer

    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.json", "model.safetensors"):
        (other / name).write_bytes((tiny_llama / name).read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tokenizer.add_tokens(["<mahjong-tile>"])  # same name, same model: a different vocabulary
    tokenizer.save_pretrained(other)
    mode, reason = distill_decision(str(tiny_llama), str(other), "auto")
    assert mode == "sequence" and "tokenizers differ" in reason and "falling back" in reason
    assert distill_decision(str(tiny_llama), str(tiny_llama), "auto") == ("logit", None)
    with pytest.raises(InputError, match="impossible"):
        distill_decision(str(tiny_llama), str(other), "logit")


def test_grpo_rewards_come_from_the_task_verifier():
    from stratos_agent.tools.train_methods import make_rewards

    pack = get_task_pack("mahjong")
    item = next(it for it in pack.sample(20, seed=1, distribution="even") if len(it.answer) >= 2)
    rewards = make_rewards("mahjong")
    right = pack.format_answer(item.answer)
    half = pack.format_answer(item.answer[:1])
    outputs = [[{"role": "assistant", "content": text}] for text in (right, half, "no idea")]
    items = [item.model_dump_json()] * 3
    assert rewards["exact"](outputs, items) == [1.0, 0.0, 0.0]
    assert rewards["partial"](outputs, items)[0] == 1.0 and 0 < rewards["partial"](outputs, items)[1] < 1
    assert rewards["format"](outputs, items) == [1.0, 1.0, 0.0]


@pytest.mark.slow  # generation on CPU: ~10 s idle, much more on a shared machine
def test_grpo_step_runs_with_task_rewards(tiny_llama, mahjong_data, tmp_path):
    cfg = config(tiny_llama, mahjong_data, method="grpo", task="mahjong", max_steps=1, batch_size=4,
                 grpo_num_generations=2, grpo_max_completion_len=8)
    student = train(cfg, run_dir=tmp_path / "run")
    assert student.global_step == 1
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "rewards/exact/mean" in header and "rewards/format/mean" in header


def test_bad_data_is_an_input_error(tiny_llama, tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(InputError, match="missing column"):
        train(config(tiny_llama, bad), run_dir=tmp_path / "run")


def test_stratos_train_reports_bad_options_in_one_line(tmp_path):
    import subprocess
    import sys

    stratos = str(Path(sys.executable).parent / "stratos")
    done = subprocess.run([stratos, "train", "--data", str(tmp_path), "--run-name", "x", "--method", "bogus"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "--method" in done.stderr and "Traceback" not in done.stderr


def test_stratos_train_config_file_trains_exactly_that_config(tiny_llama, mahjong_data, tmp_path, runs_dir):
    """`stratos train --config` (what a cloud training task runs) reads a TrainConfig file; --run-name and
    --data override only those two fields; a missing file is one clean error."""
    import subprocess
    import sys

    stratos = str(Path(sys.executable).parent / "stratos")
    saved = config(tiny_llama, tmp_path / "elsewhere.jsonl", max_steps=2, lora_r=4, lora_alpha=8)
    path = tmp_path / "train_config.json"
    path.write_text(saved.model_dump_json())
    done = subprocess.run([stratos, "train", "--config", str(path), "--run-name", "from-file", "--data",
                           str(mahjong_data)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    student = json.loads((runs_dir / "from-file" / "student.json").read_text())
    ran = TrainConfig.model_validate(student["config"])
    assert ran.run_name == "from-file" and ran.data == mahjong_data
    assert ran.max_steps == 2 and ran.lora_r == 4 and student["global_step"] == 2
    missing = subprocess.run([stratos, "train", "--config", str(tmp_path / "nope.json")], capture_output=True,
                             text=True, timeout=300, check=False)
    assert missing.returncode != 0 and "does not" in missing.stderr and "Traceback" not in missing.stderr


def test_peak_rss_is_the_trainers_own_not_its_parents(tmp_path):
    """A trainer spawned by a large process (pytest after the whole suite held 6.5 GiB) must report its
    own peak: Linux keeps `ru_maxrss` across exec, so the parent's high-water mark leaked into the
    children's `peak_rss_bytes` and failed the memory goals."""
    import subprocess
    import sys

    ballast = bytearray(3 * 2**30)  # pages touched below: they count in this process's RSS
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    code = "from stratos_agent.tools.train_callbacks import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del ballast
    assert 10 * 2**20 < child < 2 * 2**30
