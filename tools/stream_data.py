"""The data side of stream training: the held-out items a run must never train on (disjoint by
canonical key) and the encoder that turns verified items into chat-formatted, answer-masked batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from stratos_agent.tools.synth_store import NATURAL_SPLIT, dataset_folder

from stratos_agent.errors import InputError
from stratos_agent.tasks import TaskItem, TaskPack

HELD_OUT_SPLITS = ("val", "test", NATURAL_SPLIT)


def heldout_from_data(data: Path | None, pack: TaskPack) -> tuple[set[str], list[TaskItem]]:
    """(canonical keys of the val, test and natural-mix test splits, the val items) of a `stratos synth` output
    folder; for a JSONL in the pack's public format, every row is held out and validates."""
    if data is None or not Path(data).exists():
        return set(), []
    if Path(data).suffix == ".jsonl":
        items = pack.read_jsonl(data)
        return {pack.canonical_key(it) for it in items}, items
    from datasets import DatasetDict, load_from_disk

    folder = dataset_folder(data)
    try:
        splits = load_from_disk(str(folder))
    except FileNotFoundError:
        raise InputError(f"{data}: not a `stratos synth` output folder (its val/test splits are the hold-out)")
    if not isinstance(splits, DatasetDict) or "key" not in next(iter(splits.values())).column_names:
        raise InputError(f"{data}: expected the DatasetDict of `stratos synth` (splits with a `key` column)")
    keys = {k for name in HELD_OUT_SPLITS if name in splits for k in splits[name]["key"]}
    val = [TaskItem.model_validate_json(row) for row in splits["val"]["item"]] if "val" in splits else []
    return keys, [it for it in val if it.task == pack.name]


def yardstick_mix(data: Path | None, pack: TaskPack) -> dict[str, float] | None:
    """Difficulty bucket (as text) -> share of the dataset's test split: the mix the result gate judges on.
    None without a `stratos synth` test split, or for a pack without difficulty buckets."""
    if data is None or not pack.difficulty_buckets or Path(data).suffix == ".jsonl" or not Path(data).exists():
        return None
    from datasets import DatasetDict, load_from_disk

    folder = dataset_folder(data)
    try:
        splits = load_from_disk(str(folder))
    except FileNotFoundError:
        return None
    test = splits["test"] if isinstance(splits, DatasetDict) and "test" in splits else None
    if test is None or "difficulty" not in test.column_names or not test.num_rows:
        return None
    return {bucket: k / test.num_rows for bucket, k in Counter(test["difficulty"]).items()}


def weighted_exact(pack: TaskPack, items: Sequence[TaskItem], hits: Sequence[bool],
                   mix: Mapping[str, float] | None) -> float:
    """Exact match of validation `items` as the yardstick `mix` would weigh it (post-stratification: the
    mean per difficulty bucket, weighted by the mix's shares over the buckets both hold); the plain mean
    without a mix. A val split short of a scarce bucket then still predicts the test split: Mahjong has few
    distinct 7- and 8-wait hands, and one 48,000-example run scored 27.5% on its val split's first 200
    items (1 eight-wait hand) against 40.0% on its even test split."""
    if not mix:
        return sum(hits) / len(items)
    by_bucket: dict[str, list[bool]] = {}
    for item, hit in zip(items, hits, strict=True):
        by_bucket.setdefault(str(pack.difficulty_bucket(item)), []).append(hit)
    shared = {b: mix[b] for b in by_bucket if mix.get(b, 0) > 0}
    if not shared:
        return sum(hits) / len(items)
    total = sum(shared.values())
    return sum(w / total * sum(by_bucket[b]) / len(by_bucket[b]) for b, w in shared.items())


class Encoder:
    """Chat-template rendering and tensors: right-padded training batches with the loss on the answer
    tokens only, left-padded prompts for greedy validation."""

    def __init__(self, tokenizer, pack: TaskPack) -> None:
        self.tok, self.pack = tokenizer, pack
        self.eos = tokenizer.eos_token or ""
        marker = "\x00"  # the template renders one user turn verbatim: cache its prefix and suffix
        text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                             add_generation_prompt=True)
        self.affixes = tuple(text.split(marker)) if text.count(marker) == 1 else None

    def prompt(self, item: TaskItem) -> str:
        messages = self.pack.chat_messages(item)
        if self.affixes and len(messages) == 1:
            return self.affixes[0] + messages[0]["content"] + self.affixes[1]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def ids(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def train_batch(self, items: Sequence[TaskItem]):
        import torch

        prompts = self.ids([self.prompt(it) for it in items])
        answers = self.ids([self.pack.format_answer(it.answer) + self.eos for it in items])
        width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            ids[row, : len(p) + len(a)] = torch.tensor(p + a)
            labels[row, len(p): len(p) + len(a)] = torch.tensor(a)
            mask[row, : len(p) + len(a)] = 1
        return ids, mask, labels

    def answer_tokens(self, items: Sequence[TaskItem]) -> int:
        return max(len(a) for a in self.ids([self.pack.format_answer(it.answer) + self.eos for it in items]))

    def hits(self, model, items: Sequence[TaskItem], max_new_tokens: int, batch: int = 100) -> list[bool]:
        """Per item: is the greedy answer exactly right (the pack's parser/verifier)."""
        import torch

        hits: list[bool] = []
        model.eval()
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        with torch.inference_mode():
            for start in range(0, len(items), batch):
                chunk = items[start: start + batch]
                prompts = self.ids([self.prompt(it) for it in chunk])
                width = max(map(len, prompts))
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=pad, eos_token_id=self.tok.eos_token_id,
                                     top_p=None, top_k=None, temperature=None)
                texts = self.tok.batch_decode(out[:, width:], skip_special_tokens=True)
                hits += [bool(self.pack.score(it, t)["exact"]) for it, t in zip(chunk, texts, strict=True)]
        model.train()
        return hits
