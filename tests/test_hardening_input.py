"""Bad input is an InputError naming what is wrong, and no part of a request is silently misread or dropped
(issue 13): impossible values, number formats, unread phrases, JSONL encodings, checker imports, CLI args."""

from __future__ import annotations

import json
import re
import sys

import pytest
from typer.testing import CliRunner

from stratos_agent.cli import _register_commands, app
from stratos_agent.cli.plan import load_spec
from stratos_agent.errors import InputError
from stratos_agent.request_parser import (
    analyse_request,
    apply_edits,
    parse_key_values,
    parse_request,
    understand_request,
)
from stratos_agent.tasks import get_task_pack

_register_commands()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


# --- impossible values: a clean InputError naming the field and the phrase (were pydantic tracebacks) ----
@pytest.mark.parametrize(
    ("text", "field", "phrase"),
    [
        ("mahjong, $20, p95 latency under 0 ms", "p95_latency_ms", "p95 latency under 0 ms"),
        ("mahjong, $20, 150% accuracy", "min_accuracy", "150% accuracy"),
        ("mahjong for $0", "budget_usd", "$0"),
        ("mahjong, $20, done in 0 hours", "deadline_hours", "done in 0 hours"),
        ("mahjong, $20, 0 qps", "qps", "0 qps"),
        ("mahjong, $20, serve for 0 days", "duration_days", "for 0 days"),
    ],
)
def test_impossible_values_name_field_and_phrase(text: str, field: str, phrase: str) -> None:
    with pytest.raises(InputError, match=rf"{field} = .*read from {re.escape(repr(phrase))}"):
        parse_request(text)


def test_impossible_value_through_the_plan_command_is_one_clean_error() -> None:
    result = invoke("plan", "mahjong, $20, 150% accuracy")
    assert isinstance(result.exception, InputError) and "min_accuracy" in str(result.exception)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mahjong $1e309", re.escape("'$1e309': 1e309 is not a finite number")),
        ("mahjong $20, deadline yesterday", "a deadline in the past cannot be met"),
        ("mahjong $20 \ud800", "not valid Unicode"),
        ("mahjong $20 " + "x" * 20_000, "at most 10,000"),
    ],
)
def test_unusable_requests_are_input_errors(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_request(text)


# --- silent misreads -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "budget"),
    [("mahjong $1,500", 1500), ("mahjong $5e3", 5000), ("mahjong $2.5k", 2500), ("mahjong $1,234.5", 1234.5),
     ("mahjong, 40 dollars", 40), ("mahjong $0.5 million", 5e5)],
)
def test_budgets_are_read_whole(text: str, budget: float) -> None:
    assert parse_request(text).constraints.budget_usd == budget


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("mahjong $20 with 64 H100s for a week", "'64 H100s'"),
        ("mahjong $20 with 64 H100s for a week", "'for a week'"),
        ("mahjong $20 on marscloud", "'marscloud': unknown cloud"),
        ("mahjong $20 on oracle", "'oracle': unknown cloud"),
        ("mahjong $20, distil gpt-99-ultra", "'gpt-99-ultra': a model name without a role"),
        ("mahjong $1,5", "cannot read the number '1,5'"),  # European decimal or a typo: asked, not guessed
        ("mahjong $20, latency should be snappy", "no p95_latency_ms value read"),
        ("mahjong $20, accuracy 40 percent", None),  # understood: no note
        ("mahjong $20, 40% right", "'40%'"),
        ("mahjong $20, cheap and fast", "conflicting preferences"),
    ],
)
def test_unread_phrases_are_reported(text: str, phrase: str | None) -> None:
    analysis = analyse_request(text)
    notes = " | ".join(analysis.unparsed)
    assert (phrase in notes) if phrase else not notes, notes


def test_demo_request_has_nothing_unread() -> None:
    spec, unparsed = understand_request(
        "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms, at least 40% exact match"
    )
    assert unparsed == [] and spec.constraints.budget_usd == 20


def test_models_named_with_a_role_are_read_and_checked() -> None:
    spec = parse_request("mahjong, $20, smollm2-135m as the teacher, student smollm2-135m-half")
    assert (spec.teacher, spec.student) == ("smollm2-135m", "smollm2-135m-half")
    with pytest.raises(InputError, match="unknown model 'gpt-99-ultra'"):
        parse_request("mahjong, $20, teacher gpt-99-ultra")


def test_plan_json_records_the_spec_and_what_was_not_understood(tmp_path) -> None:
    out = tmp_path / "plan"
    result = invoke("plan", "mahjong under $1,500 with 64 H100s", "--out", str(out), "--no-local")
    assert result.exit_code == 0, result.output
    assert "not understood" in result.output and "64 H100s" in result.output
    record = json.loads((out / "plan.json").read_text())
    assert record["spec"]["constraints"]["budget_usd"] == 1500
    assert any("64 H100s" in note for note in record["unparsed"])


@pytest.mark.parametrize("request_text", ["mahjong $20 a\0b", "mahjong $20 " + "y" * 5000, "line one\nmahjong $20"])
def test_text_that_cannot_be_a_path_is_read_as_a_request(request_text: str) -> None:
    spec, _ = load_spec(request_text)
    assert spec.task == "mahjong"


@pytest.mark.parametrize(
    ("raw", "message"), [(b"task: mahjong\nrequest: \xff\xfe\n", "not UTF-8"), (b"task: " + b"[" * 5000, "too deeply")]
)
def test_spec_files_that_yaml_cannot_read_are_input_errors(tmp_path, raw: bytes, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=message):
        load_spec(str(path))


