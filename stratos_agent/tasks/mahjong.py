"""Mahjong winning-tiles task pack: sample hands with known answers, prompt, rationale, parse, score.

An item's question is `{"hand": "1123m456p789s55z"}` (13 tiles, compact, sorted) and its answer the
sorted list of winning tile codes (`["1m", "4m"]`, `[]` when no tile completes the hand). Answers are
always computed by our solver (`mahjong_solver`), never taken from a generator's intent.
"""

from __future__ import annotations

import random
import re
from collections.abc import Hashable, Sequence
from functools import cache
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.tasks import mahjong_solver as solver
from stratos_agent.tasks.base import BaseTaskPack, TaskItem, set_f1
from stratos_agent.tasks.tiles import (
    CODES,
    SUITS,
    UNICODE,
    NotationError,
    format_compact,
    format_compact_spaced,
    format_unicode,
    from_counts,
    parse_compact,
    tile_index,
    to_counts,
)

HAND_SIZE = 13
ANSWER_PREFIX = "Winning tiles:"
NONE_WORD = "none"
NOTATIONS = ("both", "compact", "unicode")
RATIONALE_STYLES = ("steps", "answer", "search")
PROMPTS = ("full", "short")  # short: the hand only, for students trained on it

# Meld kinds as local tile tuples: 34 pons and 21 chis (chis only in the three numbered suits).
_MELDS: tuple[tuple[int, ...], ...] = tuple((t, t, t) for t in range(34)) + tuple(
    (b + i, b + i + 1, b + i + 2) for b in (0, 9, 18) for i in range(7)
)
_MAX_TRIES = 10_000


# ----------------------------------------------------------------------------------------------
# Hand construction (answers are known by construction: the solver labels every proposal)
# ----------------------------------------------------------------------------------------------
def _add_group(counts: list[int], group: Sequence[int]) -> bool:
    """Add a group if the 4-copies rule allows it; report success."""
    for t in set(group):
        if counts[t] + group.count(t) > 4:
            return False
    for t in group:
        counts[t] += 1
    return True


def _fill_melds(rng: random.Random, counts: list[int], n: int) -> None:
    """Add `n` random melds (any suit), skipping draws that would need a fifth copy."""
    added = 0
    while added < n:
        added += _add_group(counts, rng.choice(_MELDS))


def random_complete_hand(rng: random.Random) -> list[int]:
    """A uniformly built complete 14-tile hand: 4 random melds (of 55 kinds) + a pair, 4 copies max."""
    counts = [0] * 34
    _fill_melds(rng, counts, 4)
    while not _add_group(counts, (t := rng.randrange(34), t)):
        pass
    return counts


def natural_tenpai(rng: random.Random) -> list[int]:
    """Complete hand minus one random tile: at least the removed tile wins."""
    counts = random_complete_hand(rng)
    counts[rng.choice(from_counts(counts))] -= 1
    return counts


def noten_hand(rng: random.Random) -> list[int]:
    """A hand with no winning tile, usually one tile away from tenpai (a hard 'none' case).

    Take a tenpai hand and swap one tile for another kind; a random 13-tile draw is the fallback.
    """
    for _ in range(_MAX_TRIES):
        counts = natural_tenpai(rng)
        out = rng.choice(from_counts(counts))
        into = rng.randrange(34)
        if into == out or counts[into] >= 4:
            continue
        counts[out] -= 1
        counts[into] += 1
        if not solver.winning_tiles(counts):
            return counts
    wall = [t for t in range(34) for _ in range(4)]  # pragma: no cover - the swap succeeds quickly
    while solver.winning_tiles(counts := to_counts(rng.sample(wall, HAND_SIZE))):
        pass
    return counts


