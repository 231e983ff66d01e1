"""Our own Mahjong solver on 34-count vectors: complete hands, winning tiles, decompositions.

Rules (../shared/REFERENCE.md): a complete hand is 4 melds (chi: 3 consecutive tiles of one numbered
suit; pon: 3 identical tiles) + 1 pair; no seven pairs, no thirteen orphans; a tile of which the
13-tile hand already holds 4 copies cannot be a winning tile.

Why it is fast: melds never cross suits, so a hand is complete iff each suit decomposes on its own
(melds only, or melds + the single pair). Each suit is a small count tuple (9 or 7 entries) and the
same tuples recur constantly, so per-suit answers -- including "which added tile completes this
suit" -- are memoised; a 13-tile query is then 4 cached look-ups and a little bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from itertools import product

from stratos_agent.tasks.tiles import N_KINDS

Group = tuple[int, ...]  # tile indices of one meld (3) or the pair (2), ascending
Decomposition = tuple[Group, ...]  # 4 melds + 1 pair, groups sorted

_SUIT_SLICES = ((0, 9), (9, 18), (18, 27), (27, 34))


@cache
def _decompositions(counts: tuple[int, ...], need_pair: bool, honors: bool) -> tuple[tuple[Group, ...], ...]:
    """All ways to split one suit (local indices) into melds (+ exactly one pair if `need_pair`)."""
    first = next((i for i, c in enumerate(counts) if c), None)
    if first is None:
        return () if need_pair else ((),)
    found: list[tuple[Group, ...]] = []

    def take(group: Group, still_need_pair: bool) -> None:
        rest = list(counts)
        for t in group:
            rest[t] -= 1
        for tail in _decompositions(tuple(rest), still_need_pair, honors):
            found.append((group, *tail))

    if need_pair and counts[first] >= 2:
        take((first, first), False)
    if counts[first] >= 3:
        take((first, first, first), need_pair)
    if not honors and first <= 6 and counts[first + 1] and counts[first + 2]:
        take((first, first + 1, first + 2), need_pair)
    return tuple(found)


@cache
def _decomposable(counts: tuple[int, ...], need_pair: bool, honors: bool) -> bool:
    """Like `_decompositions(...) != ()` but stops at the first success (the hot path)."""
    first = next((i for i, c in enumerate(counts) if c), None)
    if first is None:
        return not need_pair
    rest = list(counts)
    if need_pair and counts[first] >= 2:
        rest[first] -= 2
        if _decomposable(tuple(rest), False, honors):
            return True
        rest[first] += 2
    if counts[first] >= 3:
        rest[first] -= 3
        if _decomposable(tuple(rest), need_pair, honors):
            return True
        rest[first] += 3
    if not honors and first <= 6 and counts[first + 1] and counts[first + 2]:
        for t in (first, first + 1, first + 2):
            rest[t] -= 1
        return _decomposable(tuple(rest), need_pair, honors)
    return False


@cache
def _suit_state(counts: tuple[int, ...], honors: bool) -> tuple[int, bool, tuple[int, ...]]:
    """(size mod 3, complete as it stands, local tiles that would complete it if added).

    "Complete" means melds only when the size is 0 mod 3, melds + pair when it is 2 mod 3; a suit of
    size 1 mod 3 is never complete. Adding a tile is allowed only while the suit holds < 4 copies.
    """
    r = sum(counts) % 3
    ok = r != 1 and _decomposable(counts, r == 2, honors)
    waits: list[int] = []
    if r != 0:
        after = list(counts)
        for i, c in enumerate(counts):
            if c < 4:
                after[i] += 1
                if _decomposable(tuple(after), r == 1, honors):
                    waits.append(i)
                after[i] -= 1
    return r, ok, tuple(waits)


def suit_waits(counts: Sequence[int], honors: bool = False) -> tuple[int, ...]:
    """Local tiles that complete one suit on its own (melds, + the pair if its size is 1 mod 3)."""
    return _suit_state(tuple(counts), honors)[2]


def _states(counts: Sequence[int]) -> list[tuple[int, bool, tuple[int, ...]]]:
    return [_suit_state(tuple(counts[a:b]), a == 27) for a, b in _SUIT_SLICES]


def winning_tiles(counts: Sequence[int]) -> list[int]:
    """All tiles (indices, ascending) that complete a 13-tile hand given as a 34-count vector."""
    states = _states(counts)
    pair_suits = sum(1 for r, _, _ in states if r == 2)
    waits: list[int] = []
    for s, (r, _, local) in enumerate(states):
        if r == 0 or not local:
            continue
        # After adding to suit s, every other suit must already be complete, and exactly one suit
        # (s itself if it had size 1 mod 3, else another one of size 2 mod 3) holds the pair.
        if pair_suits - (r == 2) + (r == 1) != 1:
            continue
        if all(ok for o, (_, ok, _) in enumerate(states) if o != s):
            base = _SUIT_SLICES[s][0]
            waits.extend(base + i for i in local)
    return waits


def is_complete(counts: Sequence[int]) -> bool:
    """True if a 14-tile hand (34-count vector) is 4 melds + 1 pair."""
    states = _states(counts)
    return sum(counts) == 14 and all(ok for _, ok, _ in states) and sum(r == 2 for r, _, _ in states) == 1


def decompositions(counts: Sequence[int]) -> list[Decomposition]:
    """Every distinct way a complete 14-tile hand splits into 4 melds + 1 pair (empty if none).

    Each decomposition is a sorted tuple of groups of global tile indices; the list is sorted, so
    `decompositions(c)[0]` is a deterministic canonical explanation.
    """
    if sum(counts) != 14:
        return []
    per_suit = []
    pairs = 0
    for a, b in _SUIT_SLICES:
        local = tuple(counts[a:b])
        r = sum(local) % 3
        pairs += r == 2
        ways = _global_ways(local, a) if r != 1 else ()
        if not ways:
            return []
        per_suit.append(ways)
    if pairs != 1:
        return []
    return sorted({tuple(sorted(g for part in combo for g in part)) for combo in product(*per_suit)})


@cache
def _global_ways(local: tuple[int, ...], base: int) -> tuple[tuple[Group, ...], ...]:
    """A suit's decompositions with global tile indices (`base` = index of the suit's first tile)."""
    ways = _decompositions(local, sum(local) % 3 == 2, base == 27)
    return tuple(tuple(tuple(base + t for t in g) for g in way) for way in ways)


def explain(counts13: Sequence[int]) -> dict[int, Decomposition]:
    """For each winning tile of a 13-tile hand, the canonical 4 melds + pair of the completed hand."""
    out = {}
    for t in winning_tiles(counts13):
        after = list(counts13)
        after[t] += 1
        out[t] = decompositions(after)[0]
    return out


def reference_winning_tiles(counts: Sequence[int]) -> list[int]:
    """`winning_tiles` computed by the `mahjong` package instead: an independent oracle.

    For cross-checks (tests) and speed comparisons (evals/bench_tasks.py), not for the hot path: it
    tries every tile with `Agari.is_agari`. That also accepts seven pairs and thirteen orphans, which
    our rules exclude, so each hit is confirmed with the regular-hand shanten (-1 = complete as
    4 melds + pair). A tile already held 4 times is never a winning tile.
    """
    from mahjong.agari import Agari  # imported here: the solver itself does not need the package
    from mahjong.shanten import Shanten

    hand = list(counts)
    out = []
    for t in range(N_KINDS):
        if hand[t] < 4:
            hand[t] += 1
            if Agari.is_agari(hand) and Shanten.calculate_shanten_for_regular_hand(hand) == -1:
                out.append(t)
            hand[t] -= 1
    return out


def validate_counts(counts: Sequence[int], size: int) -> str | None:
    """Why `counts` is not a legal hand of `size` tiles (None if it is)."""
    if len(counts) != N_KINDS:
        return f"expected a 34-count vector, got length {len(counts)}"
    if sum(counts) != size:
        return f"expected {size} tiles, got {sum(counts)}"
    over = [i for i, c in enumerate(counts) if c > 4 or c < 0]
    if over:
        return f"tile index {over[0]} appears {counts[over[0]]} times (at most 4 copies exist)"
    return None