# --- --edit KEY=VALUE ------------------------------------------------------------------------------
def test_edits_read_numbers_strictly_and_refuse_repeats() -> None:
    spec = parse_request("mahjong under $20")
    edited = apply_edits(spec, parse_key_values(["budget=$1,500", "accuracy=40%", "qps=2.5"]))
    assert (edited.constraints.budget_usd, edited.constraints.min_accuracy, edited.traffic.qps) == (1500, 0.4, 2.5)
    for bad, message in [
        (["accuracy=abc%"], "not a finite number"),  # was a ValueError traceback
        (["budget=1e309"], "not a finite number"),
        (["budget=1,5"], "not a finite number"),
        (["budget=5", "budget=6"], "given twice"),
        (["budget=5", "budget_usd=6"], "given twice"),
        (["concurrency=1.5"], "concurrency"),
    ]:
        with pytest.raises(InputError, match=message):
            apply_edits(spec, parse_key_values(bad))


# --- JSONL datasets --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"question": "q\xff", "answer": "1"}\n', "not valid UTF-8"),
        (b'{"question": "q\\ud800", "answer": "1"}\n', "a string holds a lone surrogate"),
        (b'{"question": "q", "answer": NaN}\n', "malformed JSON \\(NaN is not a JSON number"),
        (b"[" * 100_000 + b"\n", "malformed JSON"),
    ],
)
def test_bad_jsonl_lines_are_named_and_skippable(tmp_path, raw: bytes, message: str) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_bytes(b'{"question": "fine?", "answer": "yes"}\n' + raw)
    with pytest.raises(InputError, match=rf"qa.jsonl:2: {message}"):
        get_task_pack(f"jsonl:{data}")
    pack = get_task_pack(f"jsonl:{data}", on_bad_line="skip")
    assert len(pack.items) == 1 and pack.skipped == 1


def test_task_check_reads_a_bad_encoding_as_an_input_error(tmp_path) -> None:
    data = tmp_path / "bench.jsonl"
    data.write_bytes(b"\xff\xfe\n")
    result = invoke("task", "check", "mahjong", str(data))
    assert isinstance(result.exception, InputError) and "bench.jsonl:1: not valid UTF-8" in str(result.exception)


# --- checker modules are imported only when the user names them --------------------------------------
@pytest.fixture
def checker_module(tmp_path, monkeypatch):
    """A module that leaves a marker file when imported, on sys.path as `h13_checker`."""
    marker = tmp_path / "imported"
    (tmp_path / "h13_checker.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "def same(predicted, answer):\n    return predicted.strip() == str(answer)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "h13_checker", raising=False)
    return marker


def test_pack_json_naming_a_module_is_refused_without_importing_it(tmp_path, checker_module) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "2+2?", "answer": "4"}\n')
    (tmp_path / "qa.pack.json").write_text(json.dumps({"checker": "h13_checker:same"}))
    with pytest.raises(InputError, match="--checker h13_checker:same"):
        get_task_pack(f"jsonl:{data}")
    assert not checker_module.exists()
    result = invoke("synth", "--task", f"jsonl:{data}", "--n", "1", "--out", str(tmp_path / "o"))
    assert isinstance(result.exception, InputError) and not checker_module.exists()
    pack = get_task_pack(f"jsonl:{data}", checker="h13_checker:same")  # named by the user: imported
    assert checker_module.exists() and pack.verify(pack.items[0], "4")


@pytest.mark.parametrize(
    ("sidecar", "options", "message"),
    [
        ("3", {}, "expected a JSON object"),
        ('{"tolerance": "abc"}', {}, "tolerance"),
        ('{"answer_prefix": ""}', {}, "answer_prefix"),
        ("{}", {"tolerance": "nan"}, "finite"),
        ("{}", {"colour": "red"}, "has no option 'colour'"),
        ('{"checker": "numeric"', {}, "malformed JSON"),
    ],
)
def test_pack_options_are_validated(tmp_path, sidecar: str, options: dict, message: str) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "2+2?", "answer": "4"}\n')
    (tmp_path / "qa.pack.json").write_text(sidecar)
    with pytest.raises(InputError, match=message):
        get_task_pack(f"jsonl:{data}", **options)


def test_task_options_are_typed_and_checked() -> None:
    assert get_task_pack("mahjong", noten_share="0.5").noten_share == 0.5  # command-line text, converted
    for options, message in [({"foo": "1"}, "has no option 'foo'"), ({"noten_share": "abc"}, "noten_share")]:
        with pytest.raises(InputError, match=message):
            get_task_pack("mahjong", **options)


# --- command-line arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "--checker", "exact", "--n", "1"], "jsonl:PATH tasks only"),
        (["synth", "--out", "{file}", "--n", "1"], "is a file"),
        (["task", "sample", "gsm8k", "--n", "1", "--out", "{tmp}"], "cannot write it"),
        (["train", "--data", "{file}", "--run-name", "x", "--lr", "inf"], "--lr: must be a finite number"),
        (["eval", "--data", "{file}", "--task-option", "colour=red"], "has no option 'colour'"),
        (["eval", "--data", "{file}", "--task-option", "prompt=short", "--task-option", "prompt=full"], "given twice"),
    ],
)
def test_bad_arguments_are_input_errors(tmp_path, args: list[str], message: str) -> None:
    file = tmp_path / "f.jsonl"
    file.write_text("{}\n")
    args = [a.format(file=file, tmp=tmp_path) for a in args]
    if "--out" not in args and args[0] == "synth":
        args += ["--out", str(tmp_path / "out")]
    result = invoke(*args)
    assert isinstance(result.exception, InputError), result.output
    assert message in str(result.exception)
