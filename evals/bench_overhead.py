"""Overhead of the agent graph over the same training run done by hand.

One small LoRA SFT run of the bundled SmolLM2-135M on reverse-synthesised Mahjong data, three ways,
in one process, on the same data and hyperparameters:

  A. a hand-written TRL script (SFTTrainer + PEFT LoRA, merge, save) -- what a user would write;
  B. the train tool called directly (`tools.train.train` with the config the agent builds);
  C. the agent graph: intake -> planner -> guarded tool node -> train tool, with SQLite checkpoints.

Runs are interleaved A B C C B A (a drifting machine load then weighs on every variant alike); prints
and saves `evals/results/bench_overhead.json` with the ratios of summed times C/A and C/B (goal C/A <= 1.03).
The three runs train the same number of steps with the same checkpoint interval, so the difference is
orchestration (graph, checkpoints, guards, planner) plus the tool's own extras (memory estimate, metrics,
model card). Run: `.venv/bin/python evals/bench_overhead.py --steps 20`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import add_out, add_threads, loadavg_1m, machine_info, make_parser, save_json


def _trl_script(data: Path, out: Path, cfg, threads: int) -> float:
    """A: the hand-written TRL run with the same settings as the agent's TrainConfig. Returns seconds."""
    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from stratos_agent.models import local_model_path

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    base = local_model_path(cfg.base_model)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = cfg.chat_template
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = load_from_disk(str(data))["train"]
    rows = rows.map(
        lambda r: {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": r["completion"]}],
        },
        remove_columns=rows.column_names,
    )
    args = SFTConfig(
        output_dir=str(out / "ckpt"),
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup,
        max_steps=cfg.max_steps,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        bf16=False,
        use_cpu=True,
        report_to="none",
        max_length=cfg.max_seq_len,
        completion_only_loss=True,
        packing=False,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok, peft_config=lora)
    trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return time.perf_counter() - t0


def main() -> None:
    ap = make_parser(__doc__)
    ap.add_argument("--steps", type=int, default=40, help="training steps per run (batch 8)")
    ap.add_argument("--n", type=int, default=600, help="synthesised examples (solver mode)")
    add_threads(ap, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs per variant (2 = order A B C C B A)")
    add_out(ap, "bench_overhead.json")
    args = ap.parse_args()
    os.environ["STRATOS_THREADS"] = str(args.threads)
    os.environ["STRATOS_LOCAL_TRAIN_MINUTES"] = "600"  # no time cap: all three runs do every step
    work = Path(tempfile.mkdtemp(prefix="stratos-overhead-"))
    os.environ["STRATOS_RUNS_DIR"] = str(work / "runs")

    from stratos_agent.graphs.planners import RulePlanner, read_status, rule_decision
    from stratos_agent.graphs.session import AgentSession
    from stratos_agent.tools.synth import synthesize
    from stratos_agent.tools.train import config_from_plan, train

    from stratos_agent.files import write_text_atomic
    from stratos_agent.records.plans import PairTable, Plan, PlanPoint
    from stratos_agent.records.servers import ServerSurvey
    from stratos_agent.settings import get_settings
    from stratos_agent.spec import DistillationSpec
    from stratos_agent.state import initial_state
    from stratos_agent.tasks.recipes import recipe_for

    get_settings.cache_clear()
    spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
    recipe = recipe_for("mahjong")
    dataset = synthesize(
        recipe.pack("mahjong", "student"), args.n, work / "data", mode="solver", style=recipe.style,
        distribution="even",
    )
    point = PlanPoint(
        server="local:this-machine:local",
        gpu="CPU",
        gpu_count=1,
        teacher="smollm2-135m",
        student="smollm2-135m",
        strategy="injection",
        lora_rank=16,
        data_size=args.n,
        replicas=1,
        cost_usd=0,
        cost_training_usd=0,
        cost_serving_usd=0,
        cost_synthesis_usd=0,
        p95_ms=0,
        accuracy=0,
        train_hours=0,
        latency_source="modelled",
    )
    plan = Plan(task="mahjong", preference="balanced", chosen=point, front=[point], feasible=True,
                why="benchmark: fixed local LoRA plan", candidates=1, catalog_date="-", catalog_age_days=0,
                created="-")

    def state(thread: str) -> dict:
        s = initial_state(thread, str(work / "runs" / thread), spec=spec, auto_approve=True)
        s.update(
            servers=ServerSurvey(),
            pairs=PairTable(pairs=[]),
            plan=plan,
            dataset=dataset,
            approvals={"plan": {"decision": "approve", "auto": True}},
        )
        return s

    # The same config the agent's train_student adapter builds (tools/train.config_from_plan).
    cfg = config_from_plan(plan, dataset, recipe, run_name="direct", max_steps=args.steps,
                           save_steps=25, time_limit_s=None)
    print(
        f"config: LoRA r{cfg.lora_r}, {cfg.max_steps} steps, batch {cfg.batch_size}, lr {cfg.learning_rate}",
        flush=True,
    )

    class FixedSteps(RulePlanner):
        """The rule planner, asking for exactly --steps training steps."""

        def _generate(self, messages, stop=None, run_manager=None, **kw):  # type: ignore[override]
            from langchain_core.outputs import ChatGeneration, ChatResult

            status = read_status(messages)
            if status.next_tool == "train_student":
                status.suggested_args = {"max_steps": args.steps}
            return ChatResult(generations=[ChatGeneration(message=rule_decision(status))])

    def run_trl(i: int) -> float:
        return _trl_script(dataset.hf_path, work / f"trl{i}", cfg, args.threads)

    def run_tool(i: int) -> float:
        t0 = time.perf_counter()
        train(cfg.model_copy(update={"run_name": f"direct{i}"}), run_dir=work / f"direct{i}")
        return time.perf_counter() - t0

    def run_graph(i: int) -> float:
        session = AgentSession(f"graph{i}", runs_dir=work / "runs", graph_kwargs={"planner": FixedSteps()})
        session.run_dir.mkdir(parents=True)
        write_text_atomic(session.run_dir / "run.json", json.dumps({"thread_id": session.thread_id}))
        t0 = time.perf_counter()
        with session.graph() as graph:
            graph.invoke(state(session.thread_id), session.config, interrupt_after=["tools"])
            assert graph.get_state(session.config).values.get("model"), "the graph did not train"
        return time.perf_counter() - t0

    # A B C, then C B A: a load that drifts during the benchmark weighs on every variant alike.
    runs = {"trl_script": run_trl, "train_tool": run_tool, "graph": run_graph}
    order = [*runs, *reversed(runs)][: 3 * args.repeats] if args.repeats <= 2 else [*runs] * args.repeats
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i, name in enumerate(order):
        times[name].append(runs[name](i))
        print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    total = {name: sum(values) for name, values in times.items()}

    result = {
        "command": f"python evals/bench_overhead.py --steps {args.steps} --n {args.n} "
        f"--threads {args.threads} --repeats {args.repeats}",
        "steps": args.steps,
        "threads": args.threads,
        "order": order,
        "seconds": {name: [round(t, 2) for t in values] for name, values in times.items()},
        "load_avg_1m_end": loadavg_1m(),
        "graph_over_trl": round(total["graph"] / total["trl_script"], 4),
        "graph_over_tool": round(total["graph"] / total["train_tool"], 4),
        "goal": "graph_over_trl <= 1.03",
        "python": sys.version.split()[0],
        "machine": machine_info(),
    }
    save_json(result, args.out, echo=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
