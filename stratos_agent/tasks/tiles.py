"""Mahjong tile notation: 34 tile kinds as indices, compact text (`123m456p789s11z`) and Unicode symbols.

Index layout (the `mahjong` package's "34 array", so cross-checks need no mapping):
  0-8   characters / man   1m-9m   U+1F007..U+1F00F
  9-17  circles / pin      1p-9p   U+1F019..U+1F021
  18-26 bamboo / sou       1s-9s   U+1F010..U+1F018
  27-33 honors             1z-7z   East South West North White Green Red (riichi convention)

Why the honors need care: the riichi order (`mahjong` package, tenhou strings) is
5z = White (haku), 6z = Green (hatsu), 7z = Red (chun), while Unicode orders the dragons
U+1F004 RED, U+1F005 GREEN, U+1F006 WHITE. So 5z <-> U+1F006 and 7z <-> U+1F004; East..North
(1z-4z) are U+1F000..U+1F003 in the same order in both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

N_KINDS = 34
SUITS = "mpsz"  # characters, circles, bamboo, honors (index // 9)
SUIT_NAMES = ("characters", "circles", "bamboo", "honors")
HONOR_NAMES = ("East", "South", "West", "North", "White", "Green", "Red")

_SUIT_BASE_CODEPOINT = {"m": 0x1F007, "p": 0x1F019, "s": 0x1F010}
# 1z..7z -> code point; note the dragon order flips (see module docstring).
_HONOR_CODEPOINTS = (0x1F000, 0x1F001, 0x1F002, 0x1F003, 0x1F006, 0x1F005, 0x1F004)


def _unicode_for(index: int) -> str:
    suit, rank = SUITS[index // 9], index % 9
    if suit == "z":
        return chr(_HONOR_CODEPOINTS[rank])
    return chr(_SUIT_BASE_CODEPOINT[suit] + rank)


UNICODE = tuple(_unicode_for(i) for i in range(N_KINDS))
CODES = tuple(f"{i % 9 + 1}{SUITS[i // 9]}" for i in range(N_KINDS))
UNICODE_TO_INDEX = {ch: i for i, ch in enumerate(UNICODE)}
CODE_TO_INDEX = {code: i for i, code in enumerate(CODES)}
# Some fonts/keyboards append a text/emoji variation selector after a tile symbol.
_VARIATION_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")

_DIGITS = "123456789"
_COMPACT_GROUP = re.compile(r"([1-9]+)([mpsz])")


class NotationError(ValueError):
    """A string is not valid tile notation (the message names the offending part)."""


def tile_index(token: str) -> int:
    """Index of one tile given as a Unicode symbol or a compact code (`5p`, `7z`)."""
    token = token.strip().translate(_VARIATION_SELECTORS)
    if token in UNICODE_TO_INDEX:
        return UNICODE_TO_INDEX[token]
    if token.lower() in CODE_TO_INDEX:
        return CODE_TO_INDEX[token.lower()]
    raise NotationError(f"unknown tile {token!r}")


def parse_compact(text: str) -> list[int]:
    """`"1123m55z"` -> sorted-as-written tile indices; spaces are allowed between groups."""
    body = "".join(text.split()).lower()
    pos, tiles = 0, []
    for match in _COMPACT_GROUP.finditer(body):
        if match.start() != pos:
            raise NotationError(f"cannot read {body[pos:match.start()]!r} in {text!r}")
        digits, suit = match.groups()
        for digit in digits:
            if suit == "z" and digit in "89":
                raise NotationError(f"honors are 1z-7z, got {digit}z in {text!r}")
            tiles.append(CODE_TO_INDEX[f"{digit}{suit}"])
        pos = match.end()
    if pos != len(body):
        raise NotationError(f"cannot read {body[pos:]!r} in {text!r}")
    return tiles


def format_compact(tiles: Iterable[int]) -> str:
    """Tile indices -> compact groups in suit order m, p, s, z (`[0, 0, 1, 27]` -> `112m1z`)."""
    return "".join(_suit_groups(sorted(tiles)))


def format_compact_spaced(tiles: Iterable[int]) -> str:
    """Like `format_compact` but one group per suit separated by spaces (`112m 1z`)."""
    return " ".join(_suit_groups(sorted(tiles)))


def _suit_groups(tiles: Sequence[int]) -> list[str]:
    """Sorted tiles -> `["112m", "1z"]` (one pass: this is on the synthesis hot path)."""
    parts = ["", "", "", ""]
    for t in tiles:
        parts[t // 9] += _DIGITS[t % 9]
    return [digits + SUITS[s] for s, digits in enumerate(parts) if digits]


def parse_unicode(text: str) -> list[int]:
    """A string of Unicode tile symbols (whitespace ignored) -> tile indices in the given order."""
    tiles = []
    for ch in "".join(text.split()).translate(_VARIATION_SELECTORS):
        if ch not in UNICODE_TO_INDEX:
            raise NotationError(f"unknown tile symbol {ch!r} (U+{ord(ch):04X})")
        tiles.append(UNICODE_TO_INDEX[ch])
    return tiles


def format_unicode(tiles: Iterable[int], sep: str = "") -> str:
    """Tile indices -> Unicode symbols, sorted."""
    return sep.join(UNICODE[t] for t in sorted(tiles))


def to_counts(tiles: Iterable[int]) -> list[int]:
    """Tile indices -> 34-count vector."""
    counts = [0] * N_KINDS
    for t in tiles:
        counts[t] += 1
    return counts


def from_counts(counts: Sequence[int]) -> list[int]:
    """34-count vector -> sorted tile indices."""
    return [i for i, c in enumerate(counts) for _ in range(c)]


def tile_name(index: int) -> str:
    """Human name, e.g. `5 circles`, `Red dragon`, `East wind`."""
    if index >= 27:
        name = HONOR_NAMES[index - 27]
        return f"{name} {'wind' if index < 31 else 'dragon'}"
    return f"{index % 9 + 1} {SUIT_NAMES[index // 9]}"
