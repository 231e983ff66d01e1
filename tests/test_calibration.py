"""Calibration store: append-only curves, fit and predict (measured / fitted / prior), throughput, the
training callback that records curves, and the planner reading the store."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from stratos_agent.tools import calibration, calibration_check, curve_conditions, curve_fit, throughput
from stratos_agent.tools.calibration import method_key, predict_accuracy, record_curve

from stratos_agent.records.calibration import CurvePoint, LearningCurve

TRUE = (0.6, 0.55, 700.0)  # a, b, k of acc(x) = a - b exp(-x / k)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(calibration.STORE_ENV, str(tmp_path / "calibration"))
    return tmp_path / "calibration"


def curve(xs, ys, *, n=400, student="s", method="sft-full", hardware="hw", eps=5.0, run="r", task="t"):
    pts = [CurvePoint(examples=int(x), exact=float(y), n=n, seconds=x / eps) for x, y in zip(xs, ys, strict=True)]
    return LearningCurve(task=task, student=student, method=method, hardware=hardware, examples_per_s=eps,
                         points=pts, batch_size=8, learning_rate=1e-4, run=run, created="2026-01-01T00:00:00")


def synthetic(run: str, seed: int, xs=(100, 200, 400, 800, 1600), n=400, **kw) -> LearningCurve:
    rng = np.random.default_rng(seed)
    ys = [rng.binomial(n, curve_fit._exp(x, *TRUE)) / n for x in xs]
    return curve(xs, ys, n=n, run=run, **kw)


def test_method_keys():
    assert method_key(0) == "sft-full" and method_key(16) == "sft-lora16" and method_key(0, stream=True) == "stream-full"
    with pytest.raises(ValueError):
        method_key(-1)


def test_store_is_append_only_filters_and_skips_unreadable_files(store, caplog):
    first = record_curve(synthetic("a", 0))
    again = record_curve(synthetic("a", 0))  # the same curve twice: two files, nothing overwritten
    record_curve(synthetic("b", 1, student="other", hardware="hw2"))
    assert first != again and first.read_text() == again.read_text()
    assert not list(store.glob(".*.tmp"))
    (store / "zz-corrupt.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        everything = calibration.curves("t")
    assert len(everything) == 3 and "zz-corrupt.json" in caplog.text
    assert [c.run for c in calibration.curves("t", student="other")] == ["b"]
    assert calibration.curves("t", hardware="hw") and not calibration.curves("t", method="sft-lora8")
    assert calibration.curves("another-task") == []


def test_fit_recovers_known_parameters():
    xs = np.geomspace(50, 5000, 12)
    fit = calibration.fit_points(xs, curve_fit._exp(xs, *TRUE), np.full(xs.shape, 100_000))
    assert fit.params == pytest.approx(TRUE, rel=0.02)
    noisy = [synthetic(f"r{i}", i) for i in range(3)]
    cs = calibration.build_curve_set("t", "s", "sft-full", noisy)
    assert cs.fit_curves == 3 and cs.fit.params[0] == pytest.approx(TRUE[0], abs=0.05)
    assert cs.fit.params[2] == pytest.approx(TRUE[2], rel=0.35)


def test_measured_fitted_and_interval_widens_with_extrapolation(store):
    for i in range(2):
        record_curve(synthetic(f"r{i}", i))
    inside = predict_accuracy("t", "s", "sft-full", 1000)
    assert inside.source == "measured" and inside.curves == 2
    assert inside.value == pytest.approx(curve_fit._exp(1000, *TRUE), abs=0.05)
    near = predict_accuracy("t", "s", "sft-full", 3000)
    far = predict_accuracy("t", "s", "sft-full", 60_000)
    for p in (near, far):
        assert p.source == "fitted" and p.curves == 2 and 0 <= p.low <= p.value <= p.high <= 1
        assert p.value == pytest.approx(TRUE[0], abs=0.06)
    assert far.high - far.low > 1.5 * (near.high - near.low)
    assert "extrapolated" in far.note and "extrapolated" not in near.note
    record_curve(synthetic("short", 5, xs=(100, 200, 400)))  # ends before 1,000 examples: not read there
    assert predict_accuracy("t", "s", "sft-full", 1000).curves == 2
    assert "read off 2 recorded run(s) that reached 1,000 examples" in predict_accuracy("t", "s", "sft-full", 1000).note


def test_prior_fallback_is_labelled_and_short_curves_do_not_fit(store):
    p = predict_accuracy("t", "s", "sft-lora16", 2000, prior=0.07)
    assert p.source == "prior" and p.value == 0.07 and (p.low, p.high) == (0.0, 1.0) and "prior" in p.note
    record_curve(curve([100, 200], [0.1, 0.2]))  # two points: not enough for a fit
    assert predict_accuracy("t", "s", "sft-full", 150).source == "measured"
    assert predict_accuracy("t", "s", "sft-full", 5000, prior=0.01).source == "prior"


def test_examples_per_second_is_the_median_on_that_hardware(store):
    for i, eps in enumerate((2.0, 3.0, 10.0)):
        record_curve(synthetic(f"r{i}", i, eps=eps))
    record_curve(synthetic("gpu", 9, eps=500.0, hardware="gpu"))
    assert throughput.examples_per_second("t", "s", "sft-full", "hw") == 3.0
    assert throughput.examples_per_second("t", "s", "sft-full", "gpu") == 500.0
    assert throughput.examples_per_second("t", "s", "sft-lora16", "hw") is None


def test_throughput_reads_the_least_contended_runs(store):
    """A run recorded while the CPUs were shared does not slow the plan of a run on the machine at rest."""
    for i, (eps, load) in enumerate(((117.0, 2.2), (120.0, 2.9), (87.0, 6.0), (60.0, 8.0), (30.0, None))):
        record_curve(synthetic(f"r{i}", i, eps=eps).model_copy(update={"load_avg": load}))
    assert throughput.examples_per_second("t", "s", "sft-full", "hw") == pytest.approx(118.5)
    assert throughput.measured_throughput("hw") == {"s": {"t/sft-full": pytest.approx(118.5)}}


def test_curve_callback_records_a_curve(store, tiny_llama, tmp_path):
    from datasets import Dataset
    from stratos_agent.tools.train import CHATML, train
    from stratos_agent.tools.train_callbacks import CurveCallback

    from stratos_agent.records.training import TrainConfig
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack("mahjong", prompt="short")
    rows = [{"prompt": pack.render_prompt(it), "completion": pack.solver_rationale(it, "answer")}
            for it in pack.sample(16, seed=3, distribution="even")]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    cfg = TrainConfig(run_name="c", base_model=str(tiny_llama), data=tmp_path / "data", max_steps=4,
                      save_steps=100, batch_size=4, max_seq_len=48, chat_template=CHATML, threads=1)
    cb = CurveCallback(pack, pack.sample(4, seed=11), every_steps=2, max_new_tokens=4, task="mahjong",
                       student="tiny", method=method_key(16), batch_size=4, lr=cfg.learning_rate, run="test")
    train(cfg, run_dir=tmp_path / "run", callbacks=[cb])
    (stored,) = calibration.curves("mahjong", student="tiny", method="sft-lora16")
    assert cb.path is not None and cb.path.parent == store
    assert [p.examples for p in stored.points] == [0, 8, 16] and all(p.n == 4 for p in stored.points)
    assert stored.examples_per_s > 0 and stored.points[-1].seconds > 0 and stored.hardware


def test_planner_reads_the_store(store):
    from stratos_agent.tools.planning import plan_for, prepare, screen
    from stratos_agent.tools.planning.explain import accuracy_words
    from stratos_agent.tools.planning.grid import EPOCHS
    from stratos_agent.tools.planning.measured import planned_conditions

    from stratos_agent.models import get_registry
    from stratos_agent.spec import Constraints, DistillationSpec, Traffic

    spec = DistillationSpec(task="mahjong", constraints=Constraints(budget_usd=800, p95_latency_ms=400),
                            traffic=Traffic(qps=2))
    before = plan_for(spec, include_local=False)
    assert all(p.accuracy_source == "prior" and p.accuracy_low is None for p in before.front)
    assert "prior: no measurement" in before.why
    for i in range(2):  # curves of the full fine-tune of SmolLM2-135M, reaching 1,600 examples
        record_curve(synthetic(f"r{i}", i, task="mahjong", student="smollm2-135m"))
    ctx = prepare(spec, include_local=False)
    cands = screen(spec, ctx.inputs, ctx.pairs, ctx.table).cands
    ids = [s.id for s in ctx.inputs.students]
    student = np.array([ids.index(ctx.pairs[p].student) for p in cands.pair])
    mine = (student == ids.index("smollm2-135m")) & (cands.rank == 0) & (cands.strategy != 1)  # SFT runs
    assert mine.any()
    assert {calibration.SOURCES[int(k)] for k in cands.acc.source[mine]} <= {"fitted", "measured"}
    assert {calibration.SOURCES[int(k)] for k in cands.acc.source[~mine]} == {"prior"}
    i = np.flatnonzero(mine & (cands.strategy == 2))[0]  # injection: solver rows, the recorded curves
    conditions = planned_conditions(get_registry().get("smollm2-135m"), 0)  # the curves above record none
    expect = predict_accuracy("mahjong", "smollm2-135m", "sft-full", int(cands.data_size[i] * EPOCHS),
                              conditions=conditions)
    assert expect.match == "other validation mix and recipe"
    assert -cands.F[i, 2] == pytest.approx(expect.value)
    assert (cands.acc.low[i], cands.acc.high[i]) == pytest.approx((expect.low, expect.high))
    after = plan_for(spec.model_copy(update={"preference": "accurate"}), include_local=False)
    fitted = [p for p in after.front if p.accuracy_source != "prior"]
    assert fitted and all(p.accuracy_low <= p.accuracy <= p.accuracy_high and p.accuracy_runs == 2 for p in fitted)
    assert any("fitted on" in p.accuracy_note for p in fitted)
    assert f"{fitted[0].accuracy_source} (other validation mix and recipe) on 2 runs" in accuracy_words(fitted[0])


def test_local_training_time_from_measured_throughput(store):
    from stratos_agent.tools import machine_peaks
    from stratos_agent.tools.planning import prepare, screen
    from stratos_agent.tools.planning.grid import EPOCHS
    from stratos_agent.tools.planning.inputs import _local_threads

    from stratos_agent.spec import DistillationSpec

    spec = DistillationSpec(task="mahjong")
    key = machine_peaks.hardware_fingerprint(_local_threads()).key
    record_curve(synthetic("r", 0, task="mahjong", student="smollm2-135m", hardware=key, eps=4.0))
    ctx = prepare(spec)
    assert ctx.inputs.local_hardware == key
    cands = screen(spec, ctx.inputs, ctx.pairs, ctx.table).cands
    ids = [s.id for s in ctx.inputs.students]
    local = np.array([ctx.inputs.offers[o].is_local for o in cands.offer])
    student = np.array([ids.index(ctx.pairs[p].student) for p in cands.pair])
    sel = local & (student == ids.index("smollm2-135m")) & (cands.rank == 0) & (cands.strategy == 0)
    assert sel.any() and cands.hours_measured[sel].all()
    assert cands.F[sel, 3] == pytest.approx(cands.data_size[sel] * EPOCHS / 4.0 / 3600)
    assert not cands.hours_measured[~local].any()  # GPU offers: the roofline rescaled, labelled modelled


def test_curve_callback_for_a_config_validates_on_the_val_split(tmp_path):
    from datasets import Dataset, DatasetDict
    from stratos_agent.tools.train_callbacks import curve_callback_for

    from stratos_agent.records.training import TrainConfig
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack("mahjong", prompt="short")
    val = pack.sample(5, seed=21)
    rows = [{"prompt": pack.render_prompt(it), "completion": "x", "item": it.model_dump_json()} for it in val]
    DatasetDict({"train": Dataset.from_list(rows), "val": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "d"))
    cfg = TrainConfig(run_name="r", base_model="smollm2-135m", data=tmp_path / "d", task="mahjong", max_steps=160)
    cb = curve_callback_for(cfg)
    assert cb.items == val and cb.every_steps == 20 and cb.method == "sft-lora16" and cb.max_new_tokens == 24
    full = curve_callback_for(cfg.model_copy(update={"lora": False, "data": tmp_path / "none", "max_steps": -1}))
    assert full.method == "sft-full" and len(full.items) == 48 and full.every_steps == 25
    assert curve_callback_for(cfg.model_copy(update={"task": None})) is None


# --------------------------------------------------------------------------------- comparable curves
def recipe(lr=1e-4, schedule="constant_with_warmup") -> tuple[float, dict]:
    from stratos_agent.records.training import TrainConfig

    config = TrainConfig(run_name="x", base_model="s", data=Path("."), lora=False, learning_rate=lr, batch_size=8,
                         lr_scheduler=schedule)
    return lr, curve_conditions.recipe_of(config)


def tagged(c: LearningCurve, mix: str, lr_recipe=None) -> LearningCurve:
    lr, knobs = lr_recipe or recipe()
    return c.model_copy(update={"validation_mix": mix, "learning_rate": lr, "recipe": knobs})


def target(mix: str = "dataset", lr_recipe=None) -> calibration.Conditions:
    return curve_conditions.conditions_of(tagged(curve([1], [0.0]), mix, lr_recipe))


def width(p) -> float:
    return p.high - p.low


def test_old_curve_json_loads_and_the_shipped_seeds_say_how_they_were_measured(store):
    import json

    old = json.loads(synthetic("old", 0).model_dump_json())
    for name in ("validation_mix", "recipe"):
        del old[name]  # a file written before these fields existed
    store.mkdir(parents=True)
    (store / "old.json").write_text(json.dumps(old))
    (loaded,) = calibration.curves("t")
    assert loaded.validation_mix == "unknown" and loaded.recipe == {}
    assert target("unknown").mismatch(curve_conditions.conditions_of(loaded)) == (True, True)  # unknown matches nothing
    seeds = sorted(calibration.seed_dir().glob("*.json"))
    assert len(seeds) >= 14  # found through the package, in a checkout and once installed
    shipped = [LearningCurve.model_validate_json(p.read_text()) for p in seeds]
    assert all(c.validation_mix in ("even", "dataset") and c.recipe["schedule"] for c in shipped)
    assert {c.validation_mix for c in shipped if c.student == "mahjong-micro-6m"} == {"even"}


def test_matching_curves_are_preferred(store):
    for i in range(2):  # the planned conditions ...
        record_curve(tagged(synthetic(f"same{i}", i), "dataset"))
    for i in range(2):  # ... and runs that validated on an even hold-out, scoring far higher
        ys = [min(1.0, y + 0.3) for y in curve_fit._exp([100, 200, 400, 800, 1600], *TRUE)]
        record_curve(tagged(curve([100, 200, 400, 800, 1600], ys, run=f"even{i}"), "even"))
    p = predict_accuracy("t", "s", "sft-full", 1000, conditions=target())
    assert p.match == "same" and p.label == "measured" and p.curves == 2
    assert p.value == pytest.approx(curve_fit._exp(1000, *TRUE), abs=0.05)
    unconditioned = predict_accuracy("t", "s", "sft-full", 1000)
    assert unconditioned.match == "any" and unconditioned.curves == 4 and unconditioned.value > p.value + 0.1


def test_mismatched_curves_only_give_a_labelled_wider_figure(store):
    for i in range(2):
        record_curve(tagged(synthetic(f"even{i}", i), "even"))
    own = predict_accuracy("t", "s", "sft-full", 1000, conditions=target("even"))
    other = predict_accuracy("t", "s", "sft-full", 1000, conditions=target("dataset"))
    assert own.label == "measured" and other.label == "measured (other validation mix)"
    assert other.value == pytest.approx(own.value)
    assert width(other) == pytest.approx(2 * np.hypot(width(own) / 2, calibration.MISMATCH_SHIFT), rel=1e-6)
    far = predict_accuracy("t", "s", "sft-full", 3000, conditions=target("dataset"))
    assert far.label == "fitted (other validation mix)" and "interval widened by +-18 points" in far.note
    # another recipe is a closer fallback than another validation mix
    record_curve(tagged(synthetic("lr", 5), "dataset", recipe(lr=1e-3)))
    closer = predict_accuracy("t", "s", "sft-full", 1000, conditions=target("dataset"))
    assert closer.match == "other recipe" and closer.curves == 1


def flat(run: str, level: float, student: str = "s") -> LearningCurve:
    """A run that sits at `level` from 100 to 1,600 examples (n huge: no sampling noise)."""
    return tagged(curve([100, 200, 400, 800, 1600], [level] * 5, n=100_000, run=run, student=student), "dataset")


def test_run_to_run_spread_is_measured_on_repeated_runs():
    offsets = (-0.06, 0.0, 0.06)  # sample variance 0.0036 around 50%
    spread = calibration.run_spread([flat(f"r{i}", 0.5 + o) for i, o in enumerate(offsets)])
    assert spread.groups == 1 and spread.share * 0.25 == pytest.approx(0.0036, rel=0.05)
    assert calibration.run_spread([flat(f"r{i}", 0.5) for i in range(3)]).share == 0.0
    assert calibration.run_spread([flat("lone", 0.5)]) == calibration.RunSpread()  # nothing repeated


def test_disagreeing_runs_widen_every_interval(store, tmp_path, monkeypatch):
    def predicted(offsets, folder: str):
        monkeypatch.setenv(calibration.STORE_ENV, str(tmp_path / folder))
        for i, o in enumerate(offsets):
            record_curve(flat(f"{folder}{i}", 0.5 + o))
        record_curve(flat(f"{folder}-lone", 0.3, student="lone"))  # one run of another student
        return (predict_accuracy("t", "s", "sft-full", 1000, conditions=target()),
                predict_accuracy("t", "lone", "sft-full", 1000, conditions=target()))

    agree, lone_agree = predicted((0.0, 0.0, 0.0), "agree")
    spread, lone_spread = predicted((-0.08, 0.0, 0.08), "spread")
    assert agree.value == pytest.approx(spread.value) and width(spread) > 2 * width(agree)
    assert spread.low < 0.42 and spread.high > 0.58  # the next run may land where the pooled runs did
    assert width(lone_spread) > 2 * width(lone_agree)  # measured on others, it applies to a single curve too
    assert "run-to-run spread measured on 1 repeated group" in spread.note


def test_leave_one_out_predicts_each_final_without_it(store):
    runs = [tagged(synthetic(f"r{i}", i), "dataset") for i in range(5)]
    outlier = tagged(curve([100, 200, 400, 800, 1600], [0.2, 0.5, 0.8, 0.9, 0.95], run="outlier"), "dataset")
    copy = runs[0].model_copy(update={"run": "r0-again"})  # the same trajectory under another name
    lone = tagged(synthetic("lone", 9, student="lone"), "dataset")
    by_run = {r["run"]: r for r in calibration_check.leave_one_out([*runs, outlier, copy, lone])}
    assert by_run["lone"]["source"] == "prior" and by_run["r0"]["other_runs"] == 5  # not its own copy
    assert by_run["outlier"]["value"] < 0.7 and by_run["outlier"]["high"] < 0.95  # it never sees itself
    summary = calibration_check.loo_summary(calibration_check.leave_one_out([*runs, copy, lone]))
    assert summary["predicted"] == 6 and summary["curves"] == 7
    assert summary["median_abs_error_points"] < 5 and summary["coverage"] >= 5 / 6


def test_the_plan_reads_curves_of_the_recipe_it_will_run(tmp_path):
    from stratos_agent.tools.planning.measured import PLAN_VALIDATION, planned_conditions
    from stratos_agent.tools.train import config_from_plan

    from stratos_agent.models import get_registry
    from stratos_agent.records.data import DatasetRef
    from stratos_agent.records.plans import Plan, PlanPoint
    from stratos_agent.tasks.recipes import recipe_for

    data = DatasetRef.model_construct(path=tmp_path / "d", hf_path=tmp_path / "d" / "dataset")
    seen = set()
    for student, strategy, rank in (("mahjong-micro-6m", "injection", 16), ("smollm2-135m", "injection", 0),
                                    ("smollm2-135m", "injection", 16), ("smollm2-135m", "alignment-logit", 8)):
        plan = Plan.model_construct(task="mahjong", why="", chosen=PlanPoint.model_construct(
            student=student, teacher="smollm2-135m", strategy=strategy, lora_rank=rank))
        config = config_from_plan(plan, data, recipe_for("mahjong"), run_name="r", max_steps=100)
        expect = curve_conditions.planned(PLAN_VALIDATION, config)
        assert planned_conditions(get_registry().get(student), rank) == expect, (student, strategy, rank)
        seen.add(expect)
    assert len(seen) == 3  # stream, full and LoRA rates differ (logit KD keeps its rank's rate)


def test_the_runs_test_evaluation_is_pooled_into_its_last_point_once(store):
    """Validation (weighted to the test mix) and the test split are two samples of the final model's figure:
    the stored curve's last point counts both, once, even when the evaluation stage runs again."""
    mine = curve([100, 200, 400], [0.1, 0.2, 0.289], n=200, run="runs/a/train")
    other = curve([100, 200, 400], [0.1, 0.2, 0.3], n=200, run="runs/b/train")
    first, _ = record_curve(mine), record_curve(other)
    pooled = calibration.pool_evaluation(mine, successes=40, n=100, yardstick="test split, n=100")
    assert pooled is not None and not first.exists()
    stored = [c for c in calibration.curves("t") if c.run == "runs/a/train"]
    assert len(stored) == 1 and stored[0].pooled == "test split, n=100"
    assert (stored[0].points[-1].exact, stored[0].points[-1].n) == (pytest.approx((57.8 + 40) / 300), 300)
    assert stored[0].points[:-1] == mine.points[:-1]
    assert calibration.pool_evaluation(mine, successes=40, n=100, yardstick="test split, n=100") is None  # again
    assert len(list(store.glob("*.json"))) == 2
    assert [c.points[-1].n for c in calibration.curves("t") if c.run == "runs/b/train"] == [200]  # untouched
    # a crash between writing the pooled file and removing the original: the next call removes the original
    record_curve(mine)
    assert calibration.pool_evaluation(mine, successes=40, n=100, yardstick="test split, n=100") is None
    assert [c.pooled for c in calibration.curves("t") if c.run == "runs/a/train"] == ["test split, n=100"]
    assert calibration.pool_evaluation(curve([1, 2], [0, 0], run="elsewhere"), 1, 10, "x") is None  # not stored
