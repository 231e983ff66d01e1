"""The request shape of a task as a student sees it: prompt tokens (chat-formatted) and answer tokens.

The planner models latency at this shape, not at spec defaults: a Mahjong prompt is ~31 tokens and its
answer ~11, not 96 and 48.
"""

from __future__ import annotations

from stratos_agent.tools.train import CHATML

from stratos_agent.models import local_model_path
from stratos_agent.records.servers import RequestShape
from stratos_agent.tasks.recipes import recipe_for


def task_shape(task: str, n: int = 64, tokenizer_model: str = "smollm2-135m") -> RequestShape:
    """Mean prompt length and 95th-percentile answer length (+1 end token) over `n` sampled items, in the
    student's prompt variant and tokenizer."""
    from transformers import AutoTokenizer

    recipe = recipe_for(task)
    pack = recipe.pack(task, "student")
    tok = AutoTokenizer.from_pretrained(local_model_path(tokenizer_model))
    items = pack.sample(n, seed=7)
    prompts = [
        len(tok(tok.apply_chat_template([{"role": "user", "content": pack.render_prompt(it)}],
                                        chat_template=CHATML, add_generation_prompt=True, tokenize=False))["input_ids"])
        for it in items
    ]
    answers = sorted(len(tok(pack.solver_rationale(it, recipe.style))["input_ids"]) + 1 for it in items)
    return RequestShape(
        prompt_tokens=-(-sum(prompts) // len(prompts)),
        output_tokens=answers[int(0.95 * (len(answers) - 1))],
        source=f"{pack.name} task pack, {n} sampled items, {tokenizer_model} tokenizer",
    )
