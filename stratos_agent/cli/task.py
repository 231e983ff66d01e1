"""`stratos task ...`: inspect task packs, sample items, solve a hand, check a labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stratos_agent.cli.app import app, console

task_app = typer.Typer(
    help=(
        "Task packs: the domain of a distillation job (sampling with known answers, prompts, "
        "solver rationales, scoring).\n\n"
        "Example: `stratos task check mahjong bench.jsonl`"
    ),
    no_args_is_help=True,
)
app.add_typer(task_app, name="task")


@task_app.command("list")
def list_tasks() -> None:
    """List the registered task packs with their rationale styles and difficulty buckets."""
    from rich.table import Table

    from stratos_agent.tasks import TASK_PACKS, pack_class

    table = Table("task", "description", "rationale styles", "difficulty buckets")
    for name in sorted(TASK_PACKS):
        cls = pack_class(name)
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        buckets = ", ".join(map(str, cls.difficulty_buckets)) or "from the data"
        table.add_row(name, summary, ", ".join(cls.rationale_styles), buckets)
    console.print(table)


@task_app.command()
def sample(
    task: Annotated[str, typer.Argument(help="Task pack name, e.g. `mahjong` (see `stratos task list`).")],
    n: Annotated[int, typer.Option("--n", help="Number of items.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same items).")] = 0,
    even: Annotated[bool, typer.Option(help="Same number of items in every difficulty bucket "
                                       "(Mahjong: 0-9 winning tiles).")] = False,
    unique: Annotated[bool, typer.Option(help="No two items with the same canonical key.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the pack's public JSONL here instead of printing.")] = None,
    style: Annotated[str | None, typer.Option(help="When printing: show this solver rationale style "
                                              "(mahjong: steps, answer, search).")] = None,
) -> None:
    """Sample items whose answers are known by construction.

    Example: `stratos task sample mahjong --n 500 --even --out holdout.jsonl --seed 7`
    """
    from stratos_agent.errors import InputError
    from stratos_agent.tasks import EVEN, get_task_pack

    pack = get_task_pack(task)
    items = pack.sample(n, seed=seed, distribution=EVEN if even else None, unique=unique)
    if out is not None:
        try:
            rows = pack.write_jsonl(items, out)
        except OSError as exc:  # a folder, a read-only place, a full disk: the user's path, not a bug
            raise InputError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
        console.print(f"wrote {rows} {task} items to {out}")
        return
    for item in items:
        console.print(pack.render_prompt(item), markup=False, soft_wrap=True)
        console.print(pack.solver_rationale(item, style) if style else pack.format_answer(item.answer),
                      markup=False, soft_wrap=True)
        console.print()


@task_app.command()
def solve(
    hand: Annotated[str, typer.Argument(help="13 tiles, compact (`1112345678999m`) or Unicode symbols.")],
    style: Annotated[str, typer.Option(help="Rationale style: steps, search or answer.")] = "steps",
) -> None:
    """List the winning tiles of a 13-tile Mahjong hand, with the melds + pair each one makes.

    Example: `stratos task solve 1112345678999m`
    """
    from stratos_agent.errors import InputError
    from stratos_agent.tasks.mahjong import MahjongPack
    from stratos_agent.tasks.tiles import NotationError, parse_compact, parse_unicode, to_counts

    try:
        tiles = parse_unicode(hand) if any(ord(ch) > 0x1F000 - 1 for ch in hand) else parse_compact(hand)
    except NotationError as exc:
        raise InputError(f"cannot read hand {hand!r}: {exc}") from None
    pack = MahjongPack()
    console.print(pack.solver_rationale(pack.make_item(to_counts(tiles)), style), markup=False, soft_wrap=True)


@task_app.command()
def check(
    task: Annotated[str, typer.Argument(help="Task pack name (a pack with a solver, e.g. `mahjong`).")],
    file: Annotated[Path, typer.Argument(help="JSONL in the pack's public format, e.g. "
                                         '`{"hand": [13 tiles], "winning_tiles": [...]}` per line.')],
    show: Annotated[int, typer.Option(help="How many disagreements to print.")] = 10,
) -> None:
    """Re-label a public-format file with our solver and report agreement.

    Prints `agree N/M`, then the first disagreements; exits 0 only when every row agrees.
    Example: `stratos task check mahjong mahjong_winning_tiles.jsonl`
    """
    from rich.progress import track

    from stratos_agent.errors import InputError
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack(task)
    relabel = getattr(pack, "relabel", None)
    if relabel is None:
        raise InputError(f"task {task!r} has no solver to re-label with")
    items = pack.read_jsonl(file)
    if not items:
        raise InputError(f"{file}: no rows to check")
    bad = []
    for item in track(items, description="re-labelling", console=console, transient=True):
        solved = relabel(item)
        if solved.answer != item.answer:
            bad.append((item, solved))
    console.print(f"agree {len(items) - len(bad)}/{len(items)}")
    for item, solved in bad[:show]:
        console.print(
            f"{item.meta.get('source', '?')}: {' '.join(f'{k}={v}' for k, v in item.question.items())}: file says "
            f"{pack.format_answer(item.answer)!r}, solver says {pack.format_answer(solved.answer)!r}",
            markup=False,
            soft_wrap=True,
        )
    if bad:
        raise typer.Exit(1)
