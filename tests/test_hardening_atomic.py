"""Issue 13, concurrency and durability: every persistent write is temp + fsync + rename with a unique temp
name, and a folder's old version is never deleted before the new one is complete."""

from __future__ import annotations

import ast
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from rich.console import Console

from stratos_agent import files
from stratos_agent.tasks.base import write_rows

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("stratos_agent", "tools", "graphs")
FIXED_TEMP = re.compile(r"""\.tmp["']""")  # ".tmp" closing a literal: `with_suffix(".tmp")`, `name + ".tmp"`


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _call_name(call: ast.Call) -> str | None:
    """`rmtree` for shutil.rmtree; `rename` for os.rename / os.replace / Path.rename / Path.replace (one
    argument: str.replace takes two); None otherwise."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr == "rmtree":
        return "rmtree"
    is_os = isinstance(func.value, ast.Name) and func.value.id == "os"
    if func.attr == "rename" or (func.attr == "replace" and (is_os or len(call.args) == 1)):
        return "rename"
    return None


def _rmtree_before_rename(tree: ast.AST) -> list[str]:
    """Functions that delete a folder and then rename something in: the delete-then-swap pattern."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            calls = sorted(
                (node.lineno, name) for node in ast.walk(fn)
                if isinstance(node, ast.Call) and (name := _call_name(node))
            )
            rmtrees = [line for line, name in calls if name == "rmtree"]
            if rmtrees and any(name == "rename" and line > rmtrees[0] for line, name in calls):
                found.append(f"{fn.name}:{rmtrees[0]}")
    return found


def test_the_scan_catches_the_old_patterns() -> None:
    """The checks below can fail: the code they replaced trips both."""
    old = '''
import shutil
def _atomic_save(target, model):
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
def fine(path, text):
    shutil.rmtree(path)
    return text.replace("a", "b")
'''
    assert FIXED_TEMP.search(old)
    assert _rmtree_before_rename(ast.parse(old)) == ["_atomic_save:5"]


def test_no_fixed_name_temp_files_in_the_source_tree() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FIXED_TEMP.search(line.split("#", 1)[0])
    ]
    assert hits == [], "use stratos_agent.files (unique temp names):\n" + "\n".join(hits)


def test_no_folder_is_deleted_before_its_replacement_is_renamed_in() -> None:
    hits = [
        f"{path.relative_to(ROOT)}: {where}"
        for path in _sources()
        for where in _rmtree_before_rename(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert hits == [], "use stratos_agent.files.replace_folder / build_folder:\n" + "\n".join(hits)


class _Model:
    def __init__(self, weights: str) -> None:
        self.weights = weights

    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)  # as transformers does
        Path(folder, "weights.bin").write_text(self.weights)


class _Tokenizer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_pretrained(self, folder: Path) -> None:
        if self.fail:  # the disk fills up (or the process is killed) halfway through the save
            raise OSError(28, "No space left on device")
        Path(folder, "tokenizer.json").write_text("{}")


def _train_save(target: Path, model: _Model, tokenizer: _Tokenizer) -> Path:
    from stratos_agent.tools.train import _atomic_save

    return _atomic_save(target, model, tokenizer)


def _micro_save(target: Path, model: _Model, tokenizer: _Tokenizer) -> Path:
    from stratos_agent.tools.micro_student import save_folder

    return save_folder(target, model, tokenizer, base_dir=target.parent)  # no task file: a plain HF folder


@pytest.mark.parametrize("save", [_train_save, _micro_save], ids=["train", "micro_student"])
def test_a_failed_second_save_leaves_the_first_model_intact(
    tmp_path: Path, save: Callable[[Path, _Model, _Tokenizer], Path]
) -> None:
    target = tmp_path / "model"
    save(target, _Model("first"), _Tokenizer())
    with pytest.raises(OSError, match="No space left"):
        save(target, _Model("second"), _Tokenizer(fail=True))
    assert (target / "weights.bin").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the half-written copy is gone too
    save(target, _Model("third"), _Tokenizer())
    assert (target / "weights.bin").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("save", [_train_save, _micro_save], ids=["train", "micro_student"])
def test_a_swap_that_fails_keeps_the_first_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save: Callable[[Path, _Model, _Tokenizer], Path]
) -> None:
    """The rename that puts the new folder in fails (a kill there is the same moment): the old version must
    still be there, not deleted beforehand."""
    target = tmp_path / "model"
    save(target, _Model("first"), _Tokenizer())
    armed = [True]

    def fail_once(rename: Callable[..., object]) -> Callable[..., object]:
        def wrapped(src: object, dst: object) -> object:
            if armed[0] and Path(dst) == target:
                armed[0] = False
                raise OSError(5, "Input/output error")
            return rename(src, dst)
        return wrapped

    monkeypatch.setattr(os, "replace", fail_once(os.replace))
    monkeypatch.setattr(Path, "rename", fail_once(Path.rename))
    with pytest.raises(OSError, match="Input/output"):
        save(target, _Model("second"), _Tokenizer())
    assert (target / "weights.bin").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_streamed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    write_rows(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_rows(path, rows())
    assert path.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_write_text_new_never_overwrites(tmp_path: Path) -> None:
    path = files.write_text_new(tmp_path / "curve.json", "one")
    with pytest.raises(FileExistsError):
        files.write_text_new(path, "two")
    assert path.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.json"]


def test_temp_names_are_unique_per_writer(tmp_path: Path) -> None:
    target = tmp_path / "student.json"
    assert files.temp_sibling(target) != files.temp_sibling(target)


def test_log_failure_accepts_a_stored_string_error(tmp_path: Path) -> None:
    from stratos_agent.graphs.nodes import log_failure

    log_failure(tmp_path, "train_student", "OSError: No space left on device")
    log_failure(tmp_path, "eval_student", ValueError("bad"))
    text = (tmp_path / "agent.log").read_text()
    assert "train_student failed: OSError: No space left on device\n" in text
    assert "eval_student failed: ValueError: bad\n" in text and "Traceback" not in text.split("eval_student")[0]


def test_a_failed_run_prints_its_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from stratos_agent.graphs.session import RunOutcome

    from stratos_agent.cli import agent

    out = io.StringIO()
    monkeypatch.setattr(agent, "console", Console(file=out, width=200))
    outcome = RunOutcome("t-1", "failed", {}, error="disk full: /runs/t-1 (No space left on device)")
    with pytest.raises(typer.Exit) as exit_info:
        agent._finish(outcome, as_json=False)
    assert exit_info.value.exit_code == 1
    assert "error: disk full: /runs/t-1 (No space left on device)" in out.getvalue()
