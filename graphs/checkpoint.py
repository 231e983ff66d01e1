"""Checkpointers: SQLite in the run folder by default, PostgreSQL when a URL is given.

Why per-run SQLite: a run folder then holds everything about the run (artifacts, logs, checkpoints) and
can be copied or deleted as one; Postgres is for many users/runs on one server (`postgres` extra).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stratos_agent.errors import InputError, ServiceError

CHECKPOINT_FILE = "checkpoints.sqlite"
URL_ENV = "STRATOS_CHECKPOINT_URL"


def checkpoint_url(url: str | None = None) -> str | None:
    return url or os.environ.get(URL_ENV) or None


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in {"postgres", "postgresql", "postgresql+psycopg"}


STORED_ERROR = "stratos-error"  # type tag of a stored exception (its repr, as text)


class StoredError(Exception):
    """The error of a failed step as a checkpoint keeps it: its repr, never the object.

    A run stopped inside a node's error handler (e.g. the disk filled up while it logged) re-runs that
    handler on resume with the stored error. LangGraph would revive it as a bare string, which the
    handler cannot format as an exception; this one it can."""


def record_serde() -> Any:
    """LangGraph's serializer, allowed to revive exactly the state's record classes (and its own safe
    types): a checkpoint can never make the agent import anything else. Errors come back as StoredError."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from stratos_agent.state import RECORD_TYPES

    class RecordSerde(JsonPlusSerializer):
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            if isinstance(obj, BaseException):
                return STORED_ERROR, repr(obj).encode()
            return super().dumps_typed(obj)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            if data[0] == STORED_ERROR:
                return StoredError(data[1].decode())
            return super().loads_typed(data)

    return RecordSerde(allowed_msgpack_modules=[(c.__module__, c.__name__) for c in RECORD_TYPES])


@contextmanager
def open_checkpointer(run_dir: Path, url: str | None = None) -> Iterator[Any]:
    """A ready LangGraph saver: Postgres for a postgres:// URL, else SQLite (`run_dir/checkpoints.sqlite`)."""
    url = checkpoint_url(url)
    if is_postgres(url):
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError as exc:
            raise InputError(
                "a Postgres checkpoint URL needs the `postgres` extra: pip install 'stratos-agent[postgres]'"
            ) from exc
        import psycopg

        try:
            with PostgresSaver.from_conn_string(url.replace("postgresql+psycopg", "postgresql")) as saver:
                saver.serde = record_serde()
                saver.setup()
                yield saver
        except psycopg.OperationalError as exc:
            raise ServiceError(f"cannot reach the Postgres checkpoint database: {exc}".strip()) from exc
        return
    if url and not url.startswith("sqlite:///"):
        raise InputError(f"checkpoint URL {url!r} is neither postgres://... nor sqlite:///PATH")
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(url[len("sqlite:///") :]) if url else run_dir / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    try:
        saver = SqliteSaver(conn, serde=record_serde())
        saver.setup()
        yield saver
    finally:
        conn.close()
