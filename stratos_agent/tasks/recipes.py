"""Per-task training recipes: what the task's owners found works for a small student.

A recipe says which prompt variant the student learns (a short prompt saves tokens on every request),
how the solver writes the completion, how many tokens student and teacher answers need, and the
sequence length to train at. Tasks without an entry get `DEFAULT`. The few sizes a plan does not set
(`LocalSizes`: hold-out and probe items, checkpoint interval) live here too.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from stratos_agent.tasks import get_task_pack
from stratos_agent.tasks.base import TaskPack


class Recipe(BaseModel):
    student_pack: dict[str, Any] = Field(default_factory=dict, description="Task pack options for the student.")
    teacher_pack: dict[str, Any] = Field(default_factory=dict, description="Task pack options for the teacher.")
    style: str | None = Field(default=None, description="Solver rationale style; None = the pack's default.")
    student_tokens: int = Field(default=256, description="Max new tokens of a student answer.")
    teacher_tokens: int = Field(default=256, description="Max new tokens of a teacher answer.")
    max_seq_len: int = 512

    def pack(self, task: str, role: str) -> TaskPack:
        """The task pack as the student (or teacher) is prompted."""
        return get_task_pack(task, **(self.student_pack if role == "student" else self.teacher_pack))


RECIPES: dict[str, Recipe] = {
    # The student learns the hand-only prompt and answers with the tile list alone (tools/train.py,
    # evals/mahjong_quality.py measured both choices).
    "mahjong": Recipe(
        student_pack={"prompt": "short"},
        style="answer",
        student_tokens=24,
        teacher_tokens=64,
        max_seq_len=256,
    ),
    # The student learns the worked solution (the pack's default style). In SmolLM2's
    # tokenizer a worked solution plus its end token is 96 tokens on average, 182 at p95 and up to 258 over
    # 400 sampled items (evals/task_choice.py, `answer_tokens`): the default 256 would cut the longest
    # correct solutions before their "Answer:" line.
    "gsm8k": Recipe(style="cot", student_tokens=272, teacher_tokens=272),
}
DEFAULT = Recipe()


def recipe_for(task: str) -> Recipe:
    """The recipe of a task id ('mahjong', 'gsm8k', 'jsonl:PATH', ...)."""
    return RECIPES.get(task.split(":")[0], DEFAULT)


class LocalSizes(BaseModel):
    """Sizes the plan does not set: rows to synthesise when there is no plan, ~100 hold-out items, 8 probe
    items per teacher, checkpoint interval. Data size and training are the plan's, time-boxed only by the
    spec's deadline_hours. Each can be overridden by environment (tests use tiny ones):
    STRATOS_LOCAL_SYNTH_N, STRATOS_LOCAL_EVAL_N, STRATOS_LOCAL_PROBE_N, STRATOS_LOCAL_SAVE_STEPS."""

    synth_n: int = 3000
    eval_n: int = 100
    probe_n: int = 8
    save_steps: int = 25


def local_sizes() -> LocalSizes:
    """Read when used, so a test or a user can change a size by environment at any time."""
    env = {k: os.environ[f"STRATOS_LOCAL_{k.upper()}"] for k in LocalSizes.model_fields if
           f"STRATOS_LOCAL_{k.upper()}" in os.environ}
    return LocalSizes.model_validate(env)
