"""A trained micro student's folder: its model card and the atomic save of the trained weights.

The untrained micro student (task tokenizer, chat template, model folder) is built by the core
(stratos_agent/models/micro.py), so the registry never imports tools.
"""

from __future__ import annotations

import json
from pathlib import Path

from stratos_agent.files import build_folder
from stratos_agent.models.candidate import TASK_FILE
from stratos_agent.models.micro import portable_tokenizer_config, read_task_file, write_card
from stratos_agent.tasks import get_task_pack


def trained_card(model_dir: Path, label: str, trained: str) -> Path:
    """The card of a trained micro student: the prompt section, the training, and the evaluation slot that
    `stratos eval --model` fills in (tools/train_card.py markers)."""
    from stratos_agent.tools.train_card import EVAL_END, EVAL_START

    from stratos_agent.models.candidate import count_safetensors_parameters

    info = read_task_file(model_dir) or {}
    config = json.loads((Path(model_dir) / "config.json").read_text())
    shape = f"{config['num_hidden_layers']} layers, width {config['hidden_size']}, {config['num_attention_heads']} heads"
    options = ",".join(f"{k}={v}" for k, v in info["options"].items())
    slot = ["## Evaluation", "", EVAL_START,
            f"Not evaluated yet (`stratos eval --model <this folder> --task-option {options or 'KEY=VALUE'}`).",
            EVAL_END, ""]
    pack = get_task_pack(info["task"], **info["options"])
    return write_card(Path(model_dir), label, pack, info, count_safetensors_parameters(Path(model_dir)) or 0,
                      shape, trained, slot)


def save_folder(target: Path, model, tokenizer, base_dir: Path) -> Path:
    """Save a trained model as a plain HF folder (temp sibling renamed into place); a micro student keeps
    its task file and portable tokenizer config. The previous save stays in place until this one is complete."""
    import shutil

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if (base_dir / TASK_FILE).is_file():
            shutil.copy(base_dir / TASK_FILE, tmp / TASK_FILE)
            portable_tokenizer_config(tmp)

    return build_folder(target, fill)
