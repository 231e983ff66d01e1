"""Natural-language request -> `DistillationSpec`, deterministically (no LLM needed).

It reads what people actually write ("under $20", "p95 under 300 ms", "at least 40% exact match",
"on AWS or GCP", "within 6 hours", "prefer cheaper", "smollm2-135m as the teacher"). It never guesses:
- an essential (task, budget) that is absent or stated twice comes back as `missing` / `ambiguous`, so the
  agent asks the user instead of inventing a number;
- a part of the request it could not read ("64 H100s", "for a week", "marscloud", "gpt-99-ultra", a
  number attached to nothing) comes back in `unparsed`, one "'phrase': why" line each, to be shown to the
  user, never dropped in silence;
- an impossible value ("$0", "150% accuracy", "$1e309", "deadline yesterday") makes `to_spec` raise an
  InputError that names the field and the phrase it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from stratos_agent.errors import InputError
from stratos_agent.spec import INPUT_CONTEXT, DistillationSpec, validated_spec

ESSENTIALS = ("task", "budget_usd")
MAX_REQUEST_CHARS = 10_000  # a request is a few sentences; longer text is a pasted file by mistake

QUESTIONS = {
    "task": "Which task should the model learn? (e.g. 'Mahjong winning tiles', 'GSM8K math', or a "
    "path to your own JSONL of question/answer pairs)",
    "budget_usd": "What is the total budget in US dollars for training and serving? (e.g. '$20')",
}

_TASK_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mahjong", r"mah[\s-]?jong|majiang|winning[\s-]tiles?"),
    ("gsm8k", r"gsm[\s-]?8k|grade[\s-]school math|math word problems?"),
)
CLOUDS = {
    "aws": r"\baws\b|amazon",
    "gcp": r"\bgcp\b|google cloud",
    "azure": r"\bazure\b",
    "lambda": r"\blambda\b",
    "runpod": r"\brunpod\b",
    "local": r"\blocal(?:ly)?\b|this machine|on[- ]prem",
}
# A number as people write it: 20, 1.5, 1,500 (thousands), 5e3; it must end in a digit ("$20." is 20).
# `_number` reads it strictly, so "1,5" or "1.2.3" is reported instead of being half read.
_NUM = r"((?<![\w.])-?\d(?:[\d.,_]*\d)?(?:e[+-]?\d+)?)"
_STRICT_NUM = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+-]?\d+)?", re.IGNORECASE)
_SCALES = {"k": 1e3, "thousand": 1e3, "m": 1e6, "mn": 1e6, "million": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9}
_SCALE = r"(k|thousand|mn?|million|bn?|billion)?\b"
_MONEY = re.compile(
    rf"(?:\$\s*{_NUM}\s*{_SCALE})|(?:{_NUM}\s*{_SCALE}\s*(?:usd|dollars?|\$))", re.IGNORECASE
)
_LATENCY = re.compile(
    rf"(?:p(?:50|90|95|99)|latency|respond|response)[^.;\d$]{{0,30}}?{_NUM}\s*"
    r"(ms|milliseconds?|s|sec|seconds?)\b",
    re.IGNORECASE,
)
_PERCENT = r"(?:%|\s*percent\b|\s*pct\b)"
_ACCURACY = re.compile(
    rf"(?:{_NUM}\s*{_PERCENT}\s*(?:exact[\s-]match|accura\w*|correct|em\b))"
    rf"|(?:(?:accuracy|exact[\s-]match)[^.;\d]{{0,25}}?{_NUM}\s*({_PERCENT})?)",
    re.IGNORECASE,
)
_DEADLINE = re.compile(
    rf"(?:within|in|under|deadline(?: of)?|by|done in)\s+{_NUM}\s*"
    r"(h|hours?|hrs?|days?|d|weeks?|w|minutes?|mins?)\b",
    re.IGNORECASE,
)
_QPS = re.compile(rf"{_NUM}\s*(?:qps|requests?\s*(?:per|/)\s*(?:second|sec|s))\b", re.IGNORECASE)
_SERVE_DAYS = re.compile(rf"(?:serve|serving|for)\s+{_NUM}\s*(days?|weeks?|months?)\b", re.IGNORECASE)
_JSONL = re.compile(r"(\S+\.jsonl)\b")
_PREFERENCES = (
    ("cheaper", r"\bcheap|lowest cost|low cost|save money|cost first"),
    ("faster", r"\bfast(?:er|est)?\b|lowest latency|low latency|\bquick"),
    ("accurate", r"most accurate|accuracy first|best quality|highest accuracy"),
)

# Model names: a role ("teacher X", "X as the student") or a known family prefix marks a word as a model.
_MODEL_TOKEN = r"([A-Za-z0-9~./][\w.:/~-]*[\w/])"
_ROLE_BEFORE = re.compile(
    rf"\b(teacher|student)(?:\s+model)?\s*(?:[:=]|is|be|should be)?\s+{_MODEL_TOKEN}", re.IGNORECASE
)
_ROLE_AFTER = re.compile(
    rf"{_MODEL_TOKEN}\s+as\s+(?:the\s+|a\s+|my\s+|our\s+)?(teacher|student)\b", re.IGNORECASE
)
_MODEL_FAMILY = re.compile(
    r"(?<![\w./-])(?:[a-z0-9][\w.-]*/[\w.-]+|(?:gpt|llama|qwen|mistral|mixtral|phi|gemma|smollm|deepseek|claude|"
    r"gemini|falcon|olmo|pythia|granite|tinyllama|mahjong-micro|o\d)[\w.-]*)(?![\w/-])",
    re.IGNORECASE,
)

# Phrases that look like a constraint but match no rule above: reported, never dropped.
_GPUS = re.compile(
    r"(?:\b\d+\s*(?:x\s*)?)?\b(?:[hb]200|h100|h800|a100|a10g?|a6000|l40s?|l4|t4|v100|gb200|mi\d{3}x?|"
    r"rtx\s?\d{4}|tpu\w*)s?\b",
    re.IGNORECASE,
)
_PAST_DEADLINE = re.compile(
    r"\b(?:deadline|due|by|done|finished|ready)\b\W+(?:\w+\W+){0,2}?"
    r"(?:yesterday|last\s+(?:night|week|month|year)|\d+\s+\w+\s+ago)\b",
    re.IGNORECASE,
)
_OTHER_CLOUDS = re.compile(
    r"\b(?:oci|oracle|ibm|paperspace|vast(?:\.ai)?|coreweave|fluidstack|cudo|nebius|digitalocean|hetzner|"
    r"alibaba|tencent|ovh|scaleway|linode|vultr|kubernetes|k8s|\w+cloud\w*|cloud(?!s?\b)\w+)\b",
    re.IGNORECASE,
)
_TIME_WORDS = re.compile(
    r"(?:\b(?:for|within|in|by|under|serve|serving|deadline)\s+)?"
    r"\b(?:(?:a|an|one|two|three|four|five|six|seven|eight|nine|ten|few|couple(?:\s+of)?|several)\s+"
    r"(?:weeks?|days?|hours?|months?|minutes?|years?)|today|tonight|tomorrow|yesterday|asap|"
    r"next\s+(?:week|month|year)|end\s+of\s+(?:the\s+)?\w+)\b",
    re.IGNORECASE,
)
_KEYWORDS: tuple[tuple[str, str, str], ...] = (  # field, keyword, an example that is understood
    ("deadline_hours", r"deadline|\bdue\b", "within 6 hours"),
    ("p95_latency_ms", r"latency|\bp(?:50|90|95|99)\b|respon\w*", "p95 under 300 ms"),
    ("min_accuracy", r"accuracy|exact[\s-]match", "at least 40% accuracy"),
    ("qps", r"\bqps\b|requests?\s*(?:per|/)\s*s\w*|throughput|traffic", "10 qps"),
    ("budget_usd", r"budget|\bspend\b|\bcost\b", "under $20"),
)
_LEFT_NUMBER = re.compile(
    r"[$€£¥]?\s?(?<![\w.])-?\d(?:[\d.,_]*\d)?(?:e[+-]?\d+)?(?:\s*%|\s*[^\W\d]+)?", re.IGNORECASE
)
_CONTEXT = r"(?:\W+\w+){0,3}"  # a keyword's phrase: it and the next three words


@dataclass
class RequestAnalysis:
    """What the parser understood; `fields` feed `DistillationSpec`, the lists say what it did not.

    `unparsed` holds one "'phrase': why" line per part of the request that was not understood (shown to
    the user and stored with the plan); `invalid` holds impossible values (`to_spec` refuses them);
    `sources` maps each field to the phrase it was read from.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[Any]] = field(default_factory=dict)
    unparsed: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

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
        """The spec; an impossible value is an InputError naming the field and the phrase it came from."""
        if self.invalid:
            raise InputError("request: " + "; ".join(self.invalid))
        constraint_keys = ("budget_usd", "p95_latency_ms", "min_accuracy", "clouds", "deadline_hours")
        traffic_keys = ("qps", "duration_days")
        data: dict[str, Any] = {
            k: v for k, v in self.fields.items() if k not in constraint_keys + traffic_keys
        }
        data["constraints"] = {k: self.fields[k] for k in constraint_keys if k in self.fields}
        data["traffic"] = {k: self.fields[k] for k in traffic_keys if k in self.fields}
        try:
            return DistillationSpec.model_validate(data, context=INPUT_CONTEXT)  # user input: all checks
        except ValidationError as exc:
            raise InputError("request: " + _problems(exc, self.sources)) from None


