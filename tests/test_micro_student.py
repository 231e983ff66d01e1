"""Micro students: task tokenizer, HF folder, registry candidates, streaming training, serving (slow)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from stratos_agent.tools import engine_launch
from stratos_agent.tools.stream_data import heldout_from_data
from stratos_agent.tools.stream_train import lr_factor, stream_train
from stratos_agent.tools.train import train
from support.env import private_settings

from stratos_agent.errors import InputError
from stratos_agent.models.micro import (
    CHAT_TEMPLATE,
    build_micro_student,
    portable_tokenizer_config,
    task_tokenizer,
)
from stratos_agent.records.training import TrainConfig
from stratos_agent.tasks import get_task_pack
from stratos_agent.tasks.base import VerifiedStream

SHORT = {"prompt": "short"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Models, calibration store and serving state in a private STRATOS_HOME."""
    with private_settings(monkeypatch, home=tmp_path / "home", runs_dir=tmp_path / "runs"):
        yield tmp_path / "home"


@pytest.fixture(scope="module")
def pack():
    return get_task_pack("mahjong", **SHORT)


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    """A tiny micro student (2 layers, width 64): the real tokenizer and template, a toy network."""
    return build_micro_student("mahjong", tmp_path_factory.mktemp("micro") / "m", layers=2, width=64, heads=1,
                               task_options=SHORT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, pack) -> Path:
    from stratos_agent.tools.synth import synthesize

    out = tmp_path_factory.mktemp("data") / "mj"
    synthesize(pack, 300, out, mode="solver", style="answer", seed=0)
    return out


def test_closed_vocabulary_only_for_the_short_compact_prompt(pack):
    assert get_task_pack("mahjong").closed_vocabulary() is None  # the full prompt is open English
    assert get_task_pack("mahjong", prompt="short", notation="unicode").closed_vocabulary() is None
    assert get_task_pack("gsm8k").closed_vocabulary() is None  # the base-class default
    assert {"Hand:", "Winning tiles:", "none", " ", "m", "z", "9"} <= set(pack.closed_vocabulary())
    assert pack.format_answer([]) == "Winning tiles: none"


