"""Two hold-outs for the run: the test split is even over the difficulty buckets from its first row on, and a
natural-mix split (the task's own generator, unbalanced) is kept apart from every split, held out from stream
training, evaluated next to its own baselines and shown in the outcome. Real Mahjong pack, real micro student."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from stratos_agent.tools.evaluate import evaluate_pair
from stratos_agent.tools.goal import check_goal
from stratos_agent.tools.outcome import outcome_lines
from stratos_agent.tools.report import write_report
from stratos_agent.tools.stream_data import heldout_from_data, weighted_exact, yardstick_mix
from stratos_agent.tools.synth import synthesize
from stratos_agent.tools.synth_store import NATURAL_SPLIT, load_dataset_ref, split_of
from support.doubles import point

from stratos_agent.models.micro import build_micro_student
from stratos_agent.records.data import SPLITS, DatasetRef
from stratos_agent.records.evaluation import Comparison
from stratos_agent.spec import DistillationSpec
from stratos_agent.tasks import get_task_pack
from stratos_agent.tasks.recipes import recipe_for

SHORT = {"prompt": "short"}
PACK = get_task_pack("mahjong", **SHORT)
LIMIT = 20


@pytest.fixture(scope="module")
def even_data(tmp_path_factory) -> DatasetRef:
    return synthesize(PACK, 700, tmp_path_factory.mktemp("data") / "mj", style="answer", seed=2, distribution="even")


@pytest.fixture(scope="module")
def result(even_data, tmp_path_factory) -> Comparison:
    """An untrained micro student (its own teacher: both are cheap) on the first LIMIT items of both hold-outs."""
    micro = build_micro_student("mahjong", tmp_path_factory.mktemp("micro") / "m", layers=2, width=64, heads=1,
                                task_options=SHORT)
    recipe = recipe_for("mahjong").model_copy(update={"teacher_pack": SHORT, "student_tokens": 8,
                                                      "teacher_tokens": 8})
    return evaluate_pair("mahjong", even_data.public_jsonl["test"], micro, str(micro), recipe, limit=LIMIT, threads=1)


def buckets(path: Path) -> list[int]:
    return [PACK.difficulty_bucket(item) for item in PACK.read_jsonl(path)]


def test_the_test_split_is_even_over_its_buckets_from_its_first_row(even_data):
    order = buckets(even_data.public_jsonl["test"])  # what an evaluation reads, in its order
    counts = Counter(order)
    # 0-8 waits, the same count each (a hash's luck gave 1-6 per bucket at this size before the split quota);
    # the three 9-wait hands that exist all hash into train
    assert set(counts) == set(range(9)) and len(set(counts.values())) == 1 and min(counts.values()) >= 3
    for k in range(1, len(order) + 1):
        seen = Counter(order[:k])
        assert max(seen.values()) - min(seen[b] for b in counts) <= 1, (k, seen)
    assert f"the first {len(order)} rows are exactly even" in " ".join(even_data.card.notes)
    assert set(even_data.card.difficulty_counts["val"].values()) == set(counts.values())  # val is even too
    assert even_data.load()["test"]["key"] == [PACK.canonical_key(it) for it in
                                               PACK.read_jsonl(even_data.public_jsonl["test"])]


def test_the_natural_split_is_the_natural_mix_and_disjoint_from_every_split(even_data):
    dd = even_data.load()
    natural = dd[NATURAL_SPLIT]["key"]
    others = {k for name in SPLITS for k in dd[name]["key"]}
    assert len(natural) == len(set(natural)) == len(dd["test"]) and not set(natural) & others
    # its keys hash into the held-out part of the key space: no train split made with these fractions holds them
    assert all(split_of(k, even_data.card.split_fractions) != "train" for k in natural)
    mix = Counter(buckets(even_data.public_jsonl[NATURAL_SPLIT]))
    assert mix[2] / len(natural) > 0.3 and sum(mix[b] for b in range(5, 10)) <= 1  # mostly 2 waits, few many
    assert 0 < mix[0] < len(natural) / 3  # some noten hands, not an even tenth
    assert even_data.card.split_counts[NATURAL_SPLIT] == len(natural)
    assert load_dataset_ref(even_data.path).public_jsonl[NATURAL_SPLIT] == even_data.public_jsonl[NATURAL_SPLIT]


def test_rerun_and_a_fresh_run_rebuild_the_same_natural_split(even_data, tmp_path):
    again = synthesize(PACK, 700, even_data.path, style="answer", seed=2, distribution="even")
    fresh = synthesize(PACK, 700, tmp_path / "mj", style="answer", seed=2, distribution="even")
    first = even_data.load()
    for ref in (again, fresh):
        assert ref.load()[NATURAL_SPLIT]["key"] == first[NATURAL_SPLIT]["key"]
        assert ref.load()["test"]["key"] == first["test"]["key"]


def test_no_natural_split_when_the_data_already_has_the_natural_mix(tmp_path):
    ref = synthesize(PACK, 200, tmp_path / "natural", style="answer", seed=2)
    assert NATURAL_SPLIT not in ref.load() and NATURAL_SPLIT not in ref.public_jsonl
    assert NATURAL_SPLIT not in load_dataset_ref(ref.path).public_jsonl


def test_stream_training_holds_the_natural_keys_out(even_data):
    held, val = heldout_from_data(even_data.path, PACK)
    dd = even_data.load()
    assert set(dd[NATURAL_SPLIT]["key"]) <= held and set(dd["test"]["key"]) <= held
    assert not set(dd["train"]["key"]) & held and len(val) == len(dd["val"])


def test_the_comparison_carries_the_natural_mix_with_its_own_baselines(result, even_data):
    natural = result.natural
    assert natural is not None and natural.n == natural.student.n == result.n == LIMIT
    assert natural.data == str(even_data.public_jsonl[NATURAL_SPLIT]) and natural.teacher is None
    assert natural.teacher_skipped and result.teacher is not None and result.teacher_skipped is None
    empty = {b.name: b.exact_match for b in natural.baselines}["empty answer"]
    first = buckets(even_data.public_jsonl[NATURAL_SPLIT])[:LIMIT]
    assert empty.successes == first.count(0) and empty.n == LIMIT  # scored on the natural items, not the even ones
    assert {b.name: b.exact_match.successes for b in result.baselines}["empty answer"] == \
        buckets(even_data.public_jsonl["test"])[:LIMIT].count(0)
    assert Comparison.model_validate_json(result.model_dump_json()) == result


def test_the_natural_check_is_reported_and_never_decides_the_goal(result):
    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
    check = check_goal(spec, result, point())
    without = check_goal(spec, result.model_copy(update={"natural": None}), point())
    assert check.met == without.met and check.reasons == without.reasons and not without.reported
    assert check.natural is not None and check.natural.n == LIMIT and check.natural_best_baseline == "empty answer"
    assert check.natural_beats_baselines is False  # an untrained student
    assert "natural mix" in check.reported[0] and "does not decide" in check.reported[0]
    perfect = result.natural.student.exact_match_ci.model_copy(update={"value": 1.0, "low": 0.84, "high": 1.0})
    strong = result.natural.model_copy(update={"student": result.natural.student.model_copy(
        update={"exact_match": 1.0, "exact_match_ci": perfect})})
    assert check_goal(spec, result.model_copy(update={"natural": strong}), point()).natural_beats_baselines


def test_outcome_and_report_show_both_hold_outs(result, tmp_path):
    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
    state = {"status": "done", "spec": spec, "eval": result, "goal": check_goal(spec, result, point())}
    lines = outcome_lines(state)
    natural = next(line for line in lines if line.startswith("Measured, natural mix:"))
    empty = {b.name: b.exact_match.value for b in result.natural.baselines}["empty answer"]
    assert f"n={LIMIT}" in natural and "95%" in natural and f"empty answer {100 * empty:.1f}%" in natural
    assert "most common element" in natural and "teacher not evaluated" in natural
    assert any(line.startswith("Measured, even mix:") for line in lines)
    assert any(line.startswith("- natural mix:") and "reported" in line for line in lines)
    report = Path(write_report(state, tmp_path)["markdown"]).read_text()
    assert "| natural mix | 20 |" in report and "| even mix | 20 |" in report


def test_validation_is_weighted_to_the_test_splits_mix(even_data):
    """A val split short of a bucket still predicts the test split: per-bucket means, test-split weights."""
    mix = yardstick_mix(even_data.path, PACK)
    assert set(mix) == {str(b) for b in range(9)} and sum(mix.values()) == pytest.approx(1.0)
    assert max(mix.values()) == pytest.approx(min(mix.values()))
    _, val = heldout_from_data(even_data.path, PACK)
    easy = {str(b) for b in range(5, 9)}  # a model right on every 5- to 8-wait hand and nothing else
    hits = [str(PACK.difficulty_bucket(it)) in easy for it in val]
    assert weighted_exact(PACK, val, hits, mix) == pytest.approx(4 / 9)
    assert weighted_exact(PACK, val, hits, None) == pytest.approx(sum(hits) / len(val))  # the plain mean
    skewed = [it for it in val if PACK.difficulty_bucket(it) < 5]
    skewed.append(next(it for it in val if PACK.difficulty_bucket(it) == 8))  # one 8-wait hand, as at scale
    right = [str(PACK.difficulty_bucket(it)) in easy for it in skewed]
    assert weighted_exact(PACK, skewed, right, mix) == pytest.approx(1 / 6)  # 6 buckets present, 1 right
    assert yardstick_mix(even_data.public_jsonl["test"], PACK) is None and yardstick_mix(None, PACK) is None  # no splits
