"""The request shape of a task as a student sees it: prompt tokens (chat-formatted) and answer tokens.

The planner models latency at this shape, not at spec defaults: a Mahjong prompt is ~31 tokens and its
answer ~11 in SmolLM2's tokenizer, not 96 and 48. Each candidate student has its own shape: a micro
student reads the pack's short prompt in its task tokenizer (~24 tokens in, ~7 out), so its latency is
measured and modelled at that shape, not at its teacher's. The latency probe forces its answers to the
whole distribution of answer lengths (`answer_lengths`), not to one figure of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from stratos_agent.tools.train import CHATML

from stratos_agent.models import local_model_path
from stratos_agent.models.micro import pack_for_model
from stratos_agent.records.servers import RequestShape
from stratos_agent.tasks.recipes import recipe_for

SHAPE_SAMPLE = 64


@lru_cache(maxsize=32)
def _token_counts(task: str, n: int, tokenizer_model: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(prompt tokens, answer tokens + 1 end token) of `n` sampled items, and the pack's name, in the prompt
    variant and tokenizer of `tokenizer_model` (a micro student: its task pack's own prompt, template and
    answer notation; any other model: the recipe's student prompt in ChatML with the solver's answer)."""
    from transformers import AutoTokenizer

    recipe = recipe_for(task)
    folder = local_model_path(tokenizer_model)
    tok = AutoTokenizer.from_pretrained(folder)
    micro_pack = pack_for_model(folder)
    pack = micro_pack or recipe.pack(task, "student")
    template = None if micro_pack else CHATML  # a micro student ships the chat template it was trained on
    items = pack.sample(n, seed=7)
    prompts = tuple(
        len(tok(tok.apply_chat_template(pack.chat_messages(it), chat_template=template,
                                        add_generation_prompt=True, tokenize=False),
                add_special_tokens=False)["input_ids"])
        for it in items
    )
    answer = (lambda it: pack.format_answer(it.answer)) if micro_pack else (
        lambda it: pack.solver_rationale(it, recipe.style))
    # +1: the end token is generated (and counted as a completion token) like any other
    answers = tuple(len(tok(answer(it), add_special_tokens=False)["input_ids"]) + 1 for it in items)
    return prompts, answers, pack.name


def answer_lengths(task: str, n: int = SHAPE_SAMPLE, tokenizer_model: str = "smollm2-135m") -> list[int]:
    """Completion tokens (answer + end token) of each of `n` sampled items as `tokenizer_model` answers them,
    in sample order: the distribution the latency probe forces its answers to."""
    return list(_token_counts(task, n, tokenizer_model)[1])


def answer_p95(lengths: Sequence[int]) -> int:
    """The 95th-percentile answer length (nearest rank below): the figure the roofline models a request at."""
    ordered = sorted(lengths)
    return ordered[int(0.95 * (len(ordered) - 1))]


def task_shape(task: str, n: int = SHAPE_SAMPLE, tokenizer_model: str = "smollm2-135m") -> RequestShape:
    """Mean prompt length and 95th-percentile answer length (+1 end token) over `n` sampled items, in the
    prompt variant and tokenizer of `tokenizer_model` (see `_token_counts`)."""
    prompts, answers, pack_name = _token_counts(task, n, tokenizer_model)
    return RequestShape(
        prompt_tokens=-(-sum(prompts) // len(prompts)),
        output_tokens=answer_p95(answers),
        source=f"{pack_name} task pack, {n} sampled items, {tokenizer_model} tokenizer",
    )