@cache
def _single_suit_shapes() -> dict[tuple[int, int], tuple[tuple[int, ...], ...]]:
    """(number of melds m, number of waits) -> every one-suit tenpai shape of 3m+1 tiles.

    Built once per process (about 1-2 s) from all one-suit "m melds + pair" shapes minus one tile.
    Hands with many waits are concentrated in one suit (9 waits: only the nine gates 1112345678999,
    see tests), so the even sampler draws buckets >= 3 from here.
    """
    by_key: dict[tuple[int, int], set[tuple[int, ...]]] = {}
    melds = [(i, i, i) for i in range(9)] + [(i, i + 1, i + 2) for i in range(7)]

    def extend(counts: list[int], start: int, left: int, m: int) -> None:
        if left == 0:
            for p in range(9):
                if counts[p] <= 2:
                    counts[p] += 2
                    for r in range(9):
                        if counts[r]:
                            counts[r] -= 1
                            shape = tuple(counts)
                            n = len(solver.suit_waits(shape))
                            by_key.setdefault((m, n), set()).add(shape)
                            counts[r] += 1
                    counts[p] -= 2
            return
        for k in range(start, len(melds)):
            if _add_group(counts, melds[k]):
                extend(counts, k, left - 1, m)
                for t in melds[k]:
                    counts[t] -= 1

    for m in range(1, 5):
        extend([0] * 9, 0, m, m)
    return {key: tuple(sorted(shapes)) for key, shapes in by_key.items()}


def shaped_tenpai(rng: random.Random, n_waits: int) -> list[int] | None:
    """Propose a hand aimed at `n_waits`: a one-suit tenpai shape with that many waits, the other melds
    random. None when no shape has that many waits. The solver still labels the result."""
    shapes = _single_suit_shapes()
    options = [m for m in range(1, 5) if (m, n_waits) in shapes]
    if not options:
        return None
    m = rng.choice(options)
    base = rng.choice((0, 9, 18))
    counts = [0] * 34
    counts[base : base + 9] = rng.choice(shapes[(m, n_waits)])
    _fill_melds(rng, counts, 4 - m)
    return counts


# ----------------------------------------------------------------------------------------------
# Answer parsing
# ----------------------------------------------------------------------------------------------
_MARKER = re.compile(r"winning\s+tiles?(?:\s+(?:are|is))?\s*[:：=]", re.IGNORECASE)
_TILE_TOKEN = re.compile(
    r"(?P<sep>[\s,，、;/\[\]{}'\"`*+&|]+|and\b)"
    r"|(?P<group>[1-9]+[mpsz])"
    r"|(?P<uni>[\U0001F000-\U0001F021][\ufe0e\ufe0f]?)"
    r"|(?P<none>none|nothing|noten|no winning tiles?)\b",
    re.IGNORECASE,
)
# After the tile list a line may go on only after a clear break (an explanation), never mid-list.
# A dash ends the list only after a space ("1m 4m - because"), never inside it ("1m-4m" is a range).
_TERMINATORS = tuple(".(;!")
_DASHES = tuple("-–—")


def _parse_tile_list(segment: str) -> list[int] | None:
    """Tiles at the start of `segment` (compact, Unicode or 'none'); None if unreadable or ambiguous."""
    tiles: list[int] = []
    saw_none = False
    pos = 0
    segment = segment.strip()
    while pos < len(segment):
        match = _TILE_TOKEN.match(segment, pos)
        if match is None:
            break
        if match.group("group"):
            try:
                tiles.extend(parse_compact(match.group("group")))
            except NotationError:
                return None
        elif match.group("uni"):
            tiles.append(tile_index(match.group("uni")))
        elif match.group("none"):
            saw_none = True
        pos = match.end()
    rest = segment[pos:].strip()
    spaced_dash = rest.startswith(_DASHES) and segment[pos - 1 : pos].isspace()
    if rest and not (rest.startswith(_TERMINATORS) or spaced_dash):
        return None
    if saw_none:
        return [] if not tiles else None
    return sorted(set(tiles)) if tiles else None


