"""`stratos` command line: one module per area registers its commands on the shared app."""

from __future__ import annotations

import importlib
import sys

from rich.markup import escape

from stratos_agent.cli.app import app, err_console
from stratos_agent.errors import StratosError
from stratos_agent.redact import redact_text

# Each module registers its commands on `app` when imported.
_COMMAND_MODULES = ("doctor", "task", "synth", "train", "evaluate", "plan", "serve", "agent")


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(f"stratos_agent.cli.{name}")


def main() -> None:
    """Console-script entry point: user-facing errors become one clean line (credentials redacted), never a
    traceback."""
    _register_commands()
    try:
        app()  # standalone mode: click prints usage errors itself and exits
    except StratosError as exc:
        err_console.print(f"[bold red]error:[/] {escape(redact_text(str(exc)))}", soft_wrap=True)  # one line
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]
