"""A user's own data as a task pack: a JSONL of question/answer pairs plus a checker.

    {"question": "What is 17 * 3?", "answer": "51", "rationale": "17 * 3 = 51.", "difficulty": 1}

`question` and `answer` are required; `rationale` (a worked solution, used by solver-mode synthesis),
`difficulty` (any label; becomes the difficulty bucket) and `pattern` (regex checker) are optional.
Checkers: `exact` (equal up to surrounding/repeated whitespace), `numeric` (relative tolerance),
`regex` (the line's `pattern` must fully match the answer; the line's own `answer` is checked
against it on load), or `module:function` called as `function(predicted: str, answer) -> bool`.
Options come from keyword arguments, else from a sidecar `<name>.pack.json` next to the file. A
`module:function` checker is imported only when the user names it (keyword argument: `--checker` on
the command line); a sidecar naming one is refused, since a data folder must not run code on its own.
Malformed lines are reported with line numbers and refused (`on_bad_line="fail"`, the default) or
skipped and counted (`"skip"`); never silently dropped.
"""

from __future__ import annotations

import hashlib
import importlib
import random
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratos_agent.errors import InputError
from stratos_agent.tasks.base import BaseTaskPack, TaskItem, jsonl_lines, parse_json_line

CHECKERS = ("exact", "numeric", "regex")
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SHOWN_BAD_LINES = 5


def _squash(text: str) -> str:
    return " ".join(str(text).split())


def parse_number(text: Any) -> float | None:
    """A number from text such as '1,234.5', '$12', '40%', '-3e2'; None unless exactly one number."""
    found = _NUMBER.findall(str(text))
    if len(found) != 1:
        return None
    try:
        return float(found[0].replace(",", ""))
    except ValueError:
        return None


class PackOptions(BaseModel):
    """A jsonl pack's options (keyword arguments over the sidecar `<name>.pack.json`)."""

    model_config = ConfigDict(extra="forbid")

    checker: str = "exact"
    on_bad_line: Literal["fail", "skip"] = "fail"
    tolerance: float = Field(default=1e-6, ge=0, allow_inf_nan=False, description="numeric: relative tolerance")
    # the marker that ends every answer: an empty one would match everywhere and grade every answer wrong
    answer_prefix: str = Field(default="Final answer:", pattern=r"\w")


