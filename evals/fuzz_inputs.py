"""Fuzz the input paths (requests, --edit values, YAML specs, JSONL datasets, CLI arguments) and report
"Fuzz cases: N tried, T tracebacks, M silent misreads".

Runs tests/test_hardening_fuzz.py (the same cases the default test suite runs) and saves its tally, the
per-kind counts and the wall time beside the machine facts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_out, machine_info, make_parser, save_json

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = make_parser(__doc__)
    add_out(parser, "fuzz_inputs.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tally_path = Path(tmp) / "tally.json"
        env = {**os.environ, "STRATOS_FUZZ_REPORT": str(tally_path), "STRATOS_THREADS": "1"}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_hardening_fuzz.py", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
        seconds = time.perf_counter() - start
        tally = json.loads(tally_path.read_text()) if tally_path.is_file() else {}
    print(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:])
    print(tally.get("summary", "no tally written (the suite did not finish)"))
    save_json(machine_info(**tally, pytest_exit_code=proc.returncode, seconds=round(seconds, 1)), args.out)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
