"""On-disk side of synthesis: the resumable partial log, split assignment, and the final dataset.

Out folder layout (one synth run):
    synth_config.json      the parameters that decide the data (a rerun must match them to resume)
    partial.jsonl          accepted rows + one `done` marker per chunk, appended with flush + fsync
    dataset/               HF `datasets` DatasetDict (train/val/test [+ test_natural]), `load_from_disk`-able
    preview.jsonl          the first rows of every split, for eyes
    public/<split>.jsonl   every split in the task's public benchmark format (+ prompt, completion)
    data_card.json / .md   counts per difficulty, rejections and reasons, teacher, mode, seed, time

Two hold-outs for evaluation: `test` (the synthesised mix; with an even mix it is ordered round-robin over the
difficulty buckets, so every prefix an evaluation reads is even too) and `test_natural` (the pack's own
generator, unbalanced, drawn at finalisation; see `synth_mix.natural_holdout`).

A chunk is committed only by its `done` marker; a kill mid-chunk leaves a torn tail that the next run
cuts off and regenerates identically (same seed per chunk; teacher answers come from the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.files import recover_folder, replace_folder, temp_sibling, write_text_atomic
from stratos_agent.records.data import SPLITS, DataCard, DatasetRef
from stratos_agent.tasks.base import TaskItem, TaskPack, write_rows

CONFIG_FILE = "synth_config.json"
PARTIAL_FILE = "partial.jsonl"
CARD_FILE = "data_card.json"
DEFAULT_SPLIT_FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}
NATURAL_SPLIT = "test_natural"  # the natural-mix hold-out: evaluation only, never trained on
COLUMNS = ("prompt", "completion", "answer", "difficulty", "level", "key", "item")
PREVIEW_ROWS = 20


def split_of(key: str, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """Split of an item, from the hash of its canonical key alone (no seed, no run state): the same
    item lands in the same split in every run, resumed or not, so train/test leakage cannot happen."""
    point = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if point < edge:
            return name
    return SPLITS[-1]  # float rounding at the top edge


@dataclass
class PartialState:
    """What earlier sessions committed to `partial.jsonl`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    attempted: int = 0
    rejections: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    sessions: int = 0
    next_chunk: int = 0
    closed: list[str] = field(default_factory=list)  # difficulty buckets found exhausted


