"""Which half of SmolLM2-135M's 30 blocks makes the best student initialisation?

    .venv/bin/python evals/models_student_init.py [--items 6] [--threads 1] [--out PATH]

Every rule keeps 15 of the 30 decoder blocks of the converted teacher (no training) and is scored
on held-out text the block-influence calibration never saw: general prose, and Mahjong chat
examples (prompt + solver rationale, the distillation domain). Metrics: mean token NLL (uniform =
ln 49152 = 10.8), top-1 next-token agreement with the teacher, and KL(teacher || student) per token
(the logit-KD starting point). Rules compared in the same run:
  every-other    DistilBERT's rule: blocks 0, 2, ..., 28
  every-other-1  blocks 1, 3, ..., 29 (keeps the last block)
  first-half     blocks 0..13 + 29 (contiguous depth pruning of the deep end, keeping the last)
  block-influence  the 15 blocks with the highest ShortGPT block influence on the calibration text
                   (what `smollm2-135m-half` ships)
Prints and saves evals/results/models_student_init.json.
"""

from __future__ import annotations

import copy
import math

import torch
from _common import add_out, add_threads, machine_info, make_parser, save_json, timed

from stratos_agent.models import load_model_and_tokenizer
from stratos_agent.models.derived import (
    block_influence,
    drop_layers,
    every_other_layer,
    most_influential_half,
)

PROSE = (
    ("Once upon a time, there was a little girl who lived in a village near the forest. Whenever she went "
    "out, the little girl wore a red riding cloak, so everyone in the village called her Little Red Riding Hood."),
    ("The mitochondrion is an organelle found in most eukaryotic cells. It generates most of the chemical "
    "energy needed to power the cell's biochemical reactions, stored in adenosine triphosphate."),
    ("To make a cup of tea, boil fresh water, pour it over the leaves or a tea bag, wait three to five "
    "minutes, then remove the leaves. Add milk or lemon if you like."),
)


def held_out_texts(tokenizer, items: int) -> dict[str, list[str]]:
    from stratos_agent.tasks import get_task_pack

    pack = get_task_pack("mahjong")
    chats = [
        tokenizer.apply_chat_template(pack.chat_messages(item, pack.solver_rationale(item)), tokenize=False)
        for item in pack.sample(items, seed=123)
    ]
    return {"prose": list(PROSE), "mahjong-chat": chats}


@torch.no_grad()
def score(student, teacher_logits: list[torch.Tensor], encoded: list[torch.Tensor]) -> dict[str, float]:
    nll = agree = kl = tokens = 0.0
    for ids, t_logits in zip(encoded, teacher_logits):
        s_logits = student(ids).logits[0, :-1]
        targets = ids[0, 1:]
        s_logp = torch.log_softmax(s_logits, -1)
        t_logp = torch.log_softmax(t_logits, -1)
        nll += -s_logp.gather(-1, targets[:, None]).sum().item()
        agree += (s_logits.argmax(-1) == t_logits.argmax(-1)).sum().item()
        kl += (t_logp.exp() * (t_logp - s_logp)).sum().item()
        tokens += len(targets)
    return {"nll": round(nll / tokens, 3), "top1_agreement": round(agree / tokens, 3),
            "kl_teacher_student": round(kl / tokens, 3), "tokens": int(tokens)}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--items", type=int, default=6, help="Mahjong chat examples in the held-out set.")
    add_threads(parser)
    add_out(parser, "models_student_init.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    teacher, tokenizer = load_model_and_tokenizer("smollm2-135m")
    n = teacher.config.num_hidden_layers
    bi_seconds, influence = timed(block_influence, teacher, tokenizer)
    rules = {
        "every-other": every_other_layer(n),
        "every-other-1": list(range(1, n, 2)),
        "first-half": [*range(n // 2 - 1), n - 1],
        "block-influence": most_influential_half(influence),
    }
    results: dict[str, dict] = {"uniform_nll": round(math.log(teacher.config.vocab_size), 3),
                                "block_influence": [round(x, 4) for x in influence],
                                "block_influence_seconds": round(bi_seconds, 2), "rules": {},
                                "machine": machine_info()}
    for domain, texts in held_out_texts(tokenizer, args.items).items():
        encoded = [tokenizer(text, return_tensors="pt").input_ids for text in texts]
        with torch.no_grad():
            teacher_logits = [teacher(ids).logits[0, :-1] for ids in encoded]
        results.setdefault("teacher", {})[domain] = score(teacher, teacher_logits, encoded)
        for name, keep in rules.items():
            student = drop_layers(copy.deepcopy(teacher), keep)
            row = results["rules"].setdefault(name, {"kept": keep})
            row[domain] = score(student, teacher_logits, encoded)
            del student
    print(f"{'rule':16s} {'domain':13s} {'NLL':>7s} {'top1 agr':>9s} {'KL(t||s)':>9s}")
    for domain in ("prose", "mahjong-chat"):
        print(f"{'teacher':16s} {domain:13s} {results['teacher'][domain]['nll']:7.3f}")
        for name, row in results["rules"].items():
            r = row[domain]
            print(f"{name:16s} {domain:13s} {r['nll']:7.3f} {r['top1_agreement']:9.3f} {r['kl_teacher_student']:9.3f}")
    print(f"uniform NLL {results['uniform_nll']}; block influence computed in {bi_seconds:.2f} s")
    save_json(results, args.out)


if __name__ == "__main__":
    main()
