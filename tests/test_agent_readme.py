"""The README's Python API example, executed for real (slow: it synthesises, trains, evaluates, deploys).

The code is taken from the first ```python block of README.md that calls `build_graph`; until the README
carries it, the same text below (`EXAMPLE`, handed to the lead for the README) runs instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = """
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from stratos_agent import DistillationSpec, build_graph

spec = DistillationSpec(task="mahjong", constraints={"budget_usd": 20})
with SqliteSaver.from_conn_string("stratos-example.sqlite") as saver:
    graph = build_graph(saver)  # the embedded rule planner and the real tools
    config = {"configurable": {"thread_id": "readme-example"}}
    result = graph.invoke({"spec": spec}, config)
    while "__interrupt__" in result:  # the plan gate, then the deployment gate
        gate = result["__interrupt__"][0].value
        print(gate["gate"], gate.get("plan") or gate.get("eval"))
        result = graph.invoke(Command(resume="approve"), config)
    print(result["status"], result["deployment"]["base_url"], result["report"]["html"])
"""


def readme_example() -> str:
    readme = ROOT / "README.md"
    if readme.is_file():
        for block in re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.DOTALL):
            if "build_graph" in block:
                return block
    return EXAMPLE


@pytest.mark.slow
def test_readme_python_example_runs(
    tmp_path: Path, runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for key, value in {
        "STRATOS_LOCAL_SYNTH_N": "400",
        "STRATOS_LOCAL_TRAIN_MINUTES": "0.3",
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