class PartialLog:
    """Append-only chunk log; `load` cuts off a torn tail left by a kill."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / PARTIAL_FILE

    def load(self) -> PartialState:
        state = PartialState()
        if not self.path.exists():
            return state
        pending: list[dict[str, Any]] = []
        committed = 0
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    break  # torn last line
                if not raw.endswith(b"\n"):
                    break
                if "session" in record:
                    state.sessions += 1
                elif "row" in record:
                    pending.append(record["row"])
                elif record.get("done"):
                    state.rows += pending
                    pending = []
                    state.attempted += record["attempted"]
                    state.rejections.update(record["rejections"])
                    state.elapsed_s += record["elapsed_s"]
                    state.next_chunk = record["chunk"] + 1
                    state.closed = record["closed"]
                else:
                    break
                committed = fh.tell() if not pending else committed
        if committed != self.path.stat().st_size:
            with self.path.open("r+b") as fh:  # drop the uncommitted chunk; it is regenerated
                fh.truncate(committed)
        return state

    def _append(self, lines: Sequence[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def start_session(self) -> None:
        self._append([{"session": datetime.now(UTC).isoformat(timespec="seconds")}])

    def commit_chunk(
        self, chunk: int, rows: Sequence[dict[str, Any]], attempted: int, rejections: Mapping[str, int],
        elapsed_s: float, closed: Sequence[str],
    ) -> None:
        marker = {"chunk": chunk, "done": True, "attempted": attempted, "rejections": dict(rejections),
                  "elapsed_s": round(elapsed_s, 4), "closed": list(closed)}
        self._append([*({"chunk": chunk, "row": row} for row in rows), marker])


def check_config(out_dir: Path, config: dict[str, Any]) -> None:
    """First run writes the config; a rerun must match it field by field (else it is another dataset)."""
    path = out_dir / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise InputError(
                f"{out_dir} holds a synth run with other settings ({changes}); "
                "rerun with the same settings to resume, or choose a new --out"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, config)


def write_json(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def interleave_levels(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Round-robin over difficulty levels (each level keeps its order): every prefix is as even over the
    levels as the rows allow, so an evaluation of the first k rows sees the even mix, not a hash's luck."""
    by_level: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_level[row["level"]].append(row)
    queues = [by_level[level] for level in sorted(by_level)]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def even_prefix(rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(difficulty levels in `rows`, rows per level) of the exactly even prefix of interleaved rows."""
    counts = Counter(row["level"] for row in rows)
    return len(counts), min(counts.values(), default=0)


def order_splits(
    rows: Sequence[dict[str, Any]], seed: int, curriculum: bool, even_test: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Rows by split (hash of key), shuffled with `seed`; `curriculum` then sorts easy -> hard
    (stable, by the pack's bucket order stored in `level`). With `even_test` the test split is interleaved
    over the levels instead (`interleave_levels`): it is the yardstick, read from its start."""
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for row in rows:
        splits[row["split"]].append(row)
    for name, part in splits.items():
        random.Random(f"{seed}:{name}").shuffle(part)
        if even_test and name == "test":
            splits[name] = interleave_levels(part)
        elif curriculum:
            part.sort(key=lambda r: r["level"])
    return splits


def _save_hf(splits: Mapping[str, list[dict[str, Any]]], target: Path) -> None:
    import datasets
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({c: Value("int64") if c == "level" else Value("string") for c in COLUMNS})
    dd = DatasetDict({
        name: Dataset.from_dict({c: [r[c] for r in part] for c in COLUMNS}, features=features)
        for name, part in splits.items()
    })
    recover_folder(target)  # leftovers of a killed writer (an old version aside goes back first)
    tmp = temp_sibling(target)
    quiet = datasets.is_progress_bar_enabled()  # our caller shows its own progress
    datasets.disable_progress_bars()
    try:
        dd.save_to_disk(str(tmp), num_shards={name: 1 for name in dd})  # 0 shards (an empty split) won't load
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if quiet:
            datasets.enable_progress_bars()


def export_public(pack: TaskPack, rows: Sequence[dict[str, Any]], path: Path) -> int:
    """Rows in the task's public benchmark format (Mahjong: `hand`, `winning_tiles` as Unicode
    tiles) plus `prompt` and `completion`, so outside tools can check them."""
    return write_rows(path, (
        {**pack.to_public(TaskItem.model_validate_json(r["item"])), "prompt": r["prompt"],
         "completion": r["completion"]}
        for r in rows
    ))


def fingerprint(splits: Mapping[str, Sequence[dict[str, Any]]]) -> str:
    digest = hashlib.sha256()
    for name in SPLITS:
        for key in sorted(r["key"] for r in splits[name]):
            digest.update(f"{name}\t{key}\n".encode())
    return digest.hexdigest()


def _split_notes(pack: TaskPack, splits: Mapping[str, Sequence[dict[str, Any]]], even_test: bool) -> list[str]:
    """What the card says about the two hold-outs: how far the test split is even, where the natural one is from."""
    notes = []
    if even_test and splits["test"]:
        levels, per = even_prefix(splits["test"])
        held = {row["level"] for row in splits["test"]}
        absent = [str(b) for i, b in enumerate(pack.difficulty_buckets) if i not in held]
        notes.append(f"test split ordered round-robin over its {levels} difficulty buckets: the first {levels * per} "
                     f"rows are exactly even ({per} each)" + (f"; no test rows in bucket(s) {', '.join(absent)}"
                                                             if absent else ""))
    if splits.get(NATURAL_SPLIT):
        notes.append(f"{NATURAL_SPLIT}: {len(splits[NATURAL_SPLIT])} items of the task's own unbalanced mix, a second "
                     "hold-out for evaluation (keys hash into the val or test part of the key space, never train; none "
                     "is a row of the splits; not counted in the accepted rows)")
    return notes


def finalize(
    out_dir: Path, pack: TaskPack, rows: Sequence[dict[str, Any]], card_fields: dict[str, Any],
    fractions: Mapping[str, float], seed: int, curriculum: bool, *, even_test: bool = False,
    natural: Sequence[dict[str, Any]] = (),
) -> DatasetRef:
    """Write splits (HF + public JSONL + preview) and the data card; return the reference. `even_test`
    interleaves the test split over the difficulty levels; `natural` rows become the `test_natural` split."""
    for row in rows:
        row["split"] = split_of(row["key"], fractions)
    splits = order_splits(rows, seed, curriculum, even_test)
    if natural:
        splits[NATURAL_SPLIT] = list(natural)
    _save_hf(splits, out_dir / "dataset")
    public = {name: out_dir / "public" / f"{name}.jsonl" for name in splits}
    for name, part in splits.items():
        export_public(pack, part, public[name])
    write_rows(out_dir / "preview.jsonl", (
        {"split": name, **{c: r[c] for c in COLUMNS if c != "item"}}
        for name, part in splits.items() for r in part[:PREVIEW_ROWS]
    ))
    card = DataCard(
        **{**card_fields, "notes": [*card_fields.get("notes", []), *_split_notes(pack, splits, even_test)]},
        difficulty_counts={name: dict(sorted(Counter(r["difficulty"] for r in part).items(),
                                             key=lambda kv: (len(kv[0]), kv[0])))
                           for name, part in splits.items()},
        split_counts={name: len(part) for name, part in splits.items()},
        split_fractions=dict(fractions),
        curriculum=curriculum,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        fingerprint=fingerprint(splits),  # train/val/test: the natural split follows from them and the seed
    )
    write_json(out_dir / CARD_FILE, card.model_dump(mode="json"))
    write_text_atomic(out_dir / "data_card.md", card.to_markdown())
    return DatasetRef(path=out_dir, hf_path=out_dir / "dataset", card=card, public_jsonl=public)


def dataset_folder(data: str | Path) -> Path:
    """The saved DatasetDict of a `stratos synth` output folder (its `dataset/`), or `data` itself (a dataset
    saved on its own)."""
    return Path(data) / "dataset" if (Path(data) / "dataset").is_dir() else Path(data)


def load_dataset_ref(out_dir: str | Path) -> DatasetRef:
    """The finished dataset in `out_dir` (for idempotent callers: check before re-synthesising)."""
    out_dir = Path(out_dir)
    recover_folder(out_dir / "dataset")  # a kill while a new version was swapped in left the old one aside
    path = out_dir / CARD_FILE
    if not path.is_file():
        raise InputError(f"{out_dir}: no finished dataset here (no {CARD_FILE}); run `stratos synth` first")
    card = DataCard.model_validate_json(path.read_text(encoding="utf-8"))
    names = [*SPLITS, *([NATURAL_SPLIT] if NATURAL_SPLIT in card.split_counts else [])]
    return DatasetRef(path=out_dir, hf_path=out_dir / "dataset", card=card,
                      public_jsonl={name: out_dir / "public" / f"{name}.jsonl" for name in names})
