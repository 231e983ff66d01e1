"""`stratos run | chat | resume | approve | status | runs | report`: the agent's command line.

Heavy imports (LangGraph, the tools) happen inside the commands so `stratos --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stratos_agent.cli.app import app, console
from stratos_agent.errors import InputError

ThreadArg = Annotated[str, typer.Argument(help="The run's thread id (see `stratos runs`).")]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint database URL: postgresql://USER:PASS@HOST/DB (needs the `postgres` extra) "
        "or sqlite:///PATH. Default: SQLite in the run folder (env STRATOS_CHECKPOINT_URL).",
    ),
]
PlannerModelOpt = Annotated[
    str | None,
    typer.Option(
        "--planner-model",
        help="Use an LLM planner: the model name at an OpenAI-compatible endpoint "
        "(env STRATOS_PLANNER_MODEL). Default: the built-in deterministic rule planner.",
    ),
]
PlannerUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--planner-base-url",
        help="OpenAI-compatible base URL for the planner, e.g. http://127.0.0.1:8000/v1 "
        "(env OPENAI_BASE_URL; key from OPENAI_API_KEY).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object at the end instead of tables.")]


def _session(
    thread: str,
    checkpoint: str | None = None,
    planner_model: str | None = None,
    planner_base_url: str | None = None,
    quiet: bool = False,
) -> Any:
    from stratos_agent.graphs.planners import make_llm_planner
    from stratos_agent.graphs.session import AgentSession
    from stratos_agent.settings import get_settings

    model_name = planner_model or get_settings().planner_model
    kwargs: dict[str, Any] = {}
    if model_name:
        llm = make_llm_planner(model_name, planner_base_url)
        kwargs = {"planner": llm, "spec_model": llm}
    return AgentSession(
        thread, checkpoint=checkpoint, graph_kwargs=kwargs, on_event=None if quiet else _print_event
    )


def _print_event(node: str, update: dict[str, Any]) -> None:
    """One line per graph step: what the planner decided, what a tool returned or refused."""
    from rich.markup import escape

    for message in update.get("messages") or []:
        kind = type(message).__name__
        if kind == "AIMessage":
            for call in message.tool_calls:
                console.print(f"[cyan]planner[/] -> {call['name']}({json.dumps(call['args'])})")
            if not message.tool_calls and message.content:
                console.print(f"[cyan]planner[/]: {message.content}")
        elif kind == "ToolMessage":
            style = "red" if message.status == "error" else "green"
            text = message.content if len(message.content) < 400 else message.content[:400] + " ..."
            console.print(f"[{style}]{message.name}[/]: {text}")
    for event in update.get("events") or []:
        if event.get("kind") == "planner_fallback":
            console.print(f"[yellow]planner fallback[/]: {event.get('errors')}")
        if event.get("kind") == "not_understood":  # parts of the request that did not make it into the spec
            for phrase in event.get("phrases") or []:
                console.print(f"[yellow]not understood[/]: {escape(phrase)}", highlight=False)
    if node == "report" and update.get("report"):
        console.print(f"[bold]report[/]: {update['report'].get('html')}")


def _show_interrupt(payload: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    gate = payload.get("gate")
    console.rule(f"[bold]waiting for you: {gate}[/]")
    if gate == "clarify":
        for question in payload.get("questions", []):
            console.print(f"- {escape(question)}", highlight=False)
        return
    console.print(payload.get("question", ""))
    if gate == "plan":
        for phrase in payload.get("not_understood") or []:
            console.print(f"[yellow]not understood in the request[/]: {escape(phrase)}", highlight=False)
        console.print(f"[bold]plan[/]: {payload.get('plan')}\n[bold]why[/]: {payload.get('why')}")
        console.print(
            f"[bold]estimate[/]: {payload.get('estimate')}  [bold]budget[/]: ${payload.get('budget_usd')}"
        )
        table = Table("plan on the Pareto front", "cost $", "p95 ms", "accuracy", "train h")
        for row in payload.get("pareto", []):
            table.add_row(
                row["plan"],
                *(f"{row.get(k) or 0:.3g}" for k in ("cost_usd", "p95_ms", "accuracy", "train_hours")),
            )
        console.print(table)
    else:
        console.print(f"[bold]evaluation[/]: {payload.get('eval')}")
        console.print(f"[bold]endpoint[/]: {payload.get('endpoint')}")
    if payload.get("answers"):
        console.print(f"[dim]{escape(payload['answers'])}[/]", highlight=False)
    if payload.get("reply"):  # the gate's answer to a question, or why the last answer decided nothing
        console.print(f"[yellow]{escape(payload['reply'])}[/]", highlight=False)


def _ask(payload: dict[str, Any]) -> Any:
    from rich.prompt import Prompt

    if payload.get("gate") == "clarify":
        return Prompt.ask("your answer")
    return Prompt.ask("approve / reject [reason] / edit KEY=VALUE ... / a question?")  # no default: Enter decides nothing


NEEDS_INPUT_EXIT = 3  # the run stopped with a question (infeasible spec, missed goal): nothing was deployed


def _finish(outcome: Any, as_json: bool) -> None:
    from stratos_agent.tools.outcome import outcome_lines

    summary = outcome.summary()
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        if outcome.interrupt is not None:
            _show_interrupt(outcome.interrupt)
            verb = (
                "resume THREAD --answer TEXT"
                if outcome.interrupt.get("gate") == "clarify"
                else "approve THREAD [--edit KEY=VALUE] [--reject]"
            )
            command = verb.replace("THREAD", outcome.thread_id)
            console.print(f"run [bold]{outcome.thread_id}[/] is waiting: `stratos {command}`")
        else:
            console.print(f"run [bold]{outcome.thread_id}[/]: status [bold]{outcome.status}[/]")
            for line in outcome_lines({**outcome.values, "status": outcome.status})[1:]:
                console.print(line.replace("THREAD", outcome.thread_id), highlight=False)
            if summary.get("report"):
                console.print(f"report: {summary['report']}")
            if outcome.status == "failed" and outcome.error:  # why it stopped (run.json), not only in --json
                console.print(f"[bold red]error:[/] {outcome.error}", highlight=False)
    if outcome.status == "failed":
        raise typer.Exit(1)
    if outcome.status == "needs_input":
        raise typer.Exit(NEEDS_INPUT_EXIT)


def _drive(session: Any, outcome: Any, as_json: bool) -> Any:
    """Answer interrupts at the terminal while one is open and stdin is interactive."""
    while outcome.interrupt is not None and not as_json and sys.stdin.isatty():
        _show_interrupt(outcome.interrupt)
        outcome = session.resume(_ask(outcome.interrupt))
    return outcome


@app.command()
def run(
    request: Annotated[
        str | None, typer.Argument(help="What you want, in words: task, budget, latency, ...")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML/JSON file with a DistillationSpec (or `request:` plus `spec:` overrides)."
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Auto-approve the plan and the deployment "
            "(scripted runs; the report says approvals were skipped).",
        ),
    ] = False,
    deploy_anyway: Annotated[
        bool,
        typer.Option(
            "--deploy-anyway",
            help="With --yes: deploy even when the evaluated student misses the goal, without adaptation "
            "rounds (the result gate otherwise trains on while it helps, then stops before deploying with "
            "exit code 3 and says why).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    thread: Annotated[
        str | None, typer.Option("--thread", help="Thread id to use (default: generated).")
    ] = None,
    planner_model: PlannerModelOpt = None,
    planner_base_url: PlannerUrlOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Run the whole lifecycle: plan, (approve), synthesise, train, evaluate, result gate, (approve),
    deploy, report.

    The result gate checks the evaluated student against the goal (min accuracy when given, else: beat
    every trivial baseline and the teacher, 95% lower bound above the best baseline; and the p95 target).
    A miss trains on while rounds, budget and deadline allow, then stops undeployed with the reasons
    (exit code 3); `--yes` never deploys a student that misses the goal, `--deploy-anyway` does.

    Example: `stratos run "a model that lists Mahjong winning tiles, under $20, p95 under 300 ms" --yes`
    """
    from stratos_agent.graphs.session import new_thread_id
    from stratos_agent.spec import read_spec_file, validated_spec

    spec = None
    if config is not None:
        data = read_spec_file(config)
        if "spec" in data or "request" in data:
            request = request or data.get("request")
            data = data.get("spec")
        if data is not None:
            if not isinstance(data, dict):
                raise InputError(f"{config}: `spec:` must be a mapping of spec fields")
            spec = validated_spec({**data, "request": request or data.get("request")}, str(config))
    if request is None and spec is None:
        raise InputError('give a request (stratos run "...") or --config FILE')
    hint = spec.task if spec else (request or "run").split()[0]
    session = _session(
        thread or new_thread_id(hint.split(":")[0]),
        checkpoint,
        planner_model,
        planner_base_url,
        quiet=as_json,
    )
    if not as_json:
        console.print(f"run [bold]{session.thread_id}[/] in {session.run_dir}")
    outcome = session.start(request=request, spec=spec, auto_approve=yes, deploy_anyway=deploy_anyway)
    _finish(_drive(session, outcome, as_json), as_json)