def test_tokenizer_round_trips_1000_items_and_renders_the_pack_prompt(pack, tmp_path):
    from transformers import AutoTokenizer

    task_tokenizer(pack).save_pretrained(tmp_path)
    portable_tokenizer_config(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"] == CHAT_TEMPLATE
    items = pack.sample(500, seed=1) + pack.sample(500, seed=2, distribution="even")
    unk = tok.unk_token_id
    for item in items:
        for text in (pack.render_prompt(item), pack.format_answer(item.answer)):
            ids = tok.encode(text, add_special_tokens=False)
            assert unk not in ids and tok.decode(ids) == text
    item = items[0]
    rendered = tok.apply_chat_template(pack.chat_messages(item), tokenize=False, add_generation_prompt=True)
    assert rendered == f"<s><|user|>{pack.render_prompt(item)}<|end|><|assistant|>"
    full = tok.apply_chat_template(pack.chat_messages(item, pack.format_answer(item.answer)), tokenize=False)
    assert full == f"<s><|user|>{pack.render_prompt(item)}<|end|><|assistant|>{pack.format_answer(item.answer)}</s>"
    # one token per digit / suit / space; the markers are single tokens; unknown text becomes <unk>
    assert len(tok.encode("Hand: 123m 7z", add_special_tokens=False)) == 1 + 1 + 4 + 1 + 2
    assert tok.encode("Hand: x", add_special_tokens=False)[-1] == unk
    with pytest.raises(InputError, match="closed vocabulary"):
        task_tokenizer(get_task_pack("mahjong"))


def test_micro_folder_reloads_with_transformers(micro, pack):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(micro)
    model = AutoModelForCausalLM.from_pretrained(micro)
    task = json.loads((micro / "stratos_task.json").read_text())
    assert task["task"] == "mahjong" and task["options"] == SHORT
    assert model.config.max_position_embeddings >= 2 * task["longest_example_tokens"]
    assert model.config.tie_word_embeddings and model.config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    card = (micro / "README.md").read_text()
    assert "The prompt this model expects" in card and "Hand: " in card
    ids = tok.apply_chat_template(pack.chat_messages(pack.sample(1)[0]), add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    # same arguments: the existing folder; it was written atomically (no temp siblings left)
    assert build_micro_student("mahjong", micro, layers=2, width=64, heads=1, task_options=SHORT) == micro
    assert not list(micro.parent.glob(".m.tmp-*"))


def test_registry_offers_micro_students_for_mahjong_only(home):
    from stratos_agent.models import get_registry
    from stratos_agent.models.registry import BUILTINS

    registry = get_registry()
    micro = [c for c in registry.candidates() if c.id.startswith("mahjong-micro")]
    assert {c.id for c in micro} == {"mahjong-micro-2m", "mahjong-micro-6m"}
    assert all(c.task == "mahjong" and c.roles == ["student"] and c.available for c in micro)
    one_task = {c.id for c in registry.candidates() if c.task}  # micro students and a task-vocabulary student
    assert one_task == {"mahjong-micro-2m", "mahjong-micro-6m", "smollm2-135m-half-mahjong-vocab"}
    catalog = registry.get("mahjong-micro-2m")
    assert catalog.metadata_origin == "catalog"
    folder = registry.path("mahjong-micro-2m")
    built = registry.get("mahjong-micro-2m")
    assert built.metadata_origin == "computed" and built.task == "mahjong"
    assert built.parameters == catalog.parameters and built.context_length == catalog.context_length
    assert built.tokenizer_fingerprint and built.has_chat_template
    assert registry.get(str(folder)).task == "mahjong"  # the folder itself says which task it serves
    assert len([m for m in BUILTINS if m.task]) == 3


def test_stream_excludes_held_out_keys_and_is_deterministic(pack, dataset):
    held, val = heldout_from_data(dataset, pack)
    assert val and {pack.canonical_key(it) for it in val} <= held
    extra = {pack.canonical_key(it) for it in pack.sample(200, seed=5, distribution="even")}
    stream = VerifiedStream(pack, seed=0, natural_share=0.5, exclude=held | extra)
    seen = [pack.canonical_key(it) for step in range(20) for it in stream.batch(step, 64)]
    assert len(seen) == 20 * 64 and not set(seen) & (held | extra)
    assert stream.dropped > 0  # bucket-9 hands are few: the even draws hit the excluded ones
    again = VerifiedStream(pack, seed=0, natural_share=0.5, exclude=held | extra)
    assert [pack.canonical_key(it) for it in again.batch(3, 64)] == seen[3 * 64: 4 * 64]


def test_lr_schedule_warms_up_then_anneals():
    assert lr_factor(0, 0.0, 10) == pytest.approx(0.1)
    assert lr_factor(0, 0.0, 0.1) < 0.01 and lr_factor(0, 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(500, 0.55, 0.1) == pytest.approx(0.55) and lr_factor(999, 1.0, 0.1) == pytest.approx(0.1)


def test_fingerprint_of_old_fields_is_unchanged():
    old = TrainConfig(run_name="a", base_model="b", data=Path("c"))
    assert old.fingerprint() == "76fe7f9e81181c53"  # computed before the stream fields existed
    assert old.model_copy(update={"eval_n": 5}).fingerprint() == old.fingerprint()
    assert old.model_copy(update={"stream": True}).fingerprint() != old.fingerprint()


def stream_config(micro: Path, dataset: Path, **overrides) -> TrainConfig:
    fields = {"run_name": "s", "base_model": str(micro), "task": "mahjong", "data": dataset, "stream": True,
              "lora": False, "learning_rate": 2e-3, "batch_size": 16, "max_steps": 30, "save_steps": 10,
              "eval_every": 160, "eval_n": 20, "logging_steps": 5, "threads": 1}
    return TrainConfig(**(fields | overrides))


class Crash(Exception):
    pass


def test_stream_training_checkpoints_resumes_and_records_a_curve(home, pack, micro, dataset, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = stream_config(micro, dataset)
    run = tmp_path / "run"

    def crash(step: int) -> None:
        if step == 15:
            raise Crash

    with pytest.raises(Crash):
        stream_train(config, run_dir=run, on_step=crash)
    assert (run / "checkpoints" / "step-10" / "state.pt").is_file() and not (run / "student.json").exists()
    student = train(config, run_dir=run)  # the training tool dispatches on config.stream
    assert student.resumed_from_step == 10 and student.global_step == 30
    assert student.streamed_examples == 30 * 16 and student.tokens_seen > student.streamed_examples
    assert student.method_detail == "stream-sft+full" and student.train_seconds > 0
    assert student.memory_estimate.parameters == student.memory_estimate.trainable_parameters
    curve = student.learning_curve
    assert [p.examples for p in curve.points] == [160, 320, 480]  # the first point survived the crash
    assert all(0 <= p.exact <= 1 and p.n == min(20, len(heldout_from_data(dataset, pack)[1])) for p in curve.points)
    assert curve.method == "stream-full" and curve.hardware and curve.examples_per_s > 0
    rows = list(csv.DictReader(student.metrics_csv.open()))
    assert [r["val_exact"] for r in rows if r["val_exact"]] and max(int(r["step"]) for r in rows) == 30
    card = json.loads((run / "stream_card.json").read_text())
    assert card["examples_seen"] == 480 and sum(card["difficulty_counts"].values()) == 480
    from stratos_agent.tools import calibration

    recorded = calibration.curves("mahjong", student=student.base_model, method="stream-full")
    assert any([p.examples for p in c.points] == [160, 320, 480] for c in recorded)  # the run fed the store
    AutoModelForCausalLM.from_pretrained(student.model_dir)
    assert AutoTokenizer.from_pretrained(student.model_dir).chat_template == CHAT_TEMPLATE
    assert (student.model_dir / "stratos_task.json").is_file()
    assert "stratos:eval:start" in (student.model_dir / "README.md").read_text()
    assert train(config, run_dir=run).global_step == 30  # finished: returned as is


def test_stream_refuses_lora_and_unbounded_runs(micro, dataset, tmp_path):
    with pytest.raises(InputError, match="lora=False"):
        stream_train(stream_config(micro, dataset, lora=True), run_dir=tmp_path / "a")
    with pytest.raises(InputError, match="needs a bound"):
        stream_train(stream_config(micro, dataset, max_steps=-1), run_dir=tmp_path / "b")


def test_a_plan_choosing_a_micro_student_trains_it_by_stream(home, tmp_path):
    from stratos_agent.tools.train import config_from_plan

    from stratos_agent.records.data import DatasetRef
    from stratos_agent.records.plans import Plan, PlanPoint
    from stratos_agent.tasks.recipes import recipe_for

    data = DatasetRef.model_construct(path=tmp_path / "d", hf_path=tmp_path / "d" / "dataset")

    def config_for(student: str) -> TrainConfig:
        plan = Plan.model_construct(task="mahjong", why="", chosen=PlanPoint.model_construct(
            student=student, teacher="smollm2-135m", strategy="sft", lora_rank=16))
        return config_from_plan(plan, data, recipe_for("mahjong"), run_name="r", max_steps=-1, time_limit_s=60)

    micro = config_for("mahjong-micro-6m")
    assert micro.stream and not micro.lora and micro.batch_size == 64 and micro.data == tmp_path / "d"
    assert micro.chat_template is None and micro.task == "mahjong"  # the micro student's own template
    assert not config_for("smollm2-135m-half").stream


def test_launch_caps_the_context_at_the_model_positions(micro):
    spec = engine_launch.vllm_launch(micro, served_model_name="m", device="cpu", max_model_len=2048, python="py")
    assert spec.max_model_len == 128 and spec.argv[spec.argv.index("--max-model-len") + 1] == "128"
    assert any("capped" in note for note in spec.notes)
    sg = engine_launch.sglang_launch(micro, served_model_name="m", context_len=4096)
    assert sg.max_model_len == 128
    assert engine_launch.vllm_launch("org/model", served_model_name="m", max_model_len=2048).max_model_len == 2048


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (extra `serve`)")
def test_micro_student_trains_serves_and_is_evaluated_by_the_cli(home, pack, tmp_path):
    """The whole path: registry -> stream training (~1 min) -> HF folder -> vLLM -> openai -> `stratos eval`."""
    from datasets import load_from_disk
    from openai import OpenAI
    from stratos_agent.tools import deploy
    from stratos_agent.tools.synth import synthesize
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stratos_agent.models import get_registry
    from stratos_agent.tasks import TaskItem

    get_registry().path("mahjong-micro-2m")
    data = synthesize(pack, 400, tmp_path / "data", mode="solver", style="answer", seed=0)
    config = TrainConfig(run_name="micro", base_model="mahjong-micro-2m", task="mahjong", data=data.path,
                         stream=True, lora=False, learning_rate=1e-3, batch_size=64, time_limit_s=60,
                         save_steps=200, eval_every=2048, eval_n=100, threads=1)
    student = train(config, run_dir=tmp_path / "run")
    assert student.streamed_examples > 0 and student.learning_curve.points
    AutoModelForCausalLM.from_pretrained(student.model_dir)
    AutoTokenizer.from_pretrained(student.model_dir)
    test = [TaskItem.model_validate_json(r) for r in load_from_disk(str(data.hf_path))["test"]["item"]][:40]
    held = tmp_path / "held_out.jsonl"
    pack.write_jsonl(test, held)

    dep = deploy.deploy_local(tmp_path / "run", name="micro-test", timeout_s=900)
    try:
        assert dep.launch.max_model_len == 128 and dep.smoke is not None and dep.smoke.ok, dep.smoke
        assert any("expects exactly one user message" in note for note in dep.launch.notes)
        client = OpenAI(base_url=dep.base_url, api_key="EMPTY", timeout=120)
        reply = client.chat.completions.create(model=dep.model, messages=pack.chat_messages(test[0]),
                                               max_tokens=24, temperature=0)
        text = reply.choices[0].message.content
        assert isinstance(text, str) and text.strip()
        out = tmp_path / "eval.json"
        cli = Path(sys.executable).with_name("stratos")
        done = subprocess.run([str(cli), "eval", "--task", "mahjong", "--task-option", "prompt=short",
                               "--data", str(held), "--endpoint", dep.base_url, "--model-name", dep.model,
                               "--max-new-tokens", "24", "--out", str(out)],
                              check=False, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        deploy.stop(dep.name)
    report = json.loads(out.read_text())
    print(f"micro student: {student.streamed_examples} examples, curve {student.learning_curve.points}; smoke "
          f"{dep.smoke.response!r}; endpoint exact {report['exact_match']:.1%} on {report['n']}")
    assert report["n"] == len(test) and isinstance(report["exact_match"], float) and 0 <= report["exact_match"] <= 1
    assert report["endpoint"] == dep.base_url and {b["name"] for b in report["baselines"]} >= {"empty answer"}
