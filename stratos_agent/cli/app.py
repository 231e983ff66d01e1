"""The typer application every command module registers on.

Command modules import heavy libraries (torch, transformers, LangGraph) inside their functions so
that `stratos --help` stays instant.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="stratos",
    help=(
        "Stratos: turn a plain request into a distilled, evaluated and deployed small LLM.\n\n"
        "Start with `stratos doctor` (what this machine can do), then\n"
        "`stratos run \"a model that lists Mahjong winning tiles, under $20, p95 under 300 ms\" --yes`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

console = Console()
err_console = Console(stderr=True)


@app.command()
def version() -> None:
    """Print the Stratos version."""
    from stratos_agent import __version__

    console.print(__version__)
