"""A visible, timed step for slow model operations (conversion, layer dropping)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


@contextmanager
def step(label: str) -> Iterator[None]:
    """Show `label` with a spinner and elapsed time on stderr while the block runs."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(label, total=1)
        yield
        progress.update(task, completed=1)
