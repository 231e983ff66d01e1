"""Reliability under kill -9: a full local run killed at N random moments, resumed each time, until `done`.

`stratos run --config SPEC --yes --deploy-anyway` (Mahjong, the 2M micro student, small data) runs as a
subprocess in its own process group. Two uninterrupted runs come first: a warm-up (it fills the caches
every later run reuses: server timings, model conversions) and the timed baseline, whose wall time T
sets the scale. The kill moments are N sorted points drawn uniformly (seeded) from [0, T) on the killed
run's own clock, which keeps running through restarts; at each the whole group gets SIGKILL and
`stratos resume THREAD` continues it. Restarts cost time, so the run is still going at every point; if
it finishes first anyway, a fresh thread takes the remaining points. The last thread resumes to `done`.

Per kill it records: the stage the kill landed in (the first lifecycle tool without a finished stage file),
which finished stages were redone afterwards (same stage key, new timestamp: must be none), and, during
training, the newest checkpoint step and an upper estimate of the training steps lost (seconds since that
checkpoint, or since training started when there is none yet, x seconds per step; the interval the run
used is reported, as the trainer may raise STRATOS_LOCAL_SAVE_STEPS). At the end
every thread must be `done`, and `stratos stop` must leave no server process from the work folder (a kill
during vLLM start-up used to orphan one). Prints and saves evals/results/kill_resume.json.

Run: `.venv/bin/python evals/kill_resume.py --kills 3` (default 10 kills, seed 0).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import add_out, loadavg_1m, machine_info, make_parser, save_json

ROOT = Path(__file__).resolve().parents[1]
STRATOS = str(Path(sys.executable).with_name("stratos"))
REQUEST = "a model that lists Mahjong winning tiles, under $20, p95 under 120 s, prefer cheaper"
SAVE_STEPS = 2


def _spec(data_size: int, student: str) -> dict[str, Any]:
    return {"request": REQUEST, "spec": {
        "task": "mahjong", "constraints": {"budget_usd": 20, "p95_latency_ms": 120_000}, "preference": "cheaper",
        "data_size": data_size, "student": student}}


def _env(work: Path, data_size: int) -> dict[str, str]:
    """Small local sizes (as tests/test_agent_e2e.py), runs and learning curves kept in the work folder."""
    return {**os.environ, "STRATOS_RUNS_DIR": str(work / "runs"), "STRATOS_CALIBRATION_DIR": str(work / "calibration"),
            "STRATOS_LOCAL_SYNTH_N": str(data_size), "STRATOS_LOCAL_EVAL_N": "8", "STRATOS_LOCAL_PROBE_N": "2",
            "STRATOS_LOCAL_SAVE_STEPS": str(SAVE_STEPS), "STRATOS_THREADS": "1", "OMP_NUM_THREADS": "1"}


class Runner:
    """Starts `stratos` commands for the runs in one work folder, each logged to `<work>/logs/`."""

    def __init__(self, work: Path, data_size: int, student: str):
        self.work, self.env = work, _env(work, data_size)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.config = work / "spec.json"
        self.config.write_text(json.dumps(_spec(data_size, student)))
        self.count = 0

    def start(self, *args: str) -> subprocess.Popen:
        self.count += 1
        log = open(self.work / "logs" / f"{self.count:03d}-{args[0]}.log", "w")  # noqa: SIM115 - closed by the child
        return subprocess.Popen([STRATOS, *args], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def first(self, thread: str) -> subprocess.Popen:
        return self.start("run", "--config", str(self.config), "--yes", "--deploy-anyway", "--thread", thread)

    def status(self, thread: str) -> dict[str, Any]:
        out = subprocess.run([STRATOS, "status", thread, "--json"], env=self.env, cwd=ROOT, capture_output=True,
                             text=True, timeout=300, check=False)
        lines = out.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else {"status": f"unreadable (rc {out.returncode})"}

    def run_dir(self, thread: str) -> Path:
        return self.work / "runs" / thread

    def stop(self, thread: str) -> None:
        """Stop the thread's endpoint (named after the run): a finished run's server must not slow the next."""
        subprocess.run([STRATOS, "stop", thread], env=self.env, cwd=ROOT, capture_output=True, timeout=300,
                       check=False)


def tool_order() -> list[str]:
    from stratos_agent.graphs.adapters import default_toolset

    return list(default_toolset().names())


def stage_files(run: Path) -> dict[str, dict[str, Any]]:
    """{tool: {"key", "at"}} of every finished stage file (an unreadable one is skipped: the run rewrites it)."""
    found = {}
    for path in (run / "stages").glob("*.json"):
        try:
            stored = json.loads(path.read_text())
            found[path.stem] = {"key": stored["key"], "at": stored["at"], "value": stored.get("value") or {}}
        except (OSError, ValueError, KeyError):
            continue
    return found


def newest_checkpoint(run: Path) -> tuple[int, float] | None:
    """(step, mtime) of the newest complete stream-trainer checkpoint; (0, training start) before the first
    one (a kill then loses every step); None before training started."""
    states = [(int(p.parent.name.split("-")[1]), p.stat().st_mtime) for p in run.glob("train/checkpoints/step-*/state.pt")]
    if states:
        return max(states)
    config = run / "train" / "train_config.json"  # written when training starts
    return (0, config.stat().st_mtime) if config.is_file() else None


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no child finishes the stage behind our back
    except ProcessLookupError:
        pass
    proc.wait(timeout=120)


def wait_or_exit(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait `seconds`; True if the process ended first."""
    try:
        proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def uninterrupted(runner: Runner, thread: str, timeout_s: float) -> float:
    """Wall seconds of one run left alone (it must end `done`)."""
    start = time.monotonic()
    runner.first(thread).wait(timeout=timeout_s)
    wall = time.monotonic() - start
    status = runner.status(thread)["status"]
    runner.stop(thread)
    if status != "done":
        raise SystemExit(f"the uninterrupted run {thread} ended {status}; see {runner.work / 'logs'}")
    return round(wall, 1)


