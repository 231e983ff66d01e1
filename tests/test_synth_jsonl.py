"""A user's JSONL of question/answer pairs as a task pack: checkers, bad lines, registration, synthesis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from stratos_agent.tools.synth import synthesize

from stratos_agent.errors import InputError
from stratos_agent.tasks import TaskPack, get_task_pack
from stratos_agent.tasks.jsonl_pack import JsonlTaskPack, parse_number


def write_lines(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def is_even_checker(predicted: str, answer: str) -> bool:
    """A user checker named in config as `test_synth_jsonl:is_even_checker`."""
    return predicted.strip().isdigit() and int(predicted) % 2 == int(answer) % 2


@pytest.fixture
def qa(tmp_path):
    return write_lines(tmp_path / "qa.jsonl", [
        {"question": "What is 2 + 2?", "answer": 4, "rationale": "2 + 2 = 4.", "difficulty": 1},
        {"question": "What is 10 * 3?", "answer": "30", "difficulty": 2},
        "",  # blank lines are not data
        {"question": "  what is 2 +   2? ", "answer": 4},  # same question up to case/space: a duplicate
        {"question": "Half of 5?", "answer": "2.5", "difficulty": 2},
    ])


def test_registered_as_jsonl_path_and_follows_the_protocol(qa):
    pack = get_task_pack(f"jsonl:{qa}")
    assert isinstance(pack, JsonlTaskPack) and isinstance(pack, TaskPack)
    assert pack.name == f"jsonl:{qa}" and len(pack.items) == 4 and pack.skipped == 0
    assert pack.difficulty_buckets == ("1", "2", "all")
    first = pack.items[0]
    assert pack.solver_rationale(first) == "2 + 2 = 4.\nFinal answer: 4"
    assert pack.solver_rationale(first, "answer") == "Final answer: 4"
    assert pack.canonical_key(first) == pack.canonical_key(pack.items[2])
    assert pack.score(first, "so...\nFinal answer: **4**") == {"exact": True, "f1": 1.0, "format_ok": True}
    assert pack.score(first, "I think 4\nbut maybe 5")["format_ok"] is False  # never guesses


def test_checkers(tmp_path, qa):
    exact = get_task_pack(f"jsonl:{qa}")
    item = exact.items[1]
    assert exact.verify(item, "30") and exact.verify(item, " 30 ") and not exact.verify(item, "30.0")
    numeric = get_task_pack(f"jsonl:{qa}", checker="numeric")
    assert numeric.verify(item, "30.0") and numeric.verify(item, "$30") and not numeric.verify(item, "31")
    assert numeric.verify(numeric.items[3], "2.5000001") and not numeric.verify(numeric.items[3], "2 or 3")
    assert parse_number("1,234.5") == 1234.5 and parse_number("no number") is None

    rx = write_lines(tmp_path / "rx.jsonl", [{"question": "Name a primary colour.", "answer": "red",
                                              "pattern": "(?i)red|green|blue"}])
    regex = get_task_pack(f"jsonl:{rx}", checker="regex")
    assert regex.verify(regex.items[0], "Blue") and not regex.verify(regex.items[0], "purple")

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    try:
        custom = get_task_pack(f"jsonl:{qa}", checker="test_synth_jsonl:is_even_checker")
        assert custom.verify(custom.items[0], "8") and not custom.verify(custom.items[0], "7")
    finally:
        sys.path.pop(0)
    with pytest.raises(InputError, match="cannot be imported"):
        get_task_pack(f"jsonl:{qa}", checker="no_such_module:f")
    with pytest.raises(InputError, match="unknown checker"):
        get_task_pack(f"jsonl:{qa}", checker="fuzzy")


def test_sidecar_config(tmp_path):
    data = write_lines(tmp_path / "nums.jsonl", [{"question": "1/4 as a decimal?", "answer": "0.25"}])
    (tmp_path / "nums.pack.json").write_text(json.dumps({"checker": "numeric", "answer_prefix": "Answer:"}))
    pack = get_task_pack(f"jsonl:{data}")
    assert pack.checker == "numeric" and pack.format_answer("0.25") == "Answer: 0.25"
    assert pack.verify(pack.items[0], pack.parse_answer("Work.\nAnswer: .25"))


def test_bad_lines_are_refused_or_skipped_with_line_numbers(tmp_path):
    data = write_lines(tmp_path / "bad.jsonl", [
        {"question": "ok?", "answer": "yes"},
        "{not json",
        {"question": "no answer"},
        ["a", "list"],
        {"question": "What is 1 + 1?", "answer": 2},
    ])
    with pytest.raises(InputError) as info:
        get_task_pack(f"jsonl:{data}")
    message = str(info.value)
    assert "3 malformed line(s)" in message and "--on-bad-line skip" in message
    for lineno in (2, 3, 4):
        assert f"bad.jsonl:{lineno}:" in message
    pack = get_task_pack(f"jsonl:{data}", on_bad_line="skip")
    assert pack.skipped == 3 and len(pack.items) == 2
    assert pack.bad_lines[1].endswith('bad.jsonl:3: missing "answer" (a string or number)')
    numeric = write_lines(tmp_path / "n.jsonl", [{"question": "q", "answer": "lots"}])
    with pytest.raises(InputError, match=r"n.jsonl:1: answer 'lots' is not a number"):
        get_task_pack(f"jsonl:{numeric}", checker="numeric")
    with pytest.raises(InputError, match="no such file"):
        get_task_pack(f"jsonl:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(InputError, match="needs your file: --task jsonl:PATH"):
        get_task_pack("jsonl")


def test_synthesis_keeps_skipped_lines_in_the_card_and_stops_when_dry(tmp_path, qa):
    with qa.open("a") as fh:
        fh.write("{broken\n")
    pack = get_task_pack(f"jsonl:{qa}", on_bad_line="skip")
    ref = synthesize(pack, 10, tmp_path / "out", seed=0)
    card = ref.card
    assert card.n_accepted == 3  # 4 good lines, one a duplicate question
    assert any("skipped 1 malformed input line(s)" in note and "qa.jsonl:6" in note for note in card.notes)
    assert any("ran out of distinct items" in note for note in card.notes)
    public = [json.loads(line) for p in ref.public_jsonl.values() for line in p.open()]
    assert sorted(r["answer"] for r in public) == ["2.5", "30", "4"]
    assert all(r["completion"].endswith("Final answer: " + r["answer"]) for r in public)


def test_cli_reports_bad_lines_as_one_clean_error(tmp_path):
    data = write_lines(tmp_path / "bad.jsonl", [{"question": "ok?", "answer": "yes"}, "{oops"])
    cmd = [sys.executable, "-c", "from stratos_agent.cli import main; main()", "synth",
           "--task", f"jsonl:{data}", "--n", "5", "--out", str(tmp_path / "out")]
    failed = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "bad.jsonl:2: malformed JSON" in " ".join(failed.stderr.split())
    ok = subprocess.run([*cmd, "--on-bad-line", "skip"], check=False, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "skipped 1 malformed line(s)" in ok.stdout and "kept 1" in ok.stdout