def _problems(exc: ValidationError, sources: dict[str, str]) -> str:
    """pydantic's errors as one line: `field = value (read from 'phrase'): why; ...`."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][-1]) if error["loc"] else "spec"
        phrase = sources.get(name)
        where = f" (read from {phrase!r})" if phrase else ""
        parts.append(f"{name} = {error.get('input')!r}{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class IncompleteRequest(InputError):
    """The request lacks (or contradicts itself on) an essential; `.analysis` says which."""

    def __init__(self, analysis: RequestAnalysis):
        self.analysis = analysis
        unread = f" (not understood: {'; '.join(analysis.unparsed)})" if analysis.unparsed else ""
        super().__init__("request is incomplete: " + " ".join(analysis.questions()) + unread)


def _number(text: str) -> float | None:
    """`text` read strictly ("1,500" = 1500, "5e3" = 5000); None when it is not one clear number."""
    if not _STRICT_NUM.fullmatch(text):
        return None
    return float(text.replace(",", ""))


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


class _Reader:
    """Walks the request once per rule; every match is blanked out of `rest`, so what is left over at the
    end is exactly what no rule understood."""

    def __init__(self, text: str, analysis: RequestAnalysis) -> None:
        self.rest = text
        self.out = analysis

    def take(self, pattern: re.Pattern[str] | str) -> Iterator[re.Match[str]]:
        """Matches of `pattern` in what is left (all found first, then blanked)."""
        regex = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
        matches = list(regex.finditer(self.rest))
        for m in matches:
            self.rest = self.rest[: m.start()] + " " * (m.end() - m.start()) + self.rest[m.end():]
        return iter(matches)

    def number(self, raw: str, m: re.Match[str]) -> float | None:
        """`raw` (the number in match `m`) as a finite float; otherwise the phrase is reported."""
        value = _number(raw)
        phrase = m.group(0).strip()
        if value is None:
            self.unparsed(phrase, f"cannot read the number {raw!r} (write e.g. 1500 or 1.5)")
        elif not math.isfinite(value):
            self.out.invalid.append(f"{phrase!r}: {raw} is not a finite number")
            return None
        return value

    def unparsed(self, phrase: str, why: str) -> None:
        self.out.unparsed.append(f"{phrase!r}: {why}")

    def put(self, name: str, found: list[tuple[Any, str]]) -> None:
        """One value (with the phrase it came from) becomes the field; several distinct ones are ambiguous."""
        values = _distinct([v for v, _ in found if v is not None])
        if len(values) == 1:
            self.out.fields[name] = values[0]
            self.out.sources[name] = ", ".join(p for v, p in found if v == values[0])
        elif len(values) > 1:
            self.out.ambiguous[name] = values


def analyse_request(text: str) -> RequestAnalysis:
    """Read a request. Missing and unreadable parts are reported in the result, not raised; only text
    that cannot be stored at all (invalid Unicode, far too long) is an InputError."""
    _check_text(text)
    out = RequestAnalysis(fields={"request": text.strip()})
    reader = _Reader(text, out)
    _read_task(reader)
    _read_models(reader)
    _read_constraints(reader)
    _read_traffic(reader)
    _read_choices(reader)
    _report_leftovers(reader)
    out.missing = [name for name in ESSENTIALS if name not in out.fields and name not in out.ambiguous]
    return out


def _check_text(text: str) -> None:
    if len(text) > MAX_REQUEST_CHARS:
        raise InputError(f"request is {len(text):,} characters; at most {MAX_REQUEST_CHARS:,} (put details "
                         "in a YAML spec file instead)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"request has a character that is not valid Unicode at position {exc.start} "
                         "(bytes that are not UTF-8?)") from None


def _read_task(reader: _Reader) -> None:
    tasks = [(f"jsonl:{m.group(1)}", m.group(0)) for m in reader.take(_JSONL)]
    for name, pattern in _TASK_PATTERNS:
        tasks += [(name, m.group(0)) for m in reader.take(pattern)]
    reader.put("task", tasks)


def _read_models(reader: _Reader) -> None:
    """Models named with a role become teacher/student (the spec checks they exist); any other model
    name is reported."""
    roles: dict[str, list[tuple[Any, str]]] = {"teacher": [], "student": []}
    for m in reader.take(_ROLE_BEFORE):
        roles[m.group(1).lower()].append((m.group(2), m.group(0).strip()))
    for m in reader.take(_ROLE_AFTER):
        roles[m.group(2).lower()].append((m.group(1), m.group(0).strip()))
    for role, found in roles.items():
        reader.put(role, found)
    for m in reader.take(_MODEL_FAMILY):
        reader.unparsed(m.group(0), "a model name without a role: say 'teacher X' or 'X as the student' (a "
                        "built-in id, an org/name HF id, endpoint:MODEL or a folder)")


def _read_constraints(reader: _Reader) -> None:
    latencies = []
    for m in reader.take(_LATENCY):
        value = reader.number(m.group(1), m)
        if value is not None:
            latencies.append((value if m.group(2).lower().startswith("m") else value * 1000.0, m.group(0).strip()))
    reader.put("p95_latency_ms", latencies)

    budgets = []
    for m in reader.take(_MONEY):
        raw, scale = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        value = reader.number(raw, m)
        if value is not None:
            budgets.append((value * _SCALES.get((scale or "").lower(), 1.0), m.group(0).strip()))
    reader.put("budget_usd", budgets)

    accuracies = []
    for m in reader.take(_ACCURACY):
        raw = m.group(1) or m.group(2)
        value = reader.number(raw, m)
        if value is None:
            continue
        percent = bool(m.group(1) or m.group(3)) or value > 1
        accuracies.append((round(value / 100.0 if percent else value, 6), m.group(0).strip()))
    reader.put("min_accuracy", accuracies)

    for m in reader.take(_PAST_DEADLINE):
        reader.out.invalid.append(f"{m.group(0).strip()!r}: a deadline in the past cannot be met "
                                  "(give the time allowed, e.g. 'within 6 hours')")
    deadlines = []
    for m in reader.take(_DEADLINE):
        value, unit = reader.number(m.group(1), m), m.group(2).lower()
        if value is not None:
            hours = {"d": 24.0, "w": 168.0, "m": 1 / 60}.get(unit[0], 1.0)
            deadlines.append((value * hours, m.group(0).strip()))
    reader.put("deadline_hours", deadlines)

    clouds = [name for name, pattern in CLOUDS.items() if any(True for _ in reader.take(pattern))]
    if clouds:
        reader.out.fields["clouds"] = clouds
    for m in reader.take(_OTHER_CLOUDS):
        reader.unparsed(m.group(0), f"unknown cloud; the catalog has {', '.join(CLOUDS)}")


def _read_traffic(reader: _Reader) -> None:
    reader.put("qps", [(reader.number(m.group(1), m), m.group(0).strip()) for m in reader.take(_QPS)])
    days = []
    for m in reader.take(_SERVE_DAYS):
        value, unit = reader.number(m.group(1), m), m.group(2).lower()
        if value is not None:
            days.append((value * (7 if unit.startswith("w") else 30 if unit.startswith("mo") else 1), m.group(0)))
    reader.put("duration_days", days)


def _read_choices(reader: _Reader) -> None:
    found = {name: [m.group(0) for m in reader.take(pattern)] for name, pattern in _PREFERENCES}
    preferences = [name for name, phrases in found.items() if phrases]
    if len(preferences) == 1:
        reader.out.fields["preference"] = preferences[0]
    elif preferences:
        phrases = ", ".join(p for name in preferences for p in found[name])
        reader.unparsed(phrases, f"conflicting preferences ({', '.join(preferences)}); kept 'balanced'")


def _report_leftovers(reader: _Reader) -> None:
    """Whatever still looks like a constraint after every rule ran is reported, not ignored."""
    for m in reader.take(_GPUS):
        reader.unparsed(m.group(0).strip(), "GPUs are chosen by the planner; restrict them with "
                        "`stratos plan --gpu NAME`")
    for m in reader.take(_TIME_WORDS):
        reader.unparsed(m.group(0).strip(), "give a number and say what it bounds: 'within 6 hours' "
                        "(training deadline) or 'serve for 2 weeks' (serving time)")
    for name, keyword, example in _KEYWORDS:
        for m in reader.take(rf"(?:{keyword}){_CONTEXT}"):
            if name not in reader.out.fields:
                reader.unparsed(" ".join(m.group(0).split()), f"no {name} value read (write e.g. '{example}')")
    for m in reader.take(_LEFT_NUMBER):
        reader.unparsed(m.group(0).strip(), "a number not attached to any constraint this parser knows")


def parse_request(text: str) -> DistillationSpec:
    """The spec for `text`; raises `IncompleteRequest` naming what to ask when an essential is unclear,
    InputError for an impossible value. See `understand_request` for the parts not understood."""
    return understand_request(text)[0]


def understand_request(text: str) -> tuple[DistillationSpec, list[str]]:
    """The spec for `text` and the "'phrase': why" lines of what was not understood (to show the user)."""
    analysis = analyse_request(text)
    if not analysis.complete and not analysis.invalid:  # an impossible value is the first thing to fix
        raise IncompleteRequest(analysis)
    return analysis.to_spec(), analysis.unparsed


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


_NUMERIC_EDITS = frozenset(
    ("budget_usd", "p95_latency_ms", "min_accuracy", "deadline_hours", "qps", "duration_days", "prompt_tokens",
     "output_tokens", "concurrency", "data_size")
)


def _edit_value(key: str, value: Any) -> Any:
    """A flat edit's text as the spec value: numbers read strictly (no half-read "1,5"), clouds checked."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key == "clouds":
        return _edit_clouds(text)
    if key in {"teacher", "student"}:
        return None if text.lower() in {"", "none", "auto"} else text
    if key in _NUMERIC_EDITS:
        return _edit_number(key, text)
    return text


