"""The TaskPack protocol: everything later tools need to know about a task, in one object.

A pack carries the domain (ARCHITECTURE.md "Task packs carry the domain"):
- reverse synthesis: `sample` draws items whose answer is known by construction (solver, rule base,
  verified dataset), seeded by `random.Random`, optionally following a difficulty distribution;
- prompting: `render_prompt` (plain text question), `chat_messages` (chat form, optional completion);
- supervision: `solver_rationale(item, style)` is a completion that ends with ONE final answer line
  in the pack's fixed format (`format_answer`);
- grading: `parse_answer` (forgiving of noise, never guessing: None means unparsable and scores
  wrong), `verify`, `score` (exact, partial f1, format_ok);
- data hygiene: `difficulty`, `difficulty_bucket`, `canonical_key` (duplicate / leakage checks),
  public JSONL read/write; `VerifiedStream` draws fresh verified batches (held-out keys dropped) for
  training bounded by time or examples instead of a fixed dataset;
- compact notation: `closed_vocabulary` (optional) lists the symbols of prompts and answers, from which
  a micro student's task tokenizer is built.

Answers, questions and metadata are JSON values so a `TaskItem` round-trips through JSONL.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from stratos_agent.errors import InputError
from stratos_agent.files import open_atomic

EVEN = "even"  # `sample(..., distribution=EVEN)`: the same share for every difficulty bucket
_UNIQUE_RETRIES = 200


class TaskItem(BaseModel):
    """One question with its known answer.

    `question` holds the pack-specific inputs (Mahjong: `{"hand": "1123m456p789s55z"}`), `answer` the
    canonical answer (Mahjong: sorted compact tile codes such as `["1m", "4m"]`; GSM8K: a number
    string), `meta` provenance (generator, source line, ...). All three are JSON values.
    """

    model_config = ConfigDict(frozen=True)

    task: str
    question: dict[str, Any]
    answer: Any
    meta: dict[str, Any] = Field(default_factory=dict)


class Score(TypedDict):
    """Grade of one model output: exact set/value match, partial credit in [0, 1], parsable."""

    exact: bool
    f1: float
    format_ok: bool


@runtime_checkable
class TaskPack(Protocol):
    """What every task pack provides (see the module docstring for the roles)."""

    name: str
    description: str
    rationale_styles: tuple[str, ...]  # valid `style` values for `solver_rationale`, first = default
    difficulty_buckets: tuple[Hashable, ...]  # every value `difficulty_bucket` can return, easy -> hard

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        distribution: Mapping[Hashable, float] | str | None = None,
        unique: bool = False,
    ) -> list[TaskItem]: ...

    def render_prompt(self, item: TaskItem) -> str: ...

    def chat_messages(self, item: TaskItem, completion: str | None = None) -> list[dict[str, str]]: ...

    def solver_rationale(self, item: TaskItem, style: str | None = None) -> str: ...

    def format_answer(self, answer: Any) -> str: ...

    def parse_answer(self, text: str) -> Any | None: ...

    def verify(self, item: TaskItem, answer: Any) -> bool: ...

    def score(self, item: TaskItem, text: str) -> Score: ...

    def difficulty(self, item: TaskItem) -> dict[str, Any]: ...

    def difficulty_bucket(self, item: TaskItem) -> Hashable: ...

    def canonical_key(self, item: TaskItem) -> str: ...

    def curriculum(self, items: Iterable[TaskItem]) -> list[TaskItem]: ...

    def to_public(self, item: TaskItem) -> dict[str, Any]: ...

    def from_public(self, row: Any, where: str = "") -> TaskItem: ...

    def read_jsonl(self, path: str | Path) -> list[TaskItem]: ...

    def write_jsonl(self, items: Iterable[TaskItem], path: str | Path) -> int: ...


def set_f1(predicted: Iterable[Hashable], gold: Iterable[Hashable]) -> float:
    """F1 between two sets; two empty sets agree perfectly (1.0)."""
    p, g = set(predicted), set(gold)
    if not p and not g:
        return 1.0
    hits = len(p & g)
    return 0.0 if hits == 0 else 2 * hits / (len(p) + len(g))


def bucket_plan(
    n: int, buckets: Sequence[Hashable], distribution: Mapping[Hashable, float] | str
) -> list[Hashable]:
    """Exactly `n` bucket labels in the given proportions (largest remainder rounding), in bucket order.

    `distribution` is a mapping bucket -> weight (need not sum to 1) or `"even"`.
    """
    if isinstance(distribution, str) and distribution != EVEN:
        raise InputError(f"unknown distribution {distribution!r}; use {EVEN!r} or a mapping bucket -> weight")
    weights = {b: 1.0 for b in buckets} if distribution == EVEN else dict(distribution)  # type: ignore[arg-type]
    unknown = [b for b in weights if b not in buckets]
    if unknown:
        raise InputError(f"unknown difficulty bucket(s) {unknown}; valid buckets: {list(buckets)}")
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        raise InputError("a difficulty distribution needs at least one positive weight")
    exact = {b: n * max(weights.get(b, 0.0), 0.0) / total for b in buckets}
    counts = {b: int(v) for b, v in exact.items()}
    for b in sorted(buckets, key=lambda b: counts[b] - exact[b])[: n - sum(counts.values())]:
        counts[b] += 1
    return [b for b in buckets for _ in range(counts[b])]


def item_rng(seed: int, index: int | str) -> random.Random:
    """Independent, reproducible stream per item, so item i does not depend on how many came before."""
    return random.Random(f"{seed}:{index}")


class BaseTaskPack(ABC):
    """Shared implementations; a concrete pack provides the domain-specific methods.

    Subclasses implement `sample_item(rng, bucket)`, `render_prompt`, `solver_rationale`,
    `format_answer`, `parse_answer`, `verify`, `difficulty`, `difficulty_bucket`, `canonical_key`,
    `to_public`, `from_public`, and may override `partial_credit`.
    """

    name: str = ""
    description: str = ""
    rationale_styles: tuple[str, ...] = ("answer",)
    difficulty_buckets: tuple[Hashable, ...] = ()

    # --- sampling -----------------------------------------------------------------------------
    @abstractmethod
    def sample_item(self, rng: random.Random, bucket: Hashable | None = None) -> TaskItem:
        """One item with a known answer, drawn with `rng`, from difficulty `bucket` when given."""

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        distribution: Mapping[Hashable, float] | str | None = None,
        unique: bool = False,
    ) -> list[TaskItem]:
        """`n` items with known answers; `distribution` (bucket -> weight, or "even") fixes the mix.

        Without a distribution the pack's natural generator decides. With `unique`, no two items
        share a `canonical_key` (InputError if a bucket has too few distinct items). Items are
        shuffled (seeded) so buckets interleave; use `curriculum` for an easy -> hard order.
        """
        if n < 0:
            raise InputError(f"cannot sample a negative number of items ({n})")
        plan = [None] * n if distribution is None else bucket_plan(n, self.difficulty_buckets, distribution)
        seen: set[str] = set()
        items = []
        for i, bucket in enumerate(plan):
            item = self.sample_item(item_rng(seed, i), bucket)
            retry = 0
            while unique and self.canonical_key(item) in seen:
                retry += 1
                if retry > _UNIQUE_RETRIES:
                    raise InputError(
                        f"task {self.name!r}: cannot find {plan.count(bucket)} distinct items in difficulty "
                        f"bucket {bucket!r} (gave up after {_UNIQUE_RETRIES} duplicate draws); "
                        "lower n or change the distribution"
                    )
                item = self.sample_item(item_rng(seed, f"{i}:{retry}"), bucket)
            seen.add(self.canonical_key(item))
            items.append(item)
        if distribution is not None:
            random.Random(seed).shuffle(items)
        return items

    def curriculum(self, items: Iterable[TaskItem]) -> list[TaskItem]:
        """Easy -> hard by difficulty bucket (stable within a bucket)."""
        order = {b: i for i, b in enumerate(self.difficulty_buckets)}
        return sorted(items, key=lambda it: order.get(self.difficulty_bucket(it), len(order)))

    # --- prompting ----------------------------------------------------------------------------
    @abstractmethod
    def render_prompt(self, item: TaskItem) -> str:
        """The question as the model sees it."""

    def chat_messages(self, item: TaskItem, completion: str | None = None) -> list[dict[str, str]]:
        """`[{"role": "user", ...}]`, plus the assistant turn when a completion is given (SFT rows)."""
        messages = [{"role": "user", "content": self.render_prompt(item)}]
        if completion is not None:
            messages.append({"role": "assistant", "content": completion})
        return messages

    def check_style(self, style: str | None) -> str:
        style = style or self.rationale_styles[0]
        if style not in self.rationale_styles:
            raise InputError(
                f"unknown rationale style {style!r} for task {self.name!r}; choose from {list(self.rationale_styles)}"
            )
        return style

    def closed_vocabulary(self) -> list[str] | None:
        """The symbols every prompt (`render_prompt`) and answer line (`format_answer`) is written in, when
        that set is closed (a solver-backed pack with a compact notation); None otherwise (the default).

        A micro student's tokenizer is built from it (`stratos_agent/models/micro.py`): one token per symbol,
        longest match first, so the list may hold words (`"Hand:"`) next to single characters.
        """
        return None

    # --- grading ------------------------------------------------------------------------------
    @abstractmethod
    def parse_answer(self, text: str) -> Any | None:
        """The answer in a model output, or None when it cannot be read without guessing."""

    @abstractmethod
    def verify(self, item: TaskItem, answer: Any) -> bool:
        """Whether a parsed answer is exactly right."""

    def partial_credit(self, item: TaskItem, answer: Any) -> float:
        """Partial credit of a parsed answer in [0, 1]; default all-or-nothing."""
        return 1.0 if self.verify(item, answer) else 0.0

    def score(self, item: TaskItem, text: str) -> Score:
        """Grade a raw model output; an unparsable output is wrong (exact False, f1 0, format_ok False)."""
        answer = self.parse_answer(text)
        if answer is None:
            return Score(exact=False, f1=0.0, format_ok=False)
        return Score(exact=self.verify(item, answer), f1=self.partial_credit(item, answer), format_ok=True)

    # --- public JSONL -------------------------------------------------------------------------
    @abstractmethod
    def to_public(self, item: TaskItem) -> dict[str, Any]:
        """The item as a row of the task's public JSONL format."""

    @abstractmethod
    def from_public(self, row: Any, where: str = "") -> TaskItem:
        """An item from a public JSONL row; `where` (file:line) names bad input in the error."""

    def read_jsonl(self, path: str | Path) -> list[TaskItem]:
        """Read the pack's public JSONL format; any bad line raises InputError naming file:line."""
        return [self.from_public(row, where) for where, row in iter_jsonl(path)]

    def write_jsonl(self, items: Iterable[TaskItem], path: str | Path) -> int:
        """Write items in the pack's public JSONL format (atomic); returns the number of rows."""
        return write_rows(path, (self.to_public(it) for it in items))


