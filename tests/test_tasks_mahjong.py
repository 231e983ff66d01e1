"""Mahjong task pack: sampling, prompts, rationales, parsing, scoring, public JSONL, CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from stratos_agent.errors import InputError
from stratos_agent.tasks import EVEN, TaskItem, TaskPack, get_task_pack
from stratos_agent.tasks import mahjong_solver as solver
from stratos_agent.tasks.mahjong import MahjongPack, hand_counts
from stratos_agent.tasks.tiles import CODES, UNICODE, format_unicode, parse_compact


@pytest.fixture(scope="module")
def pack() -> MahjongPack:
    return get_task_pack("mahjong")


@pytest.fixture(scope="module")
def even_items(pack) -> list[TaskItem]:
    return pack.sample(200, seed=11, distribution=EVEN)


def item_for(pack: MahjongPack, hand: str) -> TaskItem:
    from stratos_agent.tasks.tiles import to_counts

    return pack.make_item(to_counts(parse_compact(hand)))


def test_pack_satisfies_protocol(pack):
    assert isinstance(pack, TaskPack)
    with pytest.raises(InputError, match="unknown task"):
        get_task_pack("chess")
    with pytest.raises(InputError, match="notation"):
        get_task_pack("mahjong", notation="emoji")


def test_answers_are_solver_labels_and_sampling_is_seeded(pack):
    items = pack.sample(300, seed=3)
    assert items == pack.sample(300, seed=3)
    assert items != pack.sample(300, seed=4)
    for item in items:
        counts = hand_counts(item)
        assert sum(counts) == 13 and max(counts) <= 4
        assert item.answer == [CODES[t] for t in solver.winning_tiles(counts)]
    buckets = Counter(pack.difficulty_bucket(it) for it in items)
    assert buckets[0] > 10 and buckets[1] + buckets[2] > 150  # natural mix: noten share + mostly 1-2 waits


def test_even_distribution_covers_every_wait_count(pack, even_items):
    assert Counter(pack.difficulty_bucket(it) for it in even_items) == {k: 20 for k in range(10)}
    weighted = pack.sample(30, seed=1, distribution={0: 1, 5: 2})
    assert Counter(pack.difficulty_bucket(it) for it in weighted) == {0: 10, 5: 20}
    with pytest.raises(InputError, match="bucket"):
        pack.sample(5, distribution={12: 1.0})
    with pytest.raises(InputError, match="distribution"):
        pack.sample(5, distribution="uniform")


def test_unique_sampling_and_its_limit(pack):
    items = pack.sample(90, seed=2, distribution={k: 1 for k in range(9)}, unique=True)
    assert len({pack.canonical_key(it) for it in items}) == 90
    with pytest.raises(InputError, match="bucket 9"):  # only 3 nine-gates hands exist
        pack.sample(40, seed=2, distribution={9: 1}, unique=True)


def test_curriculum_orders_easy_to_hard(pack, even_items):
    ordered = [pack.difficulty_bucket(it) for it in pack.curriculum(even_items)]
    assert ordered == sorted(ordered)


def test_difficulty_and_canonical_key(pack):
    item = item_for(pack, "1112345678999m")
    d = pack.difficulty(item)
    assert d["n_waits"] == 9 and d["suits"] == ["m"] and d["n_suits"] == 1 and d["wait_suits"] == ["m"]
    assert d["n_decompositions"] >= 9
    two = item_for(pack, "345m88m55677889p")
    assert pack.difficulty(two)["wait_suits"] == ["m", "p"]
    shuffled = TaskItem(task="mahjong", question={"hand": "55677889p34588m"}, answer=[])
    assert pack.canonical_key(shuffled) == pack.canonical_key(two)


@pytest.mark.parametrize("style", ["steps", "answer", "search"])
def test_rationales_end_with_one_parsable_final_line(pack, even_items, style):
    for item in even_items:
        text = pack.solver_rationale(item, style)
        lines = text.splitlines()
        assert lines[-1] == pack.format_answer(item.answer)
        assert sum(line.startswith("Winning tiles:") for line in lines) == 1
        assert pack.score(item, text) == {"exact": True, "f1": 1.0, "format_ok": True}


def test_steps_rationale_shows_each_completed_hand(pack):
    text = pack.solver_rationale(item_for(pack, "1123m456p789s555z"), "steps")
    assert text.splitlines() == [
        "Hand: 1123m 456p 789s 555z",
        "1m: 11m 123m 456p 789s 555z",
        "4m: 11m 234m 456p 789s 555z",
        "Winning tiles: 14m",
    ]
    noten = pack.solver_rationale(item_for(pack, "1357m2468p1357s1z"), "steps")
    assert noten.splitlines()[-2:] == ["No tile makes 4 melds + 1 pair.", "Winning tiles: none"]
    with pytest.raises(InputError, match="rationale style"):
        pack.solver_rationale(item_for(pack, "1357m2468p1357s1z"), "verbose")


def test_search_rationale_marks_four_held_tiles(pack):
    text = pack.solver_rationale(item_for(pack, "1111234m456p789s"), "search")
    assert "1m: no (all 4 held)" in text.splitlines()
    assert "4m: 44m 111m 123m 456p 789s" in text.splitlines()


@pytest.mark.parametrize("notation", ["compact", "both", "unicode"])
def test_prompt_shows_the_hand(notation):
    pack = MahjongPack(notation=notation)
    item = item_for(pack, "1123m456p789s555z")
    prompt = pack.render_prompt(item)
    assert ("1123m 456p 789s 555z" in prompt) == (notation != "unicode")
    assert (format_unicode(parse_compact("1123m456p789s555z")) in prompt) == (notation != "compact")
    messages = pack.chat_messages(item, "Winning tiles: 14m")
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == prompt


# --- parsing and scoring ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Winning tiles: 14m", ["1m", "4m"]),
        ("winning tiles: 4m, 1m", ["1m", "4m"]),
        ("WINNING TILES: 4M 1M 1m", ["1m", "4m"]),
        ("Winning tiles: 1m4m", ["1m", "4m"]),
        ("Winning tiles: \U0001f00a \U0001f007", ["1m", "4m"]),
        ("Winning tiles: \U0001f007\ufe0f, 4m", ["1m", "4m"]),
        ('The winning tiles are: ["\U0001f007", "\U0001f00a"]', ["1m", "4m"]),
        ("**Winning tiles:** 1m and 4m.", ["1m", "4m"]),
        ("Winning tiles: 1m 4m (the pair is 55z)", ["1m", "4m"]),
        ("reasoning...\nWinning tiles: 2m\nWinning tiles: 1m 4m\nThat is all.", ["1m", "4m"]),
        ("  14m  ", ["1m", "4m"]),
        ("Winning tiles: none", []),
        ("Winning tiles: None.", []),
        ("Winning tiles: 7z 5z", ["5z", "7z"]),
        ("Winning tiles:", None),
        ("Winning tiles: 1m 4m because the hand is open", None),
        ("Winning tiles: 1m or maybe 4m", None),
        ("Winning tiles: 1m 4m - the pair is 55z", ["1m", "4m"]),
        ("Winning tiles: 1m-4m", None),
        ("Winning tiles: 8z", None),
        ("Winning tiles: none 1m", None),
        ("I think 1m and 4m.", None),
        ("1m\n4m", None),
        ("", None),
    ],
)
def test_parse_answer_is_forgiving_but_never_guesses(pack, text, expected):
    assert pack.parse_answer(text) == expected


def test_score_exact_f1_and_format(pack):
    item = item_for(pack, "1123m456p789s555z")
    assert pack.score(item, "Winning tiles: 1m 4m") == {"exact": True, "f1": 1.0, "format_ok": True}
    partial = pack.score(item, "Winning tiles: 1m")
    assert partial["exact"] is False and partial["f1"] == pytest.approx(2 / 3) and partial["format_ok"]
    assert pack.score(item, "no idea") == {"exact": False, "f1": 0.0, "format_ok": False}
    noten = item_for(pack, "1357m2468p1357s1z")
    assert pack.score(noten, "Winning tiles: none")["exact"]
    assert pack.score(noten, "Winning tiles: 2m") == {"exact": False, "f1": 0.0, "format_ok": True}


@given(st.lists(st.sampled_from(CODES), max_size=9), st.randoms(use_true_random=False), st.booleans())
def test_format_parse_round_trip_with_noise(tiles, rng, use_unicode):
    pack = MahjongPack()
    answer = sorted(set(tiles), key=CODES.index)
    noisy = list(tiles)
    rng.shuffle(noisy)
    if use_unicode:
        noisy = [UNICODE[CODES.index(t)] for t in noisy]
    assert pack.parse_answer(pack.format_answer(answer)) == answer
    text = f"Winning tiles: {', '.join(noisy) if noisy else 'none'}\nDone."
    assert pack.parse_answer(text) == answer


# --- public JSONL -----------------------------------------------------------------------------
def test_public_jsonl_round_trip(pack, even_items, tmp_path):
    path = tmp_path / "bench.jsonl"
    assert pack.write_jsonl(even_items, path) == len(even_items)
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"hand", "winning_tiles"} and len(row["hand"]) == 13
    assert all(0x1F000 <= ord(t) <= 0x1F021 for t in row["hand"] + row["winning_tiles"])
    back = pack.read_jsonl(path)
    assert [(it.question, it.answer) for it in back] == [(it.question, it.answer) for it in even_items]


def _row(hand: list[str], wins: list[str]) -> str:
    return json.dumps({"hand": hand, "winning_tiles": wins}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_row(list(UNICODE[:12]), []), "hand has 12 tiles, expected 13"),
        (_row(list(UNICODE[:12]) + ["X"], []), "hand tile 13: unknown tile symbol 'X'"),
        (_row([UNICODE[0]] * 5 + list(UNICODE[1:9]), []), "5 copies"),
        (_row(list(UNICODE[:13]), ["?"]), "winning_tiles tile 1: unknown tile symbol"),
        ('{"hand": [1, 2]', "malformed JSON"),
        ('{"hand": []}', '"hand" and "winning_tiles"'),
    ],
)
def test_bad_public_rows_name_line_and_problem(pack, tmp_path, line, message):
    good = _row(format_unicode_list("1123m456p789s555z"), ["\U0001f007", "\U0001f00a"])
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        pack.read_jsonl(path)
    assert "bad.jsonl:3: " in str(err.value) and message in str(err.value)


def format_unicode_list(hand: str) -> list[str]:
    return list(format_unicode(parse_compact(hand)))


# --- CLI --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    from stratos_agent.cli import _register_commands, app

    _register_commands()
    return lambda *args: CliRunner().invoke(app, list(args))


def test_cli_check_agreement_and_disagreement(cli, pack, tmp_path):
    good = tmp_path / "good.jsonl"
    result = cli("task", "sample", "mahjong", "--n", "40", "--even", "--seed", "5", "--out", str(good))
    assert result.exit_code == 0, result.output
    result = cli("task", "check", "mahjong", str(good))
    assert result.exit_code == 0 and "agree 40/40" in result.output

    rows = good.read_text(encoding="utf-8").splitlines()
    broken = json.loads(rows[3])
    broken["winning_tiles"] = broken["winning_tiles"][:-1] if broken["winning_tiles"] else [UNICODE[0]]
    rows[3] = json.dumps(broken, ensure_ascii=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = cli("task", "check", "mahjong", str(bad))
    assert result.exit_code == 1 and "agree 39/40" in result.output and "bad.jsonl:4" in result.output


def test_cli_check_bad_file_is_a_clean_input_error(cli, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    result = cli("task", "check", "mahjong", str(path))
    assert isinstance(result.exception, InputError) and "x.jsonl:1: malformed JSON" in str(result.exception)


def test_cli_solve_and_list(cli):
    result = cli("task", "solve", "1112345678999m")
    assert result.exit_code == 0 and result.output.strip().endswith("Winning tiles: 123456789m")
    result = cli("task", "solve", format_unicode(parse_compact("1123m456p789s555z")), "--style", "answer")
    assert result.output.strip() == "Winning tiles: 14m"
    result = cli("task", "list")
    assert result.exit_code == 0 and "mahjong" in result.output and "gsm8k" in result.output
