"""Mahjong task pack speed: our solver vs the `mahjong` package, and the full item pipeline.

    .venv/bin/python evals/bench_tasks.py [--n 20000]

A: our `winning_tiles` (per-suit memoised); B: the `mahjong` package (Agari per candidate tile,
confirmed by regular-hand shanten) on the SAME hands -> speed ratio. Then items/s of the whole
synthesis path on one core: sample (known answer) + prompt + `steps` rationale + self-score.
With --tokens, also SmolLM2-135M token counts of the prompt in each hand notation and of each
rationale style (even 0-9 wait mix), using the bundled model's tokenizer.
Prints and saves evals/results/bench_tasks.json (or --out).
"""

from __future__ import annotations

import os
import random
import time

from _common import add_out, machine_info, make_parser, save_json, timed

from stratos_agent.tasks import EVEN, get_task_pack, mahjong_solver
from stratos_agent.tasks.mahjong import natural_tenpai, noten_hand
from stratos_agent.tasks.mahjong_solver import reference_winning_tiles, winning_tiles


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1)


def pipeline_rate(n: int, distribution: str | None, style: str) -> float:
    pack = get_task_pack("mahjong")
    pack.sample(10, seed=0, distribution=EVEN)  # build one-time tables outside the timing
    start = time.perf_counter()
    items = pack.sample(n, seed=1, distribution=distribution)
    for item in items:
        pack.render_prompt(item)
        assert pack.score(item, pack.solver_rationale(item, style))["exact"]
    return rate(n, time.perf_counter() - start)


def token_counts(n: int) -> dict[str, dict[str, float]]:
    """Mean / max SmolLM2 tokens per prompt notation and per rationale style on an even mix."""
    from transformers import AutoTokenizer

    from stratos_agent.models import local_model_path
    from stratos_agent.tasks.mahjong import NOTATIONS, MahjongPack

    tokenizer = AutoTokenizer.from_pretrained(local_model_path("smollm2-135m"))

    def stats(texts: list[str]) -> dict[str, float]:
        lengths = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        return {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)}

    out = {}
    for notation in NOTATIONS:
        pack = MahjongPack(notation=notation)
        items = pack.sample(n, seed=2, distribution=EVEN)
        out[f"prompt_{notation}"] = stats([pack.render_prompt(it) for it in items])
        out[f"hand_only_{notation}"] = stats([pack.render_hand(it) for it in items])
    for style in pack.rationale_styles:
        out[f"rationale_{style}"] = stats([pack.solver_rationale(it, style) for it in items])
    return out


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="hands per measurement")
    parser.add_argument("--tokens", action="store_true", help="also count SmolLM2 tokens (loads its tokenizer)")
    add_out(parser, "bench_tasks.json")
    args = parser.parse_args()

    rng = random.Random(0)
    hands = [natural_tenpai(rng) if i % 2 else noten_hand(rng) for i in range(args.n)]
    mahjong_solver._suit_state.cache_clear()  # cold caches: the memo building is part of the cost
    mahjong_solver._decomposable.cache_clear()
    ours_s, ours = timed(lambda: [winning_tiles(h) for h in hands])
    theirs_s, theirs = timed(lambda: [reference_winning_tiles(h) for h in hands])
    result = {
        "hands": args.n,
        "cpu": os.cpu_count(),
        "disagreements": sum(a != b for a, b in zip(ours, theirs, strict=True)),
        "solver_hands_per_s": {"ours": rate(args.n, ours_s), "mahjong_package": rate(args.n, theirs_s)},
        "solver_speedup": round(theirs_s / ours_s, 1),
        "pipeline_items_per_s_one_core": {
            "natural_steps": pipeline_rate(args.n // 4, None, "steps"),
            "even_steps": pipeline_rate(args.n // 4, EVEN, "steps"),
            "even_search": pipeline_rate(args.n // 4, EVEN, "search"),
            "even_answer": pipeline_rate(args.n // 4, EVEN, "answer"),
        },
    }
    if args.tokens:
        result["smollm2_tokens"] = token_counts(1000)
    result["machine"] = machine_info()
    save_json(result, args.out, indent=2, echo=True)


if __name__ == "__main__":
    main()
