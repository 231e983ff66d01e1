"""The graph checkpointed in a real PostgreSQL server (the `postgres` extra).

`.ci/run` starts the server with tests/support/start_postgres.sh; when run elsewhere this test starts it
itself (and stops it after). It skips only when the server cannot start, printing the reason.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from test_agent_graph import REQUEST, doubles, session

SCRIPT = Path(__file__).parent / "support" / "start_postgres.sh"
BASE = Path(os.environ.get("STRATOS_TEST_PG_DIR", "/tmp/stratos-test-postgres"))


@pytest.fixture(scope="module")
def postgres_url():
    url_file = BASE / "url"
    started_here = False
    if not url_file.is_file():
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["unknown reason"]
            print(f"postgres could not start: {reason[0]}")
            pytest.skip(f"PostgreSQL server could not start: {reason[0]}")
        started_here = True
    yield url_file.read_text().strip()
    if started_here:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120, check=False)


def test_run_is_durable_in_postgres(runs_dir: Path, postgres_url: str) -> None:
    thread = f"pg-{uuid.uuid4().hex[:8]}"
    runners = doubles()
    first = session(runs_dir, runners, thread=thread)
    first.checkpoint = postgres_url
    out = first.start(REQUEST)
    assert out.interrupt["gate"] == "plan"
    assert not (first.run_dir / "checkpoints.sqlite").exists()  # the state went to Postgres

    second = session(runs_dir, runners, thread=thread)  # as another process would: only the thread id
    second.checkpoint = postgres_url
    assert second.outcome().interrupt["gate"] == "plan"
    out = second.resume("approve")
    out = second.resume("approve")
    assert out.status == "done" and runners["train_student"].calls == 1

    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s", (thread,)).fetchone()
    assert rows[0] > 5
