"""GSM8K-style grade-school math pack (knowledge alignment), backed by reasoning_gym's `gsm_symbolic`.

`gsm_symbolic` re-instantiates GSM8K problems from ~85 verified templates with fresh names and numbers,
offline; each comes with its answer and a worked solution, so answers are known by construction.
The rationale is the dataset's own worked solution (style `cot`) or the final line only (`answer`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.tasks.base import BaseTaskPack, TaskItem

ANSWER_PREFIX = "Answer:"
_MAX_TRIES = 2_000
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
# "Answer: N", "The final answer is: N", "#### N", and the chain-of-thought convention "The answer is N."
# (SmolLM2 ended 6 of its 16 gsm8k probe answers that way, one of them right; evals/task_choice.py).
_MARKER = re.compile(r"(?:final\s+)?answer(?:\s+is\s*[:：=]?|\s*[:：=])|####", re.IGNORECASE)
_ONLY_NUMBER = re.compile(rf"\s*\**\s*({_NUMBER})\s*\**\s*(?:[.;(!].*)?", re.DOTALL)


@cache
def _dataset() -> Any:
    try:
        import reasoning_gym
    except ImportError as exc:  # pragma: no cover - a dev dependency
        raise InputError("the gsm8k task needs reasoning-gym: pip install 'stratos-agent[dev]'") from exc
    return reasoning_gym.create_dataset("gsm_symbolic", seed=0, size=1)


def _templates() -> list[int]:
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    return list(tasks_ok)


def parse_number(text: str) -> str | None:
    """The final numeric answer as a canonical decimal string (`"1,234.50"` -> `"1234.5"`), or None.

    Reads the last `Answer:` (`The answer is`, `####`) line; without one the whole output must be a single number.
    Text after the number must start with a break (`.`, `(`, ...), so "12 or 13" is None, not 12.
    """
    matches = list(_MARKER.finditer(text))
    segment = text[matches[-1].end() :].split("\n", 1)[0] if matches else text.strip()
    if not matches and "\n" in segment:
        return None
    match = _ONLY_NUMBER.fullmatch(segment)
    if not match:
        return None
    try:
        value = Decimal(match.group(1).replace("$", "").replace(",", ""))
    except InvalidOperation:
        return None
    return canonical_number(value)


def canonical_number(value: Decimal | float | str) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return "0" if text in ("-0", "") else text


class Gsm8kPack(BaseTaskPack):
    """Grade-school math word problems with numeric answers (gsm_symbolic templates)."""

    name = "gsm8k"
    description = "Solve a grade-school math word problem; the answer is one number."
    rationale_styles = ("cot", "answer")
    difficulty_buckets: tuple[Hashable, ...] = (2, 3, 4, 5)  # worked-solution steps, clipped to 2..5

    def sample_item(self, rng: random.Random, bucket: Hashable | None = None) -> TaskItem:
        if bucket is not None and bucket not in self.difficulty_buckets:
            raise InputError(f"gsm8k difficulty bucket must be one of {list(self.difficulty_buckets)}")
        generators = _dataset().generators
        templates = _templates()
        for _ in range(_MAX_TRIES):
            template = rng.choice(templates)
            example = generators[template](random.Random(rng.getrandbits(63)), 1.0)
            item = TaskItem(
                task=self.name,
                question={"question": example["question"]},
                answer=canonical_number(example["metadata"].get("answer_value", example["answer"])),
                meta={"template": template, "cot": _strip_final(example["metadata"].get("answer_cot", ""))},
            )
            if bucket is None or self.difficulty_bucket(item) == bucket:
                return item
        raise InputError(f"no gsm8k item with {bucket} steps after {_MAX_TRIES} tries")  # pragma: no cover

    def render_prompt(self, item: TaskItem) -> str:
        return f'{item.question["question"]}\nEnd with "{ANSWER_PREFIX}" and the number.'

    def format_answer(self, answer: Any) -> str:
        return f"{ANSWER_PREFIX} {answer}"

    def solver_rationale(self, item: TaskItem, style: str | None = None) -> str:
        style = self.check_style(style)
        cot = item.meta.get("cot", "")
        final = self.format_answer(item.answer)
        return f"{cot}\n{final}" if style == "cot" and cot else final

    def parse_answer(self, text: str) -> str | None:
        return parse_number(text)

    def verify(self, item: TaskItem, answer: Any) -> bool:
        return answer is not None and Decimal(str(answer)) == Decimal(str(item.answer))

    def difficulty(self, item: TaskItem) -> dict[str, Any]:
        cot = item.meta.get("cot", "")
        return {
            "steps": _count_steps(cot),
            "question_words": len(item.question["question"].split()),
            "template": item.meta.get("template"),
        }

    def difficulty_bucket(self, item: TaskItem) -> int:
        return max(2, min(5, _count_steps(item.meta.get("cot", ""))))

    def canonical_key(self, item: TaskItem) -> str:
        return f"{self.name}:{' '.join(item.question['question'].lower().split())}"

    def to_public(self, item: TaskItem) -> dict[str, Any]:
        return {"question": item.question["question"], "answer": item.answer}

    def from_public(self, row: Any, where: str = "") -> TaskItem:
        prefix = f"{where}: " if where else ""
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or "answer" not in row:
            raise InputError(f'{prefix}expected an object with a "question" string and an "answer"')
        answer = parse_number(str(row["answer"]))
        if answer is None:
            raise InputError(f"{prefix}answer {row['answer']!r} is not a number")
        return TaskItem(
            task=self.name, question={"question": row["question"]}, answer=answer,
            meta={"source": where} if where else {},
        )


def _strip_final(cot: str) -> str:
    """Drop the dataset's `#### N` line: our own final line replaces it."""
    return "\n".join(line for line in cot.strip().splitlines() if not line.startswith("####")).strip()


def _count_steps(cot: str) -> int:
    """Arithmetic steps of a worked solution: lines that compute something (`a op b = c`)."""
    return sum(1 for line in cot.splitlines() if "=" in line)