def _edit_number(key: str, text: str) -> float:
    raw = text.removeprefix("$").strip() if key == "budget_usd" else text
    percent = key == "min_accuracy" and raw.endswith("%")
    value = _number(raw.removesuffix("%").strip() if percent else raw)
    if value is None or not math.isfinite(value):
        hint = " (e.g. 0.4 or 40%)" if key == "min_accuracy" else " (e.g. 30 or 1,500)"
        raise InputError(f"edit {key}={text!r}: not a finite number{hint}")
    return value / 100.0 if percent else value


def _edit_clouds(text: str) -> list[str]:
    return [c for c in re.split(r"[,\s]+", text) if c]


def apply_edits(spec: DistillationSpec, changes: dict[str, Any]) -> DistillationSpec:
    """`spec` with flat edits applied (`{"budget_usd": "30", "clouds": "aws,gcp"}`), validated; a key given
    twice (also through an alias: budget and budget_usd) is refused rather than one of them winning."""
    data = spec.model_dump()
    seen: dict[str, str] = {}
    for raw_key, value in changes.items():
        key = _EDIT_ALIASES.get(raw_key.strip().lower(), raw_key.strip().lower())
        if key not in _EDIT_PATHS:
            raise InputError(f"cannot edit {raw_key!r}; editable: {', '.join(sorted(_EDIT_PATHS))}")
        if key in seen:
            raise InputError(f"edit {key} is given twice ({seen[key]!r} and {raw_key!r}); give it once")
        seen[key] = raw_key
        *parents, leaf = _EDIT_PATHS[key]
        target = data
        for parent in parents:
            target = target[parent]
        target[leaf] = _edit_value(key, value)
    return validated_spec(data, "edit")


def parse_key_values(items: list[str], what: str = "edit", example: str = "budget_usd=30") -> dict[str, str]:
    """`["budget_usd=30", "clouds=aws,gcp"]` -> dict; a malformed or repeated item names itself (`what` says
    where it came from: an edit, a --task-option, ...)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} {item!r} is not KEY=VALUE (e.g. {example})")
        if key.strip() in out:
            raise InputError(f"{what} {key.strip()!r} is given twice; give it once")
        out[key.strip()] = value.strip()
    return out


def edits_in_text(text: str) -> dict[str, Any]:
    """Constraint changes stated in a chat message ("make the budget $30 and p95 under 200 ms")."""
    analysis = analyse_request(text)
    return {k: v for k, v in analysis.fields.items() if k in _EDIT_PATHS and k != "task"}
