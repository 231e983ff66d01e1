"""Request parsing (natural language -> DistillationSpec), spec edits, and the cost ledger."""

from __future__ import annotations

import pytest

from stratos_agent.errors import InputError
from stratos_agent.ledger import Ledger
from stratos_agent.request_parser import (
    IncompleteRequest,
    analyse_request,
    apply_edits,
    edits_in_text,
    parse_key_values,
    parse_request,
)


def test_demo_request() -> None:
    spec = parse_request(
        "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms, at least 40% exact match"
    )
    assert spec.task == "mahjong"
    assert (spec.constraints.budget_usd, spec.constraints.p95_latency_ms, spec.constraints.min_accuracy) == (
        20,
        300,
        0.4,
    )
    assert spec.constraints.deadline_hours is None  # "under 300 ms" is a latency, not a deadline


@pytest.mark.parametrize(
    "text,field,value",
    [
        ("GSM8K math, budget 150 USD", "budget_usd", 150),
        ("gsm8k for $1.5k", "budget_usd", 1500),
        ("mahjong, $20, latency below 0.5 s", "p95_latency_ms", 500),
        ("mahjong, $20, accuracy >= 0.8", "min_accuracy", 0.8),
        ("mahjong, $20, on AWS or GCP", "clouds", ["aws", "gcp"]),
        ("mahjong, $20, within 2 days", "deadline_hours", 48),
        ("mahjong, $20, within 90 minutes", "deadline_hours", 1.5),
    ],
)
def test_constraints(text: str, field: str, value: object) -> None:
    assert getattr(parse_request(text).constraints, field) == value


def test_traffic_preference_and_user_data(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a request's data file must exist (checked like any user input)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "qa.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
    spec = parse_request("train on data/qa.jsonl, $30, 10 qps for 2 weeks, prefer cheaper")
    assert spec.task == "jsonl:data/qa.jsonl" and spec.preference == "cheaper"
    assert (spec.traffic.qps, spec.traffic.duration_days) == (10, 14)


def test_missing_and_ambiguous_essentials_are_reported_not_guessed() -> None:
    analysis = analyse_request("something cheap for $5 or $10")
    assert analysis.missing == ["task"] and analysis.ambiguous == {"budget_usd": [5.0, 10.0]}
    assert len(analysis.questions()) == 2
    with pytest.raises(IncompleteRequest, match="Which task"):
        parse_request("make me a small model")


def test_edits() -> None:
    spec = parse_request("mahjong under $20")
    edited = apply_edits(spec, parse_key_values(["budget=$30", "clouds=aws,gcp", "min_accuracy=40%"]))
    assert (edited.constraints.budget_usd, edited.constraints.clouds, edited.constraints.min_accuracy) == (
        30,
        ["aws", "gcp"],
        0.4,
    )
    assert edits_in_text("make the budget $40 and p95 under 200 ms") == {
        "budget_usd": 40,
        "p95_latency_ms": 200,
    }
    with pytest.raises(InputError, match="greater than 0"):
        apply_edits(spec, {"budget_usd": "-3"})
    with pytest.raises(InputError, match="cannot edit 'colour'"):
        apply_edits(spec, {"colour": "red"})
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_key_values(["budget"])


def test_ledger_refuses_what_would_exceed_the_budget() -> None:
    ledger = Ledger(budget_usd=10)
    ledger.book("dataset", 2.0, "aws:x", 3.6)
    ledger.settle("dataset", wall_s=1000)  # 1000 s at $3.6/h = $1.00
    assert ledger.spent_usd == pytest.approx(1.0)
    assert ledger.refusal("model", 9.0) is None
    refusal = ledger.refusal("model", 9.5)
    assert refusal and "budget exceeded" in refusal and "$9.00 left" in refusal
    ledger.book("model", 9.0, "aws:x", 3.6)
    assert ledger.committed_usd == pytest.approx(10.0) and ledger.remaining_usd == pytest.approx(0.0)
    assert "no finite budget" in (Ledger(budget_usd=None).refusal("model", 1e9) or "")
    assert ledger.rows()[-1]["stage"] == "total"
