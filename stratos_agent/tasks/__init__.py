"""Task packs: the domain knowledge of a distillation job (see `tasks/base.py` for the protocol).

    from stratos_agent.tasks import get_task_pack
    pack = get_task_pack("mahjong")
    items = pack.sample(500, seed=0, distribution="even")
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.tasks.base import EVEN, BaseTaskPack, Score, TaskItem, TaskPack, set_f1

# name -> "module:factory". Imported lazily so a pack's heavy dependency (reasoning_gym) is only
# loaded when that pack is used. Other packs register here with a one-line additive edit.
TASK_PACKS: dict[str, str] = {
    "mahjong": "stratos_agent.tasks.mahjong:MahjongPack",
    "gsm8k": "stratos_agent.tasks.gsm8k:Gsm8kPack",
    "jsonl": "stratos_agent.tasks.jsonl_pack:JsonlTaskPack",  # as "jsonl:PATH" (user data + checker)
}


def get_task_pack(name: str, **options: Any) -> TaskPack:
    """The task pack registered under `name`; options go to its constructor, converted to the types it
    declares (command-line options arrive as text), and an unknown or ill-typed one is an InputError."""
    prefix, sep, argument = name.strip().partition(":")
    if sep and prefix.lower() in TASK_PACKS:  # "jsonl:PATH": the pack is built on PATH (case kept)
        name, options = prefix, {"path": argument, **options}
    cls = pack_class(name)
    return cls(**_typed_options(cls, options))


def _typed_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    from pydantic import TypeAdapter, ValidationError

    parameters = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    hints = typing.get_type_hints(cls.__init__)
    typed = {}
    for key, value in options.items():
        if key not in parameters:
            known = ", ".join(k for k in parameters if k != "path") or "none"
            raise InputError(f"task {cls.__name__} has no option {key!r}; its options: {known}")
        try:
            typed[key] = TypeAdapter(hints.get(key, Any)).validate_python(value)
        except ValidationError as exc:
            raise InputError(f"task option {key}={value!r}: {exc.errors()[0]['msg']}") from None
    return typed


def pack_class(name: str) -> type:
    """The class registered under `name`, not instantiated (some packs need a path to build)."""
    key = name.strip().lower()
    if key not in TASK_PACKS:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_PACKS))} (or jsonl:PATH)")
    module_name, attr = TASK_PACKS[key].split(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = ["EVEN", "TASK_PACKS", "BaseTaskPack", "Score", "TaskItem", "TaskPack", "get_task_pack", "pack_class", "set_f1"]