def jsonl_lines(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield (`file:line`, raw bytes) for every non-blank line (bytes: a bad encoding is one line's fault)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if raw.strip():
                yield f"{path}:{lineno}", raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_line(raw: bytes, where: str) -> Any:
    """One JSONL line; not UTF-8, malformed JSON, NaN/Infinity or a lone surrogate escape ("\\ud800", which
    could never be written back) is an InputError naming `where`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
    try:
        row = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        line = f"line {exc.lineno} " if exc.lineno > 1 else ""
        raise InputError(f"{where}: malformed JSON ({exc.msg} at {line}column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity (_no_constant), or nested thousands deep
        raise InputError(f"{where}: malformed JSON ({exc or 'nested too deeply'})") from None
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: a string holds a lone surrogate escape (\\ud800-\\udfff), not text") from None
    return row


def iter_jsonl(path: str | Path) -> Iterable[tuple[str, Any]]:
    """Yield (`file:line`, parsed JSON) for every non-blank line; a bad line is an InputError naming it."""
    for where, raw in jsonl_lines(path):
        yield where, parse_json_line(raw, where)


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write JSON rows, one per line, via a temporary file renamed into place (never half-written)."""
    n = 0
    with open_atomic(Path(path)) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_items(path: str | Path) -> list[TaskItem]:
    """Read `TaskItem` rows (our internal format, `write_items`), validating each line."""
    from pydantic import ValidationError

    items = []
    for where, row in iter_jsonl(path):
        try:
            items.append(TaskItem.model_validate(row))
        except ValidationError as exc:
            raise InputError(f"{where}: not a task item ({exc.errors()[0]['msg']})") from None
    return items


def write_items(items: Iterable[TaskItem], path: str | Path) -> int:
    """Write `TaskItem` rows (task, question, answer, meta) as JSONL (atomic)."""
    return write_rows(path, (it.model_dump(mode="json") for it in items))


_MAX_DRAWS = 50  # stream draws per batch before giving up (everything held out: a configuration error)


class VerifiedStream:
    """Fresh solver-labelled items: a `natural_share` from the pack's own generator, the rest over its
    difficulty buckets -- even, or by `weights` (one per bucket, in `difficulty_buckets` order: the trainer's
    adaptive weighting). Held-out keys are dropped (and counted). Step k's batch depends only on
    (seed, k, weights), so a resumed run that restores the weights in force draws exactly what the lost
    steps would have drawn."""

    def __init__(self, pack: TaskPack, *, seed: int, natural_share: float, exclude: set[str],
                 weights: Sequence[float] | None = None) -> None:
        self.pack, self.seed, self.natural_share, self.exclude = pack, seed, natural_share, exclude
        self.weights = weights
        self.dropped = 0

    @property
    def weights(self) -> list[float] | None:
        return self._weights

    @weights.setter
    def weights(self, weights: Sequence[float] | None) -> None:
        if weights is not None and (len(weights) != len(self.pack.difficulty_buckets) or min(weights) < 0
                                    or sum(weights) <= 0):
            raise InputError(f"stream weights need one non-negative weight per difficulty bucket "
                             f"{list(self.pack.difficulty_buckets)}, not all zero; got {list(weights)}")
        self._weights = None if weights is None else [float(w) for w in weights]

    def _seed(self, *parts: object) -> int:
        text = ":".join(map(str, ("stream", self.seed, *parts)))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")

    def _draw(self, n: int, step: int, draw: int) -> list[TaskItem]:
        natural = round(n * self.natural_share) if self.pack.difficulty_buckets else n
        items = self.pack.sample(natural, seed=self._seed(step, draw, "n")) if natural else []
        if n > natural:
            items += (self._even if self._weights is None else self._weighted)(n - natural, step, draw)
        return items

    def _even(self, n: int, step: int, draw: int) -> list[TaskItem]:
        """An even draw of a multiple of the bucket count, then a random subset: no rounding bias."""
        k = len(self.pack.difficulty_buckets)
        even = self.pack.sample(k * math.ceil(n / k), seed=self._seed(step, draw, "e"), distribution=EVEN)
        return random.Random(self._seed(step, draw, "s")).sample(even, n)

    def _weighted(self, n: int, step: int, draw: int) -> list[TaskItem]:
        """Each item's bucket drawn by weight (multinomial counts: no rounding bias), then sampled."""
        buckets = self.pack.difficulty_buckets
        chosen = random.Random(self._seed(step, draw, "w")).choices(range(len(buckets)), weights=self._weights, k=n)
        counts = {buckets[i]: float(chosen.count(i)) for i in set(chosen)}
        return self.pack.sample(n, seed=self._seed(step, draw, "e"), distribution=counts)

    def batch(self, step: int, size: int) -> list[TaskItem]:
        out: list[TaskItem] = []
        for draw in range(_MAX_DRAWS):
            for item in self._draw(size - len(out), step, draw):
                if self.pack.canonical_key(item) in self.exclude:
                    self.dropped += 1
                else:
                    out.append(item)
            if len(out) == size:
                return out
        raise InputError(f"stream: {_MAX_DRAWS} draws could not fill a batch outside the held-out keys")


PackFactory = Callable[[], TaskPack]
