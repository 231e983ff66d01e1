"""A teacher that runs in this process with transformers (the bundled SmolLM2 by default).

Batched generation with left padding (decoder-only models continue from the right edge, so the pad
must sit on the left), the model's chat template applied, greedy unless a temperature is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from stratos_agent.tools.teachers.base import Messages, Prompt, as_messages


class TransformersTeacher:
    """Loads `model_id` (registry id, HF id or local folder) through the model registry."""

    def __init__(self, model_id: str = "smollm2-135m", *, batch_size: int = 8) -> None:
        from stratos_agent.models import load_model_and_tokenizer

        self.model, self.tokenizer = load_model_and_tokenizer(model_id)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.identity = f"transformers:{model_id}"
        self.batch_size = max(1, batch_size)

    def _render(self, messages: Messages) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # A base model (no chat template): plain text turns, then let it continue.
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def generate(
        self, prompts: Sequence[Prompt], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[str]:
        import torch

        texts = [self._render(as_messages(p)) for p in prompts]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        torch.manual_seed(seed)
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start:start + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            with torch.inference_mode():
                generated = self.model.generate(
                    **batch, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                    top_p=None, top_k=None, **sampling,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            out += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return out
