"""The request shape of a task as a student sees it: prompt tokens (chat-formatted) and answer tokens.

The planner models latency at this shape, not at spec defaults: a Mahjong prompt is ~31 tokens and its
answer ~11 in SmolLM2's tokenizer, not 96 and 48. Each candidate student has its own shape: a micro
student reads the pack's short prompt in its task tokenizer (~24 tokens in, ~7 out), so its latency is
measured and modelled at that shape, not at its teacher's.
"""

from __future__ import annotations

from stratos_agent.tools.train import CHATML

from stratos_agent.models import local_model_path
from stratos_agent.models.micro import pack_for_model
from stratos_agent.records.servers import RequestShape
from stratos_agent.tasks.recipes import recipe_for

SHAPE_SAMPLE = 64


def task_shape(task: str, n: int = SHAPE_SAMPLE, tokenizer_model: str = "smollm2-135m") -> RequestShape:
    """Mean prompt length and 95th-percentile answer length (+1 end token) over `n` sampled items, in the
    prompt variant and tokenizer of `tokenizer_model` (a micro student: its task pack's own prompt, template
    and answer notation; any other model: the recipe's student prompt in ChatML with the solver's answer)."""
    from transformers import AutoTokenizer

    recipe = recipe_for(task)
    folder = local_model_path(tokenizer_model)
    tok = AutoTokenizer.from_pretrained(folder)
    micro_pack = pack_for_model(folder)
    pack = micro_pack or recipe.pack(task, "student")
    template = None if micro_pack else CHATML  # a micro student ships the chat template it was trained on
    items = pack.sample(n, seed=7)
    prompts = [
        len(tok(tok.apply_chat_template(pack.chat_messages(it), chat_template=template,
                                        add_generation_prompt=True, tokenize=False),
                add_special_tokens=False)["input_ids"])
        for it in items
    ]
    answer = (lambda it: pack.format_answer(it.answer)) if micro_pack else (
        lambda it: pack.solver_rationale(it, recipe.style))
    answers = sorted(len(tok(answer(it), add_special_tokens=False)["input_ids"]) + 1 for it in items)
    return RequestShape(
        prompt_tokens=-(-sum(prompts) // len(prompts)),
        output_tokens=answers[int(0.95 * (len(answers) - 1))],
        source=f"{pack.name} task pack, {n} sampled items, {tokenizer_model} tokenizer",
    )
