"""Run sessions: thread ids, run folders, and start / resume / approve / status over the graph.

The CLI, the benchmarks and the tests all go through `AgentSession`, so a run started in one process
(and killed) can be resumed from another with nothing but its thread id.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.errors import GraphRecursionError
from langgraph.types import Command
from stratos_agent.graphs.checkpoint import checkpoint_url, is_postgres, open_checkpointer

from stratos_agent.errors import InputError, ResourceError
from stratos_agent.files import check_name, write_text_atomic
from stratos_agent.locks import exclusive, live_holder
from stratos_agent.settings import get_settings
from stratos_agent.spec import DistillationSpec, validated_spec
from stratos_agent.state import initial_state

RUN_INFO = "run.json"
LOCK_FILE = "agent.lock"  # held by the process working on the run; names it (`status` says "running")
# Errors of the disk rather than of the code: the run stops with a clear message and `resume` continues it
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


def new_thread_id(hint: str = "run") -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    word = "".join(ch for ch in hint.lower() if ch.isalnum())[:12] or "run"
    return f"{word}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class RunOutcome:
    """Where a run stands after an invocation: finished, or waiting at an interrupt."""

    thread_id: str
    status: str
    values: dict[str, Any]
    interrupt: dict[str, Any] | None = None
    next_nodes: tuple[str, ...] = ()
    error: str | None = None  # why the last invocation stopped (run.json), while the run is failed

    def summary(self) -> dict[str, Any]:
        """The one JSON object `stratos run --json` prints."""
        v = self.values
        plan, result, dep = v.get("plan"), v.get("eval"), v.get("deployment")
        return {
            "thread_id": self.thread_id,
            "status": self.status,
            "waiting_for": (self.interrupt or {}).get("gate"),
            "plan": plan.chosen.model_dump(mode="json") if plan and plan.chosen else None,
            "plan_why": plan.why if plan else None,
            "student_accuracy": result.student.exact_match if result else None,
            "teacher_accuracy": result.teacher.exact_match if result and result.teacher else None,
            "goal": v["goal"].model_dump(mode="json") if v.get("goal") else None,
            "adaptations": v.get("adaptations") or [],
            "endpoint": {"base_url": dep.base_url, "model": dep.model} if dep else None,
            "endpoint_p95_ms": dep.load_test.p95_ms if dep and dep.load_test else None,
            "plan_p95_ms": plan.chosen.p95_ms if plan and plan.chosen else None,
            "report": (v.get("report") or {}).get("html"),
            "approvals_auto_skipped": v.get("auto_approve", False),
            "run_dir": v.get("run_dir"),
            "error": self.error,
        }

    def done(self) -> list[str]:
        """The finished stages, in lifecycle order."""
        return [slot for slot in lifecycle_stages() if self.values.get(slot) is not None]


def lifecycle_stages() -> tuple[str, ...]:
    from stratos_agent.graphs.adapters import default_toolset

    return default_toolset().stages()


@dataclass
class AgentSession:
    """One thread of the agent graph, with its checkpointer opened per call."""

    thread_id: str
    runs_dir: Path = field(default_factory=lambda: get_settings().runs_dir)
    checkpoint: str | None = None  # URL; None = SQLite in the run folder (or STRATOS_CHECKPOINT_URL)
    graph_kwargs: dict[str, Any] = field(default_factory=dict)  # planner, toolset, spec_model, ...
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # (node, update) after each step

    def __post_init__(self) -> None:
        # every entry point builds a session: a thread id never names a folder outside the runs dir
        check_name(self.thread_id, "thread id")

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.thread_id

    @property
    def config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.thread_id}}

    @contextmanager
    def graph(self) -> Iterator[Any]:
        from stratos_agent.graphs.graph import build_graph

        with open_checkpointer(self.run_dir, self.checkpoint) as saver:
            yield build_graph(saver, **self.graph_kwargs)

    def exists(self) -> bool:
        return (self.run_dir / RUN_INFO).is_file()

    def start(
        self,
        request: str | None = None,
        spec: DistillationSpec | dict | None = None,
        auto_approve: bool = False,
        deploy_anyway: bool = False,
    ) -> RunOutcome:
        if request is None and spec is None:
            raise InputError("a run needs a request text or a spec")
        # Shape and values only (one InputError, never pydantic's traceback); what the spec names (clouds,
        # models, files) is checked by the intake, which asks instead of failing.
        spec_record = validated_spec(spec, "spec", lookups=False) if spec is not None else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._exclusive():  # checked under the lock: two processes cannot both start the thread
            if self.exists():
                raise InputError(f"run {self.thread_id} already exists in {self.run_dir}; use `stratos resume`")
            return self._start(request, spec_record, auto_approve, deploy_anyway)

    def _start(self, request: str | None, spec_record: DistillationSpec | None, auto_approve: bool,
               deploy_anyway: bool) -> RunOutcome:
        url = checkpoint_url(self.checkpoint)
        info = {
            "thread_id": self.thread_id,
            "request": request or (spec_record.request if spec_record else None),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "checkpoint": "postgres" if is_postgres(url) else "sqlite",
            "auto_approve": auto_approve,
        }
        write_text_atomic(self.run_dir / RUN_INFO, json.dumps(info, indent=1))
        state = initial_state(self.thread_id, str(self.run_dir), request or "", spec_record, auto_approve,
                              deploy_anyway)
        return self._invoke(state)

    def resume(self, answer: Any = None) -> RunOutcome:
        """Continue after a crash (answer None) or answer the pending interrupt."""
        self._require()
        with self._exclusive():
            return self._resume(answer)

    def _resume(self, answer: Any) -> RunOutcome:
        snapshot = self.outcome()
        if answer is None and snapshot.interrupt is not None:
            return snapshot  # still waiting for a human: nothing to do without an answer
        if answer is not None and snapshot.interrupt is None:
            raise InputError(f"run {self.thread_id} is not waiting for an answer (status {snapshot.status})")
        if answer is None and not snapshot.next_nodes:
            if snapshot.status in ("failed", "paused"):  # try again: a new message resets the retry counts
                return self._invoke({"inbox": "continue: retry the step that failed"})
            return snapshot  # finished
        return self._invoke(None if answer is None else Command(resume=answer))

    def send(self, text: str) -> RunOutcome:
        """A chat message: a question, a constraint change or 'continue'; it answers a waiting interrupt."""
        self._require()
        with self._exclusive():
            if self.outcome().interrupt is not None:
                return self._invoke(Command(resume=text))
            return self._invoke({"inbox": text})

    def edit(self, changes: dict[str, Any]) -> RunOutcome:
        """Change the spec of a stopped run (failed, paused, done) and let it plan again."""
        self._require()
        note = ", ".join(f"{k}={v}" for k, v in changes.items())
        with self._exclusive():
            return self._invoke({"inbox": f"edit the spec: {note}", "inbox_edits": changes})

    def outcome(self) -> RunOutcome:
        with self.graph() as graph:
            return self._outcome(graph)

    def _require(self) -> None:
        if not self.exists():
            raise InputError(f"no run {self.thread_id!r} in {self.runs_dir} (see `stratos runs`)")

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One process works on a thread at a time; a second is refused, naming the first."""
        with exclusive(self.run_dir / LOCK_FILE, f"run {self.thread_id}"):
            yield

    def _invoke(self, payload: Any) -> RunOutcome:
        """Stream the graph from `payload`. An error escaping it (disk full, a bug) is recorded in run.json,
        so `status` says failed and why; the checkpoint still holds every finished step, and `resume`
        re-runs the step that stopped."""
        self._note_error(None)
        try:
            with self.graph() as graph:
                # durability="sync": each step's checkpoint is on disk before the next step starts, so a
                # kill -9 mid-stage resumes from that stage, never from before an approval it already passed
                for chunk in graph.stream(payload, self.config, stream_mode="updates", durability="sync"):
                    for node, update in chunk.items():
                        if self.on_event and node != "__interrupt__":
                            self.on_event(node, update if isinstance(update, dict) else {})
                return self._outcome(graph)
        except GraphRecursionError as exc:  # a backstop: the graph's call limits end a run well before this
            self._note_error(f"step limit reached ({exc})")
            with self.graph() as graph:
                return self._outcome(graph)
        except Exception as exc:
            message = storage_problem(exc)
            self._note_error(message or f"{type(exc).__name__}: {exc}")
            if message is None:
                raise
            raise ResourceError(
                f"run {self.thread_id} stopped: {message}. Finished stages are kept; when the disk is fixed, "
                f"continue with `stratos resume {self.thread_id}`"
            ) from exc

    def _info(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / RUN_INFO).read_text())
        except (OSError, ValueError):
            return {}

    def _note_error(self, message: str | None) -> None:
        """Record (or clear) why the run stopped, in run.json. Best effort: on a full disk this write may
        fail too, and then the checkpoint alone says the run is interrupted."""
        info = self._info()
        if not info or info.get("error") == message:
            return
        info["error"] = message
        try:
            write_text_atomic(self.run_dir / RUN_INFO, json.dumps(info, indent=1))
        except OSError:
            pass

    def _running_elsewhere(self) -> bool:
        holder = live_holder(self.run_dir / LOCK_FILE)
        return holder is not None and holder != os.getpid()

    def _outcome(self, graph: Any) -> RunOutcome:
        snap = graph.get_state(self.config)
        values = dict(snap.values or {})
        interrupts = [i.value for task in snap.tasks for i in (task.interrupts or ())]
        status = values.get("status", "new")
        error = None
        if interrupts:
            status = "needs_input" if interrupts[0].get("gate") == "clarify" else "awaiting_approval"
        elif snap.next or snap.tasks:
            # stopped mid-run (`stratos resume` continues it), unless a live process is on it: failed if an
            # error stopped it, interrupted if it was killed
            if self._running_elsewhere():
                status = "running"
            else:
                error = self._info().get("error")
                status = "failed" if error else "interrupted"
        # A step whose writes were saved but whose successor checkpoint was not (a kill in between) shows
        # no `next`, only tasks with writes: the run is not finished, `resume` continues it.
        pending = tuple(snap.next) or tuple(t.name for t in snap.tasks)
        return RunOutcome(self.thread_id, status, values, interrupts[0] if interrupts else None, pending, error)


def storage_problem(exc: BaseException) -> str | None:
    """What went wrong with the disk, in words, or None when `exc` is not a storage error."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in ("disk is full", "disk I/O")):
        return f"the checkpoint database could not be written ({exc})"
    return None


def list_runs(runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """Every run folder with its info and the stages it finished (read from its checkpoint)."""
    runs_dir = runs_dir or get_settings().runs_dir
    rows = []
    for info_path in sorted(runs_dir.glob(f"*/{RUN_INFO}")):
        info = json.loads(info_path.read_text())
        try:
            outcome = AgentSession(info["thread_id"], runs_dir=runs_dir).outcome()
            info.update(status=outcome.status, done=outcome.done())
        except Exception as exc:  # noqa: BLE001 - one unreadable run must not hide the others
            info.update(status=f"unreadable ({type(exc).__name__})", done=[])
        rows.append(info)
    return rows
