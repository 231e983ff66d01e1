"""The planner picks differently for Mahjong and gsm8k, for the reasons its measurements give.

Real task packs, real registry, the plan as `stratos run` makes it (tools/survey.plan_measured), with the
measurements pinned instead of taken (no training, no vLLM: conftest turns pilots and the latency probe
off): the teacher probe as measured on this machine (smollm2-135m: 0/16 on Mahjong, 1/16 on gsm8k,
evals/results/task_choice.json) and the shipped Mahjong learning curves, recorded as this machine's.
"""

from __future__ import annotations

import pytest
from stratos_agent.tools import calibration, planning
from stratos_agent.tools.machine_peaks import hardware_fingerprint
from stratos_agent.tools.survey import plan_measured

from stratos_agent.models import get_registry
from stratos_agent.records.calibration import LearningCurve
from stratos_agent.records.plans import PairTable, Plan
from stratos_agent.request_parser import parse_request
from stratos_agent.settings import get_settings
from stratos_agent.tasks import get_task_pack

TEACHER = "smollm2-135m"
# Verified answers of 16 probe items: Mahjong 0/16 (95% upper bound 19%), gsm8k 1/16 (upper bound 28%).
MAHJONG_PROBE, GSM8K_PROBE = 0 / 16, 1 / 16
COMPETENT_PROBE = 0.9  # what an endpoint teacher that knows grade-school math would score
MAHJONG = ("a model that lists Mahjong winning tiles, at least 30% exact match, under $20, p95 under 2 s, "
           "0.1 qps, done in 10 minutes")
# No latency or deadline target: the question here is which student and strategy, not whether this
# machine is fast enough (it is not, at 5 s and 30 minutes: evals/task_choice.py measures that).
GSM8K = "a model that solves grade-school math word problems (gsm8k), under $20, 0.1 qps"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A private calibration store (the shipped seeds stay off, as in every test)."""
    monkeypatch.setenv(calibration.STORE_ENV, str(tmp_path / "calibration"))
    return tmp_path / "calibration"


@pytest.fixture
def shipped_mahjong_curves(store):
    """The shipped Mahjong curves (real runs on the reference machine), recorded as this machine's: their
    accuracy and throughput become the measurements the plan reads."""
    here = hardware_fingerprint(get_settings().threads).key
    for path in sorted(calibration.seed_dir().glob("*.json")):
        curve = LearningCurve.model_validate_json(path.read_text())
        calibration.record_curve(curve.model_copy(update={"hardware": here}))
    return store


def plan(request: str, probe: float) -> Plan:
    """The local plan for `request` with the teacher's probe pinned at `probe`."""
    spec = parse_request(request)
    spec = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"clouds": ["local"]})})
    ctx = planning.prepare(spec, probes={TEACHER: probe})
    return plan_measured(spec, None, PairTable(pairs=ctx.pairs, probes={TEACHER: probe}, probe_n=16))


def made_for(student: str) -> str | None:
    return get_registry().get(student).task


def test_gsm8k_plans_without_the_students_made_for_mahjong(store):
    spec = parse_request(GSM8K)
    students = {s.id for s in planning.gather_inputs(spec).students}
    mahjong_only = {c.id for c in get_registry().candidates() if c.available and made_for(c.id) == "mahjong"}
    assert mahjong_only, "the registry should ship students made for Mahjong"
    assert students and not students & mahjong_only
    assert all(made_for(s) is None for s in students)
    assert mahjong_only <= {s.id for s in planning.gather_inputs(parse_request(MAHJONG)).students}


def test_mahjong_picks_its_micro_student_because_of_its_measured_curve(shipped_mahjong_curves):
    chosen = plan(MAHJONG, MAHJONG_PROBE).chosen
    assert chosen is not None
    assert made_for(chosen.student) == "mahjong" and chosen.strategy == "injection"
    assert chosen.accuracy_source != "prior" and chosen.accuracy >= 0.30
    assert chosen.train_hours_source == "measured" and chosen.train_hours <= 10 / 60


def test_without_the_curves_no_mahjong_plan_reaches_the_target(store):
    unmeasured = plan(MAHJONG, MAHJONG_PROBE)
    assert not unmeasured.feasible and "accuracy >= 30%" in unmeasured.binding_constraints


def test_gsm8k_strategy_follows_the_measured_probe(store):
    weak = plan(GSM8K, GSM8K_PROBE)
    assert {p.decision.strategy for p in weak.pairs} == {"injection"}
    assert weak.chosen.strategy == "injection" and made_for(weak.chosen.student) is None
    competent = plan(GSM8K, COMPETENT_PROBE)
    assert all(p.decision.strategy.startswith("alignment") for p in competent.pairs)
    assert competent.chosen.strategy.startswith("alignment")


def test_the_two_tasks_pick_different_students_for_the_same_teacher(shipped_mahjong_curves):
    mahjong, gsm8k = plan(MAHJONG, MAHJONG_PROBE).chosen, plan(GSM8K, GSM8K_PROBE).chosen
    assert mahjong.teacher == gsm8k.teacher == TEACHER
    assert mahjong.student != gsm8k.student
    assert made_for(mahjong.student) == "mahjong" and made_for(gsm8k.student) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # endings of the teacher's real gsm8k probe answers (the probe scores what the pack parses)
        ("... = 5000 times.\n\nThe answer is 5000.\n\nThe answer is 5000.", "5000"),
        ("So, the answer is 121,200.", "121200"),
        ("#### 2668\nThe answer is: 2668", "2668"),
        ("Therefore, each graduate would receive 19200 tickets.", None),
        ("the answer is not 12, it is 13", None),
    ],
)
def test_the_probe_reads_a_stated_answer_and_guesses_none(text, expected):
    assert get_task_pack("gsm8k").parse_answer(text) == expected
