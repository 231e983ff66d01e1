"""GSM8K-style pack (reasoning_gym gsm_symbolic) and the shared TaskPack helpers in tasks/base.py."""

from __future__ import annotations

from collections import Counter

import pytest

from stratos_agent.errors import InputError
from stratos_agent.tasks import EVEN, TaskItem, TaskPack, get_task_pack
from stratos_agent.tasks.base import bucket_plan, read_items, set_f1, write_items


@pytest.fixture(scope="module")
def pack():
    return get_task_pack("gsm8k")


@pytest.fixture(scope="module")
def items(pack) -> list[TaskItem]:
    return pack.sample(24, seed=3, distribution=EVEN)


def test_sampled_items_carry_answers_and_worked_solutions(pack, items):
    assert isinstance(pack, TaskPack)
    assert items == pack.sample(24, seed=3, distribution=EVEN)
    assert Counter(pack.difficulty_bucket(it) for it in items) == {2: 6, 3: 6, 4: 6, 5: 6}
    for item in items:
        assert pack.parse_answer(item.answer) == item.answer  # canonical number string
        cot = pack.solver_rationale(item, "cot")
        assert cot.splitlines()[-1] == f"Answer: {item.answer}" and "####" not in cot
        assert pack.score(item, cot) == {"exact": True, "f1": 1.0, "format_ok": True}
        assert pack.solver_rationale(item, "answer") == f"Answer: {item.answer}"
        assert item.question["question"] in pack.render_prompt(item)
        assert pack.difficulty(item)["steps"] >= 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 42", "42"),
        ("so...\nThe final answer is: $1,234.50.", "1234.5"),
        ("**Answer:** -7", "-7"),
        ("#### 288", "288"),
        ("Answer: 3.0", "3"),
        ("  17 ", "17"),
        ("Answer: 12 or 13", None),
        ("Answer: twelve", None),
        ("12 apples and 3 pears", None),
        ("", None),
    ],
)
def test_parse_numbers_without_guessing(pack, text, expected):
    assert pack.parse_answer(text) == expected


def test_verify_and_public_rows(pack, items, tmp_path):
    item = items[0]
    assert pack.verify(item, item.answer) and not pack.verify(item, "-99999")
    assert pack.score(item, "Answer: -99999") == {"exact": False, "f1": 0.0, "format_ok": True}
    path = tmp_path / "gsm.jsonl"
    pack.write_jsonl(items, path)
    back = pack.read_jsonl(path)
    assert [(b.question, b.answer) for b in back] == [(i.question, i.answer) for i in items]
    assert len({pack.canonical_key(i) for i in items}) == len(items)
    path.write_text('{"question": "q?", "answer": "many"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="gsm.jsonl:1: answer 'many' is not a number"):
        pack.read_jsonl(path)


def test_bucket_plan_and_set_f1():
    assert bucket_plan(10, (0, 1, 2), EVEN) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert bucket_plan(7, (0, 1, 2), {0: 1, 2: 1}) == [0, 0, 0, 0, 2, 2, 2]  # ties go to the earlier bucket
    with pytest.raises(InputError, match="positive weight"):
        bucket_plan(3, (0, 1), {0: 0})
    assert set_f1([], []) == 1.0 and set_f1(["a"], []) == 0.0 and set_f1("ab", "bc") == 0.5


def test_task_item_rows_round_trip(items, tmp_path):
    path = tmp_path / "items.jsonl"
    assert write_items(items, path) == len(items)
    assert read_items(path) == items
    path.write_text('{"task": "gsm8k"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="items.jsonl:1: not a task item"):
        read_items(path)
