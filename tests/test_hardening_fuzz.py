"""Fuzz suite over every way input arrives (issue 13): requests, --edit KEY=VALUE, YAML specs, JSONL datasets
and command-line arguments. Every case states its expected outcome (values, an InputError, a reported phrase);
`Tally` counts cases, tracebacks (any exception that is not a StratosError) and silent misreads (an outcome
other than the stated one). `python evals/fuzz_inputs.py` prints and saves the figure."""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stratos_agent.cli import _register_commands, app
from stratos_agent.cli.plan import load_spec
from stratos_agent.errors import StratosError
from stratos_agent.request_parser import analyse_request, apply_edits, parse_key_values, understand_request
from stratos_agent.spec import DistillationSpec
from stratos_agent.tasks import get_task_pack

_register_commands()
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REPORT_ENV = "STRATOS_FUZZ_REPORT"  # evals/fuzz_inputs.py: where to write the tally as JSON
TALLY: Counter[str] = Counter()
ERROR = "InputError"  # expected outcome: a StratosError (one clean line)


def run_case(kind: str, call: Callable[[], Any], expect: Callable[[str, Any], bool]) -> None:
    """Run one case: `call` returns a value or raises; `expect(outcome, value)` says whether the outcome
    ("value" or ERROR, with the value or the message) is the stated one."""
    TALLY["tried"] += 1
    TALLY[f"tried:{kind}"] += 1
    try:
        outcome, value = "value", call()
    except StratosError as exc:
        outcome, value = ERROR, str(exc)
    except Exception:
        TALLY["tracebacks"] += 1
        raise
    if not expect(outcome, value):
        TALLY["misreads"] += 1
        raise AssertionError(f"{kind}: unexpected {outcome}: {value!r}")


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    line = f"Fuzz cases: {TALLY['tried']} tried, {TALLY['tracebacks']} tracebacks, {TALLY['misreads']} silent misreads"
    print(f"\n{line}")
    if os.environ.get(REPORT_ENV):
        Path(os.environ[REPORT_ENV]).write_text(json.dumps({"summary": line, **TALLY}, indent=1, sort_keys=True))


# --- requests: clauses with known values, in random formats and order --------------------------------
def _money(amount: int, style: int) -> str:
    return [f"${amount}", f"${amount:,}", f"{amount} USD", f"{amount} dollars", f"$ {amount}"][style]


@st.composite
def request_case(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[str]]:
    """A request built from clauses whose values are known, plus noise phrases that must be reported."""
    amount = draw(st.integers(1, 999_999))
    clauses = [("budget_usd", f"under {_money(amount, draw(st.integers(0, 4)))}", float(amount))]
    clauses.append(("task", draw(st.sampled_from(["Mahjong winning tiles", "mahjong", "GSM8K math"])), None))
    if draw(st.booleans()):
        ms = draw(st.integers(1, 100_000))
        clauses.append(("p95_latency_ms", f"p95 under {ms} ms", float(ms)))
    if draw(st.booleans()):
        pct = draw(st.integers(0, 100))
        clauses.append(("min_accuracy", f"at least {pct}% exact match", pct / 100))
    if draw(st.booleans()):
        hours = draw(st.integers(1, 500))
        clauses.append(("deadline_hours", f"within {hours} hours", float(hours)))
    if draw(st.booleans()):
        qps = draw(st.integers(1, 5000))
        clauses.append(("qps", f"{qps} qps", float(qps)))
    if draw(st.booleans()):
        weeks = draw(st.integers(1, 50))
        clauses.append(("duration_days", f"serve for {weeks} weeks", weeks * 7.0))
    noise = draw(st.lists(st.sampled_from(
        ["64 H100s", "for a week", "on marscloud", "gpt-99-ultra", "3 replicas", "by tomorrow", "€40"]
    ), max_size=2, unique=True))
    parts = [text for _, text, _ in clauses] + noise
    random.Random(draw(st.integers(0, 2**16))).shuffle(parts)
    expected = {name: value for name, _, value in clauses if value is not None}
    return ", ".join(parts), expected, [n.removeprefix("on ").removeprefix("by ") for n in noise]