class JsonlTaskPack(BaseTaskPack):
    """Question/answer pairs from a JSONL file, graded by the configured checker."""

    rationale_styles = ("worked", "answer")  # worked: the line's rationale (if any) + the answer line

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        checker: str | None = None,
        on_bad_line: str | None = None,
        tolerance: float | None = None,
        answer_prefix: str | None = None,
    ) -> None:
        if not path:
            raise InputError("the jsonl task needs your file: --task jsonl:PATH (one JSON question/answer per line)")
        self.path = Path(path).expanduser()
        given = {"checker": checker, "on_bad_line": on_bad_line, "tolerance": tolerance,
                 "answer_prefix": answer_prefix}
        options = self._options({k: v for k, v in given.items() if v is not None})
        self.checker, self.on_bad_line = options.checker, options.on_bad_line
        self.tolerance, self.answer_prefix = options.tolerance, options.answer_prefix
        self._check = self._resolve_checker(self.checker)
        self.name = f"jsonl:{self.path}"
        self.description = f"Questions and answers from {self.path} ({self.checker} checker)."
        self._marker = re.compile(re.escape(self.answer_prefix.rstrip(":").strip()) + r"\s*:?", re.IGNORECASE)
        self.items, self.bad_lines = self._load()
        self.skipped = len(self.bad_lines)
        labels = {str(it.meta["difficulty"]): it.meta["difficulty"] for it in self.items}
        self.difficulty_buckets: tuple[Hashable, ...] = tuple(sorted(labels, key=lambda s: (len(s), s)))
        self._by_bucket: dict[Hashable, list[TaskItem]] = {b: [] for b in self.difficulty_buckets}
        for item in self.items:
            self._by_bucket[str(item.meta["difficulty"])].append(item)

    # --- loading ------------------------------------------------------------------------------
    def _options(self, given: dict[str, Any]) -> PackOptions:
        """The given options over the sidecar's, validated; a sidecar may not name a module checker."""
        sidecar = self.path.with_name(self.path.stem + ".pack.json")
        config = self._sidecar_config(sidecar)
        named = config.get("checker")
        if "checker" not in given and isinstance(named, str) and named not in CHECKERS:
            raise InputError(
                f"{sidecar} names the checker {named!r}, a Python module; Stratos imports checker code only when "
                f"you name it on the command line: --checker {named} (stratos synth) or --task-option "
                f"checker={named} (stratos eval); or set a built-in checker ({', '.join(CHECKERS)}) in the file"
            )
        merged = {**config, **given}
        try:
            return PackOptions.model_validate(merged)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else "options"
            source = "option" if name in given or not error["loc"] else str(sidecar)
            raise InputError(f"{source} {name}={merged.get(name)!r}: {error['msg']}") from None

    @staticmethod
    def _sidecar_config(sidecar: Path) -> dict[str, Any]:
        if not sidecar.is_file():
            return {}
        config = parse_json_line(sidecar.read_bytes(), str(sidecar))
        if not isinstance(config, dict):
            raise InputError(f"{sidecar}: expected a JSON object with {', '.join(PackOptions.model_fields)}")
        return config

    def _resolve_checker(self, checker: str) -> Callable[[str, TaskItem], bool]:
        if checker in CHECKERS:
            return getattr(self, f"_check_{checker}")
        module_name, sep, attr = checker.partition(":")
        if not sep:
            raise InputError(f"unknown checker {checker!r}; use {', '.join(CHECKERS)} or module:function")
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # noqa: BLE001 - the user's module failing to import is their input's fault
            raise InputError(f"checker {checker!r} cannot be imported ({type(exc).__name__}: {exc})") from None
        if not callable(function):
            raise InputError(f"checker {checker!r} is not callable")
        return lambda predicted, item: bool(function(predicted, item.answer))

    def _load(self) -> tuple[list[TaskItem], list[str]]:
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        items: list[TaskItem] = []
        bad: list[str] = []
        for where, raw in jsonl_lines(self.path):
            try:
                items.append(self.from_public(parse_json_line(raw, where), where))
            except InputError as exc:
                bad.append(str(exc))
        if bad and self.on_bad_line == "fail":
            shown = "; ".join(bad[:_SHOWN_BAD_LINES])
            more = f" (and {len(bad) - _SHOWN_BAD_LINES} more)" if len(bad) > _SHOWN_BAD_LINES else ""
            raise InputError(f"{len(bad)} malformed line(s): {shown}{more}; fix them or pass --on-bad-line skip")
        if not items:
            raise InputError(f"{self.path}: no usable question/answer lines")
        return items, bad

    def from_public(self, row: Any, where: str = "") -> TaskItem:
        prefix = f"{where}: " if where else ""
        if not isinstance(row, dict):
            raise InputError(f"{prefix}expected a JSON object with question and answer")
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{prefix}missing or empty \"question\" (a string)")
        if not isinstance(answer, str | int | float) or isinstance(answer, bool) or not str(answer).strip():
            raise InputError(f"{prefix}missing \"answer\" (a string or number)")
        if self.checker == "numeric" and parse_number(answer) is None:
            raise InputError(f"{prefix}answer {answer!r} is not a number (numeric checker)")
        meta: dict[str, Any] = {"difficulty": row.get("difficulty", "all")}
        if self.checker == "regex":
            pattern = row.get("pattern")
            try:
                compiled = re.compile(pattern) if isinstance(pattern, str) else None
            except re.error as exc:
                raise InputError(f"{prefix}bad regex in \"pattern\" ({exc})") from None
            if compiled is None or not compiled.fullmatch(str(answer).strip()):
                raise InputError(f"{prefix}regex checker needs a \"pattern\" that fully matches the answer")
            meta["pattern"] = pattern
        if isinstance(row.get("rationale"), str):
            meta["rationale"] = row["rationale"]
        if where:
            meta["source"] = where
        return TaskItem(task=self.name, question={"question": question}, answer=str(answer).strip(), meta=meta)

    def to_public(self, item: TaskItem) -> dict[str, Any]:
        row = {"question": item.question["question"], "answer": item.answer}
        row.update({k: item.meta[k] for k in ("rationale", "difficulty", "pattern") if k in item.meta})
        return row

    # --- sampling and prompting ---------------------------------------------------------------
    def sample_item(self, rng: random.Random, bucket: Hashable | None = None) -> TaskItem:
        """A random line (of `bucket`); a finite file repeats, and synthesis drops the duplicates."""
        return rng.choice(self._by_bucket[str(bucket)] if bucket is not None else self.items)

    def render_prompt(self, item: TaskItem) -> str:
        return f'{item.question["question"]}\n\nEnd with "{self.answer_prefix}" followed by the answer.'

    def format_answer(self, answer: Any) -> str:
        return f"{self.answer_prefix} {answer}"

    def solver_rationale(self, item: TaskItem, style: str | None = None) -> str:
        final = self.format_answer(item.answer)
        if self.check_style(style) == "worked" and item.meta.get("rationale"):
            return f"{item.meta['rationale'].rstrip()}\n{final}"
        return final

    # --- grading ------------------------------------------------------------------------------
    def parse_answer(self, text: str) -> str | None:
        """Text after the last answer marker (same line); without a marker only a one-line output
        counts as the answer. Empty -> None (unparsable, scored wrong)."""
        matches = list(self._marker.finditer(text))
        if matches:
            candidate = text[matches[-1].end():].split("\n", 1)[0]
        elif "\n" not in text.strip():
            candidate = text
        else:
            return None
        candidate = candidate.strip().strip("*`").strip()
        return candidate or None

    def verify(self, item: TaskItem, answer: Any) -> bool:
        return answer is not None and self._check(str(answer), item)

    def _check_exact(self, predicted: str, item: TaskItem) -> bool:
        return _squash(predicted) == _squash(item.answer)

    def _check_numeric(self, predicted: str, item: TaskItem) -> bool:
        got, want = parse_number(predicted), parse_number(item.answer)
        return got is not None and want is not None and abs(got - want) <= self.tolerance * max(1.0, abs(want))

    def _check_regex(self, predicted: str, item: TaskItem) -> bool:
        return re.fullmatch(item.meta["pattern"], predicted.strip()) is not None

    # --- difficulty and identity --------------------------------------------------------------
    def difficulty(self, item: TaskItem) -> dict[str, Any]:
        return {"label": item.meta["difficulty"]}

    def difficulty_bucket(self, item: TaskItem) -> str:
        return str(item.meta["difficulty"])

    def canonical_key(self, item: TaskItem) -> str:
        """Same question up to case and whitespace = same item (dedupe, split leakage)."""
        digest = hashlib.sha256(_squash(item.question["question"]).casefold().encode("utf-8")).hexdigest()
        return f"jsonl:{digest[:32]}"
