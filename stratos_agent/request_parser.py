"""Natural-language request -> `DistillationSpec`, deterministically (no LLM needed).

It reads what people actually write ("under $20", "p95 under 300 ms", "at least 40% exact match",
"on AWS or GCP", "within 6 hours", "prefer cheaper"). It never guesses an essential: a request without a
recognisable task or budget, or with two conflicting values, comes back as `missing` / `ambiguous`
so that the agent asks the user instead of inventing a number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from stratos_agent.errors import InputError
from stratos_agent.spec import DistillationSpec

ESSENTIALS = ("task", "budget_usd")

QUESTIONS = {
    "task": "Which task should the model learn? (e.g. 'Mahjong winning tiles', 'GSM8K math', or a "
    "path to your own JSONL of question/answer pairs)",
    "budget_usd": "What is the total budget in US dollars for training and serving? (e.g. '$20')",
}

_TASK_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mahjong", r"mah[\s-]?jong|majiang|winning[\s-]tiles?"),
    ("gsm8k", r"gsm[\s-]?8k|grade[\s-]school math|math word problems?"),
)
_CLOUDS = {
    "aws": r"\baws\b|amazon",
    "gcp": r"\bgcp\b|google cloud",
    "azure": r"\bazure\b",
    "lambda": r"\blambda\b",
    "runpod": r"\brunpod\b",
    "local": r"\blocal(?:ly)?\b|this machine|on[- ]prem",
}
_NUM = r"(\d+(?:[.,]\d+)?)"
_MONEY = re.compile(rf"(?:\$\s*{_NUM}\s*(k)?)|(?:{_NUM}\s*(k)?\s*(?:usd|dollars?|\$))", re.IGNORECASE)
_LATENCY = re.compile(
    rf"(?:p(?:50|90|95|99)|latency|respond|response)[^.;\d$]{{0,30}}?{_NUM}\s*"
    r"(ms|milliseconds?|s|sec|seconds?)\b",
    re.IGNORECASE,
)
_ACCURACY = re.compile(
    rf"(?:{_NUM}\s*%\s*(?:exact[\s-]match|accura\w*|correct|em\b))"
    rf"|(?:(?:accuracy|exact[\s-]match)[^.;\d]{{0,25}}?{_NUM}\s*(%)?)",
    re.IGNORECASE,
)
_DEADLINE = re.compile(
    rf"(?:within|in|under|deadline(?: of)?|by|done in)\s+{_NUM}\s*(h|hours?|hrs?|days?|d|minutes?|mins?)\b",
    re.IGNORECASE,
)
_QPS = re.compile(rf"{_NUM}\s*(?:qps|requests?\s*(?:per|/)\s*(?:second|sec|s))\b", re.IGNORECASE)
_SERVE_DAYS = re.compile(rf"(?:serve|serving|for)\s+{_NUM}\s*(days?|weeks?|months?)\b", re.IGNORECASE)
_JSONL = re.compile(r"(\S+\.jsonl)\b")
_PREFERENCES = (
    ("cheaper", r"cheap|lowest cost|low cost|save money|cost first"),
    ("faster", r"fast(?:er|est)?\b|lowest latency|low latency|quick"),
    ("accurate", r"most accurate|accuracy first|best quality|highest accuracy"),
)


@dataclass
class RequestAnalysis:
    """What the parser understood; `fields` feed `DistillationSpec`, the lists say what it did not."""

    fields: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.ambiguous

    def questions(self) -> list[str]:
        asks = [QUESTIONS[name] for name in self.missing]
        asks += [
            f"Your request names several values for {name}: {values}. Which one?"
            for name, values in self.ambiguous.items()
        ]
        return asks

    def to_spec(self) -> DistillationSpec:
        constraint_keys = ("budget_usd", "p95_latency_ms", "min_accuracy", "clouds", "deadline_hours")
        traffic_keys = ("qps", "duration_days")
        data: dict[str, Any] = {
            k: v for k, v in self.fields.items() if k not in constraint_keys + traffic_keys
        }
        data["constraints"] = {k: self.fields[k] for k in constraint_keys if k in self.fields}
        data["traffic"] = {k: self.fields[k] for k in traffic_keys if k in self.fields}
        return DistillationSpec.model_validate(data)


class IncompleteRequest(InputError):
    """The request lacks (or contradicts itself on) an essential; `.analysis` says which."""

    def __init__(self, analysis: RequestAnalysis):
        self.analysis = analysis
        super().__init__("request is incomplete: " + " ".join(analysis.questions()))


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _put(analysis: RequestAnalysis, name: str, values: list[Any]) -> None:
    values = _distinct(values)
    if len(values) == 1:
        analysis.fields[name] = values[0]
    elif len(values) > 1:
        analysis.ambiguous[name] = values


def analyse_request(text: str) -> RequestAnalysis:
    """Read a request; never raises for missing parts (see `RequestAnalysis.missing`)."""
    out = RequestAnalysis(fields={"request": text.strip()})
    lowered = text.lower()

    tasks = [name for name, pattern in _TASK_PATTERNS if re.search(pattern, lowered)]
    tasks += [f"jsonl:{m.group(1)}" for m in _JSONL.finditer(text)]
    _put(out, "task", tasks)

    latency_spans: list[tuple[int, int]] = []
    latencies = []
    for m in _LATENCY.finditer(text):
        value, unit = _number(m.group(1)), m.group(2).lower()
        latencies.append(value if unit.startswith("m") else value * 1000.0)
        latency_spans.append(m.span())
    _put(out, "p95_latency_ms", latencies)

    budgets = []
    for m in _MONEY.finditer(text):
        raw, kilo = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        budgets.append(_number(raw) * (1000.0 if kilo else 1.0))
    _put(out, "budget_usd", budgets)

    accuracies = []
    for m in _ACCURACY.finditer(text):
        if m.group(1):
            accuracies.append(_number(m.group(1)) / 100.0)
        else:
            value = _number(m.group(2))
            accuracies.append(value / 100.0 if m.group(3) or value > 1 else value)
    _put(out, "min_accuracy", [round(a, 6) for a in accuracies])

    deadlines = []
    for m in _DEADLINE.finditer(text):
        if any(a <= m.start() < b for a, b in latency_spans):
            continue  # "under 300 ms" is a latency, not a deadline
        value, unit = _number(m.group(1)), m.group(2).lower()
        deadlines.append(
            value * 24 if unit.startswith("d") else value / 60 if unit.startswith("m") else value
        )
    _put(out, "deadline_hours", deadlines)

    clouds = [name for name, pattern in _CLOUDS.items() if re.search(pattern, lowered)]
    if clouds:
        out.fields["clouds"] = clouds
    _put(out, "qps", [_number(m.group(1)) for m in _QPS.finditer(text)])
    days = []
    for m in _SERVE_DAYS.finditer(text):
        unit = m.group(2).lower()
        days.append(_number(m.group(1)) * (7 if unit.startswith("w") else 30 if unit.startswith("mo") else 1))
    _put(out, "duration_days", days)
    preferences = [name for name, pattern in _PREFERENCES if re.search(pattern, lowered)]
    if len(preferences) == 1:
        out.fields["preference"] = preferences[0]

    out.missing = [name for name in ESSENTIALS if name not in out.fields and name not in out.ambiguous]
    return out


def parse_request(text: str) -> DistillationSpec:
    """The spec for `text`; raises `IncompleteRequest` naming what to ask when an essential is unclear."""
    analysis = analyse_request(text)
    if not analysis.complete:
        raise IncompleteRequest(analysis)
    return analysis.to_spec()


# Flat edit keys ("budget_usd=30") -> where they live in the spec.
_EDIT_PATHS: dict[str, tuple[str, ...]] = {
    **{
        k: ("constraints", k)
        for k in ("budget_usd", "p95_latency_ms", "min_accuracy", "clouds", "deadline_hours")
    },
    **{k: ("traffic", k) for k in ("qps", "duration_days", "prompt_tokens", "output_tokens", "concurrency")},
    **{k: (k,) for k in ("task", "metric", "preference", "teacher", "student", "data_size")},
}
_EDIT_ALIASES = {
    "budget": "budget_usd",
    "latency": "p95_latency_ms",
    "p95": "p95_latency_ms",
    "p95_ms": "p95_latency_ms",
    "accuracy": "min_accuracy",
    "deadline": "deadline_hours",
}


def _edit_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key == "clouds":
        return [c for c in re.split(r"[,\s]+", text) if c]
    if key == "min_accuracy" and text.endswith("%"):
        return float(text[:-1]) / 100.0
    if key in {"teacher", "student"} and text.lower() in {"", "none", "auto"}:
        return None
    return (
        text.lstrip("$").rstrip("%").strip() if key in _EDIT_PATHS and key not in {"task", "metric"} else text
    )


def apply_edits(spec: DistillationSpec, changes: dict[str, Any]) -> DistillationSpec:
    """`spec` with flat edits applied (`{"budget_usd": "30", "clouds": "aws,gcp"}`), validated."""
    data = spec.model_dump()
    for raw_key, value in changes.items():
        key = _EDIT_ALIASES.get(raw_key.strip().lower(), raw_key.strip().lower())
        if key not in _EDIT_PATHS:
            raise InputError(f"cannot edit {raw_key!r}; editable: {', '.join(sorted(_EDIT_PATHS))}")
        *parents, leaf = _EDIT_PATHS[key]
        target = data
        for parent in parents:
            target = target[parent]
        target[leaf] = _edit_value(key, value)
    try:
        return DistillationSpec.model_validate(data)
    except ValueError as exc:
        raise InputError(f"edit {changes} is not valid: {exc}") from exc


def parse_key_values(items: list[str], what: str = "edit", example: str = "budget_usd=30") -> dict[str, str]:
    """`["budget_usd=30", "clouds=aws,gcp"]` -> dict; a malformed item names itself (`what` says where
    it came from: an edit, a --task-option, ...)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {item!r} is not KEY=VALUE (e.g. {example})")
        out[key.strip()] = value.strip()
    return out


def edits_in_text(text: str) -> dict[str, Any]:
    """Constraint changes stated in a chat message ("make the budget $30 and p95 under 200 ms")."""
    analysis = analyse_request(text)
    return {k: v for k, v in analysis.fields.items() if k in _EDIT_PATHS and k != "task"}
