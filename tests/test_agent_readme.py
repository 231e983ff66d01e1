"""The README's Python API example, executed for real (slow: it synthesises, trains, evaluates, deploys).

The code is the first ```python block of README.md that calls `build_graph`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        if "build_graph" in block:
            return block
    raise AssertionError("README.md has no ```python block calling build_graph")


def test_readme_carries_the_python_example() -> None:
    assert "graph.invoke" in readme_example()


@pytest.mark.slow
def test_readme_python_example_runs(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for key, value in {
        "STRATOS_LOCAL_SYNTH_N": "400",
        "STRATOS_LOCAL_EVAL_N": "8",
        "STRATOS_LOCAL_PROBE_N": "2",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102
        printed = capsys.readouterr().out
        assert re.search(r"^plan ", printed, re.MULTILINE)
        assert re.search(r"^done http://127\.0\.0\.1:\d+/v1 ", printed, re.MULTILINE)
        assert (tmp_path / "stratos-example.sqlite").is_file()
    finally:
        from stratos_agent.tools import deploy

        deploy.stop("readme-example")