@FUZZ
@given(request_case())
def test_requests_read_every_clause_and_report_the_noise(case: tuple[str, dict[str, Any], list[str]]) -> None:
    text, expected, noise = case

    def as_read(outcome: str, value: Any) -> bool:
        if outcome != "value":
            return False
        spec, unparsed = value
        got = {**spec.constraints.model_dump(), **spec.traffic.model_dump()}
        notes = " ".join(unparsed)
        return all(got[k] == v for k, v in expected.items()) and all(n in notes for n in noise)

    run_case("request", lambda: understand_request(text), as_read)


IMPOSSIBLE = [
    ("p95 latency under 0 ms", "p95_latency_ms"), ("150% accuracy", "min_accuracy"), ("$0", "budget_usd"),
    ("done in 0 hours", "deadline_hours"), ("0 qps", "qps"), ("serve for 0 days", "duration_days"),
    ("$1e309", "not a finite number"), ("deadline yesterday", "in the past"), ("latency -5 ms", "p95_latency_ms"),
    ("at least 101% accuracy", "min_accuracy"), ("$5e7", "budget_usd"), ("teacher gpt-99-ultra", "unknown model"),
    ("smollm2-135m-half as the teacher", "teacher"), ("train on ../x.jsonl", "task"),
]


@pytest.mark.parametrize(("phrase", "field"), IMPOSSIBLE)
@pytest.mark.parametrize("frame", ["mahjong, $20, {}", "{} - a mahjong model for $20", "{}; GSM8K, 30 dollars"])
def test_impossible_values_are_input_errors_naming_the_field(phrase: str, field: str, frame: str) -> None:
    text = frame.format(phrase)
    if field == "budget_usd" or field == "not a finite number":  # the frame's own budget would be ambiguous
        text = text.replace("$20", "").replace("30 dollars", "")
    run_case("request", lambda: understand_request(text), lambda o, v: o == ERROR and field in v)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_spec_or_an_input_error(text: str) -> None:
    """Random text never crashes the parser; a spec built from it holds only what the text said: every
    standalone number in the text is in a field's phrase or in an unparsed/invalid note."""

    def accounted(outcome: str, value: Any) -> bool:
        if outcome == ERROR:
            return True
        said = " ".join([*value.sources.values(), *value.unparsed, *value.invalid])
        return all(n in said for n in re.findall(r"(?<![\w.])\d+", text))

    run_case("request-text", lambda: analyse_request(text), accounted)


# --- --edit KEY=VALUE ------------------------------------------------------------------------------
BASE = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
EDIT_VALUES = {  # key -> [(text, expected value or ERROR)]
    "budget": [("30", 30.0), ("$1,500", 1500.0), ("2.5e3", 2500.0), ("0", ERROR), ("-3", ERROR), ("1e309", ERROR),
               ("1,5", ERROR), ("abc", ERROR), ("", ERROR), ("nan", ERROR), ("inf", ERROR), ("30$", ERROR)],
    "accuracy": [("0.4", 0.4), ("40%", 0.4), ("100%", 1.0), ("abc%", ERROR), ("150%", ERROR), ("40", ERROR)],
    "p95": [("300", 300.0), ("0", ERROR), ("300ms", ERROR)],
    "deadline": [("6", 6.0), ("0.5", 0.5), ("-1", ERROR), ("1e9", ERROR)],
    "qps": [("2.5", 2.5), ("0", ERROR)],
    "concurrency": [("8", 8), ("1.5", ERROR), ("0", ERROR)],
    "data_size": [("1000", 1000), ("1,000", 1000), ("-1", ERROR)],
    "clouds": [("aws,gcp", ["aws", "gcp"]), ("AWS gcp", ["aws", "gcp"]), ("marscloud", ERROR), ("", [])],
    "preference": [("cheaper", "cheaper"), ("fastest", ERROR)],
    "task": [("gsm8k", "gsm8k"), ("", ERROR), ("chess", ERROR)],
    "teacher": [("none", None), ("smollm2-135m", "smollm2-135m"), ("gpt-99-ultra", ERROR)],
    "colour": [("red", ERROR)],
}
EDIT_CASES = [(k, text, want) for k, values in EDIT_VALUES.items() for text, want in values]
_PATHS = {"budget": "constraints.budget_usd", "accuracy": "constraints.min_accuracy", "p95": "constraints.p95_latency_ms",
          "deadline": "constraints.deadline_hours", "clouds": "constraints.clouds", "qps": "traffic.qps",
          "concurrency": "traffic.concurrency"}


