"""Mahjong solver: notation round trips, solver properties, and the cross-check against `mahjong`."""

from __future__ import annotations

import random
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from stratos_agent.tasks import mahjong_solver as solver
from stratos_agent.tasks.mahjong import natural_tenpai, noten_hand, random_complete_hand, shaped_tenpai
from stratos_agent.tasks.tiles import (
    CODES,
    UNICODE,
    format_compact,
    format_compact_spaced,
    format_unicode,
    from_counts,
    parse_compact,
    parse_unicode,
    tile_index,
    to_counts,
)

WALL = [t for t in range(34) for _ in range(4)]


def hands(size: int) -> st.SearchStrategy[list[int]]:
    """Legal multisets of `size` tiles (at most 4 copies of a kind), as sorted tile indices."""
    return st.permutations(WALL).map(lambda wall: sorted(wall[:size]))


# --- notation -------------------------------------------------------------------------------
def test_unicode_code_points_follow_the_reference():
    assert [ord(UNICODE[i]) for i in range(9)] == list(range(0x1F007, 0x1F010))  # characters = m
    assert [ord(UNICODE[i]) for i in range(9, 18)] == list(range(0x1F019, 0x1F022))  # circles = p
    assert [ord(UNICODE[i]) for i in range(18, 27)] == list(range(0x1F010, 0x1F019))  # bamboo = s
    assert [ord(u) for u in UNICODE[27:31]] == [0x1F000, 0x1F001, 0x1F002, 0x1F003]  # E S W N
    # riichi convention: 5z white, 6z green, 7z red; Unicode: U+1F004 red, U+1F005 green, U+1F006 white
    assert tile_index("\U0001f006") == CODES.index("5z")
    assert tile_index("\U0001f005") == CODES.index("6z")
    assert tile_index("\U0001f004") == CODES.index("7z")


def test_compact_indices_match_the_mahjong_package():
    from mahjong.tile import TilesConverter

    text = "19m19p19s1234567z"
    assert to_counts(parse_compact(text)) == TilesConverter.one_line_string_to_34_array(text)


@given(hands(14))
def test_compact_round_trip(tiles):
    assert parse_compact(format_compact(tiles)) == tiles
    assert parse_compact(format_compact_spaced(tiles)) == tiles


@given(hands(14))
def test_unicode_round_trip(tiles):
    assert parse_unicode(format_unicode(tiles)) == tiles
    assert parse_compact(format_compact(parse_unicode(format_unicode(tiles)))) == tiles


def test_bad_notation_is_rejected():
    for bad in ("8z", "123", "12x", "0m", "1m 2q"):
        try:
            parse_compact(bad)
        except ValueError as exc:
            assert repr(bad.split()[-1][-2:]) in str(exc) or bad in str(exc)
        else:  # pragma: no cover - the assertion message is the failure
            raise AssertionError(f"{bad!r} parsed")


# --- solver properties ------------------------------------------------------------------------
def _naive_complete(counts: list[int], need_pair: bool = True) -> bool:
    """Independent reference: plain backtracking over the whole 34-vector (no per-suit split)."""
    first = next((i for i, c in enumerate(counts) if c), None)
    if first is None:
        return not need_pair
    if need_pair and counts[first] >= 2:
        counts[first] -= 2
        ok = _naive_complete(counts, False)
        counts[first] += 2
        if ok:
            return True
    if counts[first] >= 3:
        counts[first] -= 3
        ok = _naive_complete(counts, need_pair)
        counts[first] += 3
        if ok:
            return True
    if first < 27 and first % 9 <= 6 and counts[first + 1] and counts[first + 2]:
        for t in (first, first + 1, first + 2):
            counts[t] -= 1
        ok = _naive_complete(counts, need_pair)
        for t in (first, first + 1, first + 2):
            counts[t] += 1
        return ok
    return False


@settings(max_examples=300)
@given(hands(13))
def test_winning_tiles_match_naive_definition(tiles):
    counts = to_counts(tiles)
    expected = []
    for t in range(34):
        if counts[t] < 4:
            counts[t] += 1
            if _naive_complete(counts):
                expected.append(t)
            counts[t] -= 1
    assert solver.winning_tiles(counts) == expected


@settings(max_examples=300)
@given(hands(14))
def test_is_complete_matches_naive_definition(tiles):
    counts = to_counts(tiles)
    assert solver.is_complete(counts) == _naive_complete(list(counts))
    assert bool(solver.decompositions(counts)) == solver.is_complete(counts)


