"""The wheel (not only the editable install) must carry every module and every prompt file.

Builds the wheel, installs it with --no-deps into a fresh venv that sees the project's dependencies
through a .pth path entry (but not the editable finder), and imports every module from there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, json, pkgutil, sys
from importlib import resources
import stratos_agent
from stratos_agent.prompts import load_prompt

site = sys.argv[1]
names, outside = [], []
for info in pkgutil.walk_packages(stratos_agent.__path__, "stratos_agent."):
    module = importlib.import_module(info.name)
    names.append(info.name)
    if not str(getattr(module, "__file__", "")).startswith(site):
        outside.append(info.name)
prompts = [p.name for p in resources.files("stratos_agent.prompts").iterdir() if p.name.endswith(".txt")]
for p in prompts:
    assert load_prompt(p[:-4]).strip(), p
print(json.dumps({"modules": names, "outside": outside, "prompts": prompts}))
"""


def _source_modules() -> set[str]:
    """Every module the source tree defines, named as installed."""
    mapping = {"stratos_agent": "stratos_agent", "tools": "stratos_agent.tools",
               "graphs": "stratos_agent.graphs", "prompts": "stratos_agent.prompts"}
    found = set()
    for folder, package in mapping.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.add(".".join([package, *parts]))
    return found


def test_wheel_installs_every_module_and_prompt(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir),
         str(ROOT)],
        check=True,
    )
    wheel = next(wheel_dir.glob("stratos_agent-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Dependencies come from the project venv as a plain path: its editable finder .pth is not run.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True)
    out = subprocess.run([str(python), "-c", CHECK, str(site)], check=True, capture_output=True, text=True,
                         cwd=tmp_path)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outside"] == [], f"imported from outside the wheel: {result['outside']}"
    missing = _source_modules() - set(result["modules"]) - {"stratos_agent"}
    assert not missing, f"modules in the source tree but not in the wheel: {sorted(missing)}"
    source_prompts = {p.name for p in (ROOT / "prompts").glob("*.txt")}
    assert source_prompts <= set(result["prompts"]), "prompt files missing from the wheel"


def test_console_script_help() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "stratos"), "--help"], check=False, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "stratos" in out.stdout.lower()