def kill_once(runner: Runner, proc: subprocess.Popen, thread: str, at: float, order: list[str]) -> dict[str, Any]:
    """Kill the group now; what the run had finished and where the kill landed."""
    run = runner.run_dir(thread)
    stages = stage_files(run)
    ckpt = newest_checkpoint(run)
    killed_at = time.time()
    kill_group(proc)
    stage = next((tool for tool in order if tool not in stages), "after deploy (report)")
    return {"thread": thread, "at_s": round(at, 1), "stage": stage,
            "finished": {tool: {"key": s["key"], "at": s["at"]} for tool, s in stages.items()},
            "train_checkpoint_step": ckpt[0] if ckpt and stage == "train_student" else None,
            "seconds_since_checkpoint": round(killed_at - ckpt[1], 2) if ckpt and stage == "train_student" else None}


def score(kills: list[dict[str, Any]], finals: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Fill in per kill: redone finished stages (same key, new time) and the training steps lost."""
    for kill in kills:
        final = finals[kill["thread"]]
        kill["redone"] = sorted(tool for tool, s in kill.pop("finished").items()
                                if tool in final and final[tool]["key"] == s["key"] and final[tool]["at"] != s["at"])
        train = (final.get("train_student") or {}).get("value") or {}
        per_step = train.get("train_seconds", 0) / max(train.get("global_step") or 1, 1)
        since = kill.pop("seconds_since_checkpoint")
        kill["steps_lost_estimate"] = round(since / per_step, 1) if since is not None and per_step else None


def leftover_servers(runs: Path) -> list[int]:
    """Processes still serving a model from the runs folder (this script's own command line names only
    the work folder above it)."""
    import psutil

    return [p.pid for p in psutil.process_iter(["pid", "cmdline"])
            if any(str(runs) in part for part in p.info["cmdline"] or [])]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-size", type=int, default=1000, help="rows to synthesise (the e2e test uses 3000)")
    parser.add_argument("--student", default="mahjong-micro-2m")
    parser.add_argument("--baseline-s", type=float, default=None,
                        help="the uninterrupted run's wall time, if known (skips the warm-up and baseline runs)")
    parser.add_argument("--timeout", type=float, default=3600, help="limit for one uninterrupted command")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder (deleted)")
    add_out(parser, "kill_resume.json")
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="stratos-kill-resume-"))
    runner = Runner(work, args.data_size, args.student)
    order = tool_order()
    load, t0 = loadavg_1m(), time.monotonic()
    if args.baseline_s is None:
        base = {"warm_up_wall_s": uninterrupted(runner, "warmup", args.timeout),
                "wall_s": uninterrupted(runner, "base", args.timeout)}
    else:
        base = {"wall_s": args.baseline_s, "given": True}
    rng = random.Random(args.seed)
    points = sorted(rng.uniform(0, base["wall_s"]) for _ in range(args.kills))
    kills: list[dict[str, Any]] = []
    threads = [f"kill{args.seed}-0"]
    proc, clock = runner.first(threads[-1]), time.monotonic()  # the thread's clock runs through restarts
    for point in points:
        while wait_or_exit(proc, max(0.0, clock + point - time.monotonic())):  # done first: a fresh thread
            if runner.status(threads[-1])["status"] != "done":
                raise SystemExit(f"thread {threads[-1]} stopped without being killed; see {work / 'logs'}")
            runner.stop(threads[-1])
            threads.append(f"kill{args.seed}-{len(threads)}")
            finished_at = time.monotonic() - clock
            proc = runner.first(threads[-1])
            clock = time.monotonic() - finished_at  # its clock goes on from where the last one ended
        kills.append(kill_once(runner, proc, threads[-1], time.monotonic() - clock, order))
        print(f"kill {len(kills)}/{args.kills}: {threads[-1]} at {kills[-1]['at_s']} s, in {kills[-1]['stage']}",
              flush=True)
        proc = runner.start("resume", threads[-1])
    proc.wait(timeout=args.timeout)
    killed_wall = time.monotonic() - clock
    statuses = {thread: runner.status(thread)["status"] for thread in threads}
    finals = {thread: stage_files(runner.run_dir(thread)) for thread in threads}
    score(kills, finals)
    runner.stop(threads[-1])
    orphans = leftover_servers(work / "runs")
    for pid in orphans:  # never leave a server behind, but count it
        os.kill(pid, signal.SIGKILL)

    lost = [k["steps_lost_estimate"] for k in kills if k["steps_lost_estimate"] is not None]
    result = {
        "command": "python evals/kill_resume.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "work_dir") and v is not None),
        "machine": machine_info(load_avg_1m_at_start=load),
        "spec": _spec(args.data_size, args.student)["spec"], "save_steps": SAVE_STEPS,
        "baseline": base, "kill_points_s": [round(p, 1) for p in points],
        "threads": statuses, "killed_run_wall_s": round(killed_wall, 1),
        "kills": kills,
        "summary": {
            "kills": len(kills),
            "stages_hit": dict(Counter(k["stage"] for k in kills)),
            "all_done": all(s == "done" for s in statuses.values()),
            "finished_stages_redone": sum(len(k["redone"]) for k in kills),
            "training_kills": len(lost),
            "max_steps_lost_estimate": max(lost) if lost else None,
            "save_steps_used": sorted({(f.get("train_student") or {}).get("value", {}).get("config", {}).get("save_steps")
                                       for f in finals.values()} - {None}),
            "server_processes_left_after_stop": len(orphans),
        },
        "total_wall_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(result["summary"], indent=1))
    save_json(result, args.out)
    if args.work_dir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
