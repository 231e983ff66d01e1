"""Records of the data stage: a synthesised dataset (where it is, what is in it) and a teacher probe.

They hold counts, names and paths only; the rows live on disk under `DatasetRef.path`.
No field ever holds an API key: teachers are named by `identity` (backend + model + host).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SynthMode = Literal["solver", "teacher", "forward"]
SPLITS = ("train", "val", "test")


class DataCard(BaseModel):
    """What a dataset is and how it was made; saved as `data_card.json` and `data_card.md`."""

    model_config = ConfigDict(extra="forbid")

    task: str
    mode: SynthMode
    seed: int
    teacher: str | None = Field(default=None, description="Teacher identity (backend:model@host); no key.")
    style: str | None = Field(default=None, description="Prompt template used to ask the teacher.")
    n_requested: int
    n_accepted: int
    attempted: int = Field(description="Candidates drawn (accepted + rejected).")
    rejections: dict[str, int] = Field(default_factory=dict, description="Reason -> count.")
    difficulty_target: dict[str, float] | None = Field(default=None, description="Bucket -> share; None = natural.")
    difficulty_counts: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Split -> difficulty bucket -> rows."
    )
    split_counts: dict[str, int] = Field(default_factory=dict)
    split_fractions: dict[str, float] = Field(default_factory=dict, description="Target share per split.")
    curriculum: bool = False
    notes: list[str] = Field(default_factory=list, description="Shortfalls: exhausted buckets, attempt budget.")
    created_at: str = Field(description="UTC ISO time the dataset was finalised.")
    elapsed_s: float = Field(description="Generate + verify wall time, summed over every (resumed) session.")
    sessions: int = Field(default=1, description="How many runs of the command it took (resumes + 1).")
    fingerprint: str = Field(description="sha256 over the canonical keys per split: same data, same print.")

    @property
    def yield_rate(self) -> float:
        return self.n_accepted / self.attempted if self.attempted else 0.0

    def to_markdown(self) -> str:
        lines = [
            f"# Data card: {self.task} ({self.mode} mode)",
            "",
            (f"- rows: {self.n_accepted} accepted of {self.attempted} attempted "
             f"(yield {self.yield_rate:.1%}; {self.n_requested} requested)"),
            f"- teacher: {self.teacher or 'none (task solver)'}; style: {self.style or '-'}",
            f"- seed: {self.seed}; curriculum order: {self.curriculum}",
            f"- made: {self.created_at}, {self.elapsed_s:.1f} s over {self.sessions} session(s)",
            f"- fingerprint: `{self.fingerprint}`",
            "",
            "## Splits (assigned by hashing each item's canonical key: no leakage)",
            "",
            "| split | rows |",
            "|---|---|",
            *(f"| {name} | {count} |" for name, count in self.split_counts.items()),
            "",
            "## Rows per difficulty",
            "",
        ]
        buckets = sorted({b for counts in self.difficulty_counts.values() for b in counts})
        lines += ["| difficulty | " + " | ".join(self.difficulty_counts) + " |",
                  "|---" * (len(self.difficulty_counts) + 1) + "|"]
        lines += [
            f"| {b} | " + " | ".join(str(c.get(b, 0)) for c in self.difficulty_counts.values()) + " |"
            for b in buckets
        ]
        lines += ["", "## Notes", ""] + ([f"- {note}" for note in self.notes] or ["- none"])
        lines += ["", "## Rejections", ""]
        lines += [f"- {reason}: {count}" for reason, count in sorted(self.rejections.items())] or ["- none"]
        return "\n".join(lines) + "\n"


class DatasetRef(BaseModel):
    """A finished dataset on disk: HF `datasets` folder, JSONL previews, public exports, data card."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="The output folder of the synth run.")
    hf_path: Path = Field(description="`datasets.load_from_disk` folder (a DatasetDict of the splits).")
    card: DataCard
    public_jsonl: dict[str, Path] = Field(
        default_factory=dict, description="Split -> JSONL in the task's public benchmark format."
    )

    def load(self):  # -> datasets.DatasetDict (imported lazily: datasets is heavy)
        from datasets import load_from_disk

        return load_from_disk(str(self.hf_path))


class ProbeResult(BaseModel):
    """How well a teacher answers the task cold: forward-mode yield on `n` fresh items."""

    model_config = ConfigDict(extra="forbid")

    task: str
    teacher: str
    n: int
    seed: int
    correct: int
    unparsable: int = Field(description="Answers the task's parser could not read (scored wrong).")
    accuracy: float = Field(ge=0, le=1, description="correct / n: the forward-synthesis yield.")
    elapsed_s: float = Field(description="Wall time of this call (near 0 when every answer was cached).")