@app.command()
def resume(
    thread: ThreadArg,
    answer: Annotated[
        str | None,
        typer.Option("--answer", help="Answer to a pending question (e.g. the budget the request lacked)."),
    ] = None,
    as_json: JsonOpt = False,
    planner_model: PlannerModelOpt = None,
    planner_base_url: PlannerUrlOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Continue a run after a crash, kill or Ctrl-C; finished stages are reused, not redone.

    Example: `stratos resume mahjong-20260101-120000-ab12`
    """
    session = _session(thread, checkpoint, planner_model, planner_base_url, quiet=as_json)
    outcome = session.resume(answer)
    _finish(_drive(session, outcome, as_json), as_json)


@app.command()
def approve(
    thread: ThreadArg,
    edit: Annotated[
        list[str] | None,
        typer.Option(
            "--edit", help="Change the spec and re-plan, e.g. --edit budget_usd=30 --edit p95_latency_ms=200."
        ),
    ] = None,
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject: nothing more is spent or deployed.")
    ] = False,
    note: Annotated[str, typer.Option(help="A note stored with the decision.")] = "",
    as_json: JsonOpt = False,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Answer the approval gate a run waits at (plan before spending, or deployment).

    `--edit` also works on a stopped run (e.g. a `--yes` run that found no feasible plan): it re-plans.

    Examples: `stratos approve THREAD`, `stratos approve THREAD --edit budget_usd=30`,
    `stratos approve THREAD --reject`
    """
    from stratos_agent.request_parser import parse_key_values

    if reject and edit:
        raise InputError("--reject and --edit exclude each other")
    decision: dict[str, Any] = {
        "decision": "reject" if reject else "edit" if edit else "approve",
        "note": note,
    }
    if edit:
        decision["changes"] = parse_key_values(edit)
    session = _session(thread, checkpoint, quiet=as_json)
    outcome = session.outcome()
    stopped = outcome.interrupt is None and outcome.status in ("failed", "paused", "done")
    waiting = outcome.interrupt is not None and outcome.interrupt.get("gate") != "clarify"
    if not (waiting or (edit and stopped)):
        raise InputError(f"run {thread} is not waiting for an approval (status {outcome.status})")
    if edit:  # checked as strictly as a new request before anything resumes: a bad value is a clean error
        _check_edit(outcome.values.get("spec"), decision["changes"])
    if edit and stopped:  # e.g. a `--yes` run that found no feasible plan: edit and plan again
        _finish(_drive(session, session.edit(decision["changes"]), as_json), as_json)
        return
    _finish(_drive(session, session.resume(decision), as_json), as_json)


def _check_edit(spec: Any, changes: dict[str, Any]) -> None:
    from stratos_agent.request_parser import apply_edits
    from stratos_agent.spec import DistillationSpec, validated_spec

    if spec is None:
        raise InputError("this run has no spec yet to edit; answer its question with `stratos resume`")
    validated_spec(apply_edits(DistillationSpec.model_validate(spec), changes), "--edit")


@app.command()
def chat(
    thread: Annotated[str | None, typer.Argument(help="Continue this run; omit to start a new one.")] = None,
    planner_model: PlannerModelOpt = None,
    planner_base_url: PlannerUrlOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Talk to the planner: state a request, change constraints ("budget $30"), ask why, approve/reject.

    Type `/status`, `/report` or `/quit`. Example: `stratos chat` then
    "Mahjong winning tiles under $20, p95 under 300 ms".
    """
    from rich.prompt import Prompt

    from stratos_agent.graphs.session import new_thread_id

    if thread is None:
        request = Prompt.ask("what should the model do (task, budget, latency)?")
        session = _session(
            new_thread_id(request.split()[0] if request.split() else "chat"),
            checkpoint,
            planner_model,
            planner_base_url,
        )
        console.print(f"run [bold]{session.thread_id}[/] in {session.run_dir}")
        outcome = session.start(request=request)
    else:
        session = _session(thread, checkpoint, planner_model, planner_base_url)
        outcome = session.outcome()
    while True:
        if outcome.interrupt is not None:
            _show_interrupt(outcome.interrupt)
        else:
            console.print(f"[dim]status: {outcome.status}[/]")
        text = Prompt.ask("you").strip()
        if text in {"/quit", "/exit", "quit", "exit"}:
            console.print(f"bye; continue later with `stratos chat {session.thread_id}`")
            return
        if text == "/status":
            _print_status(outcome)
            continue
        if text == "/report":
            console.print(str((outcome.values.get("report") or {}).get("html", "no report yet")))
            continue
        outcome = session.send(text)


def _print_status(outcome: Any) -> None:
    from rich.table import Table

    from stratos_agent.graphs.session import lifecycle_stages
    from stratos_agent.tools.outcome import outcome_lines

    v = outcome.values
    console.print(f"run [bold]{outcome.thread_id}[/]: [bold]{outcome.status}[/]  ({v.get('run_dir')})")
    for line in outcome_lines({**v, "status": outcome.status})[1:]:
        console.print(line.replace("THREAD", outcome.thread_id), highlight=False)
    done = set(outcome.done())
    table = Table("stage", "finished")
    for stage in lifecycle_stages():
        table.add_row(stage, "yes" if stage in done else "-")
    console.print(table)
    for gate, approval in (v.get("approvals") or {}).items():
        console.print(
            f"approval {gate}: {approval.get('decision')}{' (auto-skipped)' if approval.get('auto') else ''}"
        )
    spent = sum(e.get("actual_usd") or 0 for e in v.get("ledger") or [])
    budget = v["spec"].constraints.budget_usd if v.get("spec") else None
    console.print(f"spent ${spent:.4f} of {f'${budget:g}' if budget else 'no'} budget")
    if outcome.interrupt:
        console.print(f"waiting at gate: {outcome.interrupt.get('gate')}")


@app.command()
def status(
    thread: Annotated[str | None, typer.Argument(help="A run's thread id; omit to list all runs.")] = None,
    as_json: JsonOpt = False,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Where a run stands: finished stages, approvals, spend vs budget, what it waits for.

    Example: `stratos status mahjong-20260101-120000-ab12`
    """
    if thread is None:
        runs(as_json=as_json)
        return
    session = _session(thread, checkpoint, quiet=True)
    session._require()
    result = session.outcome()
    if as_json:
        print(json.dumps(result.summary(), default=str))
    else:
        _print_status(result)


@app.command()
def runs(as_json: JsonOpt = False) -> None:
    """List runs in the runs folder (env STRATOS_RUNS_DIR, default ./runs) with their status."""
    from rich.table import Table

    from stratos_agent.graphs.session import list_runs

    rows = list_runs()
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("thread", "created", "status", "finished stages", "request")
    for row in rows:
        table.add_row(
            row["thread_id"],
            row.get("created", ""),
            row.get("status", ""),
            ", ".join(row.get("done", [])),
            (row.get("request") or "")[:60],
        )
    console.print(table if rows else 'no runs yet: start one with `stratos run "..."`')


@app.command()
def report(thread: ThreadArg, checkpoint: CheckpointOpt = None) -> None:
    """(Re)write a run's HTML + Markdown report from its saved state and print the paths.

    Example: `stratos report mahjong-20260101-120000-ab12`
    """
    from stratos_agent.tools.report import write_report

    session = _session(thread, checkpoint, quiet=True)
    session._require()
    outcome = session.outcome()
    paths = write_report({**outcome.values, "status": outcome.status}, session.run_dir)
    console.print(f"html: {paths['html']}\nmarkdown: {paths['markdown']}")