@settings(max_examples=200)
@given(st.integers(0, 2**32).map(random.Random))
def test_constructed_complete_hands_and_their_decompositions(rng):
    counts = random_complete_hand(rng)
    assert solver.is_complete(counts)
    ways = solver.decompositions(counts)
    assert ways
    for way in ways:
        assert sorted(len(g) for g in way) == [2, 3, 3, 3, 3]
        assert to_counts(t for g in way for t in g) == counts
        for g in way:
            assert len(set(g)) == 1 or (g[0] < 27 and g[0] // 9 == g[2] // 9 and list(g) == [g[0], g[0] + 1, g[0] + 2])


@settings(max_examples=200)
@given(st.integers(0, 2**32).map(random.Random))
def test_removed_tile_is_always_a_winning_tile_and_explanations_add_up(rng):
    complete = random_complete_hand(rng)
    removed = rng.choice(from_counts(complete))
    hand = list(complete)
    hand[removed] -= 1
    waits = solver.winning_tiles(hand)
    assert removed in waits
    explained = solver.explain(hand)
    assert sorted(explained) == waits
    for t, way in explained.items():
        after = list(hand)
        after[t] += 1
        assert to_counts(x for g in way for x in g) == after


def test_four_copies_rule_and_known_hands():
    def waits(text: str) -> str:
        return format_compact(solver.winning_tiles(to_counts(parse_compact(text))))

    assert waits("1112345678999m") == "123456789m"  # nine gates: 9 waits
    assert waits("1111234m456p789s") == "4m"  # 1m would complete 11+234m, but all four 1m are held
    assert waits("1111m456p789s111z") == ""  # only 1m would help: noten by the 4-copies rule
    assert waits("1357m2468p1357s1z") == ""  # noten
    assert waits("11m22p33s44z556677z") == ""  # seven-pairs shape does not count
    assert waits("19m19p19s1234567z") == ""  # thirteen-orphans shape does not count
    assert not solver.is_complete(to_counts(parse_compact("1122m3344p5566s77z")))  # seven pairs
    assert solver.validate_counts([5] + [0] * 33, 5) is not None


def test_nine_waits_only_nine_gates():
    """Why the even hold-out has only 3 distinct 9-wait hands: 9 waits need a one-suit 13-tile shape."""
    from stratos_agent.tasks.mahjong import _single_suit_shapes

    shapes = _single_suit_shapes()
    assert shapes[(4, 9)] == ((3, 1, 1, 1, 1, 1, 1, 1, 3),)
    assert all(k[1] <= 8 for k in shapes if k[0] < 4)
    rng = random.Random(5)
    for _ in range(20):
        assert format_compact(from_counts(shaped_tenpai(rng, 9)))[:-1] == "1112345678999"


# --- cross-check against the `mahjong` package -------------------------------------------------
@cache
def _cross_check_hands() -> list[list[int]]:
    rng = random.Random(20261128)
    out = [natural_tenpai(rng) for _ in range(5000)]
    out += [noten_hand(rng) for _ in range(3000)]
    out += [to_counts(rng.sample(WALL, 13)) for _ in range(1000)]
    out += [shaped_tenpai(rng, k) for k in range(1, 10) for _ in range(112)]
    return out


def test_reference_oracle_keeps_our_rules_and_its_input():
    """The `mahjong`-package oracle drops seven pairs / thirteen orphans and leaves `counts` as given."""
    for text, expected in [("1112345678999m", "123456789m"), ("11m22p33s44z5566z7z", ""),
                           ("19m19p19s1234567z", ""), ("1111234m456p789s", "4m")]:
        counts = to_counts(parse_compact(text))
        before = list(counts)
        assert format_compact(solver.reference_winning_tiles(counts)) == expected, text
        assert counts == before


def test_solver_agrees_with_mahjong_package_on_10k_hands():
    hands_ = _cross_check_hands()
    assert len(hands_) >= 10_000
    disagreements = [(h, solver.winning_tiles(h), solver.reference_winning_tiles(h)) for h in hands_]
    disagreements = [d for d in disagreements if d[1] != d[2]]
    assert not disagreements, disagreements[:3]
    n_waits = {len(solver.winning_tiles(h)) for h in hands_}
    assert n_waits == set(range(10))  # every wait count 0..9 was exercised