def _field(spec: DistillationSpec, key: str) -> Any:
    value: Any = spec
    for part in _PATHS.get(key, key).split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("key", "text", "want"), EDIT_CASES)
def test_edit_values(key: str, text: str, want: Any) -> None:
    def check(outcome: str, value: Any) -> bool:
        return outcome == ERROR if want == ERROR else outcome == "value" and _field(value, key) == want

    run_case("edit", lambda: apply_edits(BASE, parse_key_values([f"{key}={text}"])), check)


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
def test_any_edit_items_are_applied_or_refused(items: list[str]) -> None:
    run_case("edit-text", lambda: apply_edits(BASE, parse_key_values(items)), lambda o, v: True)


@FUZZ
@given(st.sampled_from(["budget", "qps", "p95", "deadline"]), st.floats(allow_nan=True, allow_infinity=True))
def test_numeric_edits_are_exact_or_refused(key: str, number: float) -> None:
    def exact(outcome: str, value: Any) -> bool:
        return outcome == ERROR or _field(value, key) == float(repr(number))

    run_case("edit-number", lambda: apply_edits(BASE, parse_key_values([f"{key}={number!r}"])), exact)


# --- YAML / JSON spec files -------------------------------------------------------------------------
SPEC_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
SPEC_KEYS = st.sampled_from(["task", "constraints", "traffic", "preference", "teacher", "student", "data_size",
                             "metric", "request", "budget_usd", "extra"])