def parse_winning_tiles(text: str) -> list[int] | None:
    """Winning tile indices from a model output, or None.

    The last `Winning tiles:` line wins (models often restate); without that marker the whole output
    must be nothing but a tile list. Order, case, duplicates, commas and Unicode/compact mix are fine.
    """
    matches = list(_MARKER.finditer(text))
    if matches:
        line = text[matches[-1].end() :].split("\n", 1)[0]
        return _parse_tile_list(line)
    return _parse_tile_list(text) if "\n" not in text.strip() else None


# ----------------------------------------------------------------------------------------------
# The pack
# ----------------------------------------------------------------------------------------------
def hand_counts(item: TaskItem) -> list[int]:
    return to_counts(parse_compact(item.question["hand"]))


def answer_codes(tiles: Sequence[int]) -> list[str]:
    return [CODES[t] for t in sorted(set(tiles))]


def _describe(decomposition: solver.Decomposition) -> str:
    """`33s 234s 567s 777s 888s`: the pair first, then the melds in tile order."""
    return " ".join(_group_code(g) for g in sorted(decomposition, key=lambda g: (len(g), g)))


@cache
def _group_code(group: solver.Group) -> str:
    return format_compact(group)  # 89 distinct groups: memoised for the synthesis hot path


class MahjongPack(BaseTaskPack):
    """Mahjong winning tiles (4 melds + 1 pair, 4-copies rule, no special hands)."""

    name = "mahjong"
    description = "List every tile that completes a 13-tile Mahjong hand (4 melds + 1 pair)."
    rationale_styles = RATIONALE_STYLES
    difficulty_buckets: tuple[Hashable, ...] = tuple(range(10))  # number of winning tiles

    def __init__(self, notation: str = "compact", noten_share: float = 0.15, prompt: str = "full") -> None:
        if prompt not in PROMPTS:
            raise InputError(f"unknown prompt {prompt!r}; choose from {list(PROMPTS)}")
        self.prompt = prompt
        if notation not in NOTATIONS:
            raise InputError(f"unknown hand notation {notation!r}; choose from {list(NOTATIONS)}")
        if not 0.0 <= noten_share <= 1.0:
            raise InputError(f"noten_share must be within [0, 1], got {noten_share}")
        self.notation = notation
        self.noten_share = noten_share

    # --- items --------------------------------------------------------------------------------
    def make_item(self, counts: Sequence[int], **meta: Any) -> TaskItem:
        """Item for a 13-tile hand, labelled by our solver."""
        problem = solver.validate_counts(counts, HAND_SIZE)
        if problem:
            raise InputError(f"not a 13-tile hand: {problem}")
        return TaskItem(
            task=self.name,
            question={"hand": format_compact(from_counts(counts))},
            answer=answer_codes(solver.winning_tiles(counts)),
            meta=meta,
        )

    def sample_item(self, rng: random.Random, bucket: Hashable | None = None) -> TaskItem:
        """One item; with `bucket` (0-9) exactly that many winning tiles."""
        if bucket is None:
            if rng.random() < self.noten_share:
                return self.make_item(noten_hand(rng), generator="noten")
            return self.make_item(natural_tenpai(rng), generator="complete-minus-one")
        if bucket not in self.difficulty_buckets:
            raise InputError(f"mahjong difficulty bucket must be 0-9 winning tiles, got {bucket!r}")
        if bucket == 0:
            return self.make_item(noten_hand(rng), generator="noten")
        for attempt in range(_MAX_TRIES):
            # Few-wait hands come naturally; many-wait hands need a one-suit shape.
            shaped = bucket >= 3 or attempt % 2
            counts = shaped_tenpai(rng, int(bucket)) if shaped else natural_tenpai(rng)
            if counts is not None and len(solver.winning_tiles(counts)) == bucket:
                return self.make_item(counts, generator="shaped" if shaped else "complete-minus-one")
        raise RuntimeError(f"no hand with {bucket} winning tiles after {_MAX_TRIES} tries")  # pragma: no cover

    # --- prompting ----------------------------------------------------------------------------
    def render_hand(self, item: TaskItem) -> str:
        tiles = parse_compact(item.question["hand"])
        compact = format_compact_spaced(tiles)
        if self.notation == "compact":
            return compact
        if self.notation == "unicode":
            return format_unicode(tiles)
        return f"{format_unicode(tiles)} ({compact})"

    def render_prompt(self, item: TaskItem) -> str:
        """The question. Default hand notation is compact (`notation="both"` adds the Unicode tiles).

        Why compact: Unicode tiles are 3 byte-level SmolLM2 tokens each, sharing a 2-byte prefix
        (39 tokens a hand, the identity hidden in the last byte), while compact digits are single
        tokens (~16 a hand) in the same notation the rationale and the answer line use. The public
        benchmark stays Unicode: conversion at the pack boundary is lossless and deterministic.
        """
        if self.prompt == "short":  # fine-tuned students: the rules live in the weights (~4x fewer tokens)
            return f"Hand: {self.render_hand(item)}"
        return (
            "Mahjong: a complete hand is 4 melds (3 in a row in one suit, or 3 of a kind) + 1 pair.\n"
            f"Hand: {self.render_hand(item)}\n"
            "Which tiles complete it? Notation: m characters, p circles, s bamboo, "
            "z honors 1-7 = East South West North White Green Red.\n"
            f'End with "{ANSWER_PREFIX}" and the tiles (like 36m 5p), or {NONE_WORD}.'
        )

    def closed_vocabulary(self) -> list[str] | None:
        """Short prompt + compact notation only (`Hand: 456m 999p 7z` -> `Winning tiles: 7z` / `... none`):
        the two markers, the none word, a space, the digits 1-9 and the suit letters."""
        if self.prompt != "short" or self.notation != "compact":
            return None
        return ["Hand:", ANSWER_PREFIX, NONE_WORD, " ", *"123456789", *SUITS]

    # --- rationale ----------------------------------------------------------------------------
    def format_answer(self, answer: Sequence[str]) -> str:
        """`Winning tiles: 147m 5p` (grouped like the hand: digits are single tokens) or `... none`."""
        return f"{ANSWER_PREFIX} {format_compact_spaced(map(CODES.index, answer)) if answer else NONE_WORD}"

    def solver_rationale(self, item: TaskItem, style: str | None = None) -> str:
        """Completion text ending with the final answer line; styles: steps (default), answer, search.

        - answer: the final line only.
        - steps: the hand by suit, then one line per winning tile with the 4 melds + pair it makes.
        - search: every candidate tile (same suit within 2 of a held tile, or a held honor), each with
          its melds + pair or `no`; teaches why the other tiles fail.
        Wording is fixed and deterministic so a small student can copy the procedure.
        """
        style = self.check_style(style)
        final = self.format_answer(item.answer)
        if style == "answer":
            return final
        counts = hand_counts(item)
        lines = [f"Hand: {format_compact_spaced(from_counts(counts))}"]
        explained = solver.explain(counts)
        if style == "steps":
            tiles: Sequence[int] = sorted(explained)
            if not tiles:
                lines.append("No tile makes 4 melds + 1 pair.")
        else:
            tiles = candidate_tiles(counts)
        for t in tiles:
            how = _describe(explained[t]) if t in explained else "no"
            if t not in explained and counts[t] >= 4:
                how = "no (all 4 held)"
            lines.append(f"{CODES[t]}: {how}")
        lines.append(final)
        return "\n".join(lines)

    # --- grading ------------------------------------------------------------------------------
    def parse_answer(self, text: str) -> list[str] | None:
        tiles = parse_winning_tiles(text)
        return None if tiles is None else answer_codes(tiles)

    def verify(self, item: TaskItem, answer: Sequence[str] | None) -> bool:
        return answer is not None and sorted(set(answer), key=CODES.index) == list(item.answer)

    def partial_credit(self, item: TaskItem, answer: Sequence[str]) -> float:
        return set_f1(answer, item.answer)

    # --- difficulty and identity --------------------------------------------------------------
    def difficulty(self, item: TaskItem) -> dict[str, Any]:
        counts = hand_counts(item)
        tiles = from_counts(counts)
        explained = solver.explain(counts)
        n_ways = 0
        for t in explained:
            counts[t] += 1
            n_ways += len(solver.decompositions(counts))
            counts[t] -= 1
        return {
            "n_waits": len(item.answer),
            "suits": sorted({SUITS[t // 9] for t in tiles}, key=SUITS.index),
            "n_suits": len({t // 9 for t in tiles}),
            "wait_suits": sorted({code[-1] for code in item.answer}, key=SUITS.index),
            "n_honor_tiles": sum(counts[27:]),
            "n_decompositions": n_ways,  # ambiguity: distinct meld splits over all completed hands
        }

    def difficulty_bucket(self, item: TaskItem) -> int:
        return len(item.answer)

    def canonical_key(self, item: TaskItem) -> str:
        return f"{self.name}:{format_compact(parse_compact(item.question['hand']))}"

    # --- public JSONL: {"hand": [13 Unicode tiles], "winning_tiles": [...]} ----------------------
    def to_public(self, item: TaskItem) -> dict[str, Any]:
        return {
            "hand": [UNICODE[t] for t in parse_compact(item.question["hand"])],
            "winning_tiles": [UNICODE[CODES.index(c)] for c in item.answer],
        }

    def from_public(self, row: Any, where: str = "") -> TaskItem:
        """A public benchmark row -> item whose answer is the row's own `winning_tiles` (not relabelled).

        Any problem (missing field, wrong tile count, unknown symbol, 5 copies) -> InputError naming
        `where` (file:line) and the problem.
        """
        prefix = f"{where}: " if where else ""
        if not isinstance(row, dict) or "hand" not in row or "winning_tiles" not in row:
            raise InputError(f'{prefix}expected an object with "hand" and "winning_tiles"')
        hand = _read_tiles(row["hand"], "hand", prefix)
        if len(hand) != HAND_SIZE:
            raise InputError(f"{prefix}hand has {len(hand)} tiles, expected {HAND_SIZE}")
        counts = to_counts(hand)
        over = next((t for t in range(34) if counts[t] > 4), None)
        if over is not None:
            raise InputError(f"{prefix}hand holds {counts[over]} copies of {UNICODE[over]} ({CODES[over]}); at most 4 exist")
        wins = _read_tiles(row["winning_tiles"], "winning_tiles", prefix)
        if len(set(wins)) != len(wins):
            raise InputError(f"{prefix}winning_tiles lists a tile twice")
        return TaskItem(
            task=self.name,
            question={"hand": format_compact(hand)},
            answer=answer_codes(wins),
            meta={"source": where} if where else {},
        )

    def relabel(self, item: TaskItem) -> TaskItem:
        """The same hand with the answer recomputed by our solver."""
        return self.make_item(hand_counts(item), **item.meta)


def _read_tiles(value: Any, field: str, prefix: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{prefix}{field} must be a list of tile strings")
    tiles = []
    for pos, token in enumerate(value, start=1):
        try:
            tiles.append(tile_index(token))
        except NotationError:
            raise InputError(f"{prefix}{field} tile {pos}: unknown tile symbol {token!r}") from None
    return tiles


def candidate_tiles(counts: Sequence[int]) -> list[int]:
    """Tiles that could possibly complete the hand: a held honor, or a numbered tile within 2 of a held
    tile of the same suit (anything else touches no group). A superset of the winning tiles."""
    out = []
    for t in range(34):
        if t >= 27:
            if counts[t]:
                out.append(t)
            continue
        base, rank = t - t % 9, t % 9
        if any(counts[base + r] for r in range(max(0, rank - 2), min(8, rank + 2) + 1)):
            out.append(t)
    return out
