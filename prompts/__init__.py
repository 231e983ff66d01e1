"""Prompt templates as text files, loaded by name."""

from __future__ import annotations

from importlib import resources


def load_prompt(name: str) -> str:
    """Return the text of `prompts/<name>.txt` (or `.md`) from the installed package."""
    base = resources.files(__name__)
    for suffix in (".txt", ".md"):
        candidate = base / f"{name}{suffix}"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    available = sorted(p.name for p in base.iterdir() if p.name.endswith((".txt", ".md")))
    raise FileNotFoundError(f"no prompt named {name!r}; available: {', '.join(available) or 'none'}")
