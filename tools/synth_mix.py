"""The difficulty mix of a synthesized dataset, per split: the per-(bucket, split) quota that steers each chunk's
draws (`Quota`), and the natural-mix hold-out drawn unbalanced from the pack's own generator (`natural_holdout`).
Also the seeded chunk draws and the row layout they share with `synth`."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

from stratos_agent.tools.synth_store import split_of

from stratos_agent.tasks import TaskItem, TaskPack
from stratos_agent.tasks.base import bucket_plan

MIN_DRAWS_TO_CLOSE = 50  # draws of a bucket (or the task) without one new item = it is exhausted
NATURAL_CHUNK = 500  # natural-mix draws per seeded chunk
NATURAL_DRAW_FACTOR = 4  # natural-mix draws allowed, in expected draws (a finite task's held-out keys may all be rows)


def chunk_seed(seed: int, chunk: int | str) -> int:
    return int.from_bytes(hashlib.sha256(f"synth:{seed}:{chunk}".encode()).digest()[:8], "big")


def dataset_row(pack: TaskPack, item: TaskItem, key: str, bucket: Hashable, completion: str) -> dict[str, Any]:
    return {
        "prompt": pack.render_prompt(item),
        "completion": completion,
        "answer": pack.format_answer(item.answer),
        "difficulty": str(bucket),
        "level": pack.difficulty_buckets.index(bucket) if bucket in pack.difficulty_buckets else -1,
        "key": key,
        "item": item.model_dump_json(),
    }


Cell = tuple[Hashable, str]  # (difficulty bucket, split)


class Quota:
    """Target rows per (difficulty bucket, split) cell, and the mix each chunk should draw.

    Each bucket's share is divided over the splits by the split fractions, and a row counts in the cell of
    its key's split (`split_of`), so every split (the test split above all: the evaluation's yardstick) has
    the target mix exactly, not as a hash's luck. A bucket that yields nothing but duplicates is closed at
    what it has and its share moves to the open buckets: an even mix over 0-9 winning tiles asks for more
    distinct 9-wait hands than exist.
    """

    def __init__(self, pack: TaskPack, n: int, distribution: Mapping[Hashable, float] | str,
                 fractions: Mapping[str, float], counts: Counter, closed: set[Hashable]) -> None:
        self.n, self.fractions, self.counts, self.closed = n, fractions, counts, closed
        plan = Counter(bucket_plan(n, pack.difficulty_buckets, distribution))
        self.weights = {b: plan[b] / n for b in pack.difficulty_buckets if plan[b]}
        self.target: dict[Cell, int] = {}
        self._replan()

    def bucket_count(self, bucket: Hashable) -> int:
        return sum(self.counts[(bucket, name)] for name in self.fractions)

    def _replan(self) -> None:
        totals = {b: self.bucket_count(b) for b in self.closed if b in self.weights}
        open_buckets = [b for b in self.weights if b not in self.closed]
        if open_buckets:
            rest = self.n - sum(totals.values())
            totals.update(Counter(bucket_plan(rest, open_buckets, {b: self.weights[b] for b in open_buckets})))
        self.target = {}
        for bucket, total in totals.items():
            if bucket in self.closed:
                self.target.update({(bucket, name): self.counts[(bucket, name)] for name in self.fractions})
            else:
                self.target.update({(bucket, name): k for name, k in
                                    Counter(bucket_plan(total, list(self.fractions), self.fractions)).items()})

    def missing(self) -> dict[Cell, int]:
        return {cell: t - self.counts[cell] for cell, t in self.target.items() if t > self.counts[cell]}

    def draw_mix(self) -> dict[Hashable, float]:
        """Bucket -> expected draws still needed (a test row takes 1 / test fraction draws of its bucket)."""
        mix: Counter = Counter()
        for (bucket, name), k in self.missing().items():
            mix[bucket] += k / self.fractions[name]
        return dict(mix)

    def close_exhausted(self, drawn: Counter, fresh: Counter) -> None:
        """Close buckets that had many draws this chunk and not one new item."""
        dead = [b for b, k in drawn.items() if k >= MIN_DRAWS_TO_CLOSE and not fresh[b] and b in self.weights]
        if dead:
            self.closed.update(dead)
            self._replan()


def natural_holdout(
    pack: TaskPack, taken: set[str], size: int, seed: int, fractions: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Up to `size` rows from the pack's own generator without balancing (`pack.sample` with no distribution:
    Mahjong's complete hands minus one tile, ~15% noten), for evaluation only: the yardstick of the task's
    natural mix, next to the even test split. An item is kept only if its key hashes into the held-out part
    of the key space (val or test) and is none of `taken`, so it is no row of this dataset and in the train
    split of no dataset made with these fractions. The completion is the gold answer line. Deterministic in
    (pack, taken, size, seed), so a resumed run rebuilds the same split."""
    share = 1.0 - fractions["train"]
    if size <= 0 or share <= 0:
        return []
    rows: list[dict[str, Any]] = []
    keys = set(taken)
    draws = NATURAL_DRAW_FACTOR * math.ceil(size / share)
    for chunk in range(math.ceil(draws / NATURAL_CHUNK)):
        for item in pack.sample(NATURAL_CHUNK, seed=chunk_seed(seed, f"natural:{chunk}")):
            key = pack.canonical_key(item)
            if split_of(key, fractions) == "train" or key in keys:
                continue
            keys.add(key)
            rows.append(dataset_row(pack, item, key, pack.difficulty_bucket(item), pack.format_answer(item.answer)))
            if len(rows) == size:
                return rows
    return rows