@FUZZ
@given(st.dictionaries(SPEC_KEYS, SPEC_VALUES, max_size=5))
def test_random_yaml_specs_are_specs_or_input_errors(tmp_path_factory, data: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    run_case("yaml", lambda: load_spec(str(path)), lambda o, v: o == ERROR or isinstance(v[0], DistillationSpec))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_a_spec_file(tmp_path_factory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(raw)
    run_case("yaml-bytes", lambda: load_spec(str(path)), lambda o, v: o == ERROR or isinstance(v[0], DistillationSpec))


# --- JSONL datasets: nothing dropped in silence -----------------------------------------------------------
JSON_ROW = st.one_of(
    st.fixed_dictionaries({"question": st.text(max_size=30), "answer": st.one_of(st.text(max_size=10), st.integers(),
                                                                                 st.floats(), st.none())}),
    SPEC_VALUES,
)
LINE = st.one_of(JSON_ROW.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40).filter(lambda b: b"\n" not in b))


@FUZZ
@given(st.lists(LINE, min_size=1, max_size=6), st.sampled_from(["exact", "numeric", "regex"]))
def test_random_jsonl_lines_are_items_or_counted_bad_lines(tmp_path_factory, lines: list[bytes], checker: str) -> None:
    path = tmp_path_factory.mktemp("data") / "qa.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    nonblank = sum(1 for line in lines if line.strip())

    def all_accounted(outcome: str, pack: Any) -> bool:  # skip mode: every non-blank line is an item or bad
        return outcome == ERROR or len(pack.items) + pack.skipped == nonblank

    run_case("jsonl", lambda: get_task_pack(f"jsonl:{path}", checker=checker, on_bad_line="skip"), all_accounted)


# --- command-line arguments (fast paths only: nothing trains or plans) -------------------------------------
CLI_CASES: list[tuple[list[str], str]] = [  # (args, expected: "usage" = click's exit 2, ERROR, or "ok")
    (["plan", ""], ERROR), (["plan", "make me a model"], ERROR), (["plan", "mahjong $0"], ERROR),
    (["plan", "mahjong $20", "--top", "0"], "usage"), (["plan", "mahjong $20", "--probe-n", "0"], "usage"),
    (["plan", "mahjong $20", "--gpu", "B9000"], ERROR), (["plan", "{d}/missing.yaml"], ERROR),
    (["plan", "{d}/bad.yaml"], ERROR), (["plan", "{d}/notutf8.yaml"], ERROR), (["plan", "{d}/deep.yaml"], ERROR), (["plan", "mahjong $20 \udcff"], ERROR),
    (["plan"], "usage"), (["plan", "mahjong $20", "--top", "x"], "usage"),
    (["task", "sample", "nope"], ERROR), (["task", "sample", "mahjong", "--n", "-1"], ERROR),
    (["task", "sample", "mahjong", "--n", "2", "--style", "bogus"], ERROR), (["task", "sample", "mahjong", "--n", "x"], "usage"),
    (["task", "sample", "jsonl:{d}/qa.jsonl", "--n", "1"], "ok"), (["task", "sample", "jsonl:{d}/missing.jsonl"], ERROR),
    (["task", "sample", "jsonl:"], ERROR), (["task", "sample", "gsm8k", "--n", "1", "--out", "{d}"], ERROR),
    (["task", "solve", ""], ERROR), (["task", "solve", "\udcff"], ERROR), (["task", "solve", "1m" * 20], ERROR),
    (["task", "solve", "1112345678999m", "--style", "bogus"], ERROR), (["task", "solve", "1112345678999m"], "ok"),
    (["task", "check", "mahjong", "{d}/missing.jsonl"], ERROR), (["task", "check", "gsm8k", "{d}/qa.jsonl"], ERROR),
    (["task", "check", "mahjong", "{d}/qa.jsonl"], ERROR), (["task", "check", "mahjong", "{d}/notutf8.yaml"], ERROR),
    (["task", "check", "mahjong", "{d}"], ERROR),
    (["synth", "--out", "{d}/o", "--mode", "bogus"], ERROR), (["synth", "--out", "{d}/o", "--n", "0"], ERROR),
    (["synth", "--out", "{d}/o", "--task", "nope"], ERROR), (["synth", "--out", "{d}/qa.jsonl", "--n", "1"], ERROR),
    (["synth", "--out", "{d}/o", "--task", "jsonl:{d}/qa.jsonl", "--on-bad-line", "maybe"], ERROR),
    (["synth", "--out", "{d}/o", "--task", "jsonl:{d}/qa.jsonl", "--checker", "no_mod:f"], ERROR),
    (["synth", "--out", "{d}/o", "--task", "jsonl:{d}/qa.jsonl", "--checker", "fuzzy"], ERROR),
    (["synth", "--out", "{d}/o", "--on-bad-line", "skip"], ERROR), (["synth", "--out", "{d}/o", "--max-attempts", "0"], "usage"),
    (["synth", "--out", "{d}/o", "--temperature", "-1"], "usage"), (["synth", "--out", "{d}/o", "--n", "1e3"], "usage"),
    (["synth", "--out", "{d}/o", "--teacher", "x"], ERROR), (["synth"], "usage"),
]


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "qa.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    (folder / "bad.yaml").write_text("task: mahjong\nconstraints: [1,\n")
    (folder / "notutf8.yaml").write_bytes(b"task: \xff\n")
    (folder / "deep.yaml").write_text("task: " + "[" * 5000)
    return folder


def _cli(args: list[str]) -> Any:
    result = CliRunner().invoke(app, args)
    exc = result.exception
    if exc is None:
        return "ok"
    if isinstance(exc, SystemExit):
        return "usage" if result.exit_code == 2 else "ok"
    raise exc  # a StratosError becomes ERROR in run_case; anything else is a traceback


@pytest.mark.parametrize(("args", "want"), CLI_CASES)
def test_cli_arguments(cli_dir: Path, args: list[str], want: str) -> None:
    argv = [a.replace("{d}", str(cli_dir)) for a in args]
    run_case("cli", lambda: _cli(argv), lambda o, v: (o if o == ERROR else v) == want)


@FUZZ
@given(st.text(max_size=40))
def test_cli_any_hand_or_task_name(cli_dir: Path, text: str) -> None:
    for argv in (["task", "solve", text], ["task", "sample", text, "--n", "1"]):
        run_case("cli-text", lambda argv=argv: _cli(argv), lambda o, v: o == ERROR or v in {"ok", "usage"})
